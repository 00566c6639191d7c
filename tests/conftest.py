import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

warnings.filterwarnings("ignore", message="No ccache found")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

# Small crops keep end-to-end runs fast; AlexNet accepts any input of at least 63x63.
FAST_SIZES = ["--train-crop-size", "64", "--val-resize-size", "72", "--val-crop-size", "64"]


def run_script(*args, timeout=600, check=True, cwd=REPO_ROOT, env=None):
    """Run a repository script in a subprocess, as a user would, returning the result."""
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def lite_data(tmp_path_factory):
    """The bundled lite data set, extracted once per test session."""
    from paddlevision.datasets import extract_lite_data

    return Path(extract_lite_data(REPO_ROOT / "test_images" / "lite_data.tar", tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def trained_run(lite_data, tmp_path_factory):
    """One epoch of lite training; returns (output_dir, completed process)."""
    out = tmp_path_factory.mktemp("train_out")
    result = run_script(
        "train.py", "--data-path", lite_data, "--epochs", "1", "-b", "8", "--print-freq", "1", "--device", "cpu",
        "--output-dir", out, "-j", "0", "--seed", "0", *FAST_SIZES,
    )
    return out, result


def make_image(width, height, seed=0):
    """Smooth colour gradients plus seeded noise, so crops and flips are distinguishable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [255.0 * x / max(width - 1, 1), 255.0 * y / max(height - 1, 1), 128 + 100 * np.sin(x / 7 + y / 5)], -1
    )
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
