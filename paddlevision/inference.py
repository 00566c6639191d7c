"""Paddle Inference predictors for models written by ``tools/export_model.py``.

Creating a predictor (:func:`create_predictor`: options checked, graph optimised, weights
loaded) is separate from running it (:meth:`Predictor.run`), so a server creates one
predictor per worker at start-up and only runs it per request. One :class:`Predictor`
may be shared by threads: its runs are serialised, because a Paddle predictor's input and
output buffers belong to the instance.
"""

import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
import paddle
from paddle import inference as paddle_infer

from paddlevision.hardware import cpu_vendor_and_flags, gpu_available, usable_cpu_count
from paddlevision.model_dir import ModelDirError, PaddleModelFiles, find_paddle_model_files, read_metadata

__all__ = [
    "PRECISIONS",
    "ModelDirError",
    "PaddleModelFiles",
    "Predictor",
    "PredictorOptions",
    "UnsupportedOptionError",
    "check_options",
    "cpu_supports_bf16",
    "create_config",
    "create_predictor",
    "find_paddle_model_files",
    "gpu_available",
]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")

# What the exporter writes by default, for directories exported without metadata.
_DEFAULT_IMG_SIZE = 224


class UnsupportedOptionError(ValueError):
    """A combination of options this machine or this Paddle build cannot run."""


@dataclass(frozen=True)
class PredictorOptions:
    use_gpu: bool = False
    gpu_mem: int = 8000  # MB of GPU memory Paddle reserves up front
    gpu_id: int = 0
    use_tensorrt: bool = False
    precision: str = "fp32"
    use_mkldnn: bool = True  # oneDNN kernels on CPU
    cpu_threads: Optional[int] = None  # None: every core this process may run on
    max_batch_size: int = 1  # upper end of TensorRT's dynamic batch range


def cpu_supports_bf16():
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX) and in this Paddle build.
    Without it oneDNN emulates bf16, which is slower than fp32."""
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_vendor_and_flags()[1])
    return native and paddle.amp.is_bfloat16_supported("cpu")


def check_options(options):
    """Raise :class:`UnsupportedOptionError` for options that cannot run here."""
    if options.precision not in PRECISIONS:
        raise UnsupportedOptionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
    if options.use_gpu and not gpu_available():
        raise UnsupportedOptionError(
            "--use-gpu True: this Paddle build has no usable GPU "
            f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use --use-gpu False"
        )
    if options.use_tensorrt and not options.use_gpu:
        raise UnsupportedOptionError("--use-tensorrt True needs --use-gpu True")
    if options.precision in ("fp16", "int8") and not options.use_tensorrt:
        raise UnsupportedOptionError(
            f"--precision {options.precision} runs through TensorRT only: pass --use-gpu True --use-tensorrt True "
            "(on CPU use fp32, or bf16 where the CPU supports it)"
        )
    if options.precision == "bf16":
        if options.use_gpu:
            raise UnsupportedOptionError("--precision bf16 runs on CPU through oneDNN only; use --use-gpu False")
        if not options.use_mkldnn:
            raise UnsupportedOptionError("--precision bf16 runs through oneDNN: pass --use-mkldnn True")
        if not cpu_supports_bf16():
            raise UnsupportedOptionError(
                "--precision bf16: this CPU has no native bf16 (avx512_bf16 or amx_bf16) or this Paddle build "
                "does not support it; use --precision fp32"
            )
    if options.cpu_threads is not None and options.cpu_threads < 1:
        raise UnsupportedOptionError(f"--cpu-threads must be at least 1, got {options.cpu_threads}")


_TENSORRT_PRECISIONS = {
    "fp32": paddle_infer.PrecisionType.Float32,
    "fp16": paddle_infer.PrecisionType.Half,
    "int8": paddle_infer.PrecisionType.Int8,
}


def _enable_tensorrt(config, options, img_size, input_name):
    config.enable_tensorrt_engine(
        workspace_size=1 << 30,
        max_batch_size=options.max_batch_size,
        min_subgraph_size=3,
        precision_mode=_TENSORRT_PRECISIONS[options.precision],
        use_static=False,
        # An fp32-trained model has no quantisation scales; TensorRT calibrates them on
        # the first batches it sees.
        use_calib_mode=options.precision == "int8",
    )
    shape = [3, img_size, img_size]
    config.set_trt_dynamic_shape_info(
        {input_name: [1] + shape},
        {input_name: [options.max_batch_size] + shape},
        {input_name: [options.max_batch_size] + shape},
    )


def create_config(model_dir, options):
    """A ``paddle.inference.Config`` for the model in ``model_dir`` after
    :func:`check_options`."""
    check_options(options)
    files = find_paddle_model_files(model_dir)
    config = paddle_infer.Config(files.model_file, files.params_file)
    config.disable_glog_info()
    if options.use_gpu:
        config.enable_use_gpu(options.gpu_mem, options.gpu_id)
        if options.use_tensorrt:
            metadata = read_metadata(model_dir)
            _enable_tensorrt(
                config, options, metadata.get("img_size", _DEFAULT_IMG_SIZE), metadata.get("input_name", "x")
            )
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(options.cpu_threads or usable_cpu_count())
        if options.use_mkldnn:
            config.enable_onednn()
            if options.precision == "bf16":
                config.enable_onednn_bfloat16()
        else:
            config.disable_onednn()
    return config


class Predictor:
    """``run(batch NCHW float32) -> probabilities [N, num_classes]``."""

    def __init__(self, paddle_predictor):
        self._predictor = paddle_predictor
        self._input = paddle_predictor.get_input_handle(paddle_predictor.get_input_names()[0])
        self._output = paddle_predictor.get_output_handle(paddle_predictor.get_output_names()[0])
        self._lock = threading.Lock()

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            self._input.reshape(list(batch.shape))
            self._input.copy_from_cpu(batch)
            self._predictor.run()
            return self._output.copy_to_cpu()


def create_predictor(model_dir, options=None):
    return Predictor(paddle_infer.create_predictor(create_config(model_dir, options or PredictorOptions())))
