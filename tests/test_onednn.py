"""The oneDNN conv engine (paddlevision/onednn.py) against Paddle's own kernels and against
PyTorch: convolution forward, input, weight and bias gradients (AlexNet's five shapes and
odd ones, with and without the fused ReLU), max-pooling (ties included, as after a ReLU),
whole AlexNet training steps against the stock model, checkpoints moving between the
engines through train.py, and the engine choice as a function of its inputs.

The operators need oneDNN's headers (``pip install --no-deps -r requirements-onednn.txt``);
they compile once into Paddle's extension directory and are loaded from there afterwards.
"""

import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import train
from conftest import FAST_SIZES, run_script
from paddlevision import onednn
from paddlevision.models import alexnet
from paddlevision.optim import build_optimizer


# Outputs are of unit scale (N(0,1) inputs, weights within torch's default bound
# 1/sqrt(fan_in)): 1e-5 absolute, the alignment tests' tolerance for a float32 forward.
# Gradients: 1e-4 of their largest magnitude (summation orders differ over up to 10^5 terms).
FORWARD_ATOL = 1e-5
GRAD_RTOL = 1e-4


@pytest.fixture(scope="module")
def ops():
    """The compiled operators; their tests skip, saying why, where they cannot be built
    (without requirements-onednn.txt), as train.py then falls back to Paddle's."""
    paddle.set_device("cpu")
    try:
        return onednn.load_ops()
    except onednn.OneDNNUnavailable as exc:
        pytest.skip(f"oneDNN operators unavailable: {exc}")


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch is a reference for the oneDNN operators")


