"""Export → Paddle Inference / ONNX Runtime: files, parity with tools/predict.py, batch CLI
behaviour, the device and precision decisions, and the paddle-free parts. One export (with
ONNX) of a model whose answers differ clearly from image to image (tests/peaked_model.py)
serves the whole module; answers are compared with the ones it was built to give."""

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import REPO_ROOT, load_script, run_script
from paddlevision import inference, model_dir
from paddlevision.batch_predict import NoImagesError, expand_image_paths, image_batches
from paddlevision.device import usable_cpu_count
from paddlevision.image import load_image
from paddlevision.inference import (
    TENSORRT_CONVERT,
    TENSORRT_SUBGRAPHS,
    PredictorOptions,
    UnsupportedOptionError,
    check_options,
    cpu_supports_bf16,
    resolve_precision,
    tensorrt_route,
)
from paddlevision.pipeline import Preprocessor
from paddlevision.transforms import ClassificationPresetEval
from paddlevision_cli import BatchJob, add_batch_arguments, str2bool
from peaked_model import save_peaked_weights

DEMO = "images/demo.jpg"
LINE = re.compile(r"^image_name: (?P<name>.+), class_id: (?P<class_id>\d+), prob: (?P<prob>[0-9.e-]+)$")
NUM_IMAGES = 6  # generated images the model was built for, besides the demo
PROB_TOLERANCE = 1e-5  # engines reproduce the constructed answers within 1e-6


paddle_infer = load_script("deploy/py_inference/infer.py")
onnx_infer = load_script("deploy/onnx/infer.py")
export_model = load_script("tools/export_model.py")


def parse_lines(stdout):
    matches = [LINE.match(line) for line in stdout.splitlines() if line.startswith("image_name:")]
    assert all(matches), stdout
    return [(m["name"], int(m["class_id"]), float(m["prob"])) for m in matches]


def write_images(directory, count):
    """``img_0.png`` ... of random pixels, each size different; the same ``count`` first
    images on every call."""
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(40 + 10 * i, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"img_{i}.png")
    return sorted(str(p) for p in directory.glob("img_*.png"))


@pytest.fixture(scope="module")
def fitted(module_tmp):
    """(weights, expected): weights in the reference's plain state-dict format, without
    metadata, and the (class_id, prob) each image's file name must get."""
    (module_tmp / "images").mkdir()
    images = write_images(module_tmp / "images", NUM_IMAGES)
    weights = module_tmp / "alexnet4.pdparams"
    answers = save_peaked_weights(weights, [str(REPO_ROOT / DEMO), *images])
    return weights, dict(zip(["demo.jpg", *(Path(p).name for p in images)], answers))


@pytest.fixture(scope="module")
def weights(fitted):
    return fitted[0]


@pytest.fixture(scope="module")
def expected(fitted):
    return fitted[1]


@pytest.fixture(scope="module")
def exported(weights, module_tmp):
    out = module_tmp / "alexnet_infer"
    result = run_script(
        "tools/export_model.py", "--pretrained", weights, "--model-dir", out, "--onnx", "--device", "cpu"
    )
    assert f"saved ONNX model to {out / 'inference.onnx'}" in result.stdout
    return out


def assert_answers(lines, expected, tolerance=PROB_TOLERANCE):
    """Each parsed line (name, class_id, prob) has its image's constructed answer."""
    assert lines
    for name, class_id, prob in lines:
        expected_class, expected_prob = expected[Path(name).name]
        assert class_id == expected_class, (name, class_id, prob)
        assert abs(prob - expected_prob) <= tolerance, (name, class_id, prob)


def runner_args(module, model_path, *flags):
    return module.get_args_parser().parse_args(["--model-dir", str(model_path), *map(str, flags)])


def test_export_writes_graph_weights_onnx_and_metadata(exported):
    files = model_dir.find_paddle_model_files(exported)
    assert files.model_file.endswith("inference.json")  # Paddle 3 writes PIR graphs
    assert (exported / "inference.onnx").is_file()
    metadata = json.loads((exported / "inference_meta.json").read_text())
    # torchvision's published evaluation sizes for AlexNet: resize 256, crop 224.
    assert metadata["num_classes"] == 4 and metadata["crop_size"] == 224 and metadata["resize_size"] == 256
    assert metadata["class_names"] is None and metadata["precision"] == "fp32"


def test_predict_paddle_inference_and_onnx_give_the_constructed_answer(exported, weights, expected):
    reference = run_script("tools/predict.py", "--pretrained", weights, "--img-path", DEMO, "--device", "cpu")
    class_id, prob = re.match(r"class_id: (\d+), prob: ([0-9.e-]+)", reference.stdout).groups()
    assert_answers([(DEMO, int(class_id), float(prob))], expected)
    outputs = [
        run_script("deploy/py_inference/infer.py", "--model-dir", exported, "--img-path", DEMO, "--use-gpu=False"),
        run_script("deploy/onnx/infer.py", "--model-dir", exported, "--img-path", DEMO),
    ]
    for output in outputs:
        lines = parse_lines(output.stdout)
        assert [name for name, _, _ in lines] == [DEMO]
        assert_answers(lines, expected)


