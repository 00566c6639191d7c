"""Class names for printing predictions. Depends on nothing but the standard library."""

import functools
from importlib import resources

__all__ = ["imagenet_class_names", "class_names_for"]

IMAGENET_NUM_CLASSES = 1000


@functools.lru_cache(maxsize=None)
def _imagenet_class_names():
    text = resources.files("paddlevision").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = text.splitlines()
    if len(names) != IMAGENET_NUM_CLASSES:
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, expected {IMAGENET_NUM_CLASSES}")
    return tuple(names)


def imagenet_class_names():
    """The 1000 ImageNet-1k class names in torchvision's index order (0 = "tench")."""
    # A fresh list each call, so a caller editing it cannot corrupt the cached copy.
    return list(_imagenet_class_names())


def class_names_for(num_classes, class_names=None):
    """Names for a classifier's outputs: ``class_names`` if given (one per output),
    ImageNet's for a 1000-class model, else ``None`` (callers then print indices)."""
    if class_names is not None:
        # A model trained with --num-classes above its class-folder count has outputs
        # without a name; print ids rather than name some and fail on the others.
        return list(class_names) if len(class_names) == num_classes else None
    if num_classes == IMAGENET_NUM_CLASSES:
        return imagenet_class_names()
    return None
