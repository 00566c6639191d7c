"""Export → Paddle Inference / ONNX Runtime: files, parity with tools/predict.py, batch CLI
behaviour and the paddle-free parts. One export (with ONNX) serves the whole module."""

import argparse
import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import REPO_ROOT, run_script
from paddlevision import model_dir
from paddlevision.batch_predict import BatchJob, add_batch_arguments, expand_image_paths, str2bool
from paddlevision.image import load_image
from paddlevision.inference import PredictorOptions, UnsupportedOptionError, check_options, cpu_supports_bf16
from paddlevision.models import alexnet
from paddlevision.pipeline import Preprocessor
from paddlevision.transforms import ClassificationPresetEval

DEMO = "images/demo.jpg"
LINE = re.compile(r"^image_name: (?P<name>.+), class_id: (?P<class_id>\d+), prob: (?P<prob>[0-9.e-]+)$")


def load_script(relative_path):
    """Import a CLI script as a module, to call its ``main`` without a new process."""
    path = REPO_ROOT / relative_path
    name = "script_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


paddle_infer = load_script("deploy/py_inference/infer.py")
onnx_infer = load_script("deploy/onnx/infer.py")
export_model = load_script("tools/export_model.py")


def parse_lines(stdout):
    matches = [LINE.match(line) for line in stdout.splitlines() if line.startswith("image_name:")]
    assert all(matches), stdout
    return [(m["name"], int(m["class_id"]), float(m["prob"])) for m in matches]


