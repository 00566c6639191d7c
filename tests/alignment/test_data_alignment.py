"""Check the PIL + numpy transforms against torchvision, the reference implementation.

Randomness is taken out of the comparison: either both sides get the same explicit
parameters, or torchvision's ``get_params`` is replaced (on the instance) by the decisions
our transform drew from Python's ``random``. (test_sampling_alignment.py compares the
random draws themselves.) The normalisation constants, sizes and interpolation of the
reference side come from torchvision, never from the code under test: from the
preprocessing of torchvision's AlexNet weights (``AlexNet_Weights.IMAGENET1K_V1.transforms()``,
which needs no download) and from the defaults of torchvision's transforms.
"""

import io
import math
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torchvision", reason="torchvision is the reference for the alignment tests")

import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from torchvision.models import AlexNet_Weights  # noqa: E402
from torchvision.transforms import InterpolationMode  # noqa: E402

from conftest import make_image  # noqa: E402
from paddlevision.transforms import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    AutoAugment,
    ClassificationPresetEval,
    ClassificationPresetTrain,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ToNormalizedArray,
    functional as F,
    resized_crop,
)
from paddlevision.transforms.autoaugment import IMAGENET_POLICY, apply_op, magnitude_bins  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
# The preprocessing torchvision's AlexNet weights were trained and evaluated with.
REFERENCE_EVAL = AlexNet_Weights.IMAGENET1K_V1.transforms()
TOLERANCE = 1e-5
INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def bundled_images(limit=6):
    """A few real photographs shipped with the repository, if present."""
    images = [Image.open(path).convert("RGB") for path in sorted((REPO_ROOT / "images").glob("*.jpg"))]
    archive = REPO_ROOT / "test_images" / "lite_data.tar"
    if archive.exists():
        with tarfile.open(archive) as tar:
            members = sorted((m for m in tar.getmembers() if m.name.endswith(".jpg")), key=lambda m: m.name)
            for member in members[: max(0, limit - len(images))]:
                data = tar.extractfile(member).read()
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return images[:limit]


SYNTHETIC_SIZES = [(256, 256), (400, 300), (300, 400), (457, 123), (199, 500), (224, 224), (260, 256), (100, 80)]
IMAGES = [make_image(w, h, seed=i) for i, (w, h) in enumerate(SYNTHETIC_SIZES)] + bundled_images()
IMAGE_IDS = [f"{img.width}x{img.height}#{i}" for i, img in enumerate(IMAGES)]


def torch_normalize(img):
    to_tensor = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float32)])
    return T.Normalize(REFERENCE_EVAL.mean, REFERENCE_EVAL.std)(to_tensor(img)).numpy()


def ours_normalize(img):
    return ToNormalizedArray(IMAGENET_MEAN, IMAGENET_STD)(img)


def max_abs_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# --- Constants and defaults ------------------------------------------------------------------


def test_normalisation_and_sizes_are_those_of_torchvision_alexnet_weights():
    assert IMAGENET_MEAN == tuple(REFERENCE_EVAL.mean)
    assert IMAGENET_STD == tuple(REFERENCE_EVAL.std)
    resize, crop, normalize = ClassificationPresetEval().transforms.transforms
    assert resize.size == REFERENCE_EVAL.resize_size[0]
    assert crop.size == (REFERENCE_EVAL.crop_size[0],) * 2
    assert resize.interpolation == REFERENCE_EVAL.interpolation.value
    assert (normalize.mean, normalize.std) == (tuple(REFERENCE_EVAL.mean), tuple(REFERENCE_EVAL.std))
    train_normalize = ClassificationPresetTrain().transforms.transforms[-1]
    assert (train_normalize.mean, train_normalize.std) == (tuple(REFERENCE_EVAL.mean), tuple(REFERENCE_EVAL.std))