def test_infer_with_default_flags(exported, expected):
    """As the README runs it: the model directory only (default image, batch size, device,
    oneDNN, threads and precision); stderr says what engaged."""
    result = run_script("deploy/py_inference/infer.py", "--model-dir", exported)
    lines = parse_lines(result.stdout)
    assert [name for name, _, _ in lines] == ["./images/demo.jpg"]
    assert_answers(lines, expected)
    threads = usable_cpu_count()
    summary = f"Paddle Inference: CPU, {threads} thread{'s' if threads > 1 else ''}, oneDNN on, bf16 off; "
    assert f"{summary}{exported / 'inference.json'} (pir, fp32)" in result.stderr.splitlines()


def test_onnx_runner_as_the_readme_prints_it(exported, expected):
    """``python deploy/onnx/infer.py --model-dir ./alexnet_infer``: the same answer line, after
    its own engaged line on stderr."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert "`python deploy/onnx/infer.py --model-dir ./alexnet_infer`" in readme
    result = run_script("deploy/onnx/infer.py", "--model-dir", exported)
    assert_answers(parse_lines(result.stdout), expected)
    [summary] = result.stderr.splitlines()
    assert re.fullmatch(rf"ONNX Runtime \S+: CPU, a thread per core, fp32; {re.escape(str(exported))}/inference\.onnx",
                        summary)


def test_engaged_line_says_what_the_flags_changed(exported, capsys):
    paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", DEMO, "--use-gpu=False",
                                  "--use-mkldnn=False", "--cpu-threads=1"))
    assert "Paddle Inference: CPU, 1 thread, oneDNN off, bf16 off; " in capsys.readouterr().err


def test_directory_in_batches_of_four_keeps_order_and_results(exported, expected, tmp_path, capsys):
    paths = write_images(tmp_path, NUM_IMAGES)
    (tmp_path / "notes.txt").write_text("not an image")
    assert paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", tmp_path, "--batch-size", 4)) == 0
    batched = parse_lines(capsys.readouterr().out)
    assert [name for name, _, _ in batched] == paths
    assert_answers(batched, expected)
    paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", tmp_path / "img_*.png"))
    one_by_one = parse_lines(capsys.readouterr().out)
    assert [name for name, _, _ in one_by_one] == paths
    assert_answers(one_by_one, expected)


def test_class_folder_directory_is_searched_recursively(exported, expected, tmp_path, capsys):
    """A data set laid out as val/<class>/<image> (the lite data's layout)."""
    images = write_images(tmp_path, 4)
    val = tmp_path / "val"
    for image, folder in zip(images, ["n01", "n01", "n02", "n02/extra"]):
        (val / folder).mkdir(parents=True, exist_ok=True)
        shutil.move(image, val / folder)
    assert paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", val, "--batch-size", 2)) == 0
    lines = parse_lines(capsys.readouterr().out)
    assert [name for name, _, _ in lines] == [
        str(val / "n01" / "img_0.png"), str(val / "n01" / "img_1.png"),
        str(val / "n02" / "extra" / "img_3.png"), str(val / "n02" / "img_2.png"),
    ]
    assert_answers(lines, expected)


def test_bad_image_is_reported_and_the_rest_still_run(exported, expected, tmp_path):
    paths = write_images(tmp_path, 3)
    bad = tmp_path / "img_1b.jpg"
    bad.write_bytes(b"not a jpeg")
    result = run_script("deploy/onnx/infer.py", "--model-dir", exported, "--img-path", tmp_path, "--batch-size", 2,
                        check=False)
    assert result.returncode != 0
    lines = parse_lines(result.stdout)
    assert [name for name, _, _ in lines] == paths
    assert_answers(lines, expected)
    assert f"error: cannot decode image {bad}" in result.stderr


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU without native bf16")
def test_bf16_on_onednn_gives_each_image_its_class_and_probability(exported, expected, tmp_path, capsys):
    """Images' probabilities are >= 0.09 apart; bf16 rounding moves them by about 1e-3
    (measured by rounding every weight and activation to bf16), so 0.02 separates bf16
    noise from a wrong answer."""
    paths = write_images(tmp_path, NUM_IMAGES)
    shutil.copy(REPO_ROOT / DEMO, tmp_path)
    paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", tmp_path, "--use-gpu", "False",
                                  "--precision", "bf16", "--batch-size", 4))
    captured = capsys.readouterr()
    assert "bf16 on" in captured.err
    lines = parse_lines(captured.out)
    assert len(lines) == len(paths) + 1
    assert_answers(lines, expected, tolerance=0.02)


