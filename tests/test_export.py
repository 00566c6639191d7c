"""tools/export_model.py checks what it writes: small inputs give a valid ONNX model whose
outputs match PyTorch's adaptive pooling, a model that does not load or computes other
outputs is one error line and leaves the earlier export as it was, and a directory holding
anything else is refused, never emptied.

Most rows export a model with AlexNet's kernels, strides and pools but four channels
(the same feature-map size for every input size, exported in a second); the rows that
need the real model run the script as users do."""

import os
import re
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import paddle
import paddle2onnx
import pytest

from conftest import REPO_ROOT, load_script, run_script
from paddlevision import export as export_module
from paddlevision.inference import Predictor, create_predictor
from paddlevision.models import alexnet
from paddlevision.onnx_predictor import OnnxPredictor, create_onnx_predictor

export_model = load_script("tools/export_model.py")
EXPORT = REPO_ROOT / "tools" / "export_model.py"
CHECKED = re.compile(r"^checked: Paddle Inference max \|diff\| (\S+)(, ONNX Runtime max \|diff\| (\S+))? from the "
                     r"model's probabilities on a random batch of 2 \(tolerance 1e-04\)$", re.MULTILINE)


class AlexNetGeometry(paddle.nn.Layer):
    """AlexNet's convolution and pooling geometry with 4 channels; returns the pooled
    features, so that every bin of the adaptive pool shows in the output."""

    def __init__(self):
        super().__init__()
        conv, pool = paddle.nn.Conv2D, paddle.nn.MaxPool2D
        self.features = paddle.nn.Sequential(
            conv(3, 4, 11, stride=4, padding=2), paddle.nn.ReLU(), pool(3, 2),
            conv(4, 4, 5, padding=2), paddle.nn.ReLU(), pool(3, 2),
            conv(4, 4, 3, padding=1), paddle.nn.ReLU(), pool(3, 2),
        )
        self.avgpool = paddle.nn.AdaptiveAvgPool2D((6, 6))

    def forward(self, x):
        return paddle.flatten(self.avgpool(self.features(x)), 1)


def small_model(seed=0):
    paddle.seed(seed)
    return AlexNetGeometry()


def torch_reference_probs(model, batch):
    """softmax(adaptive_avg_pool2d(features)) with PyTorch's pooling, in float64."""
    torch = pytest.importorskip("torch", reason="PyTorch's adaptive_avg_pool2d is the reference")
    with paddle.no_grad():
        features = model.features(paddle.to_tensor(batch)).numpy()
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(features).double(), (6, 6))
    return torch.softmax(pooled.flatten(1), dim=-1).numpy()


def export_args(model_dir, *flags):
    return export_model.get_args_parser().parse_args(["--pretrained", "small", "--model-dir", str(model_dir),
                                                      *map(str, flags)])


@pytest.fixture
def small_export(monkeypatch):
    """Run tools/export_model.py's main() in-process with the small model in place of the
    weights it would load (so with any --pretrained)."""
    monkeypatch.setattr(export_model, "build_from_weights", lambda *args, **kwargs: (small_model(), {"num_classes": 144}))
    return lambda model_dir, *flags: export_model.main(export_args(model_dir, *flags))


def snapshot(directory):
    """What tells a directory's files apart from rewritten ones: the directory's inode and
    each file's inode, size and modification time."""
    files = {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}
    return directory.stat().st_ino, files


def random_batch(crop_size, count=3, seed=1):
    return np.random.default_rng(seed).standard_normal((count, 3, crop_size, crop_size), dtype=np.float32)


# (input size, AlexNet's feature map before the adaptive pool): every map below 6x6, where
# paddle2onnx wrote a stride-0 AveragePool that ONNX Runtime refuses; 6x6 (the default
# 224); 7 and 13, whose bins one stride happens to fit; 8x8, where paddle2onnx's single
# stride computed wrong bins without any error.
FEATURE_MAPS = [(63, 1), (95, 2), (127, 3), (159, 4), (222, 5), (224, 6), (255, 7), (288, 8), (447, 13)]


@pytest.fixture(scope="module")
def alexnet_features():
    paddle.seed(0)
    features = alexnet(num_classes=4).features
    features.eval()
    return features


