"""The statistics of benchmarks/convergence.py: the interval it reports for the mean gap."""

import importlib.util

import pytest

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("convergence", REPO_ROOT / "benchmarks" / "convergence.py")
convergence = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convergence)


# Two-sided 95 % points of Student's t from published tables (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.2).
@pytest.mark.parametrize("df, published", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (19, 2.093),
                                            (29, 2.045)])
def test_student_t_quantile_matches_the_table(df, published):
    assert convergence.student_t_quantile(0.975, df) == pytest.approx(published, rel=2e-3)


def test_summary_interval_of_the_paired_gaps():
    summary = convergence.summarize([-0.7, 3.3, -1.2])
    # mean 0.467, sd 2.466: half width 4.303 * 2.466 / sqrt(3) = 6.13 (the "about +-6 points")
    assert summary["mean_gap_points"] == pytest.approx(0.47, abs=0.01)
    assert summary["sd_points"] == pytest.approx(2.47, abs=0.01)
    low, high = summary["ci_points"]
    assert high - low == pytest.approx(2 * 6.13, abs=0.02)
