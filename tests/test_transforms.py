import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from conftest import make_image

from paddlevision.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AutoAugment,
    CenterCrop,
    ClassificationPresetEval,
    ClassificationPresetTrain,
    Compose,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToNormalizedArray,
    resized_crop,
)
from paddlevision.transforms import functional as F
from paddlevision.transforms.autoaugment import IMAGENET_POLICY, apply_op, magnitude_bins

REPO_ROOT = Path(__file__).resolve().parents[1]


def pixels(img):
    return np.asarray(img)


# --- Compose / Resize / CenterCrop -----------------------------------------------------------


def test_compose_applies_in_order():
    assert Compose([lambda x: x + 1, lambda x: x * 2])(3) == 8


@pytest.mark.parametrize(
    "width, height, expected",
    [
        (400, 300, (341, 256)),  # int(256 * 400 / 300) = 341, truncated not rounded
        (300, 400, (256, 341)),
        (457, 123, (951, 256)),
        (256, 256, (256, 256)),
        (199, 500, (256, 643)),
    ],
)
def test_resize_int_sets_shorter_side(width, height, expected):
    out = Resize(256)(make_image(width, height))
    assert out.size == expected
    assert out.mode == "RGB"


def test_resize_sequence_is_exact_height_width():
    assert Resize((100, 50))(make_image(300, 200)).size == (50, 100)


def test_resize_same_size_returns_input():
    img = make_image(300, 256)
    assert Resize(256)(img) is img


def test_center_crop_offsets_round_half_to_even():
    img = make_image(101, 64)
    out = CenterCrop((60, 50))(img)
    # (64 - 60) / 2 = 2; (101 - 50) / 2 = 25.5 rounds to 26 (round half to even).
    np.testing.assert_array_equal(pixels(out), pixels(img)[2:62, 26:76])
    img = make_image(103, 64)
    out = CenterCrop((64, 50))(img)
    # (103 - 50) / 2 = 26.5 rounds to 26.
    np.testing.assert_array_equal(pixels(out), pixels(img)[:, 26:76])


@pytest.mark.parametrize("bad", ["224", (1, 2, 3), 22.4])
def test_bad_crop_size_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="^size must be"):
        CenterCrop(bad)
    with pytest.raises(ValueError, match="^size must be"):
        F.center_crop(make_image(8, 8), bad)


def test_center_crop_pads_with_zeros_when_image_is_smaller():
    img = make_image(10, 7)
    out = CenterCrop((12, 15))(img)
    assert out.size == (15, 12)
    arr = pixels(out)
    # Padding (15 - 10) // 2 = 2 on the left, 3 on the right; (12 - 7) // 2 = 2 on top, 3 below.
    np.testing.assert_array_equal(arr[2:9, 2:12], pixels(img))
    assert arr[:2].max() == 0 and arr[9:].max() == 0
    assert arr[:, :2].max() == 0 and arr[:, 12:].max() == 0


def test_center_crop_pads_one_dimension_and_crops_the_other():
    img = make_image(40, 7)
    out = pixels(CenterCrop((10, 20))(img))
    np.testing.assert_array_equal(out[1:8], pixels(img)[:, 10:30])
    assert out[0].max() == 0 and out[8:].max() == 0


@pytest.mark.parametrize("bad", ["cubic", "BILINEAR", None, 2])
def test_unknown_interpolation_is_a_value_error(bad):
    for make in (lambda: Resize(10, interpolation=bad), lambda: RandomResizedCrop(10, interpolation=bad)):
        with pytest.raises(ValueError, match="interpolation"):
            make()


# --- RandomResizedCrop -----------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(300, 200), (200, 300), (64, 64), (500, 120)])
def test_random_resized_crop_params_stay_in_bounds(width, height):
    img = make_image(width, height)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    random.seed(0)
    for _ in range(2000):
        top, left, h, w = RandomResizedCrop.get_params(img, scale, ratio)
        assert 0 <= top and 0 <= left and 0 < h and 0 < w
        assert top + h <= height and left + w <= width
        # Rounding to whole pixels can move area and ratio slightly past the bounds.
        assert scale[0] * 0.9 <= h * w / (width * height) <= scale[1]
        slack = 1 / min(h, w) + 1e-9
        assert ratio[0] * (1 - slack) <= w / h <= ratio[1] * (1 + slack)