def test_transform_defaults_are_torchvision_defaults():
    # The train preset builds its steps from these defaults, as the reference recipe does
    # from torchvision's.
    crop, reference_crop = RandomResizedCrop(224), T.RandomResizedCrop(224)
    assert crop.scale == tuple(reference_crop.scale) and crop.ratio == tuple(reference_crop.ratio)
    assert crop.interpolation == reference_crop.interpolation.value
    assert RandomHorizontalFlip().p == T.RandomHorizontalFlip().p
    erasing, reference_erasing = RandomErasing(), T.RandomErasing()
    assert (erasing.p, erasing.scale, erasing.ratio, erasing.value) == (
        reference_erasing.p, tuple(reference_erasing.scale), tuple(reference_erasing.ratio), reference_erasing.value
    )
    augment, reference_augment = AutoAugment(), T.AutoAugment()
    assert augment.policy == reference_augment.policy.value
    assert (augment.interpolation, augment.fill) == (reference_augment.interpolation.value, reference_augment.fill)


class CountingCalls:
    """Wraps a function and counts its calls."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


def test_boxes_are_tried_as_often_as_torchvision_tries_them(monkeypatch):
    # With a scale that never fits, every try draws an area and a ratio and fails. Ours
    # draws with random.uniform, torchvision with torch.empty(1).uniform_.
    img = make_image(40, 30)
    ours_draws, reference_draws = CountingCalls(random.uniform), CountingCalls(torch.empty)
    monkeypatch.setattr(random, "uniform", ours_draws)
    monkeypatch.setattr(torch, "empty", reference_draws)
    RandomResizedCrop.get_params(img, (2.0, 3.0), (3 / 4, 4 / 3))
    T.RandomResizedCrop.get_params(img, [2.0, 3.0], [3 / 4, 4 / 3])
    assert ours_draws.calls == reference_draws.calls > 0
    ours_draws.calls = reference_draws.calls = 0
    # A box as large as the image is never erased.
    assert RandomErasing.get_params(np.zeros((3, 30, 40), np.float32), (1.0, 1.0), (1.0, 1.0)) is None
    T.RandomErasing.get_params(torch.zeros(3, 30, 40), (1.0, 1.0), (1.0, 1.0), [0.0])
    assert ours_draws.calls == reference_draws.calls > 0


# --- Evaluation preset -----------------------------------------------------------------------


@pytest.mark.parametrize("img", IMAGES, ids=IMAGE_IDS)
def test_eval_preset_matches_torchvision(img):
    # What train.py and the deployment code run, against torchvision's own preprocessing
    # of its AlexNet weights (resize 256 bilinear, centre crop 224, ImageNet mean and std).
    reference = REFERENCE_EVAL(img).numpy()
    ours = ClassificationPresetEval()(img)
    assert ours.dtype == np.float32
    assert max_abs_diff(ours, reference) <= TOLERANCE


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
@pytest.mark.parametrize("crop_size, resize_size", [(224, 256), (160, 160), (300, 232)])
def test_eval_preset_options_match_torchvision(interpolation, crop_size, resize_size):
    # crop_size > resize_size exercises the zero padding of CenterCrop.
    reference = T.Compose(
        [
            T.Resize(resize_size, interpolation=INTERPOLATIONS[interpolation]),
            T.CenterCrop(crop_size),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float32),
            T.Normalize(REFERENCE_EVAL.mean, REFERENCE_EVAL.std),
        ]
    )
    preset = ClassificationPresetEval(crop_size, resize_size, interpolation=interpolation)
    for img in IMAGES[:5]:
        assert max_abs_diff(preset(img), reference(img).numpy()) <= TOLERANCE


@pytest.mark.parametrize("crop", [(224, 224), (10, 300), (300, 10), (501, 77), (91, 91)])
def test_center_crop_matches_torchvision(crop):
    for img in IMAGES[:4]:
        np.testing.assert_array_equal(np.asarray(F.center_crop(img, crop)), np.asarray(TF.center_crop(img, list(crop))))


# --- RandomResizedCrop and flip --------------------------------------------------------------


@pytest.mark.parametrize("img", IMAGES[:4] + IMAGES[-2:], ids=IMAGE_IDS[:4] + IMAGE_IDS[-2:])
def test_resized_crop_with_fixed_params_matches_torchvision(img):
    random.seed(0)
    boxes = [RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(5)]
    boxes += [(0, 0, img.height, img.width), (img.height - 7, img.width - 5, 7, 5)]
    for top, left, height, width in boxes:
        for interpolation in ("bilinear", "bicubic"):
            reference = TF.resized_crop(img, top, left, height, width, [224, 224], INTERPOLATIONS[interpolation])
            ours = resized_crop(img, top, left, height, width, (224, 224), interpolation)
            assert max_abs_diff(ours_normalize(ours), torch_normalize(reference)) <= TOLERANCE


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_random_resized_crop_transform_matches_torchvision_given_same_box(interpolation):
    img = IMAGES[1]
    ours = RandomResizedCrop(176, interpolation=interpolation)
    reference = T.RandomResizedCrop(176, interpolation=INTERPOLATIONS[interpolation])
    for seed in range(10):
        random.seed(seed)
        box = RandomResizedCrop.get_params(img, ours.scale, ours.ratio)
        random.seed(seed)
        ours_out = ours(img)
        reference.get_params = lambda *args, box=box: box
        np.testing.assert_array_equal(np.asarray(ours_out), np.asarray(reference(img)))


@pytest.mark.parametrize("size", [(1000, 10), (10, 1000), (50, 40), (333, 250)])
def test_random_resized_crop_fallback_matches_torchvision(size):
    # A scale above 1 never fits, so both sides take the deterministic central fallback.
    img = make_image(*size)
    scale, ratio = (2.0, 3.0), (3 / 4, 4 / 3)
    assert RandomResizedCrop.get_params(img, scale, ratio) == tuple(T.RandomResizedCrop.get_params(img, scale, ratio))


def test_horizontal_flip_matches_torchvision():
    for img in IMAGES:
        np.testing.assert_array_equal(np.asarray(RandomHorizontalFlip(p=1.0)(img)), np.asarray(TF.hflip(img)))


# --- AutoAugment -----------------------------------------------------------------------------


def test_policy_table_matches_torchvision():
    reference = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET).policies
    assert [tuple(sub_policy) for sub_policy in reference] == list(IMAGENET_POLICY)


@pytest.mark.parametrize("image_size", [(224, 224), (97, 153), (331, 500)])
def test_magnitude_bins_match_torchvision(image_size):
    # _augmentation_space is private, but it is the only place the bins are defined.
    reference = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)._augmentation_space(10, image_size)
    ours = magnitude_bins(10, image_size)
    assert set(ours) == set(reference)
    for op_name, (magnitudes, signed) in reference.items():
        assert ours[op_name] == (np.atleast_1d(magnitudes.numpy()).tolist(), signed), op_name


def torchvision_op(img, op_name, magnitude, interpolation):
    """The documented meaning of each AutoAugment op, through torchvision's public functional API."""
    mode = INTERPOLATIONS[interpolation]
    if op_name in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(magnitude))
        shear = [angle, 0.0] if op_name == "ShearX" else [0.0, angle]
        return TF.affine(img, 0.0, [0, 0], 1.0, shear, interpolation=mode, center=[0, 0])
    if op_name in ("TranslateX", "TranslateY"):
        offset = [int(magnitude), 0] if op_name == "TranslateX" else [0, int(magnitude)]
        return TF.affine(img, 0.0, offset, 1.0, [0.0, 0.0], interpolation=mode)
    if op_name == "Rotate":
        return TF.rotate(img, magnitude, interpolation=mode)
    enhancements = {
        "Brightness": TF.adjust_brightness,
        "Color": TF.adjust_saturation,
        "Contrast": TF.adjust_contrast,
        "Sharpness": TF.adjust_sharpness,
    }
    if op_name in enhancements:
        return enhancements[op_name](img, 1.0 + magnitude)
    if op_name == "Posterize":
        return TF.posterize(img, int(magnitude))
    if op_name == "Solarize":
        return TF.solarize(img, magnitude)
    return {"AutoContrast": TF.autocontrast, "Equalize": TF.equalize, "Invert": TF.invert}[op_name](img)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("op_name", sorted(magnitude_bins(10, (1, 1))))
