"""Export a trained model into a :mod:`paddlevision.model_dir` directory: a static Paddle
graph for Paddle Inference and, through paddle2onnx, an ONNX model.

Every file is written into a new directory beside the target, loaded back by the engines
the runners use and compared with the model (:data:`CHECK_TOLERANCE`); only then does the
directory take the target's place, so a failed export leaves no half-valid directory and
an earlier export in its place stays as it was.

The exported graph computes each adaptive average pool whose input is not already of its
output size as what it is for the traced input size: fixed bins averaged by one matrix
product (:class:`FixedBinAvgPool2D`). paddle2onnx turns an adaptive pool into one
``AveragePool`` with a single kernel and stride, which is invalid for AlexNet's feature
maps below 6x6 (stride 0: inputs under 223x223) and averages wrong bins for sizes such as
8x8 (inputs of 287 to 318), whose bins do not have one stride. The model being exported is
left as it was.
"""

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import paddle

from paddlevision.inference import create_predictor
from paddlevision.model_dir import (
    GRAPH_FILENAMES,
    INPUT_NAME,
    METADATA_FILENAME,
    MODEL_PREFIX,
    ModelDirError,
    ONNX_FILENAME,
    PARAMS_FILENAME,
    PaddleModelFiles,
    find_paddle_model_files,
    write_metadata,
)
from paddlevision.onnx_predictor import create_onnx_predictor
from paddlevision.transforms.presets import EVAL_RESIZE_SIZE

__all__ = [
    "CHECK_BATCH_SIZE",
    "CHECK_TOLERANCE",
    "ExportError",
    "ExportResult",
    "FixedBinAvgPool2D",
    "ONNX_OPSET",
    "adaptive_pool_matrix",
    "check_export_target",
    "export_inference_model",
    "export_onnx",
]

# Opset 11 is the oldest that ONNX Runtime and TensorRT run every operator AlexNet needs
# with dynamic batch; newer runtimes read it unchanged.
ONNX_OPSET = 11

# The check runs the written model on a seeded random batch of this many images (more than
# one, as the graph's batch dimension is dynamic) ...
CHECK_BATCH_SIZE = 2
# ... and allows this largest |difference| between each engine's probabilities and the
# model's, the tolerance of the TIPC consistency check too. Engines sum float32 products in
# their own order (oneDNN's blocked kernels, ONNX Runtime's MLAS), and a probability p moves
# by at most 2p(1 - p) <= 1/2 times the largest change of a logit. Measured on an Intel Xeon
# (AVX-512, VNNI, AMX) for an AlexNet whose logits span -21..23 (top-1 0.92): 1.6e-6 on
# Paddle Inference with oneDNN, 4.8e-7 on ONNX Runtime. A model whose outputs barely depend
# on its input (a freshly initialised one) can hide a wrong graph below any such tolerance.
CHECK_TOLERANCE = 1e-4

PADDLE_INFERENCE = "Paddle Inference"
ONNX_RUNTIME = "ONNX Runtime"
EXPORT_FILENAMES = frozenset((*GRAPH_FILENAMES, PARAMS_FILENAME, ONNX_FILENAME, METADATA_FILENAME))


class ExportError(RuntimeError):
    """The export cannot run, failed, or wrote a model that does not load or does not
    compute what the model computes; nothing was written."""


class ExportResult(NamedTuple):
    files: PaddleModelFiles
    metadata_file: str
    onnx_file: Optional[str]
    max_diffs: dict  # engine name -> largest |difference| from the model's probabilities


def adaptive_pool_matrix(input_size, output_size):
    """``[output_size, input_size]`` float32: row ``i`` averages the bin of adaptive average
    pooling, ``floor(i * input_size / output_size)`` up to ``ceil((i + 1) * input_size /
    output_size)``, as Paddle and PyTorch define it."""
    matrix = np.zeros((output_size, input_size), dtype=np.float32)
    for i in range(output_size):
        start, end = i * input_size // output_size, -(-(i + 1) * input_size // output_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class FixedBinAvgPool2D(paddle.nn.Layer):
    """Adaptive average pooling of NCHW inputs of one spatial size: the flattened image
    times a constant ``[H*W, out_h*out_w]`` matrix, the outer product of the row and column
    bins. A single 3-D by 2-D matrix product is what every engine runs correctly; with the
    row and column products done separately (a 2-D by 4-D broadcast), Paddle Inference's
    oneDNN passes computed wrong values."""

    def __init__(self, input_size, output_size):
        super().__init__()
        (in_h, in_w), (self.out_h, self.out_w) = input_size, output_size
        matrix = np.kron(adaptive_pool_matrix(in_h, self.out_h), adaptive_pool_matrix(in_w, self.out_w))
        self.register_buffer("bins", paddle.to_tensor(np.ascontiguousarray(matrix.T)))

    def forward(self, x):
        pooled = paddle.matmul(paddle.flatten(x, start_axis=2), self.bins)
        return paddle.reshape(pooled, [-1, x.shape[1], self.out_h, self.out_w])