@pytest.mark.parametrize("module", [paddle_infer, onnx_infer], ids=["paddle", "onnx"])
def test_missing_model_dir_is_a_clear_error(module, tmp_path):
    with pytest.raises(SystemExit, match=re.escape(f"model directory {tmp_path / 'none'} does not exist")):
        module.main(runner_args(module, tmp_path / "none", "--img-path", DEMO))


def test_incomplete_model_dir_names_the_missing_files(tmp_path):
    (tmp_path / "inference.json").write_text("{}")
    with pytest.raises(model_dir.ModelDirError, match=f"{re.escape(str(tmp_path))} is incomplete: missing inference.pdiparams"):
        model_dir.find_paddle_model_files(tmp_path)
    with pytest.raises(model_dir.ModelDirError, match="missing inference.onnx"):
        model_dir.find_onnx_model(tmp_path)


def test_legacy_pdmodel_is_found_and_pir_json_preferred(tmp_path):
    (tmp_path / "inference.pdmodel").write_bytes(b"")
    (tmp_path / "inference.pdiparams").write_bytes(b"")
    assert model_dir.find_paddle_model_files(tmp_path).model_file == str(tmp_path / "inference.pdmodel")
    (tmp_path / "inference.json").write_text("{}")
    assert model_dir.find_paddle_model_files(tmp_path).model_file == str(tmp_path / "inference.json")


@pytest.mark.parametrize("text, value", [("True", True), ("true", True), ("1", True),
                                         ("False", False), ("false", False), ("0", False)])
def test_str2bool_accepts_tipc_spellings(text, value):
    assert str2bool(text) is value


