"""tools/prepare_fashion_mnist.py on small IDX files written here in Fashion-MNIST's format."""

import gzip
import importlib.util

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from paddlevision.datasets import ImageFolder

spec = importlib.util.spec_from_file_location("prepare_fashion_mnist", REPO_ROOT / "tools" / "prepare_fashion_mnist.py")
prepare_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_tool)


def write_idx(path, array, magic, compress):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def source(tmp_path):
    """Images whose pixels all equal their index in the file; labels cycle 0-9 (train)
    and 9-0 (t10k). The t10k files are left uncompressed to cover both forms."""
    directory = tmp_path / "fashion-mnist"
    directory.mkdir()
    for prefix, count, compress in (("train", 40, True), ("t10k", 30, False)):
        images = np.repeat(np.arange(count)[:, None, None], 28, axis=1).repeat(28, axis=2)
        labels = np.arange(count) % 10 if prefix == "train" else 9 - np.arange(count) % 10
        suffix = ".gz" if compress else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x803, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x801, compress)
    return directory


def test_layout_selection_and_images(source, tmp_path):
    counts = prepare_tool.prepare(source, tmp_path / "out", train_per_class=3, val_per_class=2, size=64)
    assert counts == {"train": 30, "val": 20}
    train = ImageFolder(tmp_path / "out" / "train")
    assert train.classes == ["0_t-shirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt",
                             "7_sneaker", "8_bag", "9_ankle_boot"]
    # The first three of each class in file order: class 4 is at indices 4, 14, 24.
    assert sorted(p.rsplit("/", 1)[-1] for p, label in train.samples if label == 4) == ["00004.png", "00014.png",
                                                                                          "00024.png"]
    val = ImageFolder(tmp_path / "out" / "val")
    assert sorted(p.rsplit("/", 1)[-1] for p, label in val.samples if label == 9) == ["00000.png", "00010.png"]
    image = Image.open(tmp_path / "out" / "train" / "4_coat" / "00014.png")
    assert image.mode == "RGB" and image.size == (64, 64)
    assert np.all(np.asarray(image) == 14)  # a constant image stays constant under bilinear upscaling
    assert "MIT" in (tmp_path / "out" / "PROVENANCE.txt").read_text()


def test_jpeg_output(source, tmp_path):
    prepare_tool.prepare(source, tmp_path / "out", 1, 1, size=70, image_format="jpeg")
    image = Image.open(tmp_path / "out" / "val" / "0_t-shirt_top" / "00009.jpg")
    assert image.format == "JPEG" and image.size == (70, 70)


def test_missing_dataset_names_the_package(tmp_path):
    with pytest.raises(SystemExit, match="apt-get install -y dataset-fashion-mnist"):
        prepare_tool.prepare(tmp_path / "absent", tmp_path / "out", 1, 1, 64)


def test_too_many_per_class_and_existing_output_are_refused(source, tmp_path):
    with pytest.raises(SystemExit, match="only 4 images of class t-shirt_top available, 5 asked for"):
        prepare_tool.prepare(source, tmp_path / "out", train_per_class=5, val_per_class=1, size=64)
    (tmp_path / "out2" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match="already exists"):
        prepare_tool.prepare(source, tmp_path / "out2", 1, 1, 64)
