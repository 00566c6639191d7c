"""The random draws of the training augmentations against torchvision's own sampling.

Our transforms draw from Python's ``random``, torchvision's from torch's generator, so the
draws cannot be compared one by one. Each test draws many times on both sides, with
torchvision's own ``get_params``/``forward`` and its default parameters, and compares the
distributions with a two-sample test: Kolmogorov-Smirnov for continuous quantities,
chi-square homogeneity for categorical ones. A test fails when any of its comparisons has
a p-value below ``ALPHA`` divided by the number of comparisons it makes (Bonferroni), so a
faithful implementation fails by chance at most once in a thousand seeds. Both generators
are seeded, which makes every test deterministic.

The sample sizes are set so that the mistakes these tests are for (a minimum crop area of
0.5 instead of 0.08, an aspect ratio drawn linearly instead of log-uniformly, a flip
probability of 0.4, a missing sub-policy) give p-values many orders of magnitude below
``ALPHA``, not just below it.
"""

import math
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torchvision", reason="torchvision is the reference for the alignment tests")

import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
import torchvision.transforms.autoaugment as torchvision_autoaugment  # noqa: E402
from torchvision.models import AlexNet_Weights  # noqa: E402

import paddlevision.transforms.autoaugment as our_autoaugment  # noqa: E402
from conftest import make_image  # noqa: E402
from paddlevision.transforms import ClassificationPresetTrain  # noqa: E402

ALPHA = 1e-3


# --- Two-sample tests ------------------------------------------------------------------------


def kolmogorov_survival(x):
    """P(K > x) for the Kolmogorov distribution: 2 * sum_k (-1)^(k-1) exp(-2 k^2 x^2)."""
    if x < 0.05:
        return 1.0  # the series has not converged in 100 terms there, and the value is 1 - 1e-100
    k = np.arange(1, 101)
    return float(np.clip(2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * x**2)), 0.0, 1.0))