@pytest.mark.parametrize(
    "width, height, expected",
    [
        (1000, 10, (0, 493, 10, 13)),  # too wide: full height, width = round(10 * 4/3)
        (10, 1000, (493, 0, 13, 10)),  # too tall: full width, height = round(10 / (3/4))
        (50, 40, (0, 0, 40, 50)),  # ratio 1.25 is allowed: the whole image
    ],
)
def test_random_resized_crop_fallback_is_central(width, height, expected):
    img = make_image(width, height)
    # A scale above 1 can never fit, forcing the fallback after ten attempts.
    random.seed(0)
    assert RandomResizedCrop.get_params(img, (2.0, 3.0), (3 / 4, 4 / 3)) == expected


def test_random_resized_crop_output_and_resized_crop_function():
    img = make_image(300, 200)
    out = RandomResizedCrop(224)(img)
    assert out.size == (224, 224) and out.mode == "RGB"
    assert RandomResizedCrop((100, 50))(img).size == (50, 100)
    patch = resized_crop(img, 10, 20, 100, 100, (100, 100))
    np.testing.assert_array_equal(pixels(patch), pixels(img)[10:110, 20:120])
    assert resized_crop(img, 10, 20, 100, 150, (32, 64)).size == (64, 32)


def test_random_resized_crop_rejects_reversed_ranges():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(10, scale=(1.0, 0.5))
    with pytest.raises(ValueError, match="ratio"):
        RandomResizedCrop(10, ratio=(2.0, 1.0))


# --- RandomHorizontalFlip --------------------------------------------------------------------


def test_horizontal_flip_probabilities():
    img = make_image(31, 17)
    for _ in range(20):
        assert RandomHorizontalFlip(p=0.0)(img) is img
        np.testing.assert_array_equal(pixels(RandomHorizontalFlip(p=1.0)(img)), pixels(img)[:, ::-1])
    random.seed(0)
    flips = sum(RandomHorizontalFlip(0.5)(img) is not img for _ in range(1000))
    assert 400 < flips < 600
    with pytest.raises(ValueError, match="p"):
        RandomHorizontalFlip(1.5)


# --- ToNormalizedArray -----------------------------------------------------------------------


def test_to_normalized_array_values_shape_dtype():
    img = make_image(20, 10)
    out = ToNormalizedArray(IMAGENET_MEAN, IMAGENET_STD)(img)
    assert out.shape == (3, 10, 20) and out.dtype == np.float32
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    expected = (pixels(img).transpose(2, 0, 1).astype(np.float32) / np.float32(255) - mean) / std
    np.testing.assert_array_equal(out, expected)


def test_to_normalized_array_grayscale_and_errors():
    gray = make_image(8, 6).convert("L")
    out = ToNormalizedArray((0.5,), (0.5,))(gray)
    assert out.shape == (1, 6, 8)
    assert out.min() >= -1.0 and out.max() <= 1.0
    with pytest.raises(ValueError, match="channel"):
        ToNormalizedArray(IMAGENET_MEAN, IMAGENET_STD)(gray)
    with pytest.raises(ValueError, match="std"):
        ToNormalizedArray((0.5,), (0.0,))


# --- RandomErasing ---------------------------------------------------------------------------


def normalized_array(width=64, height=48, seed=0):
    return ToNormalizedArray(IMAGENET_MEAN, IMAGENET_STD)(make_image(width, height, seed))


def changed_box(before, after):
    changed = np.any(before != after, axis=0)
    rows, cols = np.nonzero(changed)
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1, changed


def test_random_erasing_p0_is_identity_and_p1_erases_a_box():
    array = normalized_array()
    assert RandomErasing(p=0.0)(array) is array
    random.seed(0)
    for _ in range(50):
        out = RandomErasing(p=1.0, value=0)(array)
        assert out.shape == array.shape and out.dtype == np.float32
        top, left, bottom, right, changed = changed_box(array, out)
        assert changed.sum() == (bottom - top) * (right - left)  # a solid rectangle
        area = changed.sum() / changed.size
        assert 0.01 <= area <= 0.34
        assert np.all(out[:, top:bottom, left:right] == 0)
    # The input is never modified in place.
    np.testing.assert_array_equal(array, normalized_array())


