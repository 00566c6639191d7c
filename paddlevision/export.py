"""Export a trained model into a :mod:`paddlevision.model_dir` directory: a static Paddle
graph for Paddle Inference and, through paddle2onnx, an ONNX model."""

import os
import tempfile
from pathlib import Path

import paddle

from paddlevision.model_dir import (
    GRAPH_FILENAMES,
    INPUT_NAME,
    METADATA_FILENAME,
    MODEL_PREFIX,
    ONNX_FILENAME,
    PARAMS_FILENAME,
    find_paddle_model_files,
)

__all__ = ["ExportError", "ONNX_OPSET", "export_inference_model", "export_onnx"]

# Opset 11 is the oldest that ONNX Runtime and TensorRT run every operator AlexNet needs
# with dynamic batch; newer runtimes read it unchanged.
ONNX_OPSET = 11


class ExportError(RuntimeError):
    """The ONNX conversion cannot run or failed."""


def _remove_previous_export(save_dir):
    # A re-export must not leave files of the previous model behind for a runner to pick
    # up, e.g. an old inference.onnx next to new weights.
    for name in (*GRAPH_FILENAMES, PARAMS_FILENAME, ONNX_FILENAME, METADATA_FILENAME):
        (save_dir / name).unlink(missing_ok=True)


def export_inference_model(model, save_dir, crop_size):
    """Save ``model`` followed by a softmax for float32 inputs ``x`` of shape
    ``[N, 3, crop_size, crop_size]``, any N; returns the written ``PaddleModelFiles``."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    net = paddle.nn.Sequential(model, paddle.nn.Softmax(axis=-1))
    input_spec = [paddle.static.InputSpec([None, 3, crop_size, crop_size], "float32", name=INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix=".export-", dir=save_dir) as staging:
        paddle.jit.save(net, path=str(Path(staging) / MODEL_PREFIX), input_spec=input_spec)
        # Only once tracing and saving succeeded does the new model replace the old one.
        _remove_previous_export(save_dir)
        for path in Path(staging).iterdir():
            os.replace(path, save_dir / path.name)
    return find_paddle_model_files(save_dir)


def export_onnx(model_dir, opset_version=ONNX_OPSET):
    """Convert the Paddle model in ``model_dir`` into ``model_dir/inference.onnx``."""
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
