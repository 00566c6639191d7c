"""The layout of an exported model directory, shared by the exporter and every runner.

``tools/export_model.py`` writes into one directory:

* ``inference.json`` (Paddle 3, PIR) or ``inference.pdmodel`` (older Paddle) — the graph;
* ``inference.pdiparams`` — the weights;
* ``inference.onnx`` — the same model for ONNX Runtime (only with ``--onnx``);
* ``inference_meta.json`` — what a runner needs besides the graph: the input size, the
  preprocessing sizes, the class names and the precision the weights are stored in
  (``fp32``; ``int8`` for a model quantised beforehand).

Every exported graph ends in a softmax, so all runners get probabilities. This module
does not import paddle, so the ONNX runner and the HTTP service stay light.
"""

import json
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "MODEL_PREFIX",
    "INPUT_NAME",
    "MODEL_PRECISIONS",
    "ModelDirError",
    "PaddleModelFiles",
    "find_paddle_model_files",
    "find_onnx_model",
    "graph_format",
    "model_precision",
    "read_metadata",
    "write_metadata",
]

MODEL_PREFIX = "inference"
INPUT_NAME = "x"
# In order of preference: a directory holding both (a PIR export over an older one) runs
# the newer graph.
GRAPH_FILENAMES = (f"{MODEL_PREFIX}.json", f"{MODEL_PREFIX}.pdmodel")
PARAMS_FILENAME = f"{MODEL_PREFIX}.pdiparams"
ONNX_FILENAME = f"{MODEL_PREFIX}.onnx"
METADATA_FILENAME = f"{MODEL_PREFIX}_meta.json"
MODEL_PRECISIONS = ("fp32", "int8")


class ModelDirError(RuntimeError):
    """A model directory that is missing or lacks a file a runner needs; names both."""


class PaddleModelFiles(NamedTuple):
    """Paths of an exported Paddle graph and its weights."""

    model_file: str
    params_file: str


def _existing_dir(model_dir):
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist; create it with tools/export_model.py")
    return path


def find_paddle_model_files(model_dir):
    """``inference.json`` (or the legacy ``inference.pdmodel``) and ``inference.pdiparams``
    in ``model_dir``; :class:`ModelDirError` naming the directory and what is missing."""
    path = _existing_dir(model_dir)
    graphs = [path / name for name in GRAPH_FILENAMES if (path / name).is_file()]
    params = path / PARAMS_FILENAME
    missing = []
    if not graphs:
        missing.append(f"{GRAPH_FILENAMES[0]} (or the legacy {GRAPH_FILENAMES[1]})")
    if not params.is_file():
        missing.append(PARAMS_FILENAME)
    if missing:
        raise ModelDirError(f"model directory {model_dir} is incomplete: missing {', '.join(missing)}")
    return PaddleModelFiles(str(graphs[0]), str(params))


def graph_format(model_file):
    """``"pir"`` for Paddle 3's ``.json`` graphs, ``"program"`` for the legacy ``.pdmodel``
    ProgramDesc: Paddle Inference optimises the two through different pass pipelines."""
    return "pir" if str(model_file).endswith(".json") else "program"


def find_onnx_model(model_dir):
    path = _existing_dir(model_dir)
    onnx_file = path / ONNX_FILENAME
    if not onnx_file.is_file():
        raise ModelDirError(
            f"model directory {model_dir} is incomplete: missing {ONNX_FILENAME} (export with --onnx)"
        )
    return str(onnx_file)


def write_metadata(model_dir, *, model_name, num_classes, img_size, resize_size, class_names=None, precision="fp32"):
    metadata = {
        "model": model_name,
        "num_classes": num_classes,
        "input_name": INPUT_NAME,
        "img_size": img_size,
        "resize_size": resize_size,
        "class_names": list(class_names) if class_names is not None else None,
        "precision": precision,
    }
    path = Path(model_dir) / METADATA_FILENAME
    path.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


def read_metadata(model_dir):
    """The exporter's metadata, or ``{}`` for a directory exported without it (runners
    then fall back to their flags' defaults)."""
    path = _existing_dir(model_dir) / METADATA_FILENAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelDirError(f"{path} is not valid JSON: {err}") from err


def model_precision(model_dir, metadata):
    """The precision ``metadata`` (read from ``model_dir``) records: ``fp32`` when it
    records none, as every export before the field existed was fp32."""
    precision = metadata.get("precision", "fp32")
    if precision not in MODEL_PRECISIONS:
        raise ModelDirError(
            f"{Path(model_dir) / METADATA_FILENAME}: unknown precision {precision!r} "
            f"(expected one of {', '.join(MODEL_PRECISIONS)})"
        )
    return precision
