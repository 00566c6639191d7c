"""utils.correct_counts, train.py's top-k tally, against the torchvision reference's
accuracy() semantics.

The reference takes ``output.topk(maxk, 1, largest=True, sorted=True)``, compares the
transposed predictions with the target, and returns ``correct_k * 100 / batch_size``
per k. Ours are counts: both are compared as fractions here. Random float logits have
no ties, so the top-k sets are unambiguous on both sides.
"""

import numpy as np
import paddle
import pytest

import utils

pytest.importorskip("torch", reason="torch.topk is one of the references for the alignment tests")

import torch  # noqa: E402

TOPK = (1, 5)


def reference_accuracy(output, target, topk=TOPK):
    """The reference's semantics in numpy: percentages of samples whose target is among
    the k highest logits, returned as fractions."""
    maxk = max(topk)
    pred = np.argsort(-output, axis=1, kind="stable")[:, :maxk].T  # [maxk, batch], best first
    correct = pred == target[None]
    return [correct[:k].sum() * (100.0 / len(target)) / 100 for k in topk]


def torch_topk_accuracy(output, target, topk=TOPK):
    output, target = torch.from_numpy(output), torch.from_numpy(target)
    _, pred = output.topk(max(topk), 1, True, True)
    correct = pred.t().eq(target[None])
    return [(correct[:k].flatten().sum(dtype=torch.float32) / len(target)).item() for k in topk]


def ours(output, target, topk=TOPK):
    counts = utils.correct_counts(paddle.to_tensor(output), paddle.to_tensor(target), topk=topk)
    return [float(c) / len(target) for c in counts]


CASES = [(batch, classes, seed) for seed, (batch, classes) in enumerate([(1, 10), (7, 10), (32, 10), (64, 1000), (256, 100)])]


@pytest.mark.parametrize("batch,num_classes,seed", CASES)
def test_accuracy_matches_reference_semantics(batch, num_classes, seed):
    rng = np.random.default_rng(seed)
    output = rng.standard_normal((batch, num_classes)).astype(np.float32)
    target = rng.integers(0, num_classes, size=batch)
    # Make part of the batch correct, so that top-1 is not trivially near zero.
    target[: batch // 2] = output[: batch // 2].argmax(axis=1)
    expected = reference_accuracy(output, target)
    assert ours(output, target) == pytest.approx(expected, abs=1e-7)
    assert torch_topk_accuracy(output, target) == pytest.approx(expected, abs=1e-7)


def test_accuracy_extremes():
    output = np.eye(10, dtype=np.float32)[:6] + 0.01 * np.arange(10, dtype=np.float32)
    target = np.arange(6)
    assert ours(output, target) == pytest.approx([1.0, 1.0])
    worst = np.argsort(output, axis=1)[:, 0]  # the lowest logit is never in the top 5
    assert ours(output, worst) == pytest.approx([0.0, 0.0])
    assert reference_accuracy(output, worst) == pytest.approx([0.0, 0.0])


def test_topk_beyond_class_count_is_clamped():
    """A deliberate difference: the reference's topk(5) fails on fewer than 5 classes;
    ours counts top-5 of a 4-class model as top-4 (always correct)."""
    output = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    target = np.arange(8) % 4
    assert ours(output, target)[1] == 1.0
    with pytest.raises(RuntimeError):
        torch_topk_accuracy(output, target)
