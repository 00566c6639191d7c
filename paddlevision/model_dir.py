"""The layout of an exported model directory, shared by the exporter and every runner:
``inference.json`` (PIR; ``inference.pdmodel`` from older Paddle) and ``inference.pdiparams``,
``inference.onnx`` (with ``--onnx``) and ``inference_meta.json`` (preprocessing sizes,
class names, the precision of the stored weights). Every exported graph ends in a softmax.
Paddle-free, so the ONNX runner and the HTTP service stay light."""

import json
from pathlib import Path
from typing import NamedTuple

from paddlevision.transforms.presets import EVAL_CROP_SIZE, EVAL_RESIZE_SIZE

__all__ = [
    "MODEL_PREFIX",
    "INPUT_NAME",
    "MODEL_PRECISIONS",
    "ModelDirError",
    "PaddleModelFiles",
    "PreprocessSizeError",
    "find_paddle_model_files",
    "find_onnx_model",
    "graph_format",
    "model_precision",
    "preprocess_sizes",
    "read_metadata",
    "write_metadata",
]

MODEL_PREFIX = "inference"
INPUT_NAME = "x"
# In order of preference: a directory holding both runs the newer graph.
GRAPH_FILENAMES = (f"{MODEL_PREFIX}.json", f"{MODEL_PREFIX}.pdmodel")
PARAMS_FILENAME = f"{MODEL_PREFIX}.pdiparams"
ONNX_FILENAME = f"{MODEL_PREFIX}.onnx"
METADATA_FILENAME = f"{MODEL_PREFIX}_meta.json"
MODEL_PRECISIONS = ("fp32", "int8")


class ModelDirError(RuntimeError):
    """A model directory that is missing or lacks a file a runner needs; names both."""


class PreprocessSizeError(ValueError):
    """Resize or crop sizes that do not fit each other or the exported model."""


class PaddleModelFiles(NamedTuple):
    model_file: str
    params_file: str


def _existing_dir(model_dir):
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist; create it with tools/export_model.py")
    return path


def find_paddle_model_files(model_dir):
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
    """``"pir"`` (Paddle 3's ``.json``) or ``"program"`` (legacy ``.pdmodel``): Paddle
    Inference optimises the two through different pass pipelines."""
    return "pir" if str(model_file).endswith(".json") else "program"


def find_onnx_model(model_dir):
    path = _existing_dir(model_dir)
    onnx_file = path / ONNX_FILENAME
    if not onnx_file.is_file():
        raise ModelDirError(
            f"model directory {model_dir} is incomplete: missing {ONNX_FILENAME} (export with --onnx)"
        )
    return str(onnx_file)


def write_metadata(model_dir, *, model_name, num_classes, crop_size, resize_size, class_names=None, precision="fp32"):
    metadata = {
        "model": model_name,
        "num_classes": num_classes,
        "input_name": INPUT_NAME,
        "crop_size": crop_size,
        "resize_size": resize_size,
        "class_names": list(class_names) if class_names is not None else None,
        "precision": precision,
    }
    path = Path(model_dir) / METADATA_FILENAME
    path.write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


def read_metadata(model_dir):
    """The exporter's metadata, or ``{}`` for a directory exported without it."""
    path = _existing_dir(model_dir) / METADATA_FILENAME
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelDirError(f"{path} is not valid JSON: {err}") from err
    # Exports before the crop size had one name recorded it as img_size.
    if "img_size" in metadata:
        metadata.setdefault("crop_size", metadata.pop("img_size"))
    return metadata


def model_precision(model_dir, metadata):
    """The precision ``metadata`` records; ``fp32`` when it records none, as every export
    before the field existed was fp32."""
    precision = metadata.get("precision", "fp32")
    if precision not in MODEL_PRECISIONS:
        raise ModelDirError(
            f"{Path(model_dir) / METADATA_FILENAME}: unknown precision {precision!r} "
            f"(expected one of {', '.join(MODEL_PRECISIONS)})"
        )
    return precision


def preprocess_sizes(model_dir, metadata, resize_size=None, crop_size=None):
    """``(resize_size, crop_size)``: the given sizes, else the export's, else the evaluation
    preset's. The crop must be the exported input size, since the graph was traced for it."""
    exported_size = metadata.get("crop_size")
    crop_size = crop_size or exported_size or EVAL_CROP_SIZE
    resize_size = resize_size or metadata.get("resize_size") or EVAL_RESIZE_SIZE
    if exported_size is not None and crop_size != exported_size:
        raise PreprocessSizeError(
            f"--crop-size {crop_size}: the model in {model_dir} was exported for {exported_size}x{exported_size} inputs"
        )
    if resize_size < crop_size:
        raise PreprocessSizeError(f"--resize-size ({resize_size}) must be at least the crop size ({crop_size})")
    return resize_size, crop_size
