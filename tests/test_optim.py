import math

import paddle
import pytest

from paddlevision.optim import build_lr_scheduler, build_optimizer, lr_factor


def lrs(scheduler, epochs):
    values = []
    for _ in range(epochs):
        values.append(scheduler.get_lr())
        scheduler.step()
    return values


def test_step_schedule():
    values = lrs(build_lr_scheduler(0.01, "steplr", epochs=90, step_size=30, gamma=0.1), 90)
    assert values[0] == values[29] == pytest.approx(0.01)
    assert values[30] == pytest.approx(0.001)
    assert values[89] == pytest.approx(1e-4)


def test_cosine_with_linear_warmup():
    values = lrs(build_lr_scheduler(0.1, "cosineannealinglr", epochs=10, warmup_epochs=2, warmup_method="linear",
                                    warmup_decay=0.01), 10)
    assert values[0] == pytest.approx(0.001)
    assert values[1] == pytest.approx(0.1 * (0.01 + 0.99 / 2))
    assert values[2] == pytest.approx(0.1)
    assert values[6] == pytest.approx(0.1 * (1 + math.cos(math.pi * 4 / 8)) / 2)


def test_constant_warmup_then_step():
    assert lr_factor(0, "steplr", 10, warmup_epochs=2, warmup_method="constant", warmup_decay=0.1) == 0.1
    assert lr_factor(2, "steplr", 10, step_size=1, warmup_epochs=2) == 1.0
    assert lr_factor(3, "steplr", 10, step_size=1, gamma=0.5, warmup_epochs=2) == 0.5


def test_invalid_choices_name_the_flag():
    with pytest.raises(ValueError, match="--lr-scheduler"):
        build_lr_scheduler(0.1, "poly")
    with pytest.raises(ValueError, match="--lr-warmup-epochs"):
        build_lr_scheduler(0.1, epochs=3, warmup_epochs=3)
    with pytest.raises(ValueError, match="--opt"):
        build_optimizer("adam", [], 0.1)


def test_scheduler_state_round_trip():
    scheduler = build_lr_scheduler(0.01, "steplr", epochs=10, step_size=2)
    for _ in range(3):
        scheduler.step()
    restored = build_lr_scheduler(0.01, "steplr", epochs=10, step_size=2)
    restored.set_state_dict(scheduler.state_dict())
    assert restored.last_epoch == 3 and restored.get_lr() == pytest.approx(scheduler.get_lr())


@pytest.mark.parametrize("name", ["sgd", "rmsprop"])
def test_optimizers_step(name):
    layer = paddle.nn.Linear(3, 2)
    before = layer.weight.numpy().copy()
    optimizer = build_optimizer(name, layer.parameters(), 0.1)
    layer(paddle.ones([4, 3])).sum().backward()
    optimizer.step()
    assert (layer.weight.numpy() != before).all()
