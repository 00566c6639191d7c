"""Error handling of tools/convert_torch_weights.py (its numerics are checked against
torchvision in tests/alignment/test_forward_alignment.py)."""

import importlib.util
import sys

import numpy as np
import paddle
import pytest
from conftest import REPO_ROOT

from paddlevision.weights import WeightsError, read_weights
from paddlevision.models import AlexNet

spec = importlib.util.spec_from_file_location("convert_torch_weights", REPO_ROOT / "tools" / "convert_torch_weights.py")
convert_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_tool)


@pytest.fixture(scope="module")
def alexnet10_pdparams(module_tmp):
    path = module_tmp / "alexnet10.pdparams"
    paddle.save(AlexNet(num_classes=10).state_dict(), str(path))
    return path


def test_pdparams_to_pth_and_back_keeps_every_value(alexnet10_pdparams, tmp_path):
    pytest.importorskip("torch", reason="writing a .pth needs torch")
    convert_tool.convert(alexnet10_pdparams, tmp_path / "a.pth")
    convert_tool.convert(tmp_path / "a.pth", tmp_path / "b.pdparams")
    original, _ = read_weights(alexnet10_pdparams)
    back, meta = read_weights(tmp_path / "b.pdparams")
    assert meta == {"model": "alexnet", "num_classes": 10}
    assert list(back) == list(original)
    for name in original:
        np.testing.assert_array_equal(back[name], original[name], err_msg=name)


def test_missing_source_is_named(tmp_path):
    with pytest.raises(WeightsError, match="nope.pth: file not found"):
        convert_tool.convert(tmp_path / "nope.pth", tmp_path / "out.pdparams")


def test_unknown_direction_is_a_usage_error(alexnet10_pdparams, tmp_path):
    with pytest.raises(SystemExit, match="cannot tell the direction"):
        convert_tool.convert(alexnet10_pdparams, tmp_path / "out.pdparams")


def test_state_dict_of_another_model_lists_its_keys(tmp_path):
    path = tmp_path / "other.pdparams"
    paddle.save(paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Linear(4, 2)).state_dict(), str(path))
    with pytest.raises(WeightsError, match=r"not an AlexNet state dict.*its keys are: 0.weight, 0.bias, 1.weight"):
        convert_tool.convert(path, tmp_path / "out.pth")


def test_alexnet_with_a_wrong_layer_is_rejected(tmp_path):
    state = dict(AlexNet(num_classes=10).state_dict())
    state["features.0.weight"] = paddle.zeros([64, 1, 11, 11])
    path = tmp_path / "gray.pdparams"
    paddle.save(state, str(path))
    with pytest.raises(WeightsError, match=r"shape mismatch for features.0.weight: checkpoint \[64, 1, 11, 11\], model \[64, 3, 11, 11\]"):
        convert_tool.convert(path, tmp_path / "out.pth")


def test_num_classes_check(alexnet10_pdparams, tmp_path):
    with pytest.raises(WeightsError, match="has 10 classes, --num-classes asked for 1000"):
        convert_tool.convert(alexnet10_pdparams, tmp_path / "out.pth", num_classes=1000)


def test_missing_torch_is_explained(alexnet10_pdparams, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(WeightsError, match="needs torch installed"):
        convert_tool.convert(alexnet10_pdparams, tmp_path / "out.pth")
    (tmp_path / "in.pth").write_bytes(b"not read")
    with pytest.raises(WeightsError, match="needs torch installed"):
        convert_tool.convert(tmp_path / "in.pth", tmp_path / "out.pdparams")


def test_cli_prints_what_it_wrote(alexnet10_pdparams, tmp_path, capsys):
    pytest.importorskip("torch", reason="writing a .pth needs torch")
    convert_tool.main(convert_tool.get_args_parser().parse_args(
        ["--src", str(alexnet10_pdparams), "--dst", str(tmp_path / "a.pth")]))
    assert "a.pth: AlexNet, 10 classes, 57,044,810 parameters" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: .*nope.pdparams: file not found"):
        convert_tool.main(convert_tool.get_args_parser().parse_args(
            ["--src", str(tmp_path / "nope.pdparams"), "--dst", str(tmp_path / "a.pth")]))