def ks_pvalue(a, b):
    """Asymptotic p-value of the two-sample Kolmogorov-Smirnov test (scipy's
    ``ks_2samp(..., method="asymp")``). With ties, as in pixel counts, it is conservative."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    pooled = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, pooled, side="right") / a.size
    cdf_b = np.searchsorted(b, pooled, side="right") / b.size
    largest_gap = np.abs(cdf_a - cdf_b).max()
    return kolmogorov_survival(math.sqrt(a.size * b.size / (a.size + b.size)) * largest_gap)


def chi2_pvalue(a, b):
    """p-value of the chi-square test that two samples of hashable categories come from
    one distribution. Categories expected fewer than 5 times are pooled into one."""
    counts_a, counts_b = Counter(a), Counter(b)
    categories = sorted(set(counts_a) | set(counts_b), key=repr)
    table = np.array([[counts_a[c] for c in categories], [counts_b[c] for c in categories]], np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    sparse = expected.min(0) < 5
    if sparse.any():
        table = np.column_stack([table[:, ~sparse], table[:, sparse].sum(1)])
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    dof = table.shape[1] - 1
    if dof == 0:
        return 1.0
    statistic = float(((table - expected) ** 2 / expected).sum())
    # The chi-square survival function is the regularised upper incomplete gamma function.
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(statistic / 2, dtype=torch.float64)))


def assert_same_distributions(ours, reference, categorical=()):
    """``ours`` and ``reference`` map quantity names to samples; every quantity must pass."""
    pvalues = {
        name: (chi2_pvalue if name in categorical else ks_pvalue)(ours[name], reference[name]) for name in ours
    }
    threshold = ALPHA / len(pvalues)
    failing = {name: p for name, p in pvalues.items() if p < threshold}
    assert not failing, f"distributions differ from torchvision's (p < {threshold:.1e}): {failing}; all: {pvalues}"


def seeded(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- RandomResizedCrop -----------------------------------------------------------------------


def crop_quantities(boxes, width, height, fallback_box):
    """The drawn area, log aspect ratio, crop centre and whether the ten tries failed."""
    boxes = np.asarray(boxes, np.float64)
    top, left, h, w = boxes.T
    return {
        "area": h * w / (width * height),
        "log_ratio": np.log(w / h),
        "centre_y": (top + h / 2) / height,
        "centre_x": (left + w / 2) / width,
        "fell_back": [tuple(box) == fallback_box for box in boxes.astype(int).tolist()],
    }


@pytest.mark.parametrize(
    "width, height, draws",
    [
        (400, 300, 3000),
        (48, 40, 3000),  # small: rounding to whole pixels matters
        (500, 100, 3000),  # aspect 5: about a quarter of the draws take the central fallback
        (60, 420, 3000),  # aspect 1/7: the fallback about half of the time, along the other axis
    ],
)
def test_random_resized_crop_draws_like_torchvision(width, height, draws):
    img = Image.new("L", (width, height))  # get_params reads only the size
    ours = ClassificationPresetTrain().transforms.transforms[0]  # the crop train.py uses
    reference = T.RandomResizedCrop(224)
    # A scale above 1 never fits, so this is torchvision's fallback box for the image.
    fallback_box = tuple(T.RandomResizedCrop.get_params(img, [2.0, 3.0], reference.ratio))
    seeded(0)
    ours_boxes = [ours.get_params(img, ours.scale, ours.ratio) for _ in range(draws)]
    reference_boxes = [reference.get_params(img, reference.scale, reference.ratio) for _ in range(draws)]
    assert_same_distributions(
        crop_quantities(ours_boxes, width, height, fallback_box),
        crop_quantities(reference_boxes, width, height, fallback_box),
        categorical={"fell_back"},
    )


# --- RandomErasing ---------------------------------------------------------------------------


def erase_quantities(boxes, height, width):
    """The erased area, log aspect ratio (height / width), box centre and whether the ten
    tries failed (no box: ours returns None, torchvision the whole image)."""
    gave_up = [box is None or tuple(box[2:]) == (height, width) for box in boxes]
    drawn = np.asarray([box for box, failed in zip(boxes, gave_up) if not failed], np.float64).reshape(-1, 4)
    top, left, h, w = drawn.T
    return {
        "area": h * w / (height * width),
        "log_ratio": np.log(h / w),
        "centre_y": (top + h / 2) / height,
        "centre_x": (left + w / 2) / width,
        "gave_up": gave_up,
    }


@pytest.mark.parametrize(
    "height, width, draws",
    [
        (224, 224, 3000),
        (30, 70, 3000),
        (10, 300, 3000),  # strips: most tries do not fit, and half of the calls give up
        (300, 10, 3000),
    ],
)
def test_random_erasing_draws_like_torchvision(height, width, draws):
    ours = ClassificationPresetTrain(random_erase_prob=0.25).transforms.transforms[-1]  # train.py's
    reference = T.RandomErasing(p=0.25)
    array, tensor = np.zeros((3, height, width), np.float32), torch.zeros(3, height, width)
    seeded(1)
    ours_boxes = [ours.get_params(array, ours.scale, ours.ratio) for _ in range(draws)]
    value = [float(reference.value)]
    reference_boxes = [
        reference.get_params(tensor, reference.scale, reference.ratio, value)[:4] for _ in range(draws)
    ]
    assert_same_distributions(
        erase_quantities(ours_boxes, height, width),
        erase_quantities(reference_boxes, height, width),
        categorical={"gave_up"},
    )


# --- AutoAugment -----------------------------------------------------------------------------


def record_applied_ops(monkeypatch, module, name):
    """Replace ``module.name`` (the apply-one-op function) by a recorder that returns the
    image unchanged; return the list each call's ``(op, signed magnitude)`` go to."""
    applied = []

    def record(img, op_name, magnitude, *args, **kwargs):
        applied.append((op_name, round(float(magnitude), 4)))
        return img

    monkeypatch.setattr(module, name, record)
    return applied