def test_random_erasing_per_channel_value():
    array = normalized_array()
    random.seed(1)
    out = RandomErasing(p=1.0, value=(1.0, 2.0, 3.0))(array)
    top, left, bottom, right, _ = changed_box(array, out)
    for channel, value in enumerate((1.0, 2.0, 3.0)):
        assert np.all(out[channel, top:bottom, left:right] == value)
    with pytest.raises(ValueError, match="value"):
        RandomErasing(p=1.0, value=(1.0, 2.0))(array)
    with pytest.raises(ValueError, match="value"):
        RandomErasing(value="noise")


def test_random_erasing_random_value_is_standard_normal():
    array = np.full((3, 200, 200), 100.0, np.float32)  # far from any noise sample
    random.seed(2)
    samples = []
    for _ in range(20):
        out = RandomErasing(p=1.0, scale=(0.2, 0.33), value="random")(array)
        samples.append(out[out != 100.0])
    noise = np.concatenate(samples)
    assert noise.size > 20 * 3 * 0.15 * 200 * 200
    assert abs(noise.mean()) < 0.02
    assert abs(noise.std() - 1.0) < 0.02


def test_random_erasing_rejects_bad_arguments_naming_them():
    for bad, message in [({"scale": (0.3, 0.1)}, "^scale must be"), ({"ratio": (3.0, 0.3)}, "^ratio must be"),
                         ({"scale": (0.1, 1.5)}, r"^scale must lie in \[0, 1\]"), ({"scale": (-0.1, 0.5)}, "^scale must lie"),
                         ({"p": 1.5}, "^p must be")]:
        with pytest.raises(ValueError, match=message):
            RandomErasing(**bad)
    with pytest.raises(TypeError, match="got dict"):
        RandomErasing(value={})
    assert RandomErasing(scale=(0.0, 1.0)).scale == (0.0, 1.0)  # torchvision accepts the closed interval


def test_random_erasing_gives_up_when_no_box_fits():
    array = normalized_array(4, 4)
    random.seed(0)
    # Any box covering the whole image is rejected (it must be strictly smaller).
    assert RandomErasing(p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))(array) is array


# --- AutoAugment -----------------------------------------------------------------------------


def test_autoaugment_policy_table_shape():
    assert len(IMAGENET_POLICY) == 25
    bins = magnitude_bins(10, (224, 224))
    for sub_policy in IMAGENET_POLICY:
        assert len(sub_policy) == 2
        for op_name, probability, magnitude_id in sub_policy:
            assert op_name in bins and 0.0 <= probability <= 1.0
            assert magnitude_id is None or 0 <= magnitude_id < 10


def test_autoaugment_magnitude_bins():
    bins = magnitude_bins(10, (331, 662))
    assert bins["Posterize"] == ([8, 8, 7, 7, 6, 6, 5, 5, 4, 4], False)
    assert bins["Rotate"][0][0] == 0.0 and bins["Rotate"][0][-1] == 30.0 and bins["Rotate"][1]
    assert bins["Solarize"][0][0] == 255.0 and bins["Solarize"][0][-1] == 0.0
    assert bins["TranslateX"][0][-1] == pytest.approx(300.0)
    assert bins["TranslateY"][0][-1] == pytest.approx(150.0)


@pytest.mark.parametrize("size", [(224, 224), (97, 153), (300, 41)])
def test_autoaugment_preserves_size_and_mode(size):
    img = make_image(*size)
    transform = AutoAugment("imagenet")
    changed = 0
    for seed in range(150):
        random.seed(seed)
        out = transform(img)
        assert out.size == img.size and out.mode == "RGB"
        changed += not np.array_equal(pixels(out), pixels(img))
    assert changed > 100