def assert_close(actual, expected, what, rel=GRAD_RTOL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(np.abs(expected).max(), 1e-30)
    error = np.abs(actual - expected).max() / scale
    assert error <= rel, f"{what}: max error {error:.2e} of scale {scale:.3g} > {rel:g}"


def leaves(*arrays):
    tensors = [paddle.to_tensor(a) for a in arrays]
    for t in tensors:
        t.stop_gradient = False
    return tensors


# (N, C, H, W, O, KH, KW, stride, padding)
ALEXNET_CONVS = [
    (2, 3, 224, 224, 64, 11, 11, (4, 4), (2, 2)),
    (2, 64, 27, 27, 192, 5, 5, (1, 1), (2, 2)),
    (2, 192, 13, 13, 384, 3, 3, (1, 1), (1, 1)),
    (2, 384, 13, 13, 256, 3, 3, (1, 1), (1, 1)),
    (2, 256, 13, 13, 256, 3, 3, (1, 1), (1, 1)),
]
ODD_CONVS = [
    (1, 5, 17, 23, 7, 3, 5, (2, 3), (1, 2)),  # batch 1, non-square input, kernel, stride and padding
    (3, 1, 9, 9, 4, 2, 2, (2, 2), (0, 0)),  # one input channel, even kernel
    (1, 16, 8, 8, 12, 1, 1, (1, 1), (0, 0)),  # 1x1
    (2, 8, 6, 5, 16, 3, 3, (1, 1), (2, 2)),  # padding wider than the kernel needs
]
CONV_CASES = [(case, True) for case in ALEXNET_CONVS] + [(case, relu) for case in ODD_CONVS for relu in (False, True)]


@pytest.mark.parametrize("case, fuse_relu", CONV_CASES,
                         ids=[f"{'x'.join(map(str, c[:7]))}-{'relu' if r else 'plain'}" for c, r in CONV_CASES])
def test_conv_matches_paddle_and_torch(ops, torch, case, fuse_relu):
    n, c, h, w, o, kh, kw, stride, padding = case
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(c * kh * kw)
    x = rng.standard_normal((n, c, h, w)).astype("float32")
    weight = rng.uniform(-bound, bound, (o, c, kh, kw)).astype("float32")
    bias = rng.uniform(-bound, bound, (o,)).astype("float32")

    xp, wp, bp = leaves(x, weight, bias)
    y = ops.onednn_conv2d(xp, wp, bp, list(stride), list(padding), fuse_relu, True, False, False)
    grad_out = rng.standard_normal(y.shape).astype("float32")
    grads = paddle.grad([y], [xp, wp, bp], [paddle.to_tensor(grad_out)])

    xr, wr, br = leaves(x, weight, bias)
    ref = F.conv2d(xr, wr, br, stride=list(stride), padding=list(padding))
    ref = F.relu(ref) if fuse_relu else ref
    ref_grads = paddle.grad([ref], [xr, wr, br], [paddle.to_tensor(grad_out)])

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    tref = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
    tref = torch.relu(tref) if fuse_relu else tref
    tref.backward(torch.tensor(grad_out))

    assert np.abs(y.numpy() - ref.numpy()).max() <= FORWARD_ATOL, "forward vs paddle"
    assert np.abs(y.numpy() - tref.detach().numpy()).max() <= FORWARD_ATOL, "forward vs torch"
    for name, mine, paddles, torchs in zip(("input grad", "weight grad", "bias grad"), grads, ref_grads,
                                           (xt.grad, wt.grad, bt.grad)):
        assert_close(mine.numpy(), paddles.numpy(), f"{name} vs paddle")
        assert_close(mine.numpy(), torchs.numpy(), f"{name} vs torch")


def test_first_conv_skips_the_input_gradient(ops):
    """The image batch needs no gradient: none is computed, the weight and bias gradients
    are still Paddle's."""
    paddle.seed(1)
    stock = paddle.nn.Conv2D(3, 64, 11, stride=4, padding=2)
    copy = paddle.nn.Conv2D(3, 64, 11, stride=4, padding=2)
    copy.set_state_dict(stock.state_dict())
    fast = onednn.OneDNNConv2D(copy)
    image = paddle.randn([2, 3, 224, 224])
    fast(image).sum().backward()
    stock(image).sum().backward()
    assert image.grad is None
    assert_close(copy.weight.grad.numpy(), stock.weight.grad.numpy(), "weight grad")
    assert_close(copy.bias.grad.numpy(), stock.bias.grad.numpy(), "bias grad")


POOLS = [  # (N, C, H, W, kernel, stride, padding): AlexNet's three, and a padded odd one
    (2, 64, 55, 55, 3, 2, 0),
    (2, 192, 27, 27, 3, 2, 0),
    (2, 256, 13, 13, 3, 2, 0),
    (1, 3, 10, 7, 2, 2, 1),
]


@pytest.mark.parametrize("ties", [False, True], ids=["random", "relu-ties"])
@pytest.mark.parametrize("case", POOLS, ids=lambda c: "x".join(map(str, c)))
def test_max_pool_matches_paddle_and_torch(ops, torch, case, ties):
    n, c, h, w, k, s, p = case
    x = np.random.default_rng(2).standard_normal((n, c, h, w)).astype("float32")
    if ties:  # a ReLU's output: many windows whose maximum is a repeated 0
        x = np.maximum(x - 0.8, 0).astype("float32")
    (xp,) = leaves(x)
    y = onednn.OneDNNMaxPool2D(paddle.nn.MaxPool2D(k, s, p))(xp)
    grad_out = np.random.default_rng(3).standard_normal(y.shape).astype("float32")
    (dx,) = paddle.grad([y], [xp], [paddle.to_tensor(grad_out)])
    (xr,) = leaves(x)
    ref = F.max_pool2d(xr, k, s, p)
    (ref_dx,) = paddle.grad([ref], [xr], [paddle.to_tensor(grad_out)])
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, k, s, p).backward(torch.tensor(grad_out))

    np.testing.assert_array_equal(y.numpy(), ref.numpy())
    # At a tie the first maximum takes the gradient, as in Paddle and torch; where windows
    # overlap, one input's gradient is a sum whose order may differ in the last bit.
    np.testing.assert_allclose(dx.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx.numpy(), ref_dx.numpy(), rtol=1e-6, atol=1e-6)