def autoaugment_outcomes(transform, applied, img, draws):
    """Per call, the sequence of ops it applied with their signed magnitudes."""
    outcomes = []
    for _ in range(draws):
        applied.clear()
        transform(img)
        outcomes.append(tuple(applied))
    return outcomes


def test_autoaugment_chooses_ops_magnitudes_and_signs_like_torchvision(monkeypatch):
    # The sub-policy, which of its two ops run, and each op's sign: the whole decision,
    # as a joint category per call, so that a correlation between the two steps shows.
    img = make_image(40, 30)
    ours = ClassificationPresetTrain(auto_augment_policy="imagenet").transforms.transforms[2]  # train.py's
    reference = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=T.InterpolationMode.BILINEAR)
    ours_applied = record_applied_ops(monkeypatch, our_autoaugment, "apply_op")
    reference_applied = record_applied_ops(monkeypatch, torchvision_autoaugment, "_apply_op")
    seeded(2)
    draws = 5000
    ours_outcomes = autoaugment_outcomes(ours, ours_applied, img, draws)
    reference_outcomes = autoaugment_outcomes(reference, reference_applied, img, draws)
    assert_same_distributions({"ops": ours_outcomes}, {"ops": reference_outcomes}, categorical={"ops"})


# --- The whole training preset ---------------------------------------------------------------


def reference_train_preset(crop_size, auto_augment_policy=None, random_erase_prob=0.0):
    """torchvision's references/classification ClassificationPresetTrain (PIL backend), with
    the normalisation and interpolation of torchvision's AlexNet weights."""
    weights = AlexNet_Weights.IMAGENET1K_V1.transforms()
    steps = [T.RandomResizedCrop(crop_size, interpolation=weights.interpolation), T.RandomHorizontalFlip(0.5)]
    if auto_augment_policy is not None:
        steps.append(T.AutoAugment(T.AutoAugmentPolicy(auto_augment_policy), interpolation=weights.interpolation))
    steps += [T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize(weights.mean, weights.std)]
    if random_erase_prob > 0:
        steps.append(T.RandomErasing(p=random_erase_prob))
    transform = T.Compose(steps)
    return lambda img: transform(img).numpy()


def output_quantities(outputs):
    """Statistics of preset outputs on a ``make_image`` picture, whose red channel rises
    from left to right and green from top to bottom: the channel means follow the crop's
    position (and the normalisation), the left-minus-right red difference the crop's width
    and the flip, the share of exact zeros the erasing."""
    outputs = np.stack(outputs).astype(np.float64)
    half = outputs.shape[-1] // 2
    return {
        "mean_red": outputs[:, 0].mean(axis=(1, 2)),
        "mean_green": outputs[:, 1].mean(axis=(1, 2)),
        "mean_blue": outputs[:, 2].mean(axis=(1, 2)),
        "red_left_minus_right": outputs[:, 0, :, :half].mean(axis=(1, 2)) - outputs[:, 0, :, half:].mean(axis=(1, 2)),
        "zero_share": (outputs == 0).mean(axis=(1, 2, 3)),
    }


@pytest.mark.parametrize(
    "options",
    [{}, {"auto_augment_policy": "imagenet", "random_erase_prob": 0.5}],
    ids=["recipe_defaults", "autoaugment_and_erasing"],
)
def test_train_preset_outputs_distributed_like_torchvision_recipe(options):
    img = make_image(96, 72)
    crop_size, draws = 32, 2000
    ours = ClassificationPresetTrain(crop_size=crop_size, **options)
    reference = reference_train_preset(crop_size, **options)
    seeded(3)
    ours_outputs = [ours(img) for _ in range(draws)]
    reference_outputs = [reference(img) for _ in range(draws)]
    assert_same_distributions(output_quantities(ours_outputs), output_quantities(reference_outputs))
