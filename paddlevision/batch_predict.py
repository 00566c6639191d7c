"""Classifying many images in batches, whatever the engine: which files, batches that skip
unreadable images (returned as values, so the caller decides how to report them), and the
prediction lines. Paddle-free."""

import glob
import os
from typing import List, NamedTuple, Optional

import numpy as np

from paddlevision.image import ImageDecodeError, has_image_extension
from paddlevision.labels import class_names_for
from paddlevision.pipeline import format_prediction, topk

__all__ = ["Batch", "NoImagesError", "expand_image_paths", "image_batches", "prediction_lines"]


class NoImagesError(FileNotFoundError):
    """An image path, directory or glob that names no image file."""


class Batch(NamedTuple):
    paths: List[str]  # the readable images, in input order
    images: Optional[np.ndarray]  # their NCHW arrays; None when none was readable
    errors: List[str]  # why each unreadable image met while filling this batch was skipped


def expand_image_paths(img_path):
    """Sorted image files: a file is itself, a directory gives the images in it and in every
    folder below (so ``val/<class>/<image>`` works), anything else is a glob pattern."""
    if os.path.isfile(img_path):
        return [img_path]
    if os.path.isdir(img_path):
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(img_path)
            for name in names
            if has_image_extension(name)
        )
    else:
        paths = sorted(glob.glob(img_path))
    paths = [path for path in paths if os.path.isfile(path)]
    if not paths:
        raise NoImagesError(f"--img-path {img_path}: no image files found")
    return paths


def image_batches(paths, preprocess, batch_size):
    """:class:`Batch` es of ``batch_size`` readable images (the last may be smaller); a
    batch fills up across unreadable images."""
    readable, arrays, errors = [], [], []
    for path in paths:
        try:
            arrays.append(preprocess(path))
            readable.append(path)
        except ImageDecodeError as error:
            errors.append(str(error))
        except OSError as error:
            errors.append(f"cannot read image {path}: {error.strerror or error}")
        if len(arrays) == batch_size:
            yield Batch(readable, np.stack(arrays), errors)
            readable, arrays, errors = [], [], []
    if readable or errors:
        yield Batch(readable, np.stack(arrays) if arrays else None, errors)


def prediction_lines(paths, probs, k, class_names=None):
    """One line per image: its top-``k`` classes, named after ``class_names`` (the export's),
    else ImageNet's for 1000 classes, else by index."""
    names = class_names_for(probs.shape[-1], class_names)
    return [format_prediction(*topk(row, k), names, image_name=path) for path, row in zip(paths, probs)]
