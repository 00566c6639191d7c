"""Post-training int8 quantisation of an exported model, run by ONNX Runtime.

:func:`quantize` turns the ``inference.onnx`` of an fp32 export (``tools/export_model.py
--onnx``) into a new model directory holding ``inference.onnx`` with static int8
quantisation — QDQ format, int8 weights per output channel, uint8 activations per tensor,
activation ranges calibrated on images run through the evaluation preset — and
``inference_meta.json`` recording ``"precision": "int8"``. The directory holds no Paddle
graph; :func:`paddlevision.inference.select_engine` sends it to ONNX Runtime. What is
written is reloaded and compared with the fp32 model before the directory appears
(:func:`check_agreement`).

Weight range (:func:`default_weight_range`): x86 CPUs without VNNI multiply uint8 by int8
with ``VPMADDUBSW``, whose int16 pair sums saturate when weights use the full int8 range,
so there weights get a 7-bit range (ONNX Runtime's ``reduce_range``); with VNNI
(``VPDPBUSD``, or AMX) the full 8-bit range is exact and keeps one more bit. The choice is
made for the CPU that will run the model, recorded in the model, and checked where it runs
(``paddlevision.onnx_predictor.weight_range_warning``).

Why not Paddle's own int8 route: Paddle 3.3's PIR pipeline for oneDNN (``kPirMkldnnPasses``
in paddle/fluid/inference/api/paddle_pass_builder.cc) has no int8 pass and starts with
``delete_quant_dequant_linear_op_pass`` and ``delete_weight_dequant_linear_op_pass``, so a
quantised ``.json`` graph is computed in fp32. The oneDNN int8 passes
(``cpu_quantize_pass`` ...) exist only in the legacy ProgramDesc pipeline.

Paddle-free (numpy, PIL, onnx, onnxruntime).
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from paddlevision.device import cpu_has_vnni
from paddlevision.image import ImageDecodeError
from paddlevision.model_dir import (
    METADATA_FILENAME,
    ONNX_FILENAME,
    ModelDirError,
    find_onnx_model,
    model_precision,
    preprocess_sizes,
    read_metadata,
)
from paddlevision.onnx_predictor import ONNX_PRECISION_KEY, ONNX_WEIGHT_RANGE_KEY, WEIGHT_RANGES
from paddlevision.pipeline import Preprocessor

__all__ = [
    "AGREEMENT_TOLERANCE",
    "CALIBRATION_METHODS",
    "WEIGHT_RANGES",
    "QuantizationError",
    "calibration_subset",
    "check_agreement",
    "default_weight_range",
    "quantize",
]

# Names of onnxruntime.quantization.CalibrationMethod members.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
# Per-channel weight scales need DequantizeLinear's ``axis``, new in opset 13; the fp32
# export stays at the opset paddle2onnx chose.
QUANTIZED_OPSET = 13
# The layers with weights; the bias adds, pools and softmax stay fp32 (quantising the adds
# rounds the logits to 8 bits and costs agreement with fp32 at no gain in speed).
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
# The written model is compared with fp32 on up to this many calibration images ...
AGREEMENT_IMAGES = 32
# ... and refused when the mean total-variation distance between the two models' class
# probabilities exceeds this: int8 rounding moves them by a few hundredths, a broken
# quantisation by tenths (see check_agreement).
AGREEMENT_TOLERANCE = 0.1


class QuantizationError(RuntimeError):
    """Quantisation cannot start or failed; the message names the input at fault."""


def calibration_subset(paths, count):
    """``count`` of ``paths`` spread evenly over them, so that a list sorted by class folder
    gives every class its share; all of them when there are no more than ``count``."""
    if count < 1:
        raise QuantizationError(f"calibration count must be at least 1, got {count}")
    if len(paths) <= count:
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]


def default_weight_range(flags=None):
    """``"full"`` on a CPU with VNNI or AMX, else ``"reduced"`` (also where the flags cannot
    be read): the range that is exact and fast on the CPU with /proc/cpuinfo ``flags``
    (default: this one)."""
    return "full" if cpu_has_vnni(flags) else "reduced"


def _import_quantization():
    try:
        import onnx
        from onnx import version_converter
        import onnxruntime
        from onnxruntime import quantization
    except ImportError as err:
        raise QuantizationError(
            f"int8 quantisation needs onnx, onnxruntime and ml_dtypes (pip install 'paddlevision[onnx]'): {err}"
        ) from err
    # Calibration sessions would warn about every unused constant paddle2onnx leaves.
    onnxruntime.set_default_logger_severity(3)
    return onnx, version_converter, quantization


def _prepare(preprocessor, path):
    try:
        return preprocessor(path)
    except ImageDecodeError as err:
        raise QuantizationError(f"calibration image: {err}") from None
    except OSError as err:
        raise QuantizationError(f"calibration image {path}: cannot read it: {err.strerror or err}") from None


def _check_output_dir(model_dir, out_dir):
    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve():
        raise QuantizationError(f"output {out_dir} is the fp32 model's own directory; choose a new one")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QuantizationError(f"output {out_dir} already exists and is not empty; choose a new directory")


def check_agreement(fp32_onnx, int8_onnx, batch):
    """``(mean, max)`` total-variation distance between the class probabilities of the two
    ONNX models on ``batch``, each model reloaded by ONNX Runtime from its file (a file that
    does not load is a :class:`QuantizationError`). The distance of two distributions is
    half their L1 difference: 0 for equal answers, 1 for disjoint ones."""
    import onnxruntime

    outputs = []
    for path in (fp32_onnx, int8_onnx):
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outputs.append(session.run(None, {session.get_inputs()[0].name: batch})[0])
        except Exception as err:  # ONNX Runtime's own exception types derive from Exception only
            raise QuantizationError(f"ONNX Runtime cannot run {path}: {err}") from err
    distance = 0.5 * np.abs(outputs[0] - outputs[1]).sum(axis=1)
    return float(distance.mean()), float(distance.max())


def quantize(model_dir, calibration_images, out_dir, *, method="minmax", batch_size=16, weight_range=None):
    """Write the int8 model of the fp32 export in ``model_dir`` to the new directory
    ``out_dir`` and return the path of its ``inference.onnx``.

    ``calibration_images``: image paths, decoded and preprocessed as the runners do with the
    sizes ``model_dir`` records; their activation ranges set the scales. Use a few hundred
    training images, never the images that measure accuracy. ``method``: a key of
    :data:`CALIBRATION_METHODS`. ``weight_range``: one of :data:`WEIGHT_RANGES`, for the CPU
    that will run the model; ``None``: :func:`default_weight_range` of this CPU. Before
    ``out_dir`` appears, the written model is reloaded and compared with fp32 on up to
    :data:`AGREEMENT_IMAGES` of the calibration images: a mean total-variation distance above
    :data:`AGREEMENT_TOLERANCE` is a :class:`QuantizationError` and nothing is left behind.
    """
    if method not in CALIBRATION_METHODS:
        raise QuantizationError(f"method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if weight_range is None:
        weight_range = default_weight_range()
        chosen = f"the default for this CPU, which has {'' if cpu_has_vnni() else 'no '}VNNI"
    else:
        chosen = "requested"
    if weight_range not in WEIGHT_RANGES:
        raise QuantizationError(f"weight range must be one of {', '.join(WEIGHT_RANGES)}, got {weight_range!r}")
    if batch_size < 1:
        raise QuantizationError(f"batch size must be at least 1, got {batch_size}")
    images = [str(path) for path in calibration_images]
    if not images:
        raise QuantizationError("no calibration images given")
    metadata = read_metadata(model_dir)
    if model_precision(model_dir, metadata) == "int8":
        raise QuantizationError(f"{model_dir} already holds an int8 model; quantise the fp32 export")
    fp32_onnx = find_onnx_model(model_dir)
    _check_output_dir(model_dir, out_dir)
    onnx, version_converter, quantization = _import_quantization()
    preprocessor = Preprocessor(*preprocess_sizes(model_dir, metadata))
    # Every image is read before the slow steps start, so a bad one stops the run at once
    # (0.6 MB per image at 224x224).
    arrays = np.stack([_prepare(preprocessor, path) for path in images])

    class CalibrationReader(quantization.CalibrationDataReader):
        def __init__(self, input_name):
            self._batches = ({input_name: arrays[i:i + batch_size]} for i in range(0, len(arrays), batch_size))

        def get_next(self):
            return next(self._batches, None)

    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging_dir = tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent)
    except OSError as err:
        raise QuantizationError(f"cannot write into {out_dir.parent}: {err.strerror or err}") from err
    with staging_dir as staging:
        staging = Path(staging)
        try:
            model = onnx.load(fp32_onnx)
        except Exception as err:  # onnx raises DecodeError and friends, all from Exception
            raise ModelDirError(f"{fp32_onnx} is not a readable ONNX model: {err}") from err
        try:
            input_name = model.graph.input[0].name
            if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < QUANTIZED_OPSET:
                model = version_converter.convert_version(model, QUANTIZED_OPSET)
            converted, prepared = staging / "fp32.onnx", staging / "fp32_prepared.onnx"
            quantized = staging / "int8.onnx"
            onnx.save(model, str(converted))
            del model
            # Shape inference and constant folding first, as onnxruntime.quantization advises.
            quantization.quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
            quantization.quantize_static(
                str(prepared),
                str(quantized),
                CalibrationReader(input_name),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                reduce_range=weight_range == "reduced",
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[method]),
                op_types_to_quantize=list(QUANTIZED_OPS),
            )
            int8_model = onnx.load(str(quantized))
        except Exception as err:  # the converter and onnxruntime.quantization raise many kinds
            raise QuantizationError(
                f"ONNX Runtime could not quantise {fp32_onnx}: {type(err).__name__}: {err}") from err
        onnx.helper.set_model_props(int8_model, {ONNX_PRECISION_KEY: "int8", ONNX_WEIGHT_RANGE_KEY: weight_range})
        target = staging / "model"
        target.mkdir()
        onnx.save(int8_model, str(target / ONNX_FILENAME))
        del int8_model
        check_images = arrays[np.linspace(0, len(arrays) - 1, min(len(arrays), AGREEMENT_IMAGES)).round().astype(int)]
        mean_distance, max_distance = check_agreement(fp32_onnx, target / ONNX_FILENAME, check_images)
        if not mean_distance <= AGREEMENT_TOLERANCE:  # also refuses NaN
            raise QuantizationError(
                f"the int8 model of {fp32_onnx} disagrees with fp32 on {len(check_images)} calibration images: mean "
                f"total-variation distance of their class probabilities {mean_distance:.3f} (largest "
                f"{max_distance:.3f}), more than {AGREEMENT_TOLERANCE}; nothing was written")
        bits = "8-bit" if weight_range == "full" else "7-bit"
        int8_metadata = dict(
            metadata,
            precision="int8",
            quantization={
                "engine": "onnxruntime",
                "format": "QDQ",
                "weights": f"int8 ({bits} range), per output channel",
                "weight_range": weight_range,
                "weight_range_chosen": chosen,
                "activations": "uint8, per tensor",
                "quantized_ops": list(QUANTIZED_OPS),
                "calibration_method": method,
                "calibration_images": len(images),
                "fp32_agreement": {"images": len(check_images), "mean_total_variation": round(mean_distance, 5),
                                   "max_total_variation": round(max_distance, 5)},
                "source_model": str(Path(fp32_onnx).resolve()),
            },
        )
        (target / METADATA_FILENAME).write_text(
            json.dumps(int8_metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        if out_dir.exists():
            out_dir.rmdir()  # checked empty above
        os.replace(target, out_dir)
    return str(out_dir / ONNX_FILENAME)