def test_every_op_preserves_size_and_mode():
    img = make_image(60, 40)
    for op_name, (magnitudes, signed) in magnitude_bins(10, (40, 60)).items():
        for magnitude in magnitudes[:: max(1, len(magnitudes) // 3)]:
            for sign in (1, -1) if signed else (1,):
                out = apply_op(img, op_name, sign * magnitude)
                assert out.size == img.size and out.mode == "RGB", op_name


def test_translate_and_shear_move_pixels_as_documented():
    img = make_image(30, 20)
    moved = pixels(apply_op(img, "TranslateX", 5.0))
    np.testing.assert_array_equal(moved[:, 5:], pixels(img)[:, :-5])
    assert moved[:, :5].max() == 0
    moved = pixels(apply_op(img, "TranslateY", -3.0))
    np.testing.assert_array_equal(moved[:-3], pixels(img)[3:])
    sheared = pixels(apply_op(img, "ShearX", 0.3))
    np.testing.assert_array_equal(sheared[0], pixels(img)[0])  # the top row is the fixed axis


@pytest.mark.parametrize("op_name, magnitude", [("ShearX", 0.3), ("ShearY", -0.3), ("TranslateX", 9.0),
                                                ("TranslateY", -7.0), ("Rotate", 30.0)])
def test_geometric_ops_fill_uncovered_pixels_with_fill(op_name, magnitude):
    img = make_image(30, 20)
    default = pixels(apply_op(img, op_name, magnitude))
    filled = pixels(apply_op(img, op_name, magnitude, fill=(7, 8, 9)))
    uncovered = np.any(default != filled, axis=-1)
    assert uncovered.sum() >= 20
    assert np.all(default[uncovered] == 0) and np.all(filled[uncovered] == (7, 8, 9))


@pytest.mark.parametrize(
    "mode, fill, expected",
    [("RGB", 7, (7, 7, 7)), ("RGB", [7], (7, 7, 7)), ("RGB", (7.9, 8, 9), (7, 8, 9)), ("L", 7, 7), ("L", (7,), 7),
     ("F", 7.5, 7.5)],
)
def test_fill_forms_like_torchvision(mode, fill, expected):
    # A scalar or one value is repeated per band; values are truncated to int except on
    # float images.
    shifted = F.translate(make_image(30, 20).convert(mode), 5, 0, fill=fill)
    assert shifted.getpixel((0, 0)) == expected
    with pytest.raises(ValueError, match="fill needs 1 or 3 values"):
        F.translate(make_image(30, 20), 5, 0, fill=(1, 2))


def test_geometric_ops_default_to_nearest_and_no_fill():
    # torchvision's affine and rotate defaults.
    img = make_image(30, 20)
    for op, args in [(F.shear_x, (20.0,)), (F.shear_y, (20.0,)), (F.translate, (3, -2)), (F.rotate, (25.0,))]:
        np.testing.assert_array_equal(pixels(op(img, *args)), pixels(op(img, *args, "nearest", None)), err_msg=op.__name__)


def test_autoaugment_unknown_policy_and_op():
    with pytest.raises(ValueError, match="policy"):
        AutoAugment("cifar10")
    with pytest.raises(ValueError, match="op_name"):
        apply_op(make_image(8, 8), "Blur", 1.0)


# --- Presets ---------------------------------------------------------------------------------


def test_eval_preset_shape_and_determinism():
    preset = ClassificationPresetEval()
    for size in [(500, 375), (375, 500), (224, 224), (100, 80)]:
        out = preset(make_image(*size))
        assert out.shape == (3, 224, 224) and out.dtype == np.float32
    img = make_image(333, 250)
    np.testing.assert_array_equal(preset(img), preset(img))
    assert ClassificationPresetEval(crop_size=128, resize_size=160)(img).shape == (3, 128, 128)


def test_train_preset_steps_follow_the_arguments():
    names = lambda preset: [type(t).__name__ for t in preset.transforms.transforms]  # noqa: E731
    assert names(ClassificationPresetTrain()) == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ToNormalizedArray",
    ]
    full = ClassificationPresetTrain(hflip_prob=0.0, auto_augment_policy="imagenet", random_erase_prob=0.25)
    assert names(full) == ["RandomResizedCrop", "AutoAugment", "ToNormalizedArray", "RandomErasing"]
    # The recipe hands its interpolation to AutoAugment.
    assert full.transforms.transforms[1].interpolation == "bilinear"
    with pytest.raises(ValueError, match="auto_augment_policy"):
        ClassificationPresetTrain(auto_augment_policy="ra")


def test_preset_interpolation_reaches_every_resampling_step():
    train = ClassificationPresetTrain(interpolation="bicubic", auto_augment_policy="imagenet")
    crop, _, augment, _ = train.transforms.transforms
    assert crop.interpolation == augment.interpolation == "bicubic"
    resize = ClassificationPresetEval(interpolation="bicubic").transforms.transforms[0]
    assert resize.interpolation == "bicubic"


def test_train_preset_output():
    preset = ClassificationPresetTrain(crop_size=96, auto_augment_policy="imagenet", random_erase_prob=0.5)
    img = make_image(200, 150)
    for seed in range(10):
        random.seed(seed)
        out = preset(img)
        assert out.shape == (3, 96, 96) and out.dtype == np.float32
        assert np.isfinite(out).all()


def seeded_outputs(transform, inputs, seed):
    random.seed(seed)
    return [transform(x) for x in inputs]


@pytest.mark.parametrize(
    "transform, make_input",
    [
        (RandomResizedCrop(64), lambda s: make_image(120, 90, s)),
        (RandomHorizontalFlip(), lambda s: make_image(40, 30, s)),
        (AutoAugment(), lambda s: make_image(64, 48, s)),
        (RandomErasing(p=0.7, value="random"), lambda s: normalized_array(40, 30, s)),
        (
            ClassificationPresetTrain(crop_size=64, auto_augment_policy="imagenet", random_erase_prob=0.5),
            lambda s: make_image(120, 90, s),
        ),
    ],
    ids=["rrc", "flip", "autoaugment", "erasing", "train_preset"],
)
def test_seeding_random_makes_transforms_reproducible(transform, make_input):
    inputs = [make_input(s) for s in range(8)]
    first = seeded_outputs(transform, inputs, seed=123)
    again = seeded_outputs(transform, inputs, seed=123)
    other = seeded_outputs(transform, inputs, seed=456)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(c)) for a, c in zip(first, other))


