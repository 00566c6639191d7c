"""Paddle Inference predictors for models written by ``tools/export_model.py``.

What runs is decided by small functions of their inputs (:func:`resolve_precision`,
:func:`select_engine`, :func:`tensorrt_route`), so that the GPU
decisions are tested on machines without one; each predictor's ``summary`` says what
actually engaged. An int8 model made by ``tools/quantize_model.py`` holds only an ONNX
graph and runs on ONNX Runtime (:mod:`paddlevision.onnx_predictor`).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import paddle
from paddle import inference as paddle_infer

from paddlevision.device import cpu_vendor_and_flags, gpu_available, usable_cpu_count
from paddlevision.model_dir import (
    GRAPH_FILENAMES,
    INPUT_NAME,
    MODEL_PREFIX,
    ONNX_FILENAME,
    ModelDirError,
    PaddleModelFiles,
    find_paddle_model_files,
    graph_format,
    model_precision,
    preprocess_sizes,
    read_metadata,
)
from paddlevision.onnx_predictor import OnnxRuntimeMissingError, create_onnx_predictor

__all__ = [
    "ENGINE_ONNXRUNTIME",
    "ENGINE_PADDLE",
    "PRECISIONS",
    "TENSORRT_CONVERT",
    "TENSORRT_SUBGRAPHS",
    "ModelDirError",
    "PaddleModelFiles",
    "Predictor",
    "PredictorOptions",
    "UnsupportedOptionError",
    "check_model_dir",
    "check_options",
    "cpu_supports_bf16",
    "create_predictor",
    "find_paddle_model_files",
    "gpu_available",
    "resolve_precision",
    "select_engine",
    "tensorrt_cache_dir",
    "tensorrt_route",
]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")

# How --use-tensorrt engages TensorRT, by graph format (see tensorrt_route).
TENSORRT_SUBGRAPHS = "Config.enable_tensorrt_engine"
TENSORRT_CONVERT = "paddle.tensorrt.convert"

ENGINE_PADDLE = "paddle_inference"
ENGINE_ONNXRUNTIME = "onnxruntime"

# Where TENSORRT_CONVERT's programs and engines are kept (see tensorrt_cache_dir).
TENSORRT_CACHE_ENV = "PADDLEVISION_TENSORRT_CACHE"


class UnsupportedOptionError(ValueError):
    """A combination of options this machine, this Paddle build or this model cannot run."""


@dataclass(frozen=True)
class PredictorOptions:
    use_gpu: bool = False
    # Config.enable_use_gpu's memory_pool_init_size_mb: the initial pool of Paddle's
    # naive_best_fit allocator only; the default auto_growth allocator does not read it.
    gpu_mem: int = 8000
    gpu_id: int = 0
    use_tensorrt: bool = False
    precision: Optional[str] = None  # None: the precision the model records
    use_onednn: bool = True
    cpu_threads: Optional[int] = None  # None: every core this process may run on
    max_batch_size: int = 1  # upper end of TensorRT's dynamic batch range


def cpu_supports_bf16():
    """Native bf16 arithmetic on this CPU and in this Paddle build; without it oneDNN
    emulates bf16, slower than fp32."""
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_vendor_and_flags()[1])
    return native and paddle.amp.is_bfloat16_supported("cpu")


def resolve_precision(requested, model_precision, device, use_tensorrt):
    """The precision to run: ``requested`` (``None``: the model's) checked against the
    model's stored precision (``fp32``, or ``int8`` if quantised beforehand), the device
    (``"cpu"``/``"gpu"``) and TensorRT.

    int8 is only ever the precision of an int8 model. Paddle-TensorRT's one route from
    fp32 weights to int8, calibration mode (``enable_tensorrt_engine(use_calib_mode=True)``),
    computes every batch with Paddle's fp32 kernels while it records activation ranges,
    and builds int8 engines only for later runs (``TensorRTEngineOp::RunCalibration`` in
    paddle/fluid/operators/tensorrt/tensorrt_engine_op.h): its answers are fp32.
    """
    precision = requested or model_precision
    if precision not in PRECISIONS:
        raise UnsupportedOptionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if model_precision == "int8":
        if precision != "int8":
            raise UnsupportedOptionError(
                f"--precision {precision}: the model is quantised to int8 and runs as int8 only "
                "(leave --precision out or pass --precision int8)"
            )
        if device == "gpu" and not use_tensorrt:
            # Paddle's GPU passes begin by deleting quantize/dequantize ops
            # (delete_quant_dequant_linear_op_pass in kPirGpuPasses), leaving float arithmetic.
            raise UnsupportedOptionError("--precision int8 on GPU runs through TensorRT only: pass --use-tensorrt True")
        return precision
    if precision == "int8":
        raise UnsupportedOptionError(
            "--precision int8 needs a model quantised to int8 beforehand (its inference_meta.json records "
            '"precision": "int8"); this model is fp32, and TensorRT\'s calibration mode would compute it in fp32 '
            "while collecting ranges. Use fp32, fp16 (TensorRT) or bf16 (a CPU with native bf16)"
        )
    if precision == "fp16" and not (device == "gpu" and use_tensorrt):
        raise UnsupportedOptionError(
            "--precision fp16 runs through TensorRT only: pass --device gpu --use-tensorrt True "
            "(on CPU use fp32, or bf16 where the CPU supports it)"
        )
    if precision == "bf16" and device != "cpu":
        raise UnsupportedOptionError("--precision bf16 runs on CPU through oneDNN only; use --device cpu")
    return precision


def select_engine(precision, device, use_tensorrt, has_paddle_graph, has_onnx):
    """:data:`ENGINE_PADDLE` or :data:`ENGINE_ONNXRUNTIME` for a model directory holding
    the given graphs, run at ``precision`` (from :func:`resolve_precision`) on ``device``.

    Everything but int8 runs on Paddle Inference. int8 on CPU runs the quantised
    ``inference.onnx`` of ``tools/quantize_model.py`` on ONNX Runtime: Paddle Inference's
    CPU pipelines for Paddle 3 graphs (``kPirMkldnnPasses``, ``kPirCpuPasses``) begin with
    ``delete_quant_dequant_linear_op_pass`` and have no int8 pass, so a quantised Paddle
    graph would be computed in fp32. int8 on GPU needs a quantised Paddle graph for TensorRT.
    """
    if precision != "int8":
        return ENGINE_PADDLE
    if device == "cpu":
        if has_onnx:
            return ENGINE_ONNXRUNTIME
        raise UnsupportedOptionError(
            f"int8 on CPU runs a quantised {ONNX_FILENAME} on ONNX Runtime and this directory has none "
            "(Paddle Inference's CPU passes strip the quantisation of a Paddle graph and compute it in fp32); "
            "make one with tools/quantize_model.py"
        )
    if use_tensorrt and has_paddle_graph:
        return ENGINE_PADDLE
    raise UnsupportedOptionError(
        "int8 on GPU runs a quantised Paddle graph through TensorRT; this int8 model is an ONNX graph "
        "for ONNX Runtime on CPU: use --device cpu"
    )


def tensorrt_route(model_format, use_tensorrt):
    """How TensorRT is engaged for a graph of ``model_format``; ``None`` without it.

    A legacy ``"program"`` goes through :data:`TENSORRT_SUBGRAPHS`, whose passes
    (``kTRTSubgraphPasses``, installed by ``AnalysisConfig::Update``) rewrite ProgramDesc
    graphs. A ``"pir"`` graph (Paddle 3's ``.json``) is optimised with ``kPirGpuPasses`` in
    ``OptimizeInferencePirProgram``, which never reads the TensorRT switch, so it is
    converted by :data:`TENSORRT_CONVERT` and run on a plain GPU predictor.
    """
    if not use_tensorrt:
        return None
    routes = {"program": TENSORRT_SUBGRAPHS, "pir": TENSORRT_CONVERT}
    if model_format not in routes:
        raise ValueError(f"unknown model format {model_format!r}; expected one of {', '.join(routes)}")
    return routes[model_format]


def check_options(options, model_precision="fp32"):
    """The precision to run; :class:`UnsupportedOptionError` for options that cannot run
    here or on this model."""
    if options.use_gpu and not gpu_available():
        raise UnsupportedOptionError(
            "--device gpu: this Paddle build has no usable GPU "
            f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use --device cpu"
        )
    if options.use_tensorrt and not options.use_gpu:
        raise UnsupportedOptionError("--use-tensorrt True needs --device gpu")
    precision = resolve_precision(
        options.precision, model_precision, "gpu" if options.use_gpu else "cpu", options.use_tensorrt
    )
    if precision == "bf16":
        if not options.use_onednn:
            raise UnsupportedOptionError("--precision bf16 runs through oneDNN: pass --use-onednn True")
        if not cpu_supports_bf16():
            raise UnsupportedOptionError(
                "--precision bf16: this CPU has no native bf16 (avx512_bf16 or amx_bf16) or this Paddle build "
                "does not support it; use --precision fp32"
            )
    if options.cpu_threads is not None and options.cpu_threads < 1:
        raise UnsupportedOptionError(f"--cpu-threads must be at least 1, got {options.cpu_threads}")
    return precision


def _input_shapes(options, model_dir, metadata):
    """``(input name, (min, optimal, max) shapes)`` of TensorRT's dynamic batch range."""
    _, crop_size = preprocess_sizes(model_dir, metadata)
    image = (3, crop_size, crop_size)
    largest = (options.max_batch_size, *image)
    return metadata.get("input_name", INPUT_NAME), ((1, *image), largest, largest)


def _enable_tensorrt_subgraphs(config, options, precision, model_dir, metadata, optimized_dir):
    precisions = {
        "fp32": paddle_infer.PrecisionType.Float32,
        "fp16": paddle_infer.PrecisionType.Half,
        "int8": paddle_infer.PrecisionType.Int8,
    }
    config.enable_tensorrt_engine(
        workspace_size=1 << 30,
        max_batch_size=options.max_batch_size,
        min_subgraph_size=3,
        precision_mode=precisions[precision],
        use_static=False,
        # An int8 model carries its quantisation scales (see resolve_precision).
        use_calib_mode=False,
    )
    name, (smallest, optimal, largest) = _input_shapes(options, model_dir, metadata)
    config.set_trt_dynamic_shape_info({name: list(smallest)}, {name: list(largest)}, {name: list(optimal)})
    # The optimised program is written out so that the engines that engaged can be counted
    # (SaveOptimizedModelPass writes <optim_cache_dir>/_optimized.pdmodel).
    config.set_optim_cache_dir(str(optimized_dir))
    config.enable_save_optim_model(True)


def count_subgraph_engines(optimized_dir):
    """``tensorrt_engine`` ops in the ``_optimized.pdmodel`` Paddle Inference wrote into
    ``optimized_dir``: the TensorRT subgraphs that engaged (``enable_tensorrt_engine`` only
    sets a switch; its passes may find nothing to convert)."""
    from paddle.base.proto import framework_pb2

    path = Path(optimized_dir) / "_optimized.pdmodel"
    if not path.is_file():
        raise UnsupportedOptionError(f"--use-tensorrt: Paddle Inference wrote no optimised program to {path}, "
                                     "so whether TensorRT engaged is unknown")
    program = framework_pb2.ProgramDesc.FromString(path.read_bytes())
    return sum(op.type == "tensorrt_engine" for block in program.blocks for op in block.ops)


def tensorrt_cache_dir():
    """Where :data:`TENSORRT_CONVERT` keeps converted programs and their engines:
    ``$PADDLEVISION_TENSORRT_CACHE``, else ``$XDG_CACHE_HOME/paddlevision/tensorrt``
    (``~/.cache/...``). An entry may be deleted when no predictor is using it."""
    explicit = os.environ.get(TENSORRT_CACHE_ENV)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paddlevision" / "tensorrt"


def tensorrt_cache_key(files, settings):
    """sha256 of the graph's and weights' bytes and of ``settings``: an engine is valid only
    for the model, precision, shapes, GPU model and library versions it was built with."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def _expected_gpu(gpu_id):
    """Paddle's expected place set to card ``gpu_id`` for the conversion: its shape-collecting
    run (``warmup_shape_infer``, an Executor on the expected place) then runs there, and the
    TensorRT builder, which builds on the current CUDA device, after it. ``convert`` still
    loads and saves the weights through ``CUDAPlace(0)`` (python/paddle/tensorrt/export.py)."""
    previous = paddle.get_device()
    paddle.set_device(f"gpu:{gpu_id}")
    try:
        yield
    finally:
        paddle.set_device(previous)


def _complete_entry(entry):
    """The record of a finished conversion in cache entry ``entry``, or None when the entry is
    missing, was cut short, or lost a file since."""
    try:
        record = json.loads((entry / "converted.json").read_text(encoding="utf-8"))
        files = [record["model_file"], record["params_file"], *record["engine_files"]]
        return record if all(Path(path).is_file() for path in files) else None
    except (OSError, ValueError, KeyError, TypeError):  # unreadable, not JSON, or not our record
        return None


def _convert_for_tensorrt(files, options, precision, model_dir, metadata):
    """``(converted files, engines, how)``: the graph rewritten by ``paddle.tensorrt.convert``,
    kept in a cache entry of :func:`tensorrt_cache_dir` keyed by :func:`tensorrt_cache_key`,
    converted now or found there (``how``).

    The entry outlives the predictor: Paddle's converter writes each engine to a file under
    ``save_model_dir`` and records only its path in the program, and the predictor reads it
    when its first run builds the ``TensorRTEngineInstruction``.
    """
    try:
        from paddle.tensorrt.export import Input, PrecisionMode, TensorRTConfig, convert
    except ImportError as err:
        raise UnsupportedOptionError(
            f"--use-tensorrt: this Paddle build has no paddle.tensorrt ({err}); install a GPU build with TensorRT"
        ) from err
    name, (smallest, optimal, largest) = _input_shapes(options, model_dir, metadata)
    settings = {
        "precision": precision, "input": name, "shapes": [smallest, optimal, largest],
        "gpu": [paddle.device.cuda.get_device_name(options.gpu_id),
                list(paddle.device.cuda.get_device_capability(options.gpu_id))],
        "paddle": paddle.version.commit, "tensorrt": str(paddle.version.tensorrt()),
    }
    key = tensorrt_cache_key(files, settings)
    root = tensorrt_cache_dir()
    entry = root / key
    prefix = entry / MODEL_PREFIX
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "w")
    except OSError as err:
        raise UnsupportedOptionError(f"--use-tensorrt: cannot write the TensorRT cache {root}: "
                                     f"{err.strerror or err} (set {TENSORRT_CACHE_ENV})") from err
    with lock:  # another process or thread converting the same model waits, then finds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = _complete_entry(entry)
        how = "cached"
        if record is None:
            how = "converted now"
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir()
            trt_config = TensorRTConfig(
                inputs=[Input(min_input_shape=smallest, optim_input_shape=optimal, max_input_shape=largest,
                              name=name)],
                precision_mode=PrecisionMode[precision.upper()],
                # A prefix: the program goes to <prefix>.json/.pdiparams, the engines into <prefix>/.
                save_model_dir=str(prefix),
            )
            try:
                # The prefix, not the file: load_inference_model appends ".json" (pir_io.py).
                with _expected_gpu(options.gpu_id):
                    program = convert(str(Path(files.model_file).with_suffix("")), trt_config)
                engines = sum(op.name() == "pd_op.tensorrt_engine" for op in program.global_block().ops)
                if engines == 0:
                    raise UnsupportedOptionError(
                        f"--use-tensorrt: paddle.tensorrt.convert put no part of {files.model_file} into TensorRT; "
                        "run without --use-tensorrt"
                    )
            except BaseException:
                shutil.rmtree(entry, ignore_errors=True)
                raise
            record = {"model_file": f"{prefix}.json", "params_file": f"{prefix}.pdiparams", "engines": engines,
                      "engine_files": sorted(str(path) for path in prefix.glob("*.trt")), "source": files.model_file,
                      "settings": settings}
            staged = entry / "converted.json.tmp"
            staged.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            os.replace(staged, entry / "converted.json")  # the entry is complete once this exists
    return PaddleModelFiles(record["model_file"], record["params_file"]), record["engines"], f"{how} in {entry}"


def _cpu_config(config, options, precision):
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(options.cpu_threads or usable_cpu_count())
    if options.use_onednn:
        config.enable_onednn()
        if precision == "bf16":
            config.enable_onednn_bfloat16()
    else:
        config.disable_onednn()


class Predictor:
    """``run(batch NCHW float32) -> probabilities [N, num_classes]``; ``summary`` says what
    engaged (``warnings``, as an ``OnnxPredictor`` has, stays empty). Threads may share one:
    runs are serialised, as a Paddle predictor's input and output buffers belong to the
    instance."""

    warnings = ()

    def __init__(self, paddle_predictor, summary):
        self._predictor = paddle_predictor
        self._input = paddle_predictor.get_input_handle(paddle_predictor.get_input_names()[0])
        self._output = paddle_predictor.get_output_handle(paddle_predictor.get_output_names()[0])
        self._lock = threading.Lock()
        self.summary = summary

    def run(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            self._input.reshape(list(batch.shape))
            self._input.copy_from_cpu(batch)
            self._predictor.run()
            return self._output.copy_to_cpu()


def check_model_dir(model_dir, options):
    """``(engine, precision)`` that ``model_dir`` runs with under ``options``; raises
    ``ModelDirError`` or :class:`UnsupportedOptionError` before anything is loaded."""
    metadata = read_metadata(model_dir)
    path = Path(model_dir)
    device = "gpu" if options.use_gpu else "cpu"
    graphs = {"has_paddle_graph": any((path / name).is_file() for name in GRAPH_FILENAMES),
              "has_onnx": (path / ONNX_FILENAME).is_file()}
    stored_precision = model_precision(model_dir, metadata)
    if stored_precision == "int8" and not graphs["has_paddle_graph"]:
        # An ONNX-only int8 directory: where it can run decides before the Paddle options do.
        select_engine("int8", device, options.use_tensorrt, **graphs)
    precision = check_options(options, stored_precision)
    engine = select_engine(precision, device, options.use_tensorrt, **graphs)
    if engine == ENGINE_PADDLE:
        find_paddle_model_files(model_dir)
    return engine, precision


def _create_onnxruntime_predictor(model_dir, options):
    try:
        return create_onnx_predictor(model_dir, cpu_threads=options.cpu_threads or usable_cpu_count())
    except OnnxRuntimeMissingError as err:
        raise UnsupportedOptionError(f"int8 models run on ONNX Runtime: {err}") from err


def create_predictor(model_dir, options=None):
    """A predictor for the model in ``model_dir``: a :class:`Predictor`, or for an int8
    model an ``OnnxPredictor`` (see :func:`select_engine`); ``ModelDirError`` or
    :class:`UnsupportedOptionError` when it cannot be created."""
    options = options or PredictorOptions()
    engine, precision = check_model_dir(model_dir, options)
    if engine == ENGINE_ONNXRUNTIME:
        return _create_onnxruntime_predictor(model_dir, options)
    files = find_paddle_model_files(model_dir)
    metadata = read_metadata(model_dir)
    model_format = graph_format(files.model_file)
    route = tensorrt_route(model_format, options.use_tensorrt)
    run_files, engines, kept = files, 0, ""
    if route == TENSORRT_CONVERT:
        run_files, engines, kept = _convert_for_tensorrt(files, options, precision, model_dir, metadata)
    config = paddle_infer.Config(run_files.model_file, run_files.params_file)
    config.disable_glog_info()
    subgraphs = route == TENSORRT_SUBGRAPHS
    with tempfile.TemporaryDirectory(prefix="paddle-optimized-") if subgraphs else contextlib.nullcontext() as optimized_dir:
        if options.use_gpu:
            config.enable_use_gpu(options.gpu_mem, options.gpu_id)
            if subgraphs:
                _enable_tensorrt_subgraphs(config, options, precision, model_dir, metadata, optimized_dir)
        else:
            _cpu_config(config, options, precision)
        paddle_predictor = _load(config, run_files)
        if subgraphs:
            # The subgraph engines live in the predictor; the optimised program was written only to be counted.
            engines = count_subgraph_engines(optimized_dir)
            if engines == 0:
                raise UnsupportedOptionError(
                    f"--use-tensorrt: Paddle Inference put no part of {files.model_file} into TensorRT; "
                    "run without --use-tensorrt"
                )
    model = f"{files.model_file} ({model_format}, {precision})"
    if options.use_gpu:
        tensorrt = "off" if route is None else f"on through {route}, {_count(engines, 'engine')}"
        summary = f"Paddle Inference: GPU {config.gpu_device_id()}, TensorRT {tensorrt}{f' ({kept})' if kept else ''}; {model}"
    else:
        summary = (
            f"Paddle Inference: CPU, {_count(config.cpu_math_library_num_threads(), 'thread')}, "
            f"oneDNN {_on_off(config.onednn_enabled())}, bf16 {_on_off(precision == 'bf16' and config.onednn_enabled())}; "
            f"{model}"
        )
    return Predictor(paddle_predictor, summary)


def _load(config, files):
    """``paddle_infer.create_predictor(config)``; a graph or weights file Paddle cannot read
    (truncated, corrupt, another model's) is a ``ModelDirError`` naming it."""
    try:
        return paddle_infer.create_predictor(config)
    except Exception as err:  # Paddle maps its error codes onto several builtin exception types
        lines = str(err).strip().splitlines()
        # The first line of Paddle's message, without the C++ source location it ends with.
        reason = re.sub(r"\s*\(at [^()]*\)$", "", lines[0]) if lines else type(err).__name__
        raise ModelDirError(f"cannot load {_unreadable_file(files, reason)}: {reason}") from err


def _unreadable_file(files, reason):
    """Which of ``files`` Paddle could not read: the graph when Paddle's message is about it or
    a ``.json`` graph is not JSON, else the weights."""
    graph_failed = any(word in reason.lower() for word in ("json", "model file", "program"))
    if not graph_failed and files.model_file.endswith(".json"):
        try:
            with open(files.model_file, encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError):
            graph_failed = True
    if graph_failed:
        return f"the graph {files.model_file} (truncated or corrupt)"
    return f"the weights {files.params_file} (truncated, corrupt or not this graph's)"


def _on_off(flag):
    return "on" if flag else "off"


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"
