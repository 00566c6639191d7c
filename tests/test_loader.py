"""ImageLoader: an unreadable image is named in the main process, or skipped and counted,
with and without worker processes. Each case runs in a subprocess under a timeout, since
the failure these tests guard against is a hang."""

import json

import pytest

from conftest import make_image, run_script

LOAD_ALL = """
import json, sys
import numpy as np, paddle
from paddlevision.datasets import ImageFolder, ImageLoader
from paddlevision.image import ImageDecodeError

root, workers, batch_size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
dataset = ImageFolder(root, transform=lambda image: np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
loader = ImageLoader(dataset, paddle.io.BatchSampler(dataset, batch_size=batch_size), num_workers=workers,
                     skip_bad_images=mode != "fail")
try:
    batches = [None if images is None else (list(images.shape), labels.numpy().tolist())
               for images, labels in loader.batches(keep_unreadable=mode == "keep")]
except ImageDecodeError as err:
    print(json.dumps({"error": str(err), "name": str(err.name)}))
    sys.exit(3)
print(json.dumps({"batches": batches, "num_skipped": loader.num_skipped}))
"""


@pytest.fixture
def tree(tmp_path):
    """Two classes of two 6x5 images; the second image of class b cannot be decoded."""
    root = tmp_path / "tree"
    for name in ("a/0.png", "a/1.png", "b/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_image(6, 5).save(root / name)
    (root / "b" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def load_all(root, workers, batch_size, mode):
    result = run_script("-c", LOAD_ALL, root, workers, batch_size, mode, timeout=120, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_raises_in_the_main_process(tree, workers):
    result, answer = load_all(tree, workers, 2, "fail")
    assert result.returncode == 3, result.stderr
    assert answer["name"] == str(tree / "b" / "1.jpg")
    assert answer["error"].startswith(f"cannot decode image {tree / 'b' / '1.jpg'}: ")


@pytest.mark.parametrize("workers", [0, 2])
def test_skipping_keeps_every_readable_image(tree, workers):
    """Batch size 1 makes one batch hold nothing readable; Paddle's worker transport (shared
    memory, the default) must still carry it, and the batches after it."""
    result, answer = load_all(tree, workers, 1, "skip")
    assert result.returncode == 0, result.stderr
    assert answer == {"batches": [[[1, 3, 5, 6], [0]], [[1, 3, 5, 6], [0]], [[1, 3, 5, 6], [1]]], "num_skipped": 1}
    assert str(tree / "b" / "1.jpg") in result.stderr  # named in the log


def test_skipping_in_a_mixed_batch(tree):
    result, answer = load_all(tree, 2, 4, "skip")
    assert answer == {"batches": [[[3, 3, 5, 6], [0, 0, 1]]], "num_skipped": 1}



@pytest.mark.parametrize("workers", [0, 2])
def test_a_batch_of_unreadable_images_can_be_kept_in_its_place(tree, workers):
    """For processes that must all take every step (DataParallel): (None, None) stands for it."""
    result, answer = load_all(tree, workers, 1, "keep")
    assert result.returncode == 0, result.stderr
    assert answer == {"batches": [[[1, 3, 5, 6], [0]], [[1, 3, 5, 6], [0]], [[1, 3, 5, 6], [1]], None],
                      "num_skipped": 1}