def stock_and_accelerated(num_classes=10):
    paddle.seed(0)
    stock = alexnet(num_classes=num_classes)
    fast = alexnet(num_classes=num_classes)
    fast.set_state_dict(stock.state_dict())
    return stock, fast, onednn.accelerate(fast, "cpu", "onednn")


def test_accelerate_keeps_parameter_names_and_says_what_it_did(ops):
    stock, fast, acceleration = stock_and_accelerated()
    assert list(fast.state_dict()) == list(stock.state_dict())
    assert acceleration.log_line() == ("conv engine: onednn (" + acceleration.choice.reason + "): 5 convolutions, "
                                       "5 ReLUs fused, 3 max-pools, 1 blocked-layout chains")
    assert [i for i, layer in enumerate(fast.features) if isinstance(layer, onednn.OneDNNConv2D)] == [0, 3, 6, 8, 10]
    # NCHW in (the image) and out (to the average pool), blocked in between.
    plan = [(type(layer).__name__, blocked_in, blocked_out) for layer, blocked_in, blocked_out in fast.features.plan()]
    assert plan == [("OneDNNConv2D", False, True), ("OneDNNMaxPool2D", True, True), ("OneDNNConv2D", True, True),
                    ("OneDNNMaxPool2D", True, True), ("OneDNNConv2D", True, True), ("OneDNNConv2D", True, True),
                    ("OneDNNConv2D", True, True), ("OneDNNMaxPool2D", True, False)]


def test_blocked_chain_equals_the_layers_one_by_one(ops):
    _, fast, _ = stock_and_accelerated()
    x = paddle.randn([2, 3, 224, 224])
    grad_out = paddle.randn([2, 256, 6, 6])
    params = list(fast.features.parameters())
    chained = fast.features(x)
    chained_grads = paddle.grad([chained], params, [grad_out])
    plain = x
    for layer in fast.features.children():  # each on NCHW
        plain = layer(plain)
    plain_grads = paddle.grad([plain], params, [grad_out])
    np.testing.assert_array_equal(chained.numpy(), plain.numpy())
    for a, b in zip(chained_grads, plain_grads):
        assert_close(a.numpy(), b.numpy(), "chained gradient", rel=1e-6)


def test_training_steps_equal_the_stock_model(ops):
    """Three of train.py's steps (its forward_loss and optimizer_step; dropout active with the
    same seeds), then evaluation: the accelerated model and the stock one agree, and each
    one's weights load into the other."""
    stock, fast, _ = stock_and_accelerated()
    image, target = paddle.randn([4, 3, 96, 96]), paddle.randint(0, 10, [4])
    criterion = paddle.nn.CrossEntropyLoss()
    optimizers = [build_optimizer("sgd", model.parameters(), 0.01) for model in (stock, fast)]
    for step in range(3):
        losses = []
        for model, optimizer in zip((stock, fast), optimizers):
            paddle.seed(100 + step)  # the same dropout masks
            _, loss = train.forward_loss(model, criterion, image, target)
            train.optimizer_step(loss, optimizer)
            losses.append(float(loss))
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, a), b in zip(fast.state_dict().items(), stock.state_dict().values()):
        assert_close(a.numpy(), b.numpy(), name)

    stock.eval()
    fast.eval()
    with paddle.no_grad():
        expected = stock(image).numpy()
        fast.set_state_dict(stock.state_dict())
        np.testing.assert_allclose(fast(image).numpy(), expected, atol=FORWARD_ATOL)


def test_checkpoints_move_between_the_engines(ops, trained_run, lite_data, tmp_path):
    """trained_run trains with the default engine (oneDNN here): its checkpoint evaluates
    the same with Paddle's convolutions, and a run resumes from it on Paddle's."""
    out, result, _ = trained_run
    assert "conv engine: onednn" in result.stdout
    common = ["--data-path", lite_data, "--device", "cpu", "-b", "8", "-j", "0", *FAST_SIZES]
    evaluation = run_script("train.py", "--test-only", "--conv-engine", "paddle", "--pretrained",
                            out / "latest.pdparams", "--output-dir", "", *common)
    summary = re.compile(r"^ \* Acc@1 .+$", re.M)
    assert "conv engine: paddle (requested)" in evaluation.stdout
    assert summary.findall(evaluation.stdout) == summary.findall(result.stdout)
    resumed = run_script("train.py", "--conv-engine", "paddle", "--resume", out, "--epochs", "2", "--print-freq", "100",
                         "--output-dir", tmp_path, *common)
    assert "[Epoch 1" in resumed.stdout and (tmp_path / "model_1.pdparams").is_file()


