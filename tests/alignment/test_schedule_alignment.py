"""Our LR schedule (one closed form in paddle's LambdaDecay) against the torch schedulers
torchvision's train.py builds: StepLR or CosineAnnealingLR(T_max=epochs - warm-up), behind
SequentialLR([LinearLR or ConstantLR, main], milestones=[warm-up epochs]) when warming up."""

import pytest

from paddlevision.optim import build_lr_scheduler

pytest.importorskip("torch", reason="torch's LR schedulers are the reference for the alignment tests")

import torch  # noqa: E402

# torch updates most schedules recursively (lr_t from lr_{t-1}); the drift over 90
# epochs stays around 1e-15 relative, while a wrong formula or an off-by-one epoch
# shows at 1e-2 and more.
RELATIVE_TOLERANCE = 1e-9


def torch_schedule(lr, scheduler, epochs, step_size, gamma, warmup_epochs, warmup_method, warmup_decay, lr_min):
    """The LR of each epoch, with the schedulers built as torchvision's train.py does."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    if scheduler == "steplr":
        main = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    else:
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs, eta_min=lr_min)
    if warmup_epochs > 0:
        if warmup_method == "linear":
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_decay, total_iters=warmup_epochs)
        else:
            warmup = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=warmup_decay, total_iters=warmup_epochs)
        main = torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers=[warmup, main], milestones=[warmup_epochs])
    values = []
    for _ in range(epochs):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        main.step()
    return values


def our_schedule(lr, scheduler, epochs, step_size, gamma, warmup_epochs, warmup_method, warmup_decay, lr_min):
    schedule = build_lr_scheduler(lr, scheduler, epochs, step_size, gamma, warmup_epochs, warmup_method,
                                  warmup_decay, lr_min)
    values = []
    for _ in range(epochs):
        values.append(schedule.get_lr())
        schedule.step()
    return values


CASES = {
    # lr, scheduler, epochs, step_size, gamma, warmup_epochs, warmup_method, warmup_decay, lr_min
    "recipe steplr": (0.01, "steplr", 90, 30, 0.1, 0, "constant", 0.01, 0.0),
    "steplr odd step": (0.1, "steplr", 25, 7, 0.5, 0, "constant", 0.01, 0.0),
    "steplr + linear warm-up": (0.1, "steplr", 30, 10, 0.1, 5, "linear", 0.01, 0.0),
    "steplr + constant warm-up": (0.1, "steplr", 30, 10, 0.1, 3, "constant", 0.1, 0.0),
    "cosine": (0.5, "cosineannealinglr", 90, 30, 0.1, 0, "constant", 0.01, 0.0),
    "cosine + lr_min": (0.5, "cosineannealinglr", 40, 30, 0.1, 0, "constant", 0.01, 1e-4),
    "cosine + linear warm-up": (0.5, "cosineannealinglr", 600, 30, 0.1, 5, "linear", 0.01, 0.0),
    "cosine + constant warm-up": (0.1, "cosineannealinglr", 90, 30, 0.1, 5, "constant", 0.01, 1e-5),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_schedule_matches_torch_per_epoch(case):
    expected, actual = torch_schedule(*case), our_schedule(*case)
    worst = max(abs(a - e) / abs(e) for a, e in zip(actual, expected))  # no case reaches lr 0
    print(f"{case}: worst relative diff {worst:.3g}")
    for epoch, (a, e) in enumerate(zip(actual, expected)):
        assert abs(a - e) <= RELATIVE_TOLERANCE * abs(e), f"epoch {epoch}: ours {a}, torch {e}"
