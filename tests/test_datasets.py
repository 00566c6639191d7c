import os
import pathlib
import random
import tarfile

import numpy as np
import pytest
from PIL import Image

from paddlevision.datasets import ImageFolder, ListDataset, extract_lite_data
from paddlevision.image import ImageDecodeError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LITE_DATA_TAR = REPO_ROOT / "test_images" / "lite_data.tar"


def write_image(path, colour=(200, 30, 30), size=(12, 10), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt or "PNG")
    return path


def to_array(image):
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


class RandomCropParams:
    """A stand-in random transform drawing from Python's ``random`` like the real ones."""

    def __call__(self, image):
        return (random.random(), random.randint(0, 10**9), np.random.rand())


@pytest.fixture
def folder_tree(tmp_path):
    root = tmp_path / "train"
    write_image(root / "zebra" / "b.png")
    write_image(root / "zebra" / "a.JPEG", fmt="JPEG")
    write_image(root / "zebra" / "nested" / "c.jpg", fmt="JPEG")
    write_image(root / "ant" / "x.Png")
    (root / "empty_class").mkdir()
    write_image(root / "ant" / ".hidden.png")
    write_image(root / ".ipynb_checkpoints" / "junk.png")
    (root / "ant" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_classes_and_ordering(folder_tree):
    dataset = ImageFolder(folder_tree)
    # The empty class keeps its index so labels line up with the full class list.
    assert dataset.classes == ["ant", "empty_class", "zebra"]
    assert dataset.class_to_idx == {"ant": 0, "empty_class": 1, "zebra": 2}
    relative = [(os.path.relpath(path, folder_tree), label) for path, label in dataset.samples]
    assert relative == [
        (os.path.join("ant", "x.Png"), 0),
        (os.path.join("zebra", "a.JPEG"), 2),
        (os.path.join("zebra", "b.png"), 2),
        (os.path.join("zebra", "nested", "c.jpg"), 2),
    ]
    assert dataset.targets == [0, 2, 2, 2]
    assert len(dataset) == 4


def test_image_folder_getitem(folder_tree):
    dataset = ImageFolder(str(folder_tree), transform=to_array)
    image, label = dataset[1]
    assert image.shape == (3, 10, 12) and image.dtype == np.float32
    assert label == 2 and isinstance(label, int)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.png")
    with pytest.raises(FileNotFoundError, match="no class sub-directories.*flat"):
        ImageFolder(tmp_path / "flat")
    (tmp_path / "no_images" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images.*no_images"):
        ImageFolder(tmp_path / "no_images")


def test_list_dataset(tmp_path):
    write_image(tmp_path / "imgs" / "with space.png")
    write_image(tmp_path / "imgs" / "b.jpg", fmt="JPEG")
    list_file = tmp_path / "train_list.txt"
    list_file.write_text("imgs/with space.png 2\n\n  imgs/b.jpg\t0  \n")
    dataset = ListDataset(tmp_path, list_file, transform=to_array)
    assert dataset.samples == [(os.path.join(str(tmp_path), "imgs/with space.png"), 2),
                               (os.path.join(str(tmp_path), "imgs/b.jpg"), 0)]
    assert dataset.classes == ["0", "1", "2"]
    assert dataset.targets == [2, 0]
    image, label = dataset[0]
    assert image.shape == (3, 10, 12) and label == 2

    named = ListDataset(tmp_path, list_file, classes=["cat", "dog", "fish"])
    assert named.class_to_idx["fish"] == 2
    with pytest.raises(ValueError, match="label 2"):
        ListDataset(tmp_path, list_file, classes=["cat", "dog"])


@pytest.mark.parametrize("bad_line", ["imgs/a.jpg", "imgs/a.jpg cat", "imgs/a.jpg -1", "imgs/a.jpg 1.5"])
def test_list_dataset_malformed_line_names_file_and_line(tmp_path, bad_line):
    list_file = tmp_path / "val_list.txt"
    list_file.write_text(f"imgs/ok.jpg 0\n\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"val_list.txt, line 3"):
        ListDataset(tmp_path, list_file)


def test_list_dataset_empty_list(tmp_path):
    list_file = tmp_path / "empty.txt"
    list_file.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt"):
        ListDataset(tmp_path, list_file)


@pytest.fixture
def tree_with_corrupt_image(tmp_path):
    root = tmp_path / "data"
    write_image(root / "a" / "good.png")
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return root


def test_corrupt_image_error_names_the_file(tree_with_corrupt_image):
    dataset = ImageFolder(tree_with_corrupt_image)
    index = [os.path.basename(path) for path, _ in dataset.samples].index("corrupt.jpg")
    with pytest.raises(ImageDecodeError, match="corrupt.jpg"):
        dataset[index]


def test_seeded_augmentation_depends_only_on_seed_epoch_index(folder_tree):
    dataset = ImageFolder(folder_tree, transform=RandomCropParams(), seed=7)
    first = [dataset[i][0] for i in range(len(dataset))]
    random.seed(12345)  # whatever state the process is in must not matter
    assert [dataset[i][0] for i in reversed(range(len(dataset)))] == first[::-1]
    assert len(set(first)) == len(first)  # different samples get different draws

    dataset.set_epoch(1)
    assert [dataset[i][0] for i in range(len(dataset))] != first

    other_seed = ImageFolder(folder_tree, transform=RandomCropParams(), seed=8)
    assert other_seed[0][0] != first[0]


def test_unseeded_dataset_leaves_rng_alone(folder_tree):
    dataset = ImageFolder(folder_tree, transform=RandomCropParams())
    random.seed(3)
    expected = random.random()
    random.seed(3)
    dataset[0]
    # The transform consumed draws from the unseeded global stream.
    assert random.random() != expected


def test_extract_lite_data_twice(tmp_path):
    root = extract_lite_data(LITE_DATA_TAR, tmp_path)
    assert root == os.path.join(str(tmp_path), "lite_data")
    marker = pathlib.Path(root) / "train" / "cat" / "marker"
    marker.write_text("kept")
    assert extract_lite_data(LITE_DATA_TAR, tmp_path) == root
    assert marker.exists()  # second call reused the tree instead of re-extracting
    assert [p.name for p in tmp_path.iterdir()] == ["lite_data"]  # no staging dirs left


def test_extract_lite_data_losing_the_race(tmp_path, monkeypatch):
    # Simulate another process finishing between our existence check and our rename.
    real_rename = os.rename

    def rename_after_competitor(src, dst):
        os.makedirs(os.path.join(dst, "train"))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_after_competitor)
    root = extract_lite_data(LITE_DATA_TAR, tmp_path)
    assert os.listdir(root) == ["train"]
    assert [p.name for p in tmp_path.iterdir()] == ["lite_data"]


def test_bundled_lite_data_contents(tmp_path):
    with tarfile.open(LITE_DATA_TAR) as tar:
        names = tar.getnames()
    assert names == sorted(names)
    root = extract_lite_data(LITE_DATA_TAR, tmp_path)
    for split in ("train", "val"):
        dataset = ImageFolder(os.path.join(root, split))
        assert dataset.classes == ["astronaut", "cat", "coffee", "rocket"]
        assert len(dataset) == 16
        assert sorted(set(dataset.targets)) == [0, 1, 2, 3]
        assert all(dataset.targets.count(label) == 4 for label in range(4))
        image, _ = dataset[0]
        assert image.mode == "RGB" and min(image.size) >= 300


def test_unseeded_dataset_draws_from_the_global_stream_as_is(folder_tree):
    # Without a seed the dataset must neither reseed nor skip ahead: the transform draws
    # exactly what it would have drawn called directly, so two loads of one item differ
    # and the stream continues as if the dataset had not been there.
    dataset = ImageFolder(folder_tree, transform=RandomCropParams())
    random.seed(3)
    np.random.seed(3)
    direct = RandomCropParams()(None)  # it draws without looking at the image
    next_draws = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    loaded = dataset[0][0]
    assert loaded == direct
    assert (random.random(), np.random.rand()) == next_draws
    assert dataset[0][0] != dataset[0][0]
