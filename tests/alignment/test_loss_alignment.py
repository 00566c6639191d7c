"""train.py's criterion (paddle CrossEntropyLoss, optionally label-smoothed) against
torch.nn.CrossEntropyLoss, the reference recipe's criterion."""

import numpy as np
import paddle
import pytest

pytest.importorskip("torch", reason="PyTorch's CrossEntropyLoss is the reference for the alignment tests")

import torch  # noqa: E402

# Relative to the loss (absolute below 1): a float32 loss of 27 is only resolved to
# 1.9e-6 (one ulp), and Paddle's smoothed loss sums K float32 terms per sample where
# torch takes a mean, a few ulps apart. A wrong smoothing formula (e.g. eps/(K-1) off the
# target) moves it by orders of magnitude more.
LOSS_TOLERANCE = 1e-6


def close(ours, reference):
    return abs(ours - reference) <= LOSS_TOLERANCE * max(1.0, abs(reference))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("num_classes,scale", [(10, 1.0), (1000, 1.0), (1000, 8.0)])
def test_cross_entropy_matches_torch(label_smoothing, num_classes, scale):
    rng = np.random.default_rng(num_classes)
    logits = (scale * rng.standard_normal((32, num_classes))).astype(np.float32)
    target = rng.integers(0, num_classes, size=32)
    ours = paddle.nn.CrossEntropyLoss(label_smoothing=label_smoothing)(
        paddle.to_tensor(logits), paddle.to_tensor(target)).item()
    reference = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)(
        torch.from_numpy(logits), torch.from_numpy(target)).item()
    print(f"smoothing {label_smoothing}, {num_classes} classes, logit scale {scale}: "
          f"loss {reference:.6f}, diff {abs(ours - reference):.3g}")
    assert close(ours, reference)


def test_label_smoothing_gradient_matches_torch():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 10)).astype(np.float32)
    target = rng.integers(0, 10, size=8)
    ours = paddle.to_tensor(logits, stop_gradient=False)
    paddle.nn.CrossEntropyLoss(label_smoothing=0.1)(ours, paddle.to_tensor(target)).backward()
    reference = torch.from_numpy(logits).requires_grad_()
    torch.nn.CrossEntropyLoss(label_smoothing=0.1)(reference, torch.from_numpy(target)).backward()
    np.testing.assert_allclose(ours.grad.numpy(), reference.grad.numpy(), rtol=0, atol=LOSS_TOLERANCE)