def test_each_op_matches_torchvision(op_name, interpolation):
    img = IMAGES[-1] if len(IMAGES) > len(SYNTHETIC_SIZES) else IMAGES[1]
    magnitudes, signed = magnitude_bins(10, (img.height, img.width))[op_name]
    for magnitude in magnitudes:
        for sign in (1.0, -1.0) if signed else (1.0,):
            ours = apply_op(img, op_name, sign * magnitude, interpolation)
            reference = torchvision_op(img, op_name, sign * magnitude, interpolation)
            message = f"{op_name} at {sign * magnitude}"
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference), err_msg=message)


@pytest.mark.parametrize("interpolation, fill", [("nearest", None), ("bilinear", None), ("bilinear", [7, 8, 9])])
def test_autoaugment_matches_torchvision_given_same_decisions(interpolation, fill):
    img = IMAGES[2]
    ours = AutoAugment("imagenet", interpolation=interpolation, fill=fill)
    reference = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=INTERPOLATIONS[interpolation], fill=fill)
    for seed in range(60):
        random.seed(seed)
        policy_id, probs, signs = AutoAugment.get_params(len(IMAGENET_POLICY))
        random.seed(seed)
        ours_out = ours(img)
        decisions = (policy_id, torch.tensor(probs), torch.tensor(signs))
        reference.get_params = lambda n, decisions=decisions: decisions
        np.testing.assert_array_equal(np.asarray(ours_out), np.asarray(reference(img)), err_msg=f"seed {seed}")


