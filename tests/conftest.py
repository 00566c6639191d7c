import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]

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


def load_script(relative_path):
    """Import a CLI script as a module, to call its ``main`` without a new process."""
    path = REPO_ROOT / relative_path
    name = "script_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lite_data(tmp_path_factory):
    """The bundled lite data set, extracted once per test session."""
    from paddlevision.datasets import extract_lite_data

    return Path(extract_lite_data(REPO_ROOT / "test_images" / "lite_data.tar", tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def trained_run(lite_data, tmp_path_factory):
    """One epoch of lite training; returns (output_dir, completed process, the names it
    wrote). Of the checkpoints (230 MB each) only latest.pdparams and latest.pdopt are kept."""
    out = tmp_path_factory.mktemp("train_out")
    result = run_script(
        "train.py", "--data-path", lite_data, "--epochs", "1", "-b", "8", "--print-freq", "1", "--device", "cpu",
        "--output-dir", out, "-j", "0", "--seed", "0", *FAST_SIZES,
    )
    written = sorted(path.name for path in out.iterdir())
    for path in out.glob("*.pd*"):
        if not path.name.startswith("latest."):
            path.unlink()
    return out, result, written


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """A directory for the files a module's tests share, removed when the module is done."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def quick_start(tmp_path_factory):
    """The README's quick start as written (no --data-path; default workers, shared memory
    and crop sizes), run in a copy of the repository's files so that the lite_data/ and
    output/ it makes land there. Returns (copy, completed process, metrics.jsonl text, the
    names in output/); of the checkpoints (230 MB each) only latest.pdparams is kept."""
    repo = tmp_path_factory.mktemp("quick_start") / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO_ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, repo / name)
    result = run_script("train.py", "--epochs", "1", "-b", "8", "--print-freq", "1", "--device", "cpu",
                        "--output-dir", "output", cwd=repo)
    written = sorted(path.name for path in (repo / "output").iterdir())
    for path in (repo / "output").glob("*.pd*"):
        if path.name != "latest.pdparams":
            path.unlink()
    return repo, result, (repo / "output" / "metrics.jsonl").read_text(), written


class SlowScalar:
    """A device value whose float() waits, as a GPU that is still computing makes the host
    wait; adding and scaling it does not wait, as on a device."""

    def __init__(self, value, delay):
        self.value, self.delay = value, delay

    def __add__(self, other):
        return SlowScalar(self.value + (other.value if isinstance(other, SlowScalar) else other), self.delay)

    __radd__ = __add__

    def __mul__(self, factor):
        return SlowScalar(self.value * factor, self.delay)

    def __float__(self):
        time.sleep(self.delay)
        return float(self.value)


def make_image(width, height, seed=0):
    """Smooth colour gradients plus seeded noise, so crops and flips are distinguishable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [255.0 * x / max(width - 1, 1), 255.0 * y / max(height - 1, 1), 128 + 100 * np.sin(x / 7 + y / 5)], -1
    )
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