def _first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def check_export_target(model_dir):
    """Raise :class:`ExportError` unless ``model_dir`` is absent, empty or holds only files
    an export writes: an export replaces the directory as a whole, so anything else in it
    would be lost."""
    path = Path(model_dir)
    if not path.exists():
        return
    if not path.is_dir():
        raise ExportError(f"{model_dir} exists and is not a directory")
    try:
        foreign = sorted(entry.name for entry in path.iterdir()
                         if entry.name not in EXPORT_FILENAMES or not entry.is_file())
    except OSError as err:
        raise ExportError(f"cannot read {model_dir}: {err.strerror or err}") from err
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ExportError(
            f"{model_dir} holds files an export does not write ({shown}); an export replaces its directory "
            "as a whole, so choose a new or empty directory"
        )


def _staging_dir(target):
    """A new directory beside ``target`` (the same file system, so that it can be renamed
    into place), with the permissions a plain mkdir gives."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            staging = target.with_name(f".{target.name}.export-{secrets.token_hex(4)}")
            with contextlib.suppress(FileExistsError):
                staging.mkdir()
                return staging
    except OSError as err:
        raise ExportError(f"cannot write into {target.parent}: {err.strerror or err}") from err


def _install(staging, target):
    """Put ``staging`` in the place of ``target`` (absent, empty or an earlier export). The
    earlier directory is renamed aside and removed only once the new one is in place."""
    if not os.path.lexists(target):
        os.rename(staging, target)
        return
    aside = staging.with_name(staging.name + "-previous")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _fixed_bin_pools(model, pool_sizes):
    """``model`` with each adaptive average pool in ``pool_sizes`` (layer id -> (input
    size, output size)) replaced by a :class:`FixedBinAvgPool2D`, restored on exit. A pool
    whose input has its output size already (AlexNet at 223 to 254, the default 224) is
    the identity, which every engine runs as Paddle writes it."""
    swapped = []
    try:
        for parent in (model, *model.sublayers()):
            for name, child in list(parent.named_children()):
                if id(child) in pool_sizes and pool_sizes[id(child)][0] != pool_sizes[id(child)][1]:
                    setattr(parent, name, FixedBinAvgPool2D(*pool_sizes[id(child)]))
                    swapped.append((parent, name, child))
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _reference(model, batch):
    """The model's probabilities for ``batch`` and, by layer id, the (input, output)
    spatial sizes of its adaptive average pools."""
    pool_sizes = {}

    def record(layer, inputs, output):
        pool_sizes[id(layer)] = (tuple(inputs[0].shape[2:]), tuple(output.shape[2:]))

    hooks = [layer.register_forward_post_hook(record)
             for layer in model.sublayers() if isinstance(layer, paddle.nn.AdaptiveAvgPool2D)]
    try:
        with paddle.no_grad():
            probs = paddle.nn.functional.softmax(model(paddle.to_tensor(batch)), axis=-1).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    if not np.isfinite(probs).all():
        raise ExportError("the model's outputs on a random batch are not finite (NaN or inf): its weights are broken")
    return probs, pool_sizes


def _save_graph(model, save_dir, crop_size):
    net = paddle.nn.Sequential(model, paddle.nn.Softmax(axis=-1))
    input_spec = [paddle.static.InputSpec([None, 3, crop_size, crop_size], "float32", name=INPUT_NAME)]
    try:
        paddle.jit.save(net, path=str(Path(save_dir) / MODEL_PREFIX), input_spec=input_spec)
    except Exception as err:  # tracing and saving raise many kinds
        raise ExportError(f"Paddle could not save the graph: {_first_line(err)}") from err


def export_onnx(model_dir, opset_version=ONNX_OPSET):
    """Convert the Paddle model in ``model_dir`` into ``model_dir/inference.onnx``, unchecked
    (:func:`export_inference_model` with ``onnx=True`` checks it)."""
    try:
        import paddle2onnx
    except ImportError as err:
        raise ExportError(f"--onnx needs paddle2onnx installed ({err})") from err
    files = find_paddle_model_files(model_dir)
    try:
        # paddle2onnx logs a failed conversion and then fails to return the model, so any
        # exception here means "conversion failed", whatever its type.
        onnx_model = paddle2onnx.export(files.model_file, files.params_file, opset_version=opset_version)
    except Exception as err:
        raise ExportError(f"paddle2onnx could not convert {files.model_file}: {err!r} (its log is above)") from err
    onnx_file = Path(model_dir) / ONNX_FILENAME
    onnx_file.write_bytes(onnx_model)
    return str(onnx_file)


def _check(model_dir, engine, batch, expected):
    """The largest |difference| of ``engine``'s probabilities from ``expected``."""
    create = {PADDLE_INFERENCE: create_predictor, ONNX_RUNTIME: create_onnx_predictor}[engine]
    try:
        probs = create(model_dir).run(batch)
    except ModelDirError as err:  # names the engine and the file already
        raise ExportError(_first_line(err)) from err
    except Exception as err:  # Paddle raises many kinds, all meaning "does not load or run"
        raise ExportError(f"{engine} cannot load or run the exported model: {_first_line(err)}") from err
    if probs.shape != expected.shape:
        raise ExportError(f"{engine} returns outputs of shape {list(probs.shape)}, the model {list(expected.shape)}")
    max_diff = float(np.abs(probs - expected).max())
    if not max_diff <= CHECK_TOLERANCE:  # also catches NaN
        raise ExportError(
            f"{engine} computes other probabilities than the model: max |diff| {max_diff:.1e} on a random batch "
            f"of {len(batch)} (tolerance {CHECK_TOLERANCE:.0e})"
        )
    return max_diff