def test_root_presets_module_reexports():
    code = (
        "import presets, paddlevision.transforms.presets as p;"
        "assert presets.ClassificationPresetTrain is p.ClassificationPresetTrain;"
        "assert presets.ClassificationPresetEval is p.ClassificationPresetEval"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_import_does_not_import_paddle():
    code = (
        "import sys, paddlevision.transforms, paddlevision.transforms.presets;"
        "assert 'paddle' not in sys.modules, sorted(m for m in sys.modules if 'paddle' in m)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_random_draws_use_python_random_only():
    # Draws from numpy's global generator must not influence the transforms.
    img = make_image(80, 60)
    transform = ClassificationPresetTrain(crop_size=48, auto_augment_policy="imagenet", random_erase_prob=1.0)
    random.seed(7)
    np.random.seed(0)
    first = transform(img)
    random.seed(7)
    np.random.seed(1)
    np.testing.assert_array_equal(first, transform(img))


# --- Published constants (guarded without torch too; tests/alignment derives them from torchvision) ---

# torchvision's AlexNet weights (AlexNet_Weights.IMAGENET1K_V1.transforms()) and its
# references/classification/presets.py: ImageNet mean and std in RGB order on the [0, 1]
# scale, shorter side resized to 256 with bilinear interpolation, centre crop 224.
PUBLISHED_MEAN = (0.485, 0.456, 0.406)
PUBLISHED_STD = (0.229, 0.224, 0.225)


def test_presets_are_built_with_the_published_constants():
    assert IMAGENET_MEAN == PUBLISHED_MEAN and IMAGENET_STD == PUBLISHED_STD
    resize, crop, normalize = ClassificationPresetEval().transforms.transforms
    assert (resize.size, resize.interpolation, crop.size) == (256, "bilinear", (224, 224))
    assert (normalize.mean, normalize.std) == (PUBLISHED_MEAN, PUBLISHED_STD)

    preset = ClassificationPresetTrain(auto_augment_policy="imagenet", random_erase_prob=0.25)
    crop, flip, augment, normalize, erasing = preset.transforms.transforms
    # Inception-style crops: 8%-100% of the area, aspect ratio 3/4-4/3 (torchvision's defaults).
    assert (crop.size, crop.scale, crop.ratio, crop.interpolation) == ((224, 224), (0.08, 1.0), (3 / 4, 4 / 3), "bilinear")
    assert flip.p == 0.5
    assert (augment.policy, augment.interpolation, augment.fill, augment.num_bins) == ("imagenet", "bilinear", None, 10)
    assert (normalize.mean, normalize.std) == (PUBLISHED_MEAN, PUBLISHED_STD)
    # Random erasing (Zhong et al., 2017) as torchvision: 2%-33% of the area, ratio 0.3-3.3, zeros.
    assert (erasing.p, erasing.scale, erasing.ratio, erasing.value) == (0.25, (0.02, 0.33), (0.3, 3.3), 0.0)


def test_transform_defaults_are_the_published_ones():
    crop = RandomResizedCrop(224)
    assert (crop.scale, crop.ratio, crop.interpolation) == ((0.08, 1.0), (3 / 4, 4 / 3), "bilinear")
    assert RandomHorizontalFlip().p == 0.5
    erasing = RandomErasing()
    assert (erasing.p, erasing.scale, erasing.ratio, erasing.value) == (0.5, (0.02, 0.33), (0.3, 3.3), 0.0)
    augment = AutoAugment()
    assert (augment.policy, augment.interpolation, augment.fill) == ("imagenet", "nearest", None)


def test_autoaugment_magnitude_bins_are_the_published_ones():
    # Ten bins from 0 to the paper's maximum: shear 0.3, rotation 30 degrees, enhancement
    # factors 1 +- 0.9, solarize threshold 255 down to 0, posterize 8 down to 4 bits.
    bins = magnitude_bins(10, (331, 331))
    for op_name, top, signed in [("ShearX", 0.3, True), ("ShearY", 0.3, True), ("Rotate", 30.0, True),
                                 ("Brightness", 0.9, True), ("Color", 0.9, True), ("Contrast", 0.9, True),
                                 ("Sharpness", 0.9, True), ("TranslateX", 150.0, True), ("TranslateY", 150.0, True)]:
        magnitudes, is_signed = bins[op_name]
        assert magnitudes == pytest.approx([top * i / 9 for i in range(10)], rel=1e-6), op_name
        assert is_signed == signed
    assert bins["Solarize"] == (pytest.approx([255.0 * (9 - i) / 9 for i in range(10)], rel=1e-6), False)
    assert bins["Posterize"] == ([8, 8, 7, 7, 6, 6, 5, 5, 4, 4], False)


def literal_eval_recipe(img):
    """The published evaluation preprocessing, in PIL and numpy rather than the project's
    code: shorter side to 256 (bilinear, the longer side truncated), centre crop 224 at
    ``round((side - 224) / 2)``, ``(pixel / 255 - mean) / std``."""
    width, height = img.size
    if width <= height:
        size = (256, int(256 * height / width))
    else:
        size = (int(256 * width / height), 256)
    resized = np.asarray(img.resize(size, Image.Resampling.BILINEAR) if size != img.size else img)
    top, left = round((size[1] - 224) / 2), round((size[0] - 224) / 2)
    pixels = resized[top : top + 224, left : left + 224].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.array(PUBLISHED_MEAN, np.float32)[:, None, None]
    std = np.array(PUBLISHED_STD, np.float32)[:, None, None]
    return (pixels - mean) / std


@pytest.mark.parametrize("width, height", [(500, 375), (300, 400), (256, 256), (640, 240)])
def test_eval_preset_is_the_published_recipe(width, height):
    img = make_image(width, height, seed=width)
    np.testing.assert_allclose(ClassificationPresetEval()(img), literal_eval_recipe(img), rtol=0, atol=1e-6)