@pytest.mark.parametrize("text", ["yes", "", "2", "Tru"])
def test_str2bool_rejects_anything_else(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected True or False"):
        str2bool(text)


def test_bool_flags_take_tipc_style_values(tmp_path):
    args = runner_args(paddle_infer, tmp_path, "--use-gpu=False", "--use-mkldnn=false", "--benchmark")
    assert (args.device, args.use_onednn, args.benchmark) == ("cpu", False, True)


@pytest.mark.parametrize(
    "flags, use_gpu, gpu_id",
    [
        (["--device", "cpu"], False, 0),
        (["--use-gpu", "True"], True, 0),
        (["--use-gpu"], True, 0),
        (["--device", "gpu:1"], True, 1),
        # --use-gpu is --device's other spelling: the last one given wins.
        (["--device", "cpu", "--use-gpu", "True"], True, 0),
        (["--use-gpu", "True", "--device", "cpu"], False, 0),
    ],
)
def test_device_and_the_references_use_gpu(flags, use_gpu, gpu_id, tmp_path):
    options = paddle_infer.predictor_options(runner_args(paddle_infer, tmp_path, *flags))
    assert (options.use_gpu, options.gpu_id) == (use_gpu, gpu_id)


def test_device_defaults_to_gpu_when_there_is_one(tmp_path, monkeypatch):
    args = runner_args(paddle_infer, tmp_path)
    assert paddle_infer.predictor_options(args).use_gpu is False  # this machine has no GPU
    monkeypatch.setattr(paddle_infer, "default_device", lambda: "gpu")
    assert paddle_infer.predictor_options(args).use_gpu is True


@pytest.mark.parametrize("flags, message", [(["--device", "tpu"], "--device: expected cpu, gpu or gpu:N"),
                                            (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
                                            (["--use-gpu", "maybe"], "--use-gpu: expected True or False"),
                                            # Paddle enforces memory_pool_init_size_mb > 0 (AnalysisPredictor).
                                            (["--gpu-mem", "0"], "--gpu-mem: must be at least 1, got 0")])
def test_bad_runner_flags_are_usage_errors(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        runner_args(paddle_infer, tmp_path, *flags)
    assert message in capsys.readouterr().err


def test_export_accepts_the_references_flag_names(tmp_path):
    parse = export_model.get_args_parser().parse_args
    ours = parse(["--pretrained", "w", "--model-dir", str(tmp_path), "--crop-size", "96"])
    reference = parse(["--pretrained", "w", "--save-inference-dir", str(tmp_path), "--img-size", "96"])
    assert vars(ours) == vars(reference)
    assert (ours.model_dir, ours.crop_size) == (str(tmp_path), 96)


def test_cli_defaults_are_the_published_eval_sizes(tmp_path):
    """torchvision evaluates AlexNet at resize 256, center crop 224; so do the tools, and
    the runners for a model directory that does not record its sizes."""
    predict_args = load_script("tools/predict.py").get_args_parser().parse_args(["--pretrained", "w"])
    export_args = export_model.get_args_parser().parse_args(["--pretrained", "w"])
    assert (predict_args.resize_size, predict_args.crop_size) == (256, 224)
    assert (export_args.resize_size, export_args.crop_size) == (256, 224)
    assert model_dir.preprocess_sizes(tmp_path, {}) == (256, 224)


@pytest.mark.parametrize(
    "options, message",
    [
        (PredictorOptions(precision="fp16"), "TensorRT only"),
        (PredictorOptions(precision="int8"), "needs a model quantised to int8 beforehand"),
        (PredictorOptions(use_tensorrt=True), "needs --device gpu"),
        (PredictorOptions(precision="bf16", use_onednn=False), "through oneDNN: pass --use-onednn True"),
        (PredictorOptions(precision="fp64"), "must be one of"),
    ],
)
def test_unsupported_options_are_refused(options, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        check_options(options)


@pytest.mark.parametrize(
    "requested, model, device, use_tensorrt, expected",
    [
        (None, "fp32", "cpu", False, "fp32"),
        ("fp32", "fp32", "gpu", True, "fp32"),
        ("bf16", "fp32", "cpu", False, "bf16"),
        ("fp16", "fp32", "gpu", True, "fp16"),
        # A model quantised beforehand runs as int8 where its scales are used.
        (None, "int8", "cpu", False, "int8"),
        ("int8", "int8", "cpu", False, "int8"),
        ("int8", "int8", "gpu", True, "int8"),
    ],
)
def test_precision_that_runs(requested, model, device, use_tensorrt, expected):
    assert resolve_precision(requested, model, device, use_tensorrt) == expected


@pytest.mark.parametrize(
    "requested, model, device, use_tensorrt, message",
    [
        # TensorRT calibration would compute fp32 and call it int8.
        ("int8", "fp32", "gpu", True, "needs a model quantised to int8 beforehand"),
        ("int8", "fp32", "cpu", False, "needs a model quantised to int8 beforehand"),
        ("fp32", "int8", "cpu", False, "quantised to int8 and runs as int8 only"),
        ("int8", "int8", "gpu", False, "int8 on GPU runs through TensorRT only"),
        ("fp16", "fp32", "gpu", False, "fp16 runs through TensorRT only"),
        ("fp16", "fp32", "cpu", False, "fp16 runs through TensorRT only"),
        ("bf16", "fp32", "gpu", True, "bf16 runs on CPU"),
    ],
)
def test_precision_refused_with_the_reason(requested, model, device, use_tensorrt, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        resolve_precision(requested, model, device, use_tensorrt)


def test_int8_model_is_refused_at_fp32_and_accepted_as_its_own(tmp_path):
    (tmp_path / "inference_meta.json").write_text(json.dumps({"precision": "int8"}))
    precision = model_dir.model_precision(tmp_path, model_dir.read_metadata(tmp_path))
    assert check_options(PredictorOptions(), precision) == "int8"
    with pytest.raises(UnsupportedOptionError, match="runs as int8 only"):
        check_options(PredictorOptions(precision="fp32"), precision)
    (tmp_path / "inference_meta.json").write_text(json.dumps({"precision": "int4"}))
    with pytest.raises(model_dir.ModelDirError, match="unknown precision 'int4'"):
        model_dir.model_precision(tmp_path, model_dir.read_metadata(tmp_path))


@pytest.mark.parametrize(
    "model_format, use_tensorrt, route",
    [
        # Paddle 3 reads .json graphs as PIR, whose GPU passes ignore enable_tensorrt_engine.
        ("pir", True, TENSORRT_CONVERT),
        ("program", True, TENSORRT_SUBGRAPHS),
        ("pir", False, None),
        ("program", False, None),
    ],
)
def test_tensorrt_route_follows_the_graph_format(model_format, use_tensorrt, route):
    assert tensorrt_route(model_format, use_tensorrt) == route


def test_graph_format_from_the_file_name():
    assert model_dir.graph_format("m/inference.json") == "pir"
    assert model_dir.graph_format("m/inference.pdmodel") == "program"


class RecordingConfig:
    """Stands in for paddle.inference.Config: records every call."""

    def __init__(self, *files):
        self.files = files
        self.calls = {}

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls[name] = (args, kwargs)
            if name == "gpu_device_id":
                return self.calls["enable_use_gpu"][0][1]
            return None

        return record


class FakeHandle:
    def reshape(self, shape):
        self.shape = shape

    def copy_from_cpu(self, array):
        self.array = array

    def copy_to_cpu(self):
        return np.full((self.array.shape[0], 4), 0.25, dtype=np.float32)


class FakePaddlePredictor:
    """A Paddle predictor on a GPU: the TensorRT engines of a converted program are files
    the program names, read when its first run builds each TensorRTEngineInstruction
    (PirInterpreter::Run -> BuildInstruction; the instruction's constructor reads
    engine_serialized_data). A missing file fails that run, as ReadBinaryFileToString does."""

    def __init__(self, engine_files=()):
        self.engine_files = list(engine_files)
        self.handle = FakeHandle()
        self.runs = 0

    def get_input_names(self):
        return ["x"]

    def get_output_names(self):
        return ["softmax"]

    def get_input_handle(self, name):
        return self.handle

    get_output_handle = get_input_handle

    def run(self):
        if self.runs == 0:
            for path in self.engine_files:
                Path(path).read_bytes()
        self.runs += 1


def optimized_program(engines):
    """A ProgramDesc like the _optimized.pdmodel of Paddle's SaveOptimizedModelPass."""
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc()
    block = program.blocks.add(idx=0, parent_idx=-1)
    for op_type in ["feed", *["tensorrt_engine"] * engines, "softmax", "fetch"]:
        block.ops.add(type=op_type)
    return program.SerializeToString()


def fake_gpu_build(monkeypatch, tmp_path, trt_engines):
    """A GPU build with paddle.tensorrt, faked where paddle meets the GPU. Config records
    its calls; ``convert`` behaves as python/paddle/tensorrt/export.py and converter.py do:
    it hands its ``model_path`` to Paddle's real ``load_inference_model`` (run here on the
    CPU), writes ``trt_engines`` engine files into the directory ``save_model_dir``
    (util.get_cache_path) and the program naming them to ``<save_model_dir>.json``; the
    predictor of a Config reads those engines at its first run. The subgraph route's
    predictor writes ``_optimized.pdmodel`` with ``trt_engines`` engine ops into the
    optimisation cache directory, as SaveOptimizedModelPass does.
    Returns (configs created, convert calls as (model_path, config, device then))."""
    configs, conversions = [], []
    device = ["cpu"]
    monkeypatch.setenv("PADDLEVISION_TENSORRT_CACHE", str(tmp_path / "trt-cache"))

    def convert(model_path, trt_config):
        conversions.append((model_path, trt_config, device[0]))
        with paddle.pir_utils.IrGuard():
            paddle.static.io.load_inference_model(model_path, paddle.static.Executor(paddle.CPUPlace()))
        engine_dir = Path(trt_config.save_model_dir)
        engine_dir.mkdir(parents=True, exist_ok=True)
        engines = [str(engine_dir / f"engine_{1000 + i}_{i}.trt") for i in range(trt_engines)]
        for path in engines:
            Path(path).write_bytes(b"serialized engine")
        Path(f"{engine_dir}.json").write_text(json.dumps({"engine_serialized_data": engines}))
        Path(f"{engine_dir}.pdiparams").write_bytes(b"")
        ops = [types.SimpleNamespace(name=lambda: "pd_op.tensorrt_engine")] * trt_engines
        ops.append(types.SimpleNamespace(name=lambda: "pd_op.fetch"))
        return types.SimpleNamespace(global_block=lambda: types.SimpleNamespace(ops=ops))

    def make_config(*files):
        configs.append(RecordingConfig(*files))
        return configs[-1]

    def create_predictor(config):
        if "enable_save_optim_model" in config.calls:
            optim_dir = Path(config.calls["set_optim_cache_dir"][0][0])
            (optim_dir / "_optimized.pdmodel").write_bytes(optimized_program(trt_engines))
            return FakePaddlePredictor()
        program = json.loads(Path(config.files[0]).read_text() or "{}")
        return FakePaddlePredictor(program.get("engine_serialized_data", ()))

    def set_device(name):
        device[0] = name

    class PrecisionMode:
        FP32, FP16, INT8 = "FP32", "FP16", "INT8"

        def __class_getitem__(cls, name):
            return getattr(cls, name)

    export = types.ModuleType("paddle.tensorrt.export")
    export.Input = lambda **kwargs: kwargs
    export.TensorRTConfig = lambda **kwargs: types.SimpleNamespace(**kwargs)
    export.PrecisionMode = PrecisionMode
    export.convert = convert
    monkeypatch.setitem(sys.modules, "paddle.tensorrt", types.ModuleType("paddle.tensorrt"))
    monkeypatch.setitem(sys.modules, "paddle.tensorrt.export", export)
    monkeypatch.setattr(inference, "gpu_available", lambda: True)
    monkeypatch.setattr(paddle, "set_device", set_device)
    monkeypatch.setattr(paddle, "get_device", lambda: device[0])
    monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda card: "Fake GPU")
    monkeypatch.setattr(paddle.device.cuda, "get_device_capability", lambda card: (8, 0))
    monkeypatch.setattr(inference.paddle_infer, "Config", make_config)
    monkeypatch.setattr(inference.paddle_infer, "create_predictor", create_predictor)
    return configs, conversions


def fake_model_dir(path, graph_name, metadata):
    path.mkdir()
    (path / graph_name).write_text("{}")
    (path / "inference.pdiparams").write_bytes(b"")
    (path / "inference_meta.json").write_text(json.dumps(metadata))
    return path


def one_batch(predictor):
    return predictor.run(np.zeros((1, 3, 224, 224), dtype=np.float32))


TRT_FP16 = PredictorOptions(use_gpu=True, use_tensorrt=True, precision="fp16", max_batch_size=8)


def test_tensorrt_on_a_pir_model_converts_it_and_says_so(exported, tmp_path, monkeypatch):
    configs, conversions = fake_gpu_build(monkeypatch, tmp_path, trt_engines=2)
    predictor = inference.create_predictor(exported, TRT_FP16)
    [(model_path, trt_config, _)] = conversions
    # The prefix: Paddle's load_inference_model (called above) appends ".json" to it.
    assert model_path == str(exported / "inference")
    assert trt_config.precision_mode == "FP16"
    assert trt_config.inputs == [dict(min_input_shape=(1, 3, 224, 224), optim_input_shape=(8, 3, 224, 224),
                                      max_input_shape=(8, 3, 224, 224), name="x")]
    [config] = configs
    assert config.files == (trt_config.save_model_dir + ".json", trt_config.save_model_dir + ".pdiparams")
    assert "enable_use_gpu" in config.calls and "enable_tensorrt_engine" not in config.calls
    entry = Path(trt_config.save_model_dir).parent
    assert predictor.summary == (
        f"Paddle Inference: GPU 0, TensorRT on through paddle.tensorrt.convert, 2 engines (converted now in {entry}); "
        f"{exported / 'inference.json'} (pir, fp16)"
    )


def test_tensorrt_engines_outlive_the_conversion_until_the_first_run(exported, tmp_path, monkeypatch):
    """The program records its engines as paths and the predictor reads them at its first
    run: conversion output removed once the predictor exists would fail here."""
    fake_gpu_build(monkeypatch, tmp_path, trt_engines=2)
    predictor = inference.create_predictor(exported, TRT_FP16)
    assert one_batch(predictor).shape == (1, 4)


def test_tensorrt_conversion_is_cached_for_the_next_start(exported, tmp_path, monkeypatch):
    _, conversions = fake_gpu_build(monkeypatch, tmp_path, trt_engines=1)
    first = inference.create_predictor(exported, TRT_FP16)
    again = inference.create_predictor(exported, TRT_FP16)
    assert len(conversions) == 1
    assert "1 engine (cached in " in again.summary
    assert one_batch(again).shape == (1, 4) and one_batch(first).shape == (1, 4)
    inference.create_predictor(exported, dataclasses.replace(TRT_FP16, precision="fp32"))
    inference.create_predictor(exported, dataclasses.replace(TRT_FP16, max_batch_size=4))
    assert len(conversions) == 3  # other engines for another precision or batch range


def test_tensorrt_cache_entry_that_lost_an_engine_is_converted_again(exported, tmp_path, monkeypatch):
    _, conversions = fake_gpu_build(monkeypatch, tmp_path, trt_engines=2)
    inference.create_predictor(exported, TRT_FP16)
    [engine, _] = sorted(Path(conversions[0][1].save_model_dir).glob("*.trt"))
    engine.unlink()
    predictor = inference.create_predictor(exported, TRT_FP16)
    assert len(conversions) == 2 and "converted now" in predictor.summary
    assert one_batch(predictor).shape == (1, 4)


def test_tensorrt_cache_key_is_the_content_and_the_settings(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for directory in ("a", "b"):
        (tmp_path / directory / "inference.json").write_text("graph")
        (tmp_path / directory / "inference.pdiparams").write_bytes(b"weights")
    files = lambda d: [tmp_path / d / "inference.json", tmp_path / d / "inference.pdiparams"]
    key = inference.tensorrt_cache_key(files("a"), {"precision": "fp16"})
    assert inference.tensorrt_cache_key(files("b"), {"precision": "fp16"}) == key  # a copy elsewhere
    assert inference.tensorrt_cache_key(files("a"), {"precision": "fp32"}) != key
    (tmp_path / "b" / "inference.pdiparams").write_bytes(b"retrained")
    assert inference.tensorrt_cache_key(files("b"), {"precision": "fp16"}) != key


def test_tensorrt_converts_on_the_card_it_runs_on(exported, tmp_path, monkeypatch):
    configs, conversions = fake_gpu_build(monkeypatch, tmp_path, trt_engines=1)
    predictor = inference.create_predictor(exported, dataclasses.replace(TRT_FP16, gpu_id=1))
    assert conversions[0][2] == "gpu:1"  # the expected place during convert
    assert paddle.get_device() == "cpu"  # restored afterwards
    assert configs[0].calls["enable_use_gpu"][0] == (8000, 1)
    assert predictor.summary.startswith("Paddle Inference: GPU 1, ")


def test_tensorrt_that_converts_nothing_is_an_error_and_leaves_no_cache_entry(exported, tmp_path, monkeypatch):
    fake_gpu_build(monkeypatch, tmp_path, trt_engines=0)
    with pytest.raises(UnsupportedOptionError, match="put no part of .* into TensorRT"):
        inference.create_predictor(exported, TRT_FP16)
    assert [p.suffix for p in (tmp_path / "trt-cache").iterdir()] == [".lock"]


def test_tensorrt_on_a_legacy_program_uses_subgraphs_without_calibration(tmp_path, monkeypatch):
    configs, conversions = fake_gpu_build(monkeypatch, tmp_path, trt_engines=3)
    # Written before the crop size had one name: img_size.
    model = fake_model_dir(tmp_path / "m", "inference.pdmodel", {"img_size": 200, "precision": "int8"})
    predictor = inference.create_predictor(model, PredictorOptions(use_gpu=True, use_tensorrt=True))
    assert conversions == []
    [config] = configs
    _, trt_kwargs = config.calls["enable_tensorrt_engine"]
    # Calibration mode would run fp32 (see resolve_precision); an int8 model has its scales.
    assert trt_kwargs["use_calib_mode"] is False
    assert trt_kwargs["precision_mode"] == inference.paddle_infer.PrecisionType.Int8
    assert config.calls["set_trt_dynamic_shape_info"][0][0] == {"x": [1, 3, 200, 200]}
    assert predictor.summary.startswith(
        "Paddle Inference: GPU 0, TensorRT on through Config.enable_tensorrt_engine, 3 engines;")
    assert predictor.summary.endswith("(program, int8)")
    assert not Path(config.calls["set_optim_cache_dir"][0][0]).exists()  # only read to count


def test_tensorrt_subgraphs_that_engage_nothing_are_an_error(tmp_path, monkeypatch):
    """enable_tensorrt_engine only sets a switch: what engaged is counted in the optimised program."""
    fake_gpu_build(monkeypatch, tmp_path, trt_engines=0)
    model = fake_model_dir(tmp_path / "m", "inference.pdmodel", {})
    with pytest.raises(UnsupportedOptionError, match="Paddle Inference put no part of .* into TensorRT"):
        inference.create_predictor(model, PredictorOptions(use_gpu=True, use_tensorrt=True))


LEGACY_EXPORT = """
import os, sys
os.environ["FLAGS_enable_pir_api"] = "0"
import paddle
net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU(), paddle.nn.Flatten(), paddle.nn.Linear(144, 2))
net.eval()
paddle.jit.save(net, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
"""


def test_engine_count_reads_the_program_paddle_inference_optimised(tmp_path):
    """On a real legacy predictor (CPU): Paddle writes _optimized.pdmodel where the count looks."""
    run_script("-c", LEGACY_EXPORT, tmp_path / "legacy" / "inference")
    config = inference.paddle_infer.Config(str(tmp_path / "legacy" / "inference.pdmodel"),
                                           str(tmp_path / "legacy" / "inference.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_optim_cache_dir(str(tmp_path / "optimized"))
    config.enable_save_optim_model(True)
    inference.paddle_infer.create_predictor(config)
    assert inference.count_subgraph_engines(tmp_path / "optimized") == 0
    (tmp_path / "optimized" / "_optimized.pdmodel").write_bytes(optimized_program(2))
    assert inference.count_subgraph_engines(tmp_path / "optimized") == 2


@pytest.mark.parametrize("damage", ["truncated weights", "truncated graph", "not a graph"])
def test_unreadable_model_files_are_named_in_one_line(exported, tmp_path, damage, capsys):
    model = tmp_path / "damaged"
    model.mkdir()
    shutil.copy(exported / "inference_meta.json", model)
    graph = (exported / "inference.json").read_bytes()
    with open(exported / "inference.pdiparams", "rb") as f:
        weights = f.read(1 << 20)  # the first MB of 228
    if damage == "truncated weights":
        (model / "inference.json").write_bytes(graph)
        (model / "inference.pdiparams").write_bytes(weights)
        named = model / "inference.pdiparams"
    else:
        (model / "inference.json").write_bytes(graph[: len(graph) // 2] if damage == "truncated graph" else b'{"a": 1}')
        shutil.copy(exported / "inference.pdiparams", model)
        named = model / "inference.json"
    result = run_script("deploy/py_inference/infer.py", "--model-dir", model, "--device", "cpu", check=False,
                        timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: cannot load the {'weights' if named.suffix == '.pdiparams' else 'graph'} {named} ")
    assert "/paddle/" not in line  # no C++ source locations


@pytest.mark.skipif(paddle.device.cuda.device_count() > 0, reason="machine has a GPU")
def test_gpu_refused_without_one():
    with pytest.raises(UnsupportedOptionError, match="no usable GPU"):
        check_options(PredictorOptions(use_gpu=True))


def test_export_rejects_bad_sizes(weights, capsys):
    with pytest.raises(SystemExit):
        export_model.get_args_parser().parse_args(["--pretrained", str(weights), "--img-size", "62"])
    assert "argument --crop-size/--img-size: must be at least 63, got 62" in capsys.readouterr().err
    args = export_model.get_args_parser().parse_args(["--pretrained", str(weights), "--crop-size", "288"])
    with pytest.raises(SystemExit, match=re.escape("--resize-size (256) must be at least --crop-size (288)")):
        export_model.main(args)


def test_export_names_a_missing_checkpoint(tmp_path):
    args = export_model.get_args_parser().parse_args(["--pretrained", str(tmp_path / "missing.pdparams")])
    with pytest.raises(SystemExit, match=re.escape(f"--pretrained: weights file not found: {tmp_path / 'missing.pdparams'}")):
        export_model.main(args)


def fake_job(tmp_path, img_path, *flags, metadata=None):
    """A BatchJob over a model directory holding only metadata, run with a fake engine."""
    model = tmp_path / "model"
    model.mkdir()
    if metadata is not None:
        (model / "inference_meta.json").write_text(json.dumps(metadata))
    parser = argparse.ArgumentParser()
    add_batch_arguments(parser)
    return BatchJob(parser.parse_args(["--model-dir", str(model), "--img-path", str(img_path), *flags]))


def test_class_names_from_metadata_and_batch_sizes(tmp_path, capsys):
    paths = write_images(tmp_path, 5)
    job = fake_job(tmp_path, tmp_path, "--batch-size", "2",
                   metadata={"crop_size": 224, "resize_size": 256, "class_names": ["a", "b", "c"]})
    batch_sizes = []

    def predict(batch):
        batch_sizes.append(len(batch))
        assert batch.shape[1:] == (3, 224, 224)
        return np.tile([[0.1, 0.7, 0.2]], (len(batch), 1))

    assert job.run(predict) == 0
    assert batch_sizes == [2, 2, 1]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"image_name: {p}, class_id: 1, prob: 0.7, class_name: b" for p in paths]


@pytest.mark.parametrize("key", ["crop_size", "img_size"])  # img_size: exports before the rename
def test_crop_size_must_match_the_export(key, tmp_path):
    with pytest.raises(SystemExit, match="exported for 224x224 inputs"):
        fake_job(tmp_path, DEMO, "--crop-size", "200", metadata={key: 224, "resize_size": 256})


def test_no_images_found_is_a_clear_error(tmp_path):
    with pytest.raises(NoImagesError, match="no image files found"):
        expand_image_paths(str(tmp_path / "*.jpg"))


def test_unreadable_images_come_back_as_values(tmp_path):
    good = write_images(tmp_path, 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    missing = str(tmp_path / "missing.png")
    paths = [good[0], str(bad), good[1], missing, good[2]]
    batches = list(image_batches(paths, Preprocessor(72, 64), 2))
    assert [batch.paths for batch in batches] == [[good[0], good[1]], [good[2]]]
    assert [batch.images.shape for batch in batches] == [(2, 3, 64, 64), (1, 3, 64, 64)]
    assert batches[0].errors == [f"cannot decode image {bad}: not an image in a format PIL can read"]
    assert batches[1].errors == [f"cannot read image {missing}: No such file or directory"]
    [only_bad] = list(image_batches([str(bad)], Preprocessor(72, 64), 2))
    assert only_bad.paths == [] and only_bad.images is None and len(only_bad.errors) == 1


def test_corrupt_onnx_model_is_a_model_dir_error(tmp_path):
    from paddlevision.onnx_predictor import create_onnx_predictor

    (tmp_path / "inference.onnx").write_bytes(b"not onnx")
    with pytest.raises(model_dir.ModelDirError, match=f"ONNX Runtime cannot load {re.escape(str(tmp_path))}"):
        create_onnx_predictor(tmp_path)


def test_preprocessor_equals_the_eval_preset(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8)).save(path)
    expected = ClassificationPresetEval(crop_size=224, resize_size=256)(load_image(path))
    np.testing.assert_allclose(Preprocessor(256, 224)(str(path)), expected, atol=1e-5)
    np.testing.assert_allclose(Preprocessor(256, 224)(path.read_bytes()), expected, atol=1e-5)


def test_deployment_modules_do_not_import_paddle():
    code = (
        "import sys; import paddlevision.pipeline, paddlevision.batch_predict, paddlevision.onnx_predictor, "
        "paddlevision.model_dir, paddlevision_cli; "
        "assert not any(m == 'paddle' or m.startswith('paddle.') for m in sys.modules), 'paddle imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_failed_export_keeps_the_previous_one(tmp_path, monkeypatch):
    import paddle

    from paddlevision.export import export_inference_model
    from paddlevision.models import AlexNet

    model = AlexNet(num_classes=2)
    export_inference_model(model, tmp_path, crop_size=64)
    before = sorted(p.name for p in tmp_path.iterdir())

    def failing_save(*args, **kwargs):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(paddle.jit, "save", failing_save)
    with pytest.raises(RuntimeError, match="tracing failed"):
        export_inference_model(model, tmp_path, crop_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
