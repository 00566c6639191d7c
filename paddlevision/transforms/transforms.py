"""Image transforms of torchvision's classification recipe, on PIL images and numpy arrays.

Every random draw comes from Python's ``random`` module (noise arrays from a numpy generator
seeded by it), so that the datasets' per-sample seeding makes every transform reproducible.
"""

import math
import numbers
import random

import numpy as np

from . import functional as F

__all__ = [
    "Compose",
    "Resize",
    "CenterCrop",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "ToNormalizedArray",
    "RandomErasing",
]


def _check_range(values, name):
    if not (isinstance(values, (list, tuple)) and len(values) == 2):
        raise ValueError(f"{name} must be a sequence of 2 numbers, got {values!r}")
    if values[0] > values[1]:
        raise ValueError(f"{name} must be (min, max), got {values!r}")
    return float(values[0]), float(values[1])


def _check_probability(p):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for transform in self.transforms:
            img = transform(img)
        return img

    def __repr__(self):
        lines = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}({lines}\n)"


class Resize:
    """An int ``size`` sets the shorter side, ``(h, w)`` the exact size."""

    def __init__(self, size, interpolation="bilinear"):
        F.pil_interpolation(interpolation)  # fail at construction, not at the first sample
        F.resized_output_size(1, 1, size)
        self.size = size
        self.interpolation = interpolation

    def __call__(self, img):
        return F.resize(img, self.size, self.interpolation)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    def __init__(self, size):
        self.size = F.as_height_width(size, "size")

    def __call__(self, img):
        return F.center_crop(img, self.size)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size})"


class RandomResizedCrop:
    """Inception-style: a crop of a uniform fraction (``scale``) of the area with a log-uniform
    aspect ratio (``ratio``, width / height), resized to ``size``."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation="bilinear"):
        self.size = F.as_height_width(size, "size")
        self.scale = _check_range(scale, "scale")
        self.ratio = _check_range(ratio, "ratio")
        F.pil_interpolation(interpolation)
        self.interpolation = interpolation

    @staticmethod
    def get_params(img, scale, ratio):
        """``(top, left, height, width)``: ten tries, then the largest central crop with the
        aspect ratio clamped into ``ratio``."""
        width, height = img.size
        area = height * width
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            target_area = area * random.uniform(scale[0], scale[1])
            aspect_ratio = math.exp(random.uniform(log_ratio[0], log_ratio[1]))
            crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
            crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = random.randint(0, height - crop_height)
                left = random.randint(0, width - crop_width)
                return top, left, crop_height, crop_width

        in_ratio = width / height
        if in_ratio < min(ratio):
            crop_width = width
            crop_height = int(round(crop_width / min(ratio)))
        elif in_ratio > max(ratio):
            crop_height = height
            crop_width = int(round(crop_height * max(ratio)))
        else:
            crop_width, crop_height = width, height
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def __call__(self, img):
        top, left, height, width = self.get_params(img, self.scale, self.ratio)
        return F.resized_crop(img, top, left, height, width, self.size, self.interpolation)

    def __repr__(self):
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = _check_probability(p)

    def __call__(self, img):
        if random.random() < self.p:
            return F.hflip(img)
        return img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"


class ToNormalizedArray:
    """torchvision's ``ToTensor`` + ``Normalize`` in one step (:func:`~.functional.to_normalized_array`)."""

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got {mean!r} and {std!r}")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not contain zeros, got {std!r}")

    def __call__(self, img):
        return F.to_normalized_array(img, self.mean, self.std)

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class RandomErasing:
    """With probability ``p``, overwrite a random box of a CHW array (Zhong et al., 2017);
    ``ratio`` is height / width, ``value="random"`` standard normal noise. After
    normalisation, so 0 is the dataset mean."""

    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0):
        self.p = _check_probability(p)
        self.scale = _check_range(scale, "scale")
        self.ratio = _check_range(ratio, "ratio")
        if not 0.0 <= self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must lie in [0, 1], got {scale!r}")
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"value must be a number, a sequence or 'random', got {value!r}")
        elif isinstance(value, numbers.Number):
            value = float(value)
        elif isinstance(value, (list, tuple)):
            value = tuple(float(v) for v in value)
        else:
            raise TypeError(f"value must be a number, a sequence or 'random', got {type(value).__name__}")
        self.value = value

    @staticmethod
    def get_params(array, scale, ratio):
        """``(top, left, height, width)`` strictly inside the image, or ``None`` after ten tries."""
        image_height, image_width = array.shape[-2:]
        area = image_height * image_width
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            erase_area = area * random.uniform(scale[0], scale[1])
            aspect_ratio = math.exp(random.uniform(log_ratio[0], log_ratio[1]))
            height = int(round(math.sqrt(erase_area * aspect_ratio)))
            width = int(round(math.sqrt(erase_area / aspect_ratio)))
            if not (height < image_height and width < image_width):
                continue
            top = random.randint(0, image_height - height)
            left = random.randint(0, image_width - width)
            return top, left, height, width
        return None

    def __call__(self, array):
        if not random.random() < self.p:
            return array
        channels = array.shape[-3]
        if isinstance(self.value, tuple) and len(self.value) not in (1, channels):
            raise ValueError(
                f"value needs 1 or {channels} entries for this array, got {len(self.value)}"
            )
        box = self.get_params(array, self.scale, self.ratio)
        if box is None:
            return array
        top, left, height, width = box
        if self.value == "random":
            rng = np.random.default_rng(random.getrandbits(64))
            value = rng.standard_normal((channels, height, width), dtype=np.float32)
        else:
            value = self.value
        return F.erase(array, top, left, height, width, value)

    def __repr__(self):
        return (
            f"{type(self).__name__}(p={self.p}, scale={self.scale}, ratio={self.ratio}, "
            f"value={self.value!r})"
        )
