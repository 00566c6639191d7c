"""AlexNet's convolutions, their ReLUs and its max-pools on oneDNN, for training on CPU.

Paddle 3.3's CPU dygraph computes a convolution as im2col + GEMM followed by a separate
broadcasting bias ``add`` (whose gradient is a generic reduction), and ignores
``FLAGS_use_onednn``. The custom operators of ``ops/onednn_ops.cc`` run oneDNN's own
convolution (bias, and the following ReLU, fused; input, weight and bias gradients from
oneDNN's backward primitives) and max-pooling, with the maths of the layers they replace.

    acceleration = accelerate(model, device, engine="auto")
    logger.info(acceleration.log_line())

The operators are compiled on first use with ``paddle.utils.cpp_extension`` into Paddle's
extension directory (``$PADDLE_EXTENSION_DIR``, default ``~/.cache/paddle_extensions``)
and linked against the oneDNN library the paddle wheel ships (``paddle/libs/libdnnl.so.3``).
The wheel's own oneDNN headers are stubs that include a ``oneapi/dnnl/`` it does not
ship, so the headers come from ``$ONEDNN_INCLUDE_DIR`` or the ``onednn-devel`` wheel
(``pip install --no-deps -r requirements-onednn.txt``). Headers are accepted only with the
library's major version and a minor version no newer than the library's (oneDNN keeps its
ABI backward compatible within a major version). Without them, or on GPU, the model keeps
Paddle's layers and :func:`accelerate` says why.

``accelerate`` keeps every parameter object and sub-layer name: state dicts and
checkpoints are those of the stock model. The operators are not exportable; export and
inference build stock models.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import re
import shutil
import sysconfig
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paddle
from paddle import nn

__all__ = ["ENGINES", "Acceleration", "Choice", "OneDNNConv2D", "OneDNNMaxPool2D", "OneDNNSequential",
           "OneDNNUnavailable", "accelerate", "choose_conv_engine", "find_headers", "load_ops"]

logger = logging.getLogger(__name__)

ENGINES = ("auto", "onednn", "paddle")
SOURCE = Path(__file__).parent / "ops" / "onednn_ops.cc"
EXTENSION_NAME = "paddlevision_onednn_ops"
# oneDNN runs on the OpenMP runtime Paddle loaded (libiomp5 serves its GOMP calls), so its
# thread count is the one Paddle sets; the operators start no OpenMP runtime of their own.
CXX_FLAGS = ["-O3", "-fopenmp-simd"]
HEADERS_HINT = "pip install --no-deps -r requirements-onednn.txt, or set ONEDNN_INCLUDE_DIR"


class OneDNNUnavailable(RuntimeError):
    """The oneDNN operators cannot be built or loaded here; the message says why."""


@dataclass(frozen=True)
class Choice:
    engine: str  # "onednn" or "paddle"
    reason: str


# ------------------------------------------------------------------- headers and library


def paddle_onednn_library() -> Path:
    return Path(paddle.__file__).parent / "libs" / "libdnnl.so.3"


def library_version(lib: Path) -> tuple[int, int, int]:
    class Version(ctypes.Structure):  # dnnl_version_t
        _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                    ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]

    handle = ctypes.CDLL(str(lib))
    handle.dnnl_version.restype = ctypes.POINTER(Version)
    version = handle.dnnl_version().contents
    return version.major, version.minor, version.patch


def header_version(include_dir: Path) -> tuple[int, int, int] | None:
    """The version of the oneDNN headers under ``include_dir``, or None when there are none."""
    dnnl = include_dir / "oneapi" / "dnnl"
    if not (dnnl / "dnnl.hpp").is_file() or not (dnnl / "dnnl_version.h").is_file():
        return None
    text = (dnnl / "dnnl_version.h").read_text(errors="replace")
    parts = [re.search(rf"#define DNNL_VERSION_{name}\s+(\d+)", text) for name in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        return None
    return tuple(int(part.group(1)) for part in parts)


def header_candidates() -> list[Path]:
    candidates = [Path(os.environ["ONEDNN_INCLUDE_DIR"])] if os.environ.get("ONEDNN_INCLUDE_DIR") else []
    candidates.append(Path(paddle.__file__).parent / "include" / "third_party" / "install" / "onednn" / "include")
    candidates.append(Path(sysconfig.get_paths()["data"]) / "include")  # where onednn-devel installs them
    return candidates


def find_headers(lib_version: tuple[int, int, int]) -> Path:
    seen = []
    for include_dir in header_candidates():
        version = header_version(include_dir)
        if version and version[0] == lib_version[0] and version[1] <= lib_version[1]:
            return include_dir
        seen.append(f"{include_dir} ({'none' if version is None else '.'.join(map(str, version))})")
    raise OneDNNUnavailable(
        f"no oneDNN {lib_version[0]}.x headers no newer than paddle's libdnnl {'.'.join(map(str, lib_version))} "
        f"in {'; '.join(seen)} ({HEADERS_HINT})")


# ------------------------------------------------------------------------- build and load

_ops = None
_origin = ""


def load_ops():
    """The compiled operator module, built on first use and afterwards loaded from the
    extension directory. A file lock keeps the processes of a distributed launch from
    building at once. Raises OneDNNUnavailable."""
    global _ops
    if _ops is None:
        from paddle.utils import cpp_extension

        lib = paddle_onednn_library()
        if not lib.is_file():
            raise OneDNNUnavailable(f"the paddle wheel has no {lib}")
        include_dir = find_headers(library_version(lib))
        build_root = Path(cpp_extension.get_build_directory())
        try:
            _ops = _load_or_build(cpp_extension, build_root, include_dir, lib)
        except OSError as exc:  # an extension directory that cannot be written or locked
            raise OneDNNUnavailable(f"extension directory {build_root}: {exc}") from exc
    return _ops


def _load_or_build(cpp_extension, build_root: Path, include_dir: Path, lib: Path):
    global _origin
    build_root.mkdir(parents=True, exist_ok=True)
    stamp = build_root / f"{EXTENSION_NAME}.stamp"
    signature = _signature(include_dir, lib)
    with open(build_root / f"{EXTENSION_NAME}.lock", "w") as lock, _quiet_cpp_extension():
        fcntl.flock(lock, fcntl.LOCK_EX)
        ops = _load_built(build_root, stamp, signature)
        if ops is None:
            # Paddle and setuptools rebuild only for changed source paths, flags or mtimes:
            # a build for other headers or another Paddle, or one cut short, goes first.
            stamp.unlink(missing_ok=True)
            shutil.rmtree(build_root / EXTENSION_NAME, ignore_errors=True)
            start = time.perf_counter()
            ops = _build(cpp_extension, include_dir, lib)
            stamp.write_text(signature)
            _origin = f"compiled now in {time.perf_counter() - start:.0f} s into {build_root}"
        else:
            _origin = f"cached in {build_root}"
    return ops


@contextmanager
def _quiet_cpp_extension():
    """Paddle's extension loader logs at INFO on every load ("using custom operator only",
    whatever its ``verbose``) and each compiler command while building."""
    paddle_logger = logging.getLogger("utils.cpp_extension")
    level = paddle_logger.level
    paddle_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        paddle_logger.setLevel(level)


def _signature(include_dir: Path, lib: Path) -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    for part in (include_dir, header_version(include_dir), lib, library_version(lib), paddle.__version__, CXX_FLAGS):
        digest.update(str(part).encode())
    return digest.hexdigest()


def _load_built(build_root: Path, stamp: Path, signature: str):
    """The module built earlier from this source, flags, headers and Paddle, or None.
    ``cpp_extension.load`` would run ``setup.py build`` in a new Python (about 10 s even when
    nothing changed); Paddle's loader of built extensions is private, so any failure of it
    means a full build."""
    if not stamp.is_file() or stamp.read_text() != signature:
        return None
    try:
        from paddle.utils.cpp_extension.extension_utils import _import_module_from_library

        return _import_module_from_library(EXTENSION_NAME, str(build_root / EXTENSION_NAME), False)
    except Exception as exc:  # a changed private API, a deleted .so
        logger.debug("loading the built oneDNN operators failed (%s); rebuilding", exc)
        return None


def _build(cpp_extension, include_dir: Path, lib: Path):
    logger.info("compiling the oneDNN operators against %s with headers from %s (first use: about a minute)",
                lib, include_dir)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            return cpp_extension.load(
                name=EXTENSION_NAME, sources=[str(SOURCE)], extra_include_paths=[str(include_dir)],
                extra_cxx_cflags=CXX_FLAGS,
                extra_ldflags=[f"-L{lib.parent}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib.parent}"],
                verbose=False)
    except Exception as exc:  # no compiler, a compiler error, a failed import
        raise OneDNNUnavailable(f"compiling the oneDNN operators failed: {type(exc).__name__}: {exc}") from exc


def choose_conv_engine(device: str, requested: str = "auto", build=load_ops) -> Choice:
    """Which convolution engine a run uses: oneDNN on CPU when ``build()`` succeeds, Paddle's
    own otherwise; Paddle's always on GPU or when ``requested`` is "paddle". Raises
    OneDNNUnavailable when "onednn" was requested and cannot be had."""
    if requested not in ENGINES:
        raise ValueError(f"conv engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested == "paddle":
        return Choice("paddle", "requested")
    if not device.startswith("cpu"):
        if requested == "onednn":
            raise OneDNNUnavailable(f"the oneDNN operators run on CPU only, not on {device}")
        return Choice("paddle", f"the oneDNN operators are CPU-only, device is {device}")
    try:
        build()
    except OneDNNUnavailable as exc:
        if requested == "onednn":
            raise
        return Choice("paddle", str(exc))
    return Choice("onednn", f"paddle's libdnnl.so.3, {_origin}" if _origin else "built")


# --------------------------------------------------------------------------------- layers


def _pair(value):
    if isinstance(value, int):
        return [value, value]
    value = list(value)
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return value
    raise ValueError(f"expected an int or two ints, got {value!r}")


def conv_unsupported_reason(conv: nn.Conv2D) -> str | None:
    """Why a Conv2D cannot run on the oneDNN operator, or None when it can."""
    if conv._groups != 1:
        return "groups != 1"
    if list(conv._dilation) != [1, 1]:
        return "dilation != 1"
    if conv._padding_mode != "zeros":
        return f"padding_mode {conv._padding_mode}"
    if conv._data_format != "NCHW":
        return f"data_format {conv._data_format}"
    if conv.bias is None:
        return "no bias"
    if isinstance(conv._padding, str):
        return f"padding {conv._padding!r}"
    try:
        _pair(conv._padding)
    except ValueError:
        return f"padding {conv._padding!r}"
    return None


class OneDNNConv2D(nn.Layer):
    """``conv`` (and, with ``fuse_relu``, the ReLU after it) on oneDNN, with its parameters."""

    def __init__(self, conv: nn.Conv2D, fuse_relu: bool = False):
        super().__init__()
        reason = conv_unsupported_reason(conv)
        if reason:
            raise ValueError(f"OneDNNConv2D does not support this Conv2D: {reason}")
        self.weight = conv.weight
        self.bias = conv.bias
        self._stride = _pair(list(conv._stride))
        self._padding = _pair(conv._padding)
        self._fuse_relu = fuse_relu
        self._ops = load_ops()

    def forward(self, x, blocked_input=False, blocked_output=False):
        # The image batch needs no input gradient: oneDNN then skips backward-data.
        return self._ops.onednn_conv2d(x, self.weight, self.bias, self._stride, self._padding, self._fuse_relu,
                                       not x.stop_gradient, blocked_input, blocked_output)

    def extra_repr(self):
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, kernel_size={self.weight.shape[2:]}, "
                f"stride={self._stride}, padding={self._padding}, fuse_relu={self._fuse_relu}")


class OneDNNMaxPool2D(nn.Layer):
    def __init__(self, pool: nn.MaxPool2D):
        super().__init__()
        if pool.ceil_mode or pool.return_mask or pool.data_format != "NCHW":
            raise ValueError("OneDNNMaxPool2D supports floor mode, NCHW, without return_mask")
        self._kernel = _pair(pool.ksize)
        self._stride = _pair(pool.stride if pool.stride is not None else pool.ksize)
        self._padding = _pair(pool.padding)
        self._ops = load_ops()

    def forward(self, x, blocked_input=False, blocked_output=False):
        return self._ops.onednn_max_pool2d(x, self._kernel, self._stride, self._padding, blocked_input,
                                           blocked_output)[0]

    def extra_repr(self):
        return f"kernel_size={self._kernel}, stride={self._stride}, padding={self._padding}"


ONEDNN_LAYERS = (OneDNNConv2D, OneDNNMaxPool2D)


class OneDNNSequential(nn.Sequential):
    """``nn.Sequential`` (same sub-layers, same names) passing activations between two
    consecutive oneDNN layers in oneDNN's blocked layout, which saves two reorders per
    boundary. Every tensor leaving the container, and every tensor another layer sees, is
    NCHW; each layer called on its own takes and gives NCHW."""

    def __init__(self, sequential: nn.Sequential, blocked_channels: int):
        super().__init__(*sequential.named_children())
        self._blocked_channels = blocked_channels

    def plan(self):
        """(layer, blocked_input, blocked_output) for each layer, Identity left out: a oneDNN
        layer hands on a blocked tensor when the next layer is a oneDNN layer too and the
        channels fill whole blocks (a max-pool keeps the channels, and the layout, it got)."""
        layers = [layer for layer in self._sub_layers.values() if not isinstance(layer, nn.Identity)]
        plan, blocked = [], False
        for layer, following in zip(layers, layers[1:] + [None]):
            if isinstance(layer, OneDNNConv2D):
                out = isinstance(following, ONEDNN_LAYERS) and layer.weight.shape[0] % self._blocked_channels == 0
            elif isinstance(layer, OneDNNMaxPool2D):
                out = isinstance(following, ONEDNN_LAYERS) and blocked
            else:
                out = False
            plan.append((layer, blocked, out))
            blocked = out
        return plan

    def forward(self, x):
        for layer, blocked_input, blocked_output in self.plan():
            if isinstance(layer, ONEDNN_LAYERS):
                x = layer(x, blocked_input=blocked_input, blocked_output=blocked_output)
            else:
                x = layer(x)
        return x


@dataclass
class Acceleration:
    """What :func:`accelerate` did."""

    choice: Choice
    convs: int = 0
    fused_relus: int = 0
    pools: int = 0
    blocked_chains: int = 0
    kept: list = field(default_factory=list)  # (layer name, reason) left on Paddle's kernels

    def log_line(self) -> str:
        if self.choice.engine != "onednn":
            return f"conv engine: paddle ({self.choice.reason})"
        kept = f"; kept on paddle: {', '.join(f'{n} ({r})' for n, r in self.kept)}" if self.kept else ""
        return (f"conv engine: onednn ({self.choice.reason}): {self.convs} convolutions, {self.fused_relus} ReLUs "
                f"fused, {self.pools} max-pools, {self.blocked_chains} blocked-layout chains{kept}")


def accelerate(model: nn.Layer, device: str, engine: str = "auto") -> Acceleration:
    """Swap the supported ``Conv2D`` (with a ``ReLU`` right after it in a ``Sequential``),
    ``MaxPool2D`` and ``Sequential`` layers of ``model`` in place for their oneDNN versions
    when the engine choice (:func:`choose_conv_engine`) is oneDNN. oneDNN uses the thread
    count Paddle was given (``paddlevision.device.configure_cpu_math``). Call it before
    ``paddle.DataParallel`` wraps the model."""
    choice = choose_conv_engine(device, engine)
    acceleration = Acceleration(choice)
    if choice.engine != "onednn":
        return acceleration
    ops = load_ops()
    for parent_name, parent in [("", model), *model.named_sublayers()]:
        children = list(parent.named_children())
        for index, (name, child) in enumerate(children):
            full_name = f"{parent_name}.{name}" if parent_name else name
            if type(child) is nn.Conv2D:
                reason = conv_unsupported_reason(child)
                if reason:
                    acceleration.kept.append((full_name, reason))
                    continue
                following = children[index + 1] if index + 1 < len(children) else None
                # Only a Sequential runs its children in order; elsewhere forward() decides.
                fuse = isinstance(parent, nn.Sequential) and following is not None and type(following[1]) is nn.ReLU
                setattr(parent, name, OneDNNConv2D(child, fuse_relu=fuse))
                acceleration.convs += 1
                if fuse:
                    setattr(parent, following[0], nn.Identity())
                    acceleration.fused_relus += 1
            elif type(child) is nn.MaxPool2D:
                try:
                    setattr(parent, name, OneDNNMaxPool2D(child))
                    acceleration.pools += 1
                except ValueError as exc:
                    acceleration.kept.append((full_name, str(exc)))
    blocked_channels = int(ops.onednn_blocked_channels(paddle.zeros([1])).numpy()[0])
    for _, parent in [("", model), *model.named_sublayers()]:
        for name, child in list(parent.named_children()):
            if type(child) is nn.Sequential and sum(isinstance(c, ONEDNN_LAYERS) for c in child.children()) > 1:
                setattr(parent, name, OneDNNSequential(child, blocked_channels))
                acceleration.blocked_chains += 1
    return acceleration