# --- RandomErasing ---------------------------------------------------------------------------


def test_erase_with_fixed_box_matches_torchvision():
    array = ours_normalize(IMAGES[0])
    tensor = torch.from_numpy(array.copy())
    for top, left, height, width in [(0, 0, 10, 20), (100, 37, 50, 3), (200, 200, 56, 56)]:
        for value in (0.0, (1.0, -2.0, 0.5)):
            fill = torch.tensor(value, dtype=torch.float32).reshape(-1, 1, 1)
            reference = TF.erase(tensor, top, left, height, width, fill).numpy()
            np.testing.assert_array_equal(F.erase(array, top, left, height, width, value), reference)


def erased_fraction(out, array, value):
    """Check one erasing output and return the fraction of pixels it changed."""
    assert out.shape == array.shape and out.dtype == np.float32
    erased = np.any(out != array, axis=0)
    if value == 0:
        assert np.all(out[:, erased] == 0)
    else:
        # Standard normal noise: finite and, over a whole box, centred with unit spread.
        noise = out[:, erased]
        assert np.isfinite(noise).all() and abs(noise.mean()) < 0.3 and 0.7 < noise.std() < 1.3
    return erased.mean()


@pytest.mark.parametrize("value", [0, "random"])
def test_random_erasing_shape_and_values_like_torchvision(value):
    array = ours_normalize(IMAGES[0])
    ours, reference = RandomErasing(p=1.0, value=value), T.RandomErasing(p=1.0, value=value)
    random.seed(0)
    torch.manual_seed(0)
    ours_areas = [erased_fraction(ours(array), array, value) for _ in range(40)]
    reference_areas = [
        erased_fraction(reference(torch.from_numpy(array)).numpy(), array, value) for _ in range(40)
    ]
    # Both erase boxes of 2%-33% of the image; their mean areas agree within sampling noise.
    assert 0.015 <= min(ours_areas) and max(ours_areas) <= 0.34
    assert 0.015 <= min(reference_areas) and max(reference_areas) <= 0.34
    assert abs(np.mean(ours_areas) - np.mean(reference_areas)) < 0.05
