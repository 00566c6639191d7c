"""Image transforms and presets of torchvision's classification recipe (PIL + numpy, no paddle)."""

from . import functional
from .autoaugment import AutoAugment
from .functional import resized_crop
from .presets import ClassificationPresetEval, ClassificationPresetTrain, IMAGENET_MEAN, IMAGENET_STD
from .transforms import (
    CenterCrop,
    Compose,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToNormalizedArray,
)

__all__ = [
    "AutoAugment",
    "CenterCrop",
    "ClassificationPresetEval",
    "ClassificationPresetTrain",
    "Compose",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomErasing",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ToNormalizedArray",
    "functional",
    "resized_crop",
]
