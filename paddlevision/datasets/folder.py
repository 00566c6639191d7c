"""Image classification datasets: a class-per-folder tree and PaddleClas-style list files."""

import hashlib
import os
import random
import shutil
import tarfile
import tempfile

import numpy as np
from paddle.io import Dataset

from paddlevision.image import IMG_EXTENSIONS, has_image_extension, load_image

__all__ = ["ImageFolder", "ListDataset", "extract_lite_data"]


def _seed_global_rngs(seed, epoch, index):
    """The transforms draw from the global RNGs: seeded per sample, a sample's augmentation
    does not depend on which worker or process loads it, nor when. sha256, because
    ``hash()`` of a string is salted per process."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    sample_seed = int.from_bytes(digest[:8], "little")
    random.seed(sample_seed)
    np.random.seed(sample_seed % 2**32)


class _ImageSampleDataset(Dataset):
    """Subclasses set ``samples`` (``(path, label)`` pairs), ``classes`` and ``class_to_idx``."""

    def __init__(self, transform, seed):
        super().__init__()
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    @property
    def targets(self):
        return [label for _, label in self.samples]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        image = load_image(path)
        if self.seed is not None:
            _seed_global_rngs(self.seed, self.epoch, index)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


class ImageFolder(_ImageSampleDataset):
    """Images arranged as ``root/<class>/**/<image>``, with torchvision's semantics: classes
    are the sorted sub-directories, and one without images keeps its label (a val split may
    lack classes); images are found recursively, sorted, by extension in any case
    (ImageNet's ``.JPEG``). Unlike torchvision, hidden names (``.ipynb_checkpoints``) are
    ignored. With a ``seed``, the augmentation of (``set_epoch``, index) is reproducible.
    """

    def __init__(self, root, transform=None, seed=None):
        super().__init__(transform, seed)
        self.root = os.fspath(root)
        self.classes = self._find_classes(self.root)
        self.class_to_idx = {name: idx for idx, name in enumerate(self.classes)}
        self.samples = self._find_samples(self.root, self.classes)

    @staticmethod
    def _find_classes(root):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"dataset directory not found: {root}")
        classes = sorted(
            entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
        )
        if not classes:
            raise FileNotFoundError(f"no class sub-directories found in {root}")
        return classes

    @staticmethod
    def _find_samples(root, classes):
        samples = []
        for label, class_name in enumerate(classes):
            class_dir = os.path.join(root, class_name)
            for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
                # Sorting in place also fixes the order in which os.walk descends.
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for filename in sorted(filenames):
                    if not filename.startswith(".") and has_image_extension(filename):
                        samples.append((os.path.join(dirpath, filename), label))
        if not samples:
            raise FileNotFoundError(
                f"no images found in the class directories of {root} "
                f"(looked for extensions {', '.join(IMG_EXTENSIONS)}, any case)"
            )
        return samples


class ListDataset(_ImageSampleDataset):
    """Images listed in a PaddleClas-style list file, one ``relative/path.jpg label`` a line,
    paths relative to ``root`` (split at the last whitespace: paths may contain spaces).
    Without ``classes`` the class names are the labels, ``"0"`` to the highest.
    """

    def __init__(self, root, list_file, transform=None, classes=None, seed=None):
        super().__init__(transform, seed)
        self.root = os.fspath(root)
        self.list_file = os.fspath(list_file)
        self.samples = self._parse_list_file(self.root, self.list_file)
        max_label = max(label for _, label in self.samples)
        if classes is None:
            classes = [str(label) for label in range(max_label + 1)]
        elif max_label >= len(classes):
            raise ValueError(
                f"{self.list_file} has label {max_label}, but only {len(classes)} class names were given"
            )
        self.classes = list(classes)
        self.class_to_idx = {name: idx for idx, name in enumerate(self.classes)}

    @staticmethod
    def _parse_list_file(root, list_file):
        samples = []
        with open(list_file, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                text = line.strip()
                if not text:
                    continue
                parts = text.rsplit(maxsplit=1)
                if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
                    raise ValueError(
                        f"{list_file}, line {line_number}: expected '<relative/path> <label>' "
                        f"with a non-negative integer label, got {text!r}"
                    )
                samples.append((os.path.join(root, parts[0]), int(parts[1])))
        if not samples:
            raise ValueError(f"{list_file} lists no images")
        return samples


def extract_lite_data(tar_path, dest_dir):
    """Extract the bundled ``lite_data.tar`` into ``dest_dir`` once; return ``dest_dir/lite_data``.
    Unpacked beside it and renamed into place: no reader sees a half-extracted tree, and of
    several processes extracting at once the first to rename wins."""
    final_root = os.path.join(os.fspath(dest_dir), "lite_data")
    if os.path.isdir(final_root):
        return final_root
    os.makedirs(dest_dir, exist_ok=True)
    staging_dir = tempfile.mkdtemp(prefix=".lite_data-", dir=dest_dir)
    try:
        with tarfile.open(tar_path) as tar:
            # "data" refuses absolute paths, links out of the tree and device files.
            tar.extractall(staging_dir, filter="data")
        extracted_root = os.path.join(staging_dir, "lite_data")
        if not os.path.isdir(extracted_root):
            raise FileNotFoundError(f"{tar_path} has no top-level lite_data/ directory")
        try:
            os.rename(extracted_root, final_root)
        except OSError:
            # Renaming onto a non-empty directory fails: another extractor won the race.
            if not os.path.isdir(final_root):
                raise
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return final_root
