"""AutoAugment (Cubuk et al., 2019) with the ImageNet policy, on PIL images.

The policy table, magnitude bins and op definitions follow torchvision's
``AutoAugment(AutoAugmentPolicy.IMAGENET)`` so that a recipe trained with
``--auto-augment imagenet`` sees the same augmentations.
"""

import math
import random

import numpy as np

from . import functional as F

__all__ = ["AutoAugment", "IMAGENET_POLICY", "apply_op", "magnitude_bins"]

# 25 sub-policies; each is two (op name, probability, magnitude bin or None) steps.
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

_POLICIES = {"imagenet": IMAGENET_POLICY}


def _linspace(start, stop, num):
    """``num`` evenly spaced float32 values from ``start`` to ``stop``, as Python floats.

    torchvision's bins come from a float32 ``torch.linspace``, which steps forward from
    ``start`` for the first half and backward from ``stop`` for the second, each value
    rounded to float32 once (a fused multiply-add). Doing the same keeps the magnitudes
    bit-identical to torchvision's instead of 1 ulp away.
    """
    start, stop = float(np.float32(start)), float(np.float32(stop))
    step = float((np.float32(stop) - np.float32(start)) / np.float32(num - 1))
    values = []
    for i in range(num):
        # Evaluated in float64 (exact here), then rounded to float32 once.
        value = start + step * i if i < num // 2 else stop - step * (num - 1 - i)
        values.append(float(np.float32(value)))
    return values


def magnitude_bins(num_bins, image_size):
    """Op name -> ``(magnitudes, signed)``; translations reach 150/331 of the side (the
    paper's 150 pixels on 331-pixel images)."""
    height, width = image_size
    return {
        "ShearX": (_linspace(0.0, 0.3, num_bins), True),
        "ShearY": (_linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (_linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (_linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (_linspace(0.0, 30.0, num_bins), True),
        "Brightness": (_linspace(0.0, 0.9, num_bins), True),
        "Color": (_linspace(0.0, 0.9, num_bins), True),
        "Contrast": (_linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (_linspace(0.0, 0.9, num_bins), True),
        "Posterize": ([8 - round(i / ((num_bins - 1) / 4)) for i in range(num_bins)], False),
        "Solarize": (_linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": ([0.0], False),
        "Equalize": ([0.0], False),
        "Invert": ([0.0], False),
    }


def apply_op(img, op_name, magnitude, interpolation="nearest", fill=None):
    if op_name == "ShearX":
        # The magnitude is a shear factor; the affine op takes the equivalent angle.
        return F.shear_x(img, math.degrees(math.atan(magnitude)), interpolation, fill)
    if op_name == "ShearY":
        return F.shear_y(img, math.degrees(math.atan(magnitude)), interpolation, fill)
    if op_name == "TranslateX":
        return F.translate(img, int(magnitude), 0, interpolation, fill)
    if op_name == "TranslateY":
        return F.translate(img, 0, int(magnitude), interpolation, fill)
    if op_name == "Rotate":
        return F.rotate(img, magnitude, interpolation, fill)
    # Enhancement magnitudes are offsets from the identity factor 1.
    if op_name == "Brightness":
        return F.adjust_brightness(img, 1.0 + magnitude)
    if op_name == "Color":
        return F.adjust_saturation(img, 1.0 + magnitude)
    if op_name == "Contrast":
        return F.adjust_contrast(img, 1.0 + magnitude)
    if op_name == "Sharpness":
        return F.adjust_sharpness(img, 1.0 + magnitude)
    if op_name == "Posterize":
        return F.posterize(img, int(magnitude))
    if op_name == "Solarize":
        return F.solarize(img, magnitude)
    if op_name == "AutoContrast":
        return F.autocontrast(img)
    if op_name == "Equalize":
        return F.equalize(img)
    if op_name == "Invert":
        return F.invert(img)
    raise ValueError(f"Unknown op_name {op_name!r}")


class AutoAugment:
    """One random sub-policy: each of its two ops with its own probability, signed ops
    with a random sign."""

    num_bins = 10

    def __init__(self, policy="imagenet", interpolation="nearest", fill=None):
        if policy not in _POLICIES:
            raise ValueError(f"Unknown policy {policy!r}; expected one of {sorted(_POLICIES)}")
        F.pil_interpolation(interpolation)
        self.policy = policy
        self.policies = _POLICIES[policy]
        self.interpolation = interpolation
        self.fill = fill

    @staticmethod
    def get_params(num_policies):
        policy_id = random.randrange(num_policies)
        probs = [random.random(), random.random()]
        signs = [random.getrandbits(1), random.getrandbits(1)]
        return policy_id, probs, signs

    def __call__(self, img):
        policy_id, probs, signs = self.get_params(len(self.policies))
        bins = magnitude_bins(self.num_bins, (img.height, img.width))
        for (op_name, p, magnitude_id), prob, sign in zip(self.policies[policy_id], probs, signs):
            if prob > p:
                continue
            magnitudes, signed = bins[op_name]
            magnitude = float(magnitudes[magnitude_id]) if magnitude_id is not None else 0.0
            if signed and sign == 0:
                magnitude = -magnitude
            img = apply_op(img, op_name, magnitude, self.interpolation, self.fill)
        return img

    def __repr__(self):
        return (
            f"{type(self).__name__}(policy={self.policy!r}, interpolation={self.interpolation!r}, "
            f"fill={self.fill!r})"
        )
