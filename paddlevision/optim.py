"""Optimizers and epoch-wise LR schedules of torchvision's classification recipe. The
schedule is a closed-form function of the epoch in Paddle's ``LambdaDecay``, so that it is
checkpointed and resumed like any Paddle scheduler."""

import math

import paddle

OPTIMIZERS = ("sgd", "rmsprop")
LR_SCHEDULERS = ("steplr", "cosineannealinglr")
WARMUP_METHODS = ("linear", "constant")


def lr_factor(epoch, scheduler, epochs, step_size=30, gamma=0.1, warmup_epochs=0, warmup_method="constant",
              warmup_decay=0.01, base_lr=1.0, lr_min=0.0):
    """Multiplier of the base LR in ``epoch`` (0-based), as torchvision's train.py builds it:
    ``SequentialLR([warm-up, main], milestones=[warmup_epochs])``, the warm-up ``LinearLR`` or
    ``ConstantLR`` from ``warmup_decay``, the main ``StepLR`` or ``CosineAnnealingLR(T_max=epochs - warmup_epochs)``."""
    if epoch < warmup_epochs:
        if warmup_method == "linear":
            return warmup_decay + (1.0 - warmup_decay) * epoch / warmup_epochs
        return warmup_decay
    main_epoch = epoch - warmup_epochs
    if scheduler == "steplr":
        return gamma ** (main_epoch // step_size)
    t_max = epochs - warmup_epochs
    cosine = (1 + math.cos(math.pi * main_epoch / t_max)) / 2
    return (lr_min + (base_lr - lr_min) * cosine) / base_lr


def build_lr_scheduler(lr, scheduler="steplr", epochs=90, step_size=30, gamma=0.1, warmup_epochs=0,
                       warmup_method="constant", warmup_decay=0.01, lr_min=0.0):
    if scheduler not in LR_SCHEDULERS:
        raise ValueError(f"unknown --lr-scheduler {scheduler!r}; choose one of {', '.join(LR_SCHEDULERS)}")
    if warmup_method not in WARMUP_METHODS:
        raise ValueError(f"unknown --lr-warmup-method {warmup_method!r}; choose one of {', '.join(WARMUP_METHODS)}")
    if warmup_epochs >= epochs and warmup_epochs > 0:
        raise ValueError(f"--lr-warmup-epochs ({warmup_epochs}) must be smaller than --epochs ({epochs})")

    def factor(epoch):
        return lr_factor(epoch, scheduler, epochs, step_size, gamma, warmup_epochs, warmup_method, warmup_decay,
                         lr, lr_min)

    return paddle.optimizer.lr.LambdaDecay(learning_rate=lr, lr_lambda=factor)


def build_optimizer(name, parameters, learning_rate, momentum=0.9, weight_decay=1e-4):
    """SGD with momentum and coupled L2 weight decay, as ``torch.optim.SGD``; or RMSprop with
    torchvision's alpha 0.9 and eps 0.0316, which is not numerically torch's: Paddle adds
    eps inside the square root and folds the LR into the momentum buffer (docs/alignment.md)."""
    if name == "sgd":
        return paddle.optimizer.Momentum(learning_rate=learning_rate, momentum=momentum, parameters=parameters,
                                         weight_decay=weight_decay)
    if name == "rmsprop":
        return paddle.optimizer.RMSProp(learning_rate=learning_rate, rho=0.9, epsilon=0.0316, momentum=momentum,
                                        parameters=parameters, weight_decay=weight_decay)
    raise ValueError(f"unknown --opt {name!r}; choose one of {', '.join(OPTIMIZERS)}")
