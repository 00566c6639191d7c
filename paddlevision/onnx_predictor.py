"""ONNX Runtime predictor for the ``inference.onnx`` written by ``tools/export_model.py
--onnx``: the same ``run(batch) -> probabilities`` as ``paddlevision.inference.Predictor``,
without paddle."""

import numpy as np

from paddlevision.model_dir import ModelDirError, find_onnx_model

__all__ = ["OnnxPredictor", "OnnxRuntimeMissingError", "create_onnx_predictor"]


class OnnxRuntimeMissingError(RuntimeError):
    """onnxruntime is not installed."""


class OnnxPredictor:
    """``run(batch NCHW float32) -> probabilities [N, num_classes]``; safe to run from
    several threads at once, as ONNX Runtime sessions are."""

    def __init__(self, session):
        self._session = session
        self._input_name = session.get_inputs()[0].name

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self._session.run(None, {self._input_name: batch})[0]


def create_onnx_predictor(model_dir, cpu_threads=None):
    """``cpu_threads`` None lets ONNX Runtime use one thread per physical core."""
    try:
        import onnxruntime
    except ImportError as err:
        raise OnnxRuntimeMissingError(f"the ONNX runner needs onnxruntime (pip install onnxruntime): {err}") from err

    options = onnxruntime.SessionOptions()
    # paddle2onnx leaves a few unused constants that ONNX Runtime would warn about on
    # every start; real problems are errors.
    options.log_severity_level = 3
    if cpu_threads is not None:
        if cpu_threads < 1:
            raise ValueError(f"--cpu-threads must be at least 1, got {cpu_threads}")
        options.intra_op_num_threads = cpu_threads
    onnx_file = find_onnx_model(model_dir)
    try:
        session = onnxruntime.InferenceSession(onnx_file, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime's own exception types derive from Exception only
        raise ModelDirError(f"ONNX Runtime cannot load {onnx_file}: {err}") from err
    return OnnxPredictor(session)
