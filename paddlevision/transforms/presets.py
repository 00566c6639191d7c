"""Train and eval preprocessing of torchvision's classification reference recipe.

Both presets map a PIL RGB image to a float32 CHW numpy array. They live in the package
(not only in the repository's top-level ``presets.py``) so that deployment code can share
the exact evaluation preprocessing without importing paddle.
"""

from .autoaugment import AutoAugment
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
    "AUTO_AUGMENT_POLICIES",
    "ClassificationPresetTrain",
    "ClassificationPresetEval",
    "EVAL_CROP_SIZE",
    "EVAL_RESIZE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_CROP_SIZE",
]

# The recipe's image sizes for AlexNet (torchvision's AlexNet_Weights.IMAGENET1K_V1):
# the one place they are defined; the export metadata carries the eval sizes to deployment.
TRAIN_CROP_SIZE = 224
EVAL_RESIZE_SIZE = 256
EVAL_CROP_SIZE = 224

# ImageNet channel statistics (RGB, on the [0, 1] scale) used by torchvision's pretrained weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUTO_AUGMENT_POLICIES = ("imagenet",)


class ClassificationPresetTrain:
    """RandomResizedCrop -> RandomHorizontalFlip -> AutoAugment -> normalise -> RandomErasing.

    The flip, AutoAugment and erasing steps are left out when ``hflip_prob`` is 0,
    ``auto_augment_policy`` is None and ``random_erase_prob`` is 0 respectively.
    """

    def __init__(
        self,
        crop_size=TRAIN_CROP_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        hflip_prob=0.5,
        auto_augment_policy=None,
        random_erase_prob=0.0,
    ):
        steps = [RandomResizedCrop(crop_size, interpolation=interpolation)]
        if hflip_prob > 0:
            steps.append(RandomHorizontalFlip(hflip_prob))
        if auto_augment_policy is not None:
            if auto_augment_policy not in AUTO_AUGMENT_POLICIES:
                raise ValueError(
                    f"Unsupported auto_augment_policy {auto_augment_policy!r}; "
                    f"expected None or one of {AUTO_AUGMENT_POLICIES}"
                )
            # The reference recipe runs AutoAugment's geometric ops with the preset's
            # interpolation, not AutoAugment's own nearest default.
            steps.append(AutoAugment(auto_augment_policy, interpolation=interpolation))
        steps.append(ToNormalizedArray(mean, std))
        if random_erase_prob > 0:
            steps.append(RandomErasing(p=random_erase_prob))
        self.transforms = Compose(steps)

    def __call__(self, img):
        return self.transforms(img)

    def __repr__(self):
        return f"{type(self).__name__}({self.transforms!r})"


class ClassificationPresetEval:
    """Resize the shorter side to ``resize_size`` -> CenterCrop(``crop_size``) -> normalise."""

    def __init__(
        self,
        crop_size=EVAL_CROP_SIZE,
        resize_size=EVAL_RESIZE_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
    ):
        self.transforms = Compose(
            [
                Resize(resize_size, interpolation=interpolation),
                CenterCrop(crop_size),
                ToNormalizedArray(mean, std),
            ]
        )

    def __call__(self, img):
        return self.transforms(img)

    def __repr__(self):
        return f"{type(self).__name__}({self.transforms!r})"