@pytest.mark.parametrize("crop_size, feature_map", FEATURE_MAPS)
def test_every_input_size_exports_a_valid_onnx_with_the_reference_pooling(crop_size, feature_map, tmp_path,
                                                                          alexnet_features, small_export):
    model = small_model()
    batch = random_batch(crop_size)
    with paddle.no_grad():
        assert alexnet_features(paddle.to_tensor(batch[:1])).shape[-2:] == [feature_map, feature_map]
        assert model.features(paddle.to_tensor(batch[:1])).shape[-2:] == [feature_map, feature_map]
    expected = torch_reference_probs(model, batch)
    small_export(tmp_path / "model", "--crop-size", crop_size, "--resize-size", crop_size, "--onnx")
    np.testing.assert_allclose(create_onnx_predictor(tmp_path / "model").run(batch), expected, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(create_predictor(tmp_path / "model").run(batch), expected, rtol=1e-4, atol=1e-8)


def perturbed(run):
    return lambda self, batch: run(self, batch) + 1e-3


def truncating_save(save):
    def save_then_truncate(layer, path, **kwargs):
        save(layer, path, **kwargs)
        params = Path(f"{path}.pdiparams")
        params.write_bytes(params.read_bytes()[:100])

    return save_then_truncate


def raising(error):
    def fail(*args, **kwargs):
        raise error

    return fail


# (name, object, attribute, replacement, input size, the error line): each plants one fault
# in an export over an earlier one.
FAULTS = [
    ("paddle inference mismatch", Predictor, "run", perturbed(Predictor.run), 64,
     r"error: Paddle Inference computes other probabilities than the model: max \|diff\| 1\.0e-03 on a random "
     r"batch of 2 \(tolerance 1e-04\); the new export was discarded and .*/model is as it was"),
    ("onnx runtime mismatch", OnnxPredictor, "run", perturbed(OnnxPredictor.run), 64,
     r"error: ONNX Runtime computes other probabilities than the model: max \|diff\| 1\.0e-03 .*model is as it was"),
    # paddle2onnx's own conversion of the adaptive pool: one stride, the wrong bins for 8x8
    ("paddle2onnx pooling at 288", export_module, "_fixed_bin_pools", lambda model, sizes: nullcontext(model), 288,
     r"error: ONNX Runtime computes other probabilities than the model: max \|diff\| \S+ .*model is as it was"),
    ("paddle weights unreadable", paddle.jit, "save", truncating_save(paddle.jit.save), 64,
     r"error: (Paddle Inference cannot load or run the exported model: .*|cannot load the weights "
     r".*/inference\.pdiparams .*)model is as it was"),
    ("onnx unreadable", paddle2onnx, "export", lambda *args, **kwargs: b"not onnx", 64,
     r"error: ONNX Runtime cannot load .*/model/inference\.onnx: .*; the new export was discarded and .*/model is "
     r"as it was"),
    ("onnx conversion fails", paddle2onnx, "export", raising(RuntimeError("no mapper for pd_op.x")), 64,
     r"error: paddle2onnx could not convert .*no mapper for pd_op.x.*model is as it was"),
]


@pytest.mark.parametrize("target, name, replacement, size, message", [row[1:] for row in FAULTS],
                         ids=[row[0] for row in FAULTS])
def test_a_fault_is_one_line_and_keeps_the_earlier_export(target, name, replacement, size, message, tmp_path,
                                                          monkeypatch, small_export):
    model_dir = tmp_path / "model"
    small_export(model_dir, "--crop-size", size, "--resize-size", size, "--onnx")
    before = snapshot(model_dir)
    monkeypatch.setattr(target, name, replacement, raising=False)
    with pytest.raises(SystemExit) as failure:
        small_export(model_dir, "--crop-size", size, "--resize-size", size, "--onnx")
    assert snapshot(model_dir) == before
    assert os.listdir(tmp_path) == ["model"]
    assert re.fullmatch(message, str(failure.value)), failure.value


def test_interrupted_export_keeps_the_earlier_one(tmp_path, monkeypatch, capsys, small_export):
    model_dir = tmp_path / "model"
    small_export(model_dir, "--onnx")
    before = snapshot(model_dir)
    capsys.readouterr()
    monkeypatch.setattr(paddle2onnx, "export", raising(KeyboardInterrupt()))
    # main lets the interrupt go, with a note that run_command prints as the "interrupted:" line
    with pytest.raises(KeyboardInterrupt) as interrupted:
        small_export(model_dir, "--onnx")
    assert interrupted.value.__notes__ == [f"nothing was written, {model_dir} is as it was"]
    assert snapshot(model_dir) == before
    assert os.listdir(tmp_path) == ["model"]


def test_failed_first_export_creates_nothing(tmp_path, monkeypatch, small_export):
    monkeypatch.setattr(OnnxPredictor, "run", perturbed(OnnxPredictor.run))
    with pytest.raises(SystemExit, match=f"; the new export was discarded and {re.escape(str(tmp_path / 'new' / 'model'))} "
                       "was not created$"):
        small_export(tmp_path / "new" / "model", "--onnx")
    assert not (tmp_path / "new" / "model").exists()
    assert os.listdir(tmp_path / "new") == []


def test_an_empty_directory_takes_an_export_and_a_reexport_replaces_it_whole(tmp_path, capsys, small_export):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    small_export(model_dir, "--onnx")
    small_export(model_dir)  # without --onnx: the earlier inference.onnx must not stay
    assert sorted(os.listdir(model_dir)) == ["inference.json", "inference.pdiparams", "inference_meta.json"]
    assert os.listdir(tmp_path) == ["model"]
    assert len(CHECKED.findall(capsys.readouterr().out)) == 2


def user_files(directory):
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    return directory


def user_subdirectory(directory):
    (directory / "images").mkdir(parents=True)
    (directory / "inference.json").write_text("{}")
    return directory


def user_file(path):
    path.write_text("mine")
    return path


# (how the --model-dir is made, the error line)
NOT_EXPORT_DIRS = [
    (user_files, r"error: --model-dir: .*/target holds files an export does not write \(notes\.txt\); an export "
                 r"replaces its directory as a whole, so choose a new or empty directory"),
    (user_subdirectory, r"error: --model-dir: .*/target holds files an export does not write \(images\); .*"),
    (user_file, r"error: --model-dir: .*/target exists and is not a directory"),
]


@pytest.mark.parametrize("make, message", NOT_EXPORT_DIRS, ids=["file", "subdirectory", "regular file"])
def test_a_directory_that_is_not_an_export_is_refused_untouched(make, message, tmp_path, small_export):
    target = make(tmp_path / "target")
    before = sorted((p.relative_to(tmp_path), p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as failure:
        small_export(target)
    assert re.fullmatch(message, str(failure.value)), failure.value
    assert sorted((p.relative_to(tmp_path), p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*")) == before


@pytest.fixture(scope="module")
def weights(module_tmp):
    paddle.seed(0)
    path = module_tmp / "alexnet4.pdparams"
    paddle.save(alexnet(num_classes=4).state_dict(), str(path))
    return path


def test_default_flags_export_and_check_the_paddle_model(weights, tmp_path):
    result = run_script(EXPORT, "--pretrained", weights, cwd=tmp_path)
    assert result.stdout.splitlines()[:2] == [
        "saved inference model to alexnet_infer/inference.json and alexnet_infer/inference.pdiparams",
        "saved metadata to alexnet_infer/inference_meta.json",
    ]
    [check] = CHECKED.findall(result.stdout)
    assert float(check[0]) <= 1e-6 and check[1] == ""
    assert sorted(os.listdir(tmp_path)) == ["alexnet_infer"]
    assert sorted(os.listdir(tmp_path / "alexnet_infer")) == [
        "inference.json", "inference.pdiparams", "inference_meta.json"]


def test_alexnet_at_64x64_with_onnx_gives_a_model_onnx_runtime_runs(weights, tmp_path):
    # The command: before, it printed "saved ONNX model" and wrote a model ONNX
    # Runtime refused to load (an AveragePool with stride 0).
    result = run_script(EXPORT, "--pretrained", weights, "--model-dir", "d", "--crop-size", 64, "--resize-size", 64,
                        "--onnx", cwd=tmp_path)
    model = alexnet(num_classes=4, pretrained=str(weights))
    model.eval()
    batch = random_batch(64)
    with paddle.no_grad():
        expected = paddle.nn.functional.softmax(model(paddle.to_tensor(batch)), axis=-1).numpy()
    np.testing.assert_allclose(create_onnx_predictor(tmp_path / "d").run(batch), expected, rtol=1e-4, atol=1e-6)
    onnx_run = run_script(REPO_ROOT / "deploy/onnx/infer.py", "--model-dir", tmp_path / "d", "--img-path",
                          REPO_ROOT / "images/demo.jpg")
    assert re.fullmatch(r"image_name: .*demo\.jpg, class_id: \d, prob: 0\.2\d+", onnx_run.stdout.strip())
    assert "saved ONNX model to d/inference.onnx" in result.stdout.splitlines()
    [(paddle_diff, _, onnx_diff)] = CHECKED.findall(result.stdout)
    assert float(paddle_diff) <= 1e-6 and float(onnx_diff) <= 1e-6
