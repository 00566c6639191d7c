import math

import numpy as np
import paddle
import pytest

import paddlevision.weights
from paddlevision.models import MIN_INPUT_SIZE, AlexNet, alexnet, build_from_weights, get_model

TORCHVISION_NAMES = [
    "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
    "features.6.weight", "features.6.bias", "features.8.weight", "features.8.bias",
    "features.10.weight", "features.10.bias",
    "classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
    "classifier.6.weight", "classifier.6.bias",
]


def test_parameter_count_and_names_match_torchvision():
    model = AlexNet()
    assert list(model.state_dict()) == TORCHVISION_NAMES
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 61_100_840
    # Paddle stores Linear weights as [in, out]: transposed against torchvision.
    assert model.state_dict()["classifier.1.weight"].shape == [9216, 4096]
    assert model.state_dict()["features.0.weight"].shape == [64, 3, 11, 11]


@pytest.mark.parametrize("size", [224, MIN_INPUT_SIZE, 100])
def test_output_shape(size):
    model = AlexNet(num_classes=10)
    model.eval()
    assert model(paddle.randn([2, 3, size, size])).shape == [2, 10]


def test_smaller_than_minimum_input_fails():
    model = AlexNet(num_classes=10)
    with pytest.raises(ValueError, match="at least 63x63, got 62x62"):
        model(paddle.randn([1, 3, MIN_INPUT_SIZE - 1, MIN_INPUT_SIZE - 1]))


def test_initialisation_follows_pytorch_default_bounds():
    paddle.seed(0)
    model = AlexNet()
    fan_ins = {
        "features.0": 3 * 11 * 11, "features.3": 64 * 5 * 5, "features.6": 192 * 9, "features.8": 384 * 9,
        "features.10": 256 * 9, "classifier.1": 9216, "classifier.4": 4096, "classifier.6": 4096,
    }
    state = model.state_dict()
    for layer, fan_in in fan_ins.items():
        bound = 1 / math.sqrt(fan_in)
        for kind in ("weight", "bias"):
            values = state[f"{layer}.{kind}"].numpy()
            assert np.abs(values).max() <= bound
            # Uniform on [-b, b]: the extremes are approached and the spread is b/sqrt(3).
            assert np.abs(values).max() > 0.9 * bound
            if values.size > 1000:
                assert abs(values.std() - bound / math.sqrt(3)) < 0.05 * bound


def test_dropout_is_configurable_and_eval_is_deterministic():
    x = paddle.randn([2, 3, 64, 64])
    paddle.seed(1)
    no_dropout = AlexNet(num_classes=3, dropout=0.0)
    no_dropout.train()
    np.testing.assert_array_equal(no_dropout(x).numpy(), no_dropout(x).numpy())
    paddle.seed(1)
    with_dropout = AlexNet(num_classes=3, dropout=0.5)
    with_dropout.train()
    assert not np.array_equal(with_dropout(x).numpy(), with_dropout(x).numpy())
    with_dropout.eval()
    np.testing.assert_array_equal(with_dropout(x).numpy(), no_dropout(x).numpy())


def test_get_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown --model 'resnet'"):
        get_model("resnet")
    with pytest.raises(ValueError, match="num_classes"):
        alexnet(num_classes=0)


def test_build_from_weights_reads_class_count(tmp_path):
    model = AlexNet(num_classes=4)
    weights = dict(model.state_dict())
    paddle.save(weights, str(tmp_path / "plain.pdparams"))
    built, meta = build_from_weights(tmp_path / "plain.pdparams")
    assert meta["num_classes"] == 4 and built.num_classes == 4


def test_pretrained_takes_a_file_or_the_published_weights(tmp_path, monkeypatch):
    """torchvision's habit: alexnet(pretrained=...) returns the model with the weights in it."""
    source = AlexNet(num_classes=4)
    paddle.save(source.state_dict(), str(tmp_path / "a.pdparams"))
    loaded = alexnet(pretrained=tmp_path / "a.pdparams", num_classes=4)
    np.testing.assert_array_equal(loaded.classifier[6].bias.numpy(), source.classifier[6].bias.numpy())

    downloads = []
    monkeypatch.setattr(paddlevision.weights, "download",
                        lambda url, sha256=None: downloads.append(url) or tmp_path / "a.pdparams")
    alexnet(pretrained=True, num_classes=4)
    assert downloads == [paddlevision.weights.KNOWN_WEIGHTS["alexnet"]["url"]]
