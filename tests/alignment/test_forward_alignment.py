"""Forward pass of our AlexNet against torchvision's, with the weights carried over by the
converter: same logits, and a lossless .pth -> .pdparams -> .pth round trip."""

import re

import numpy as np
import paddle
import pytest

pytest.importorskip("torch", reason="PyTorch is the reference for the alignment tests")
pytest.importorskip("torchvision", reason="torchvision's AlexNet is the reference for the alignment tests")

import torch  # noqa: E402
import torchvision  # noqa: E402
from conftest import REPO_ROOT, run_script  # noqa: E402

from paddlevision.models import AlexNet  # noqa: E402
from paddlevision.pipeline import Preprocessor  # noqa: E402
from paddlevision.weights import load_state_dict_checked, torch_to_paddle_state_dict  # noqa: E402

# float32 sums of up to 9216 products in a different order: ~1e-7 relative per layer;
# 1e-5 absolute leaves a wide margin yet catches any layout or layer mistake, which
# moves the logits by about their own size (1e-2 and up).
LOGITS_TOLERANCE = 1e-5


def torch_alexnet(num_classes=1000, seed=0):
    torch.manual_seed(seed)
    return torchvision.models.alexnet(num_classes=num_classes).eval()


def converted(torch_model):
    model = AlexNet(num_classes=torch_model.classifier[6].out_features)
    load_state_dict_checked(model, torch_to_paddle_state_dict(torch_model.state_dict()))
    return model.eval()


def logits_diff(torch_model, batch):
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(batch)).numpy()
    with paddle.no_grad():
        actual = converted(torch_model)(paddle.to_tensor(batch)).numpy()
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def test_imagenet_logits_match_torchvision():
    batch = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    diff, scale = logits_diff(torch_alexnet(), batch)
    print(f"1000-class logits: max abs diff {diff:.3g} (logits up to {scale:.3g})")
    assert diff <= LOGITS_TOLERANCE


def test_ten_class_logits_match_torchvision():
    batch = np.random.default_rng(1).standard_normal((4, 3, 96, 96)).astype(np.float32)
    diff, scale = logits_diff(torch_alexnet(num_classes=10, seed=1), batch)
    print(f"10-class logits: max abs diff {diff:.3g} (logits up to {scale:.3g})")
    assert diff <= LOGITS_TOLERANCE


def test_converter_round_trip_is_lossless(tmp_path):
    original = torch_alexnet(num_classes=10).state_dict()
    torch.save(original, tmp_path / "tv.pth")
    first = run_script("tools/convert_torch_weights.py", "--src", tmp_path / "tv.pth", "--dst", tmp_path / "pd.pdparams")
    assert "10 classes" in first.stdout and "pd.pdparams" in first.stdout
    run_script("tools/convert_torch_weights.py", "--src", tmp_path / "pd.pdparams", "--dst", tmp_path / "back.pth",
               "--num-classes", "10")
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(back) == list(original)
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), name
    # The intermediate file is in Paddle's layout: Linear weights [in, out].
    intermediate = paddle.load(str(tmp_path / "pd.pdparams"))
    assert list(intermediate["classifier.6.weight"].shape) == [4096, 10]


def test_predict_accepts_a_torchvision_pth(tmp_path):
    torch_model = torch_alexnet(num_classes=10, seed=2)
    torch.save(torch_model.state_dict(), tmp_path / "tv.pth")
    image_path = REPO_ROOT / "images" / "demo.jpg"
    result = run_script("tools/predict.py", "--pretrained", tmp_path / "tv.pth", "--img-path", image_path,
                        "--device", "cpu", "--resize-size", "128", "--crop-size", "112")
    match = re.search(r"class_id: (\d+), prob: ([0-9.e-]+)", result.stdout)
    assert match, result.stdout
    with torch.no_grad():
        image = torch.from_numpy(Preprocessor(resize_size=128, crop_size=112)(str(image_path))[None])
        probs = torch.softmax(torch_model(image), dim=-1)[0].numpy()
    assert int(match.group(1)) == int(probs.argmax())
    assert float(match.group(2)) == pytest.approx(float(probs.max()), abs=1e-5)
