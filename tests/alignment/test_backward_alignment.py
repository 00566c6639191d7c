"""Ten training steps of our AlexNet and torchvision's from the same weights on the same
batches: train.py's step (CrossEntropyLoss, clear_grad, backward, step) with the
optimizer and LR schedule from our builders, against torch.optim.SGD + StepLR.

Dropout is off on both sides (the two frameworks cannot draw the same masks), so the
runs are deterministic and only float rounding separates them.
"""

import numpy as np
import paddle
import pytest

pytest.importorskip("torch", reason="PyTorch is the reference for the alignment tests")
pytest.importorskip("torchvision", reason="torchvision's AlexNet is the reference for the alignment tests")

import torch  # noqa: E402
import torchvision  # noqa: E402

from paddlevision.models import AlexNet  # noqa: E402
from paddlevision.optim import build_lr_scheduler, build_optimizer  # noqa: E402
from paddlevision.weights import load_state_dict_checked, paddle_to_torch_state_dict, torch_to_paddle_state_dict  # noqa: E402

NUM_CLASSES, BATCH, SIZE = 10, 4, 64
STEPS_PER_EPOCH, EPOCHS = 2, 5  # 10 steps; StepLR(3) lowers the LR after step 6
LR, MOMENTUM, WEIGHT_DECAY, STEP_SIZE, GAMMA = 0.01, 0.9, 1e-4, 3, 0.1

# float32 rounding differs from the first convolution on (~1e-7 relative) and each step
# feeds it back; after ten steps the weights differ by ~1e-7 of their norm, the updates by
# ~1e-5. Measured sensitivity of this setup: leaving out the LR drop moves some weights by
# 0.4 of their norm; leaving out weight decay moves the weights by only 2e-5 but an update
# by 6e-2, hence the second, sensitive check on the updates (final - initial weights).
PARAM_TOLERANCE = 1e-4
UPDATE_TOLERANCE = 1e-3
LOSS_TOLERANCE = 1e-5


def batches():
    rng = np.random.default_rng(0)
    for _ in range(STEPS_PER_EPOCH * EPOCHS):
        yield (rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32),
               rng.integers(0, NUM_CLASSES, size=BATCH))


def train_torch(model):
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_SIZE, gamma=GAMMA)
    losses, grads = [], None
    model.train()
    for step, (image, target) in enumerate(batches()):
        loss = criterion(model(torch.from_numpy(image)), torch.from_numpy(target))
        optimizer.zero_grad()
        loss.backward()
        if grads is None:
            grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % STEPS_PER_EPOCH == 0:
            scheduler.step()
    return losses, grads


def train_paddle(model):
    criterion = paddle.nn.CrossEntropyLoss(label_smoothing=0.0)
    scheduler = build_lr_scheduler(LR, "steplr", epochs=EPOCHS, step_size=STEP_SIZE, gamma=GAMMA)
    optimizer = build_optimizer("sgd", model.parameters(), scheduler, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    losses, grads = [], None
    model.train()
    for step, (image, target) in enumerate(batches()):
        loss = criterion(model(paddle.to_tensor(image)), paddle.to_tensor(target))
        optimizer.clear_grad()
        loss.backward()
        if grads is None:
            grads = paddle_to_torch_state_dict({name: p.grad for name, p in model.named_parameters()})
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % STEPS_PER_EPOCH == 0:
            scheduler.step()
    return losses, grads


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(0)
    torch_model = torchvision.models.alexnet(num_classes=NUM_CLASSES, dropout=0.0)
    initial = {name: t.numpy().copy() for name, t in torch_model.state_dict().items()}
    paddle_model = AlexNet(num_classes=NUM_CLASSES, dropout=0.0)
    load_state_dict_checked(paddle_model, torch_to_paddle_state_dict(torch_model.state_dict()))
    torch_losses, torch_grads = train_torch(torch_model)
    paddle_losses, paddle_grads = train_paddle(paddle_model)
    return {
        "initial": initial,
        "torch": ({k: v.numpy() for k, v in torch_model.state_dict().items()}, torch_losses, torch_grads),
        "paddle": (paddle_to_torch_state_dict(paddle_model.state_dict()), paddle_losses, paddle_grads),
    }


def relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_first_step_gradients_match(runs):
    _, _, torch_grads = runs["torch"]
    _, _, paddle_grads = runs["paddle"]
    diffs = {name: relative(paddle_grads[name], torch_grads[name]) for name in torch_grads}
    print(f"first-step gradients: worst relative diff {max(diffs.values()):.3g} ({max(diffs, key=diffs.get)})")
    assert max(diffs.values()) <= UPDATE_TOLERANCE


def test_losses_match_step_by_step(runs):
    _, torch_losses, _ = runs["torch"]
    _, paddle_losses, _ = runs["paddle"]
    diffs = np.abs(np.array(paddle_losses) - np.array(torch_losses))
    print(f"losses {np.round(torch_losses, 5).tolist()}: worst diff {diffs.max():.3g}")
    assert diffs.max() <= LOSS_TOLERANCE


def test_final_weights_and_updates_match(runs):
    initial = runs["initial"]
    torch_weights, _, _ = runs["torch"]
    paddle_weights, _, _ = runs["paddle"]
    param_diffs = {k: relative(paddle_weights[k], torch_weights[k]) for k in torch_weights}
    update_diffs = {k: relative(paddle_weights[k] - initial[k], torch_weights[k] - initial[k]) for k in torch_weights}
    print(f"after 10 steps: worst relative weight diff {max(param_diffs.values()):.3g}, "
          f"worst relative update diff {max(update_diffs.values()):.3g} ({max(update_diffs, key=update_diffs.get)})")
    assert max(param_diffs.values()) <= PARAM_TOLERANCE
    assert max(update_diffs.values()) <= UPDATE_TOLERANCE
