"""An optional accelerator: AlexNet's convolutions on oneDNN, for training on CPU.

Off by default (``train.py --conv-engine paddle``); ``--conv-engine onednn`` turns it on for
CPU training on Linux x86-64. Paddle 3.3's CPU dygraph computes a convolution as im2col +
GEMM followed by a separate broadcasting bias ``add`` whose gradient is a generic
reduction, and ignores ``FLAGS_use_onednn``; the custom operators of ``conv2d.cc`` run
oneDNN's own convolution instead (bias fused; input, weight and bias gradients from
oneDNN's backward primitives). They are compiled on first use (:mod:`.build`).

    acceleration = accelerate(model, device, "onednn")
    logger.info(acceleration.log_line())

The model stays the stock model to everything outside the engine: each supported
``Conv2D`` keeps its identity, parameters, name and hooks (its class becomes
:class:`OneDNNConv2D`, whose forward alone differs), takes and gives NCHW, and nothing else
changes — the ReLUs, pools and containers are Paddle's. So forward hooks see the stock
values, slices and ``copy.deepcopy`` work, and state dicts and checkpoints are the stock
model's. In a static graph (``paddle.jit.to_static``, export) the layer is the stock
Conv2D. Double backward and tensors other than float32 on CPU raise
:class:`OneDNNUnsupported`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import paddle
from paddle import nn
from paddle.autograd import PyLayer

from . import build
from .build import OneDNNUnavailable

__all__ = ["ENGINES", "Acceleration", "OneDNNConv2D", "OneDNNUnavailable", "OneDNNUnsupported", "accelerate",
           "conv_geometry"]

ENGINES = ("paddle", "onednn")
AVOID = "train with --conv-engine paddle"


class OneDNNUnsupported(RuntimeError):
    """A use of an accelerated model that the oneDNN engine does not support."""


def conv_geometry(conv: nn.Conv2D) -> tuple[list[int], list[int]]:
    """(strides, paddings) of a Conv2D the oneDNN operators can run; ValueError saying why
    not otherwise. Reads Paddle's private Conv2D attributes (there is no public view)."""
    try:
        groups, dilation, mode = conv._groups, list(conv._dilation), conv._padding_mode
        data_format, algorithm = conv._data_format, conv._padding_algorithm
        strides, paddings = list(conv._stride), list(conv._updated_padding)
    except AttributeError as exc:
        raise ValueError(f"Paddle {paddle.__version__}'s Conv2D has changed ({exc})") from None
    for reason, unsupported in ((f"groups {groups}", groups != 1), (f"dilation {dilation}", dilation != [1, 1]),
                                (f"padding_mode {mode}", mode != "zeros"),
                                (f"data_format {data_format}", data_format != "NCHW"),
                                ("no bias", conv.bias is None),
                                (f"padding {conv._padding!r}", algorithm != "EXPLICIT" or len(paddings) != 2)):
        if unsupported:
            raise ValueError(reason)
    return strides, paddings


class _Conv2DFunction(PyLayer):
    """oneDNN's forward and backward convolution as one differentiable operation."""

    @staticmethod
    def forward(ctx, x, weight, bias, strides, paddings):
        ctx.save_for_backward(x, weight)
        ctx.attrs = strides, paddings
        # The image batch needs no input gradient: oneDNN then skips backward-data.
        ctx.needs_grad = [not t.stop_gradient for t in (x, weight, bias)]
        return build.load_ops().run("onednn_conv2d", x, weight, bias, strides, paddings)[0]

    @staticmethod
    def backward(ctx, grad_out):
        if paddle.is_grad_enabled():  # paddle.grad(..., create_graph=True)
            raise OneDNNUnsupported(f"the oneDNN conv engine has no double backward (create_graph=True): {AVOID}")
        x, weight = ctx.saved_tensor()
        strides, paddings = ctx.attrs
        grads = build.load_ops().run("onednn_conv2d_backward", x, weight, grad_out, strides, paddings,
                                     ctx.needs_grad[0])
        return tuple(grad if needed else None for grad, needed in zip(grads, ctx.needs_grad))


class OneDNNConv2D(nn.Conv2D):
    """A ``Conv2D`` whose dygraph forward runs on oneDNN; made by :func:`accelerate` from a
    Conv2D in place (``__class__`` swapped), so the object, its parameters and its hooks
    stay."""

    _onednn_geometry: tuple[list[int], list[int]]

    def forward(self, x):
        if not paddle.in_dynamic_mode():
            return super().forward(x)
        for name, tensor in (("input", x), ("weight", self.weight)):
            if tensor.dtype != paddle.float32 or not tensor.place.is_cpu_place():
                raise OneDNNUnsupported(f"the oneDNN conv engine takes float32 tensors on CPU, the {name} is "
                                        f"{tensor.dtype} on {tensor.place}: {AVOID}")
        return _Conv2DFunction.apply(x, self.weight, self.bias, *self._onednn_geometry)


@dataclass
class Acceleration:
    """What :func:`accelerate` did."""

    engine: str
    origin: str = ""  # where the operators came from
    convs: int = 0
    kept: list = field(default_factory=list)  # (layer name, reason) left on Paddle's kernels

    def log_line(self) -> str:
        if self.engine != "onednn":
            return "conv engine: paddle (Paddle's own layers)"
        kept = f"; kept on paddle: {', '.join(f'{n} ({r})' for n, r in self.kept)}" if self.kept else ""
        return (f"conv engine: onednn ({self.origin}): {self.convs} of {self.convs + len(self.kept)} convolutions "
                f"on oneDNN{kept}")


def accelerate(model: nn.Layer, device: str, engine: str = "paddle") -> Acceleration:
    """With ``engine="onednn"``, run each supported ``Conv2D`` of ``model`` on oneDNN (in
    place); with "paddle", leave the model alone. oneDNN uses the thread count Paddle was
    given (``paddlevision.device.configure_cpu_math``). Call it before
    ``paddle.DataParallel`` wraps the model. Raises OneDNNUnavailable when the engine cannot
    run here (GPU, not Linux x86-64, no headers or compiler), saying why."""
    if engine not in ENGINES:
        raise ValueError(f"conv engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "paddle":
        return Acceleration(engine)
    reason = build.platform_unsupported_reason(device)
    if reason:
        raise OneDNNUnavailable(f"the oneDNN conv engine {reason}")
    acceleration = Acceleration(engine, build.load_ops().origin)
    for name, layer in model.named_sublayers(include_self=True):
        if type(layer) is not nn.Conv2D:
            continue
        try:
            geometry = conv_geometry(layer)
        except ValueError as exc:
            acceleration.kept.append((name or type(layer).__name__, str(exc)))
            continue
        layer.__class__ = OneDNNConv2D
        layer._onednn_geometry = geometry
        acceleration.convs += 1
    return acceleration