def export_inference_model(model, save_dir, crop_size, *, resize_size=EVAL_RESIZE_SIZE, model_name="alexnet",
                           class_names=None, onnx=False):
    """Write ``model`` followed by a softmax, for float32 inputs ``x`` of shape
    ``[N, 3, crop_size, crop_size]`` (any N), into ``save_dir`` with its metadata and, with
    ``onnx``, ``inference.onnx``; check each graph against ``model`` on a random batch and
    only then replace ``save_dir`` (absent, empty or an earlier export, see
    :func:`check_export_target`). Returns an :class:`ExportResult`; raises
    :class:`ExportError`, leaving ``save_dir`` as it was."""
    check_export_target(save_dir)
    target = Path(os.path.realpath(save_dir))
    model.eval()
    batch = np.random.default_rng(0).standard_normal((CHECK_BATCH_SIZE, 3, crop_size, crop_size), dtype=np.float32)
    expected, pool_sizes = _reference(model, batch)
    staging = _staging_dir(target)
    try:
        try:
            with _fixed_bin_pools(model, pool_sizes):
                _save_graph(model, staging, crop_size)
            write_metadata(staging, model_name=model_name, num_classes=expected.shape[1], crop_size=crop_size,
                           resize_size=resize_size, class_names=class_names)
            max_diffs = {PADDLE_INFERENCE: _check(staging, PADDLE_INFERENCE, batch, expected)}
            if onnx:
                export_onnx(staging)
                max_diffs[ONNX_RUNTIME] = _check(staging, ONNX_RUNTIME, batch, expected)
            check_export_target(target)  # again: something else may have been put there meanwhile
            _install(staging, target)
        except OSError as err:
            raise ExportError(f"cannot write {err.filename or save_dir}: {err.strerror or err}") from err
    except ExportError as err:
        state = "is as it was" if os.path.lexists(target) else "was not created"
        # The files were checked where they were written; the user knows them by their target.
        problem = str(err).replace(str(staging), str(save_dir))
        raise ExportError(f"{problem}; the new export was discarded and {save_dir} {state}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    save_dir = Path(save_dir)
    files = find_paddle_model_files(save_dir)
    return ExportResult(files, str(save_dir / METADATA_FILENAME), str(save_dir / ONNX_FILENAME) if onnx else None,
                        max_diffs)
