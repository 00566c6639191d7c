"""ONNX Runtime predictor for the ``inference.onnx`` of a model directory: the fp32 export
of ``tools/export_model.py --onnx`` or the int8 model of ``tools/quantize_model.py``. The
same ``run(batch) -> probabilities`` and ``summary`` as ``paddlevision.inference.Predictor``,
without paddle."""

import numpy as np

from paddlevision.device import VNNI_FLAGS, cpu_has_vnni
from paddlevision.model_dir import METADATA_FILENAME, ModelDirError, find_onnx_model, model_precision, read_metadata

__all__ = ["ONNX_PRECISION_KEY", "ONNX_WEIGHT_RANGE_KEY", "WEIGHT_RANGES", "OnnxPredictor", "OnnxRuntimeMissingError",
           "create_onnx_predictor", "weight_range_warning"]

# Keys of the ONNX file's own metadata that tools/quantize_model.py sets: the precision
# ("int8"), so that a runner tells a quantised graph from an fp32 one by the file itself,
# not only by what inference_meta.json says, and the weight range.
ONNX_PRECISION_KEY = "paddlevision_precision"
ONNX_WEIGHT_RANGE_KEY = "paddlevision_weight_range"
# "full": int8 weights over [-127, 127]; "reduced": 7 bits, ONNX Runtime's reduce_range.
WEIGHT_RANGES = ("full", "reduced")


class OnnxRuntimeMissingError(RuntimeError):
    """onnxruntime is not installed."""


def weight_range_warning(weight_range, flags=None):
    """A warning for running an int8 model with ``weight_range`` on a CPU with /proc/cpuinfo
    ``flags`` (default: this one), or None when the range suits that CPU."""
    if weight_range != "full" or cpu_has_vnni(flags):
        return None
    return ("this int8 model has full-range (8-bit) weights and this CPU has no VNNI (none of "
            f"{', '.join(VNNI_FLAGS)}): x86 int8 kernels then sum uint8 x int8 products in saturating 16-bit pairs "
            "(VPMADDUBSW) and the answers can drift from fp32; quantise again with --weight-range reduced for it")


class OnnxPredictor:
    """``run(batch NCHW float32) -> probabilities [N, num_classes]``; safe to run from
    several threads at once, as ONNX Runtime sessions are. ``summary`` says what engaged,
    ``warnings`` what may make the answers worse than they should be."""

    def __init__(self, session, summary="", warnings=()):
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self.summary = summary
        self.warnings = list(warnings)

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self._session.run(None, {self._input_name: batch})[0]


def create_onnx_predictor(model_dir, cpu_threads=None):
    """``cpu_threads`` None lets ONNX Runtime use one thread per physical core. Raises
    ``ModelDirError`` when ``inference_meta.json`` records int8 and ``inference.onnx`` is not
    a quantised model."""
    try:
        import onnxruntime
    except ImportError as err:
        raise OnnxRuntimeMissingError(f"the ONNX runner needs onnxruntime (pip install onnxruntime): {err}") from err

    if cpu_threads is not None and cpu_threads < 1:
        raise ValueError(f"--cpu-threads must be at least 1, got {cpu_threads}")
    recorded = model_precision(model_dir, read_metadata(model_dir))
    options = onnxruntime.SessionOptions()
    # paddle2onnx leaves a few unused constants that ONNX Runtime would warn about on
    # every start; real problems are errors.
    options.log_severity_level = 3
    if cpu_threads is not None:
        options.intra_op_num_threads = cpu_threads
    onnx_file = find_onnx_model(model_dir)
    try:
        session = onnxruntime.InferenceSession(onnx_file, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime's own exception types derive from Exception only
        raise ModelDirError(f"ONNX Runtime cannot load {onnx_file}: {err}") from err
    properties = session.get_modelmeta().custom_metadata_map
    precision = properties.get(ONNX_PRECISION_KEY, "fp32")
    if recorded == "int8" and precision != "int8":
        raise ModelDirError(
            f"{METADATA_FILENAME} in {model_dir} records int8 but {onnx_file} is not a model quantised by "
            "tools/quantize_model.py; quantise the fp32 export again"
        )
    threads = f"{cpu_threads} thread{'' if cpu_threads == 1 else 's'}" if cpu_threads else "a thread per core"
    summary = f"ONNX Runtime {onnxruntime.__version__}: CPU, {threads}, {precision}; {onnx_file}"
    warnings = []
    if precision == "int8":
        # Models quantised before the choice was recorded had 7-bit weights.
        weight_range = properties.get(ONNX_WEIGHT_RANGE_KEY, "reduced")
        bits = "8-bit" if weight_range == "full" else "7-bit"
        summary = (f"int8 engaged via ONNX Runtime {onnxruntime.__version__} (QDQ graph: int8 weights per channel, "
                   f"{bits} range, uint8 activations): CPU, {threads}; {onnx_file}")
        warnings = [warning for warning in [weight_range_warning(weight_range)] if warning]
    return OnnxPredictor(session, summary, warnings)