def write_images(directory, count):
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(40 + 10 * i, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"img_{i}.png")
    return sorted(str(p) for p in directory.glob("img_*.png"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The reference's plain state-dict format, without any metadata."""
    paddle.seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet4.pdparams"
    paddle.save(alexnet(num_classes=4).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "alexnet_infer"
    result = run_script(
        "tools/export_model.py", "--pretrained", weights, "--save-inference-dir", out, "--onnx", "--device", "cpu"
    )
    assert f"saved ONNX model to {out / 'inference.onnx'}" in result.stdout
    return out


def runner_args(module, model_path, *flags):
    return module.get_args_parser().parse_args(["--model-dir", str(model_path), *map(str, flags)])


def test_export_writes_graph_weights_onnx_and_metadata(exported):
    files = model_dir.find_paddle_model_files(exported)
    assert files.model_file.endswith("inference.json")  # Paddle 3 writes PIR graphs
    assert (exported / "inference.onnx").is_file()
    metadata = json.loads((exported / "inference_meta.json").read_text())
    assert metadata["num_classes"] == 4 and metadata["img_size"] == 224 and metadata["resize_size"] == 256
    assert metadata["class_names"] is None


def test_predict_paddle_inference_and_onnx_agree(exported, weights):
    reference = run_script("tools/predict.py", "--pretrained", weights, "--img-path", DEMO, "--device", "cpu")
    class_id, prob = re.match(r"class_id: (\d+), prob: ([0-9.e-]+)", reference.stdout).groups()
    outputs = [
        run_script(script, "--model-dir", exported, "--img-path", DEMO, "--use-gpu=False")
        if script.startswith("deploy/py")
        else run_script(script, "--model-dir", exported, "--img-path", DEMO)
        for script in ("deploy/py_inference/infer.py", "deploy/onnx/infer.py")
    ]
    for output in outputs:
        [(name, got_class, got_prob)] = parse_lines(output.stdout)
        assert name == DEMO
        assert got_class == int(class_id)
        assert abs(got_prob - float(prob)) <= 1e-5


def test_directory_in_batches_of_four_keeps_order_and_results(exported, tmp_path, capsys):
    paths = write_images(tmp_path, 6)
    (tmp_path / "notes.txt").write_text("not an image")
    assert paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", tmp_path, "--batch-size", 4)) == 0
    batched = parse_lines(capsys.readouterr().out)
    assert [name for name, _, _ in batched] == paths
    paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", tmp_path / "img_*.png"))
    one_by_one = parse_lines(capsys.readouterr().out)
    assert [c for _, c, _ in batched] == [c for _, c, _ in one_by_one]
    np.testing.assert_allclose([p for *_, p in batched], [p for *_, p in one_by_one], atol=1e-5)


def test_bad_image_is_reported_and_the_rest_still_run(exported, tmp_path):
    paths = write_images(tmp_path, 3)
    bad = tmp_path / "img_1b.jpg"
    bad.write_bytes(b"not a jpeg")
    result = run_script("deploy/onnx/infer.py", "--model-dir", exported, "--img-path", tmp_path, "--batch-size", 2,
                        check=False)
    assert result.returncode != 0
    assert [name for name, _, _ in parse_lines(result.stdout)] == paths
    assert f"error: cannot decode image {bad}" in result.stderr


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU without native bf16")
def test_bf16_on_onednn_is_close_to_fp32(exported, capsys):
    paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", DEMO, "--use-gpu", "False"))
    fp32 = parse_lines(capsys.readouterr().out)
    paddle_infer.main(runner_args(paddle_infer, exported, "--img-path", DEMO, "--use-gpu", "False",
                                  "--precision", "bf16"))
    bf16 = parse_lines(capsys.readouterr().out)
    assert abs(fp32[0][2] - bf16[0][2]) < 1e-2


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
    assert (args.use_gpu, args.use_mkldnn, args.benchmark) == (False, False, True)


@pytest.mark.parametrize(
    "options, message",
    [
        (PredictorOptions(precision="fp16"), "TensorRT only"),
        (PredictorOptions(precision="int8"), "TensorRT only"),
        (PredictorOptions(use_tensorrt=True), "needs --use-gpu True"),
        (PredictorOptions(precision="bf16", use_mkldnn=False), "through oneDNN"),
        (PredictorOptions(precision="fp64"), "must be one of"),
    ],
)
def test_unsupported_options_are_refused(options, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        check_options(options)


@pytest.mark.skipif(paddle.device.cuda.device_count() > 0, reason="machine has a GPU")
def test_gpu_refused_without_one():
    with pytest.raises(UnsupportedOptionError, match="no usable GPU"):
        check_options(PredictorOptions(use_gpu=True))


@pytest.mark.parametrize("flags, message", [(["--img-size", "62"], "--img-size must be at least 63"),
                                            (["--img-size", "288"], "--resize-size (256) must be at least --img-size")])
def test_export_rejects_bad_sizes(flags, message, weights):
    args = export_model.get_args_parser().parse_args(["--pretrained", str(weights), *flags])
    with pytest.raises(SystemExit, match=re.escape(message)):
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
                   metadata={"img_size": 224, "resize_size": 256, "class_names": ["a", "b", "c"]})
    batch_sizes = []

    def predict(batch):
        batch_sizes.append(len(batch))
        assert batch.shape[1:] == (3, 224, 224)
        return np.tile([[0.1, 0.7, 0.2]], (len(batch), 1))

    assert job.run(predict) == 0
    assert batch_sizes == [2, 2, 1]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"image_name: {p}, class_id: 1, prob: 0.7, class_name: b" for p in paths]


def test_crop_size_must_match_the_export(tmp_path):
    with pytest.raises(SystemExit, match="exported for 224x224 inputs"):
        fake_job(tmp_path, DEMO, "--crop-size", "200", metadata={"img_size": 224, "resize_size": 256})


def test_no_images_found_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image files found"):
        expand_image_paths(str(tmp_path / "*.jpg"))


def test_preprocessor_equals_the_eval_preset(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8)).save(path)
    expected = ClassificationPresetEval(crop_size=224, resize_size=256)(load_image(path))
    np.testing.assert_allclose(Preprocessor(256, 224)(str(path)), expected, atol=1e-5)
    np.testing.assert_allclose(Preprocessor(256, 224)(path.read_bytes()), expected, atol=1e-5)


def test_deployment_modules_do_not_import_paddle():
    code = (
        "import sys; import paddlevision.pipeline, paddlevision.batch_predict, paddlevision.onnx_predictor; "
        "assert not any(m == 'paddle' or m.startswith('paddle.') for m in sys.modules), 'paddle imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_failed_export_keeps_the_previous_one(tmp_path, monkeypatch):
    import paddle

    from paddlevision.export import export_inference_model
    from paddlevision.models import AlexNet

    model = AlexNet(num_classes=2)
    export_inference_model(model, tmp_path, img_size=64)
    before = sorted(p.name for p in tmp_path.iterdir())

    def failing_save(*args, **kwargs):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(paddle.jit, "save", failing_save)
    with pytest.raises(RuntimeError, match="tracing failed"):
        export_inference_model(model, tmp_path, img_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