def test_choose_conv_engine():
    def fails():
        raise onednn.OneDNNUnavailable("no compiler")

    def builds():
        return None

    choose = onednn.choose_conv_engine
    assert choose("cpu", "auto", build=builds).engine == "onednn"
    assert choose("cpu", "onednn", build=builds).engine == "onednn"
    assert choose("cpu", "auto", build=fails) == onednn.Choice("paddle", "no compiler")
    assert choose("cpu", "paddle", build=builds) == onednn.Choice("paddle", "requested")
    assert choose("gpu:0", "auto", build=builds).engine == "paddle"
    assert choose("gpu", "paddle", build=fails).engine == "paddle"
    with pytest.raises(onednn.OneDNNUnavailable, match="no compiler"):
        choose("cpu", "onednn", build=fails)
    with pytest.raises(onednn.OneDNNUnavailable, match="CPU only"):
        choose("gpu", "onednn", build=builds)
    with pytest.raises(ValueError, match="fast"):
        choose("cpu", "fast", build=builds)


def fake_headers(root, minor):
    dnnl = root / "oneapi" / "dnnl"
    dnnl.mkdir(parents=True)
    (dnnl / "dnnl.hpp").write_text("")
    (dnnl / "dnnl_version.h").write_text(
        f"#define DNNL_VERSION_MAJOR 3\n#define DNNL_VERSION_MINOR {minor}\n#define DNNL_VERSION_PATCH 0\n")
    return root


def test_headers_must_match_the_library(tmp_path, monkeypatch):
    newer, older = fake_headers(tmp_path / "newer", 12), fake_headers(tmp_path / "older", 5)
    monkeypatch.setattr(onednn, "header_candidates", lambda: [tmp_path / "stubs", newer, older])
    assert onednn.find_headers((3, 6, 2)) == older
    assert onednn.find_headers((3, 12, 1)) == newer
    with pytest.raises(onednn.OneDNNUnavailable, match=r"newer \(3\.12\.0\).*older \(3\.5\.0\)"):
        onednn.find_headers((3, 4, 0))


def test_without_headers_auto_falls_back_to_paddle_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(onednn, "header_candidates", lambda: [tmp_path])
    choice = onednn.choose_conv_engine("cpu", "auto", build=lambda: onednn.find_headers((3, 6, 2)))
    assert choice.engine == "paddle"
    assert choice.reason.startswith("no oneDNN 3.x headers") and "requirements-onednn.txt" in choice.reason
    assert onednn.Acceleration(choice).log_line() == f"conv engine: paddle ({choice.reason})"


def test_amp_on_cpu_is_refused_in_one_line_saying_why(tmp_path):
    result = run_script("train.py", "--amp", "--device", "cpu", "--output-dir", tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --amp: no mixed precision on CPU: Paddle's dygraph auto_cast computes "
                                    "float32 there, and the oneDNN conv engine is float32 only (this CPU has ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("flags, why", [
    ({"avx2", "fma"}, "this CPU has neither avx512_bf16 nor amx_bf16, and oneDNN 3.6 has no bf16 convolution"),
    ({"avx512f", "avx512_bf16"}, "this CPU has avx512_bf16)"),
])
def test_amp_refusal_names_the_cpu_bf16_support(monkeypatch, flags, why):
    monkeypatch.setattr(train, "cpu_vendor_and_flags", lambda: ("AuthenticAMD", frozenset(flags)))
    with pytest.raises(SystemExit, match=re.escape(why)):
        train.resolve_amp_dtype(True, "cpu")
    assert train.resolve_amp_dtype(True, "gpu:0") == "float16"
