"""The opt-in oneDNN conv engine (paddlevision/onednn/): its convolution against Paddle's own
and PyTorch's (forward, input, weight and bias gradients; AlexNet's five shapes and odd
ones; batch sizes and image sizes changing between calls), an accelerated AlexNet against
the stock one as user code sees it (hooks on every layer, slices, deepcopy, weight norm,
to_static, training steps, checkpoints through train.py), the uses it refuses, and its
build: signature-named directories, failures recorded once, read-only and unwritable
extension directories, compiler output kept off stdout.

The operator tests need oneDNN's headers (``pip install --no-deps -r
requirements-onednn.txt``) and a C++ compiler, and skip saying why without them; they
compile once into Paddle's extension directory and load from there afterwards.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

import train
from conftest import FAST_SIZES, REPO_ROOT, run_script
from paddlevision import onednn
from paddlevision.models import alexnet
from paddlevision.onednn import build
from paddlevision.optim import build_optimizer

# Outputs are of unit scale (N(0,1) inputs, weights within torch's default bound
# 1/sqrt(fan_in)): 1e-5 absolute, the alignment tests' tolerance for a float32 forward.
# Gradients: 1e-4 of their largest magnitude (summation orders differ over up to 10^5 terms).
FORWARD_ATOL = 1e-5
GRAD_RTOL = 1e-4


@pytest.fixture(scope="module")
def ops():
    """The compiled operators; their tests skip, saying why, where they cannot be built."""
    paddle.set_device("cpu")
    try:
        return build.load_ops()
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


def leaf(array):
    tensor = paddle.to_tensor(array)
    tensor.stop_gradient = False
    return tensor


def conv_pair(c, o, kernel, stride, padding, seed=0):
    """A stock Conv2D and an accelerated one with the same weights."""
    paddle.seed(seed)
    stock = paddle.nn.Conv2D(c, o, kernel, stride=stride, padding=padding)
    fast = paddle.nn.Conv2D(c, o, kernel, stride=stride, padding=padding)
    fast.set_state_dict(stock.state_dict())
    assert onednn.accelerate(fast, "cpu", "onednn").convs == 1
    return stock, fast


def forward_backward(layer, x, grad_out_seed=1):
    """The layer's output and the gradients of <output, g> for a fixed random g: input,
    weight, bias."""
    x = leaf(x)
    y = layer(x)
    grad_out = np.random.default_rng(grad_out_seed).standard_normal(y.shape).astype("float32")
    grads = paddle.grad([y], [x, layer.weight, layer.bias], [paddle.to_tensor(grad_out)])
    return [y.numpy()] + [g.numpy() for g in grads]


def assert_same_results(fast, stock, what):
    assert np.abs(fast[0] - stock[0]).max() <= FORWARD_ATOL, f"{what}: forward"
    for name, mine, ref in zip(("input grad", "weight grad", "bias grad"), fast[1:], stock[1:]):
        assert_close(mine, ref, f"{what}: {name}")


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


@pytest.mark.parametrize("case", ALEXNET_CONVS + ODD_CONVS, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv_matches_paddle_and_torch(ops, torch, case):
    n, c, h, w, o, kh, kw, stride, padding = case
    stock, fast = conv_pair(c, o, (kh, kw), stride, padding)
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype("float32")
    mine, paddles = forward_backward(fast, x), forward_backward(stock, x)

    xt = torch.tensor(x, requires_grad=True)
    wt, bt = (torch.tensor(p.numpy(), requires_grad=True) for p in (stock.weight, stock.bias))
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
    yt.backward(torch.tensor(np.random.default_rng(1).standard_normal(tuple(yt.shape)).astype("float32")))
    torchs = [yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]

    assert_same_results(mine, paddles, "vs paddle")
    assert_same_results(mine, torchs, "vs torch")


def test_batch_and_image_size_changing_between_calls(ops):
    """Primitives are cached per configuration: one layer at batch 2, then 1, then 3, and at
    two image sizes, each against the stock layer (the last batch of an evaluation is often
    smaller; a key without the batch size or H/W reuses a primitive of the wrong size)."""
    stock, fast = conv_pair(64, 192, 5, 1, 2)
    rng = np.random.default_rng(3)
    for n, h, w in [(2, 27, 27), (1, 27, 27), (3, 27, 27), (3, 13, 13), (2, 27, 21), (1, 13, 13)]:
        x = rng.standard_normal((n, 64, h, w)).astype("float32")
        assert_same_results(forward_backward(fast, x), forward_backward(stock, x), f"batch {n}, {h}x{w}")


def test_first_conv_skips_the_input_gradient(ops):
    """The image batch needs no gradient: none is computed, the weight and bias gradients
    are still Paddle's."""
    stock, fast = conv_pair(3, 64, 11, 4, 2, seed=1)
    image = paddle.randn([2, 3, 224, 224])
    fast(image).sum().backward()
    stock(image).sum().backward()
    assert image.grad is None
    assert_close(fast.weight.grad.numpy(), stock.weight.grad.numpy(), "weight grad")
    assert_close(fast.bias.grad.numpy(), stock.bias.grad.numpy(), "bias grad")


def test_frozen_weights_get_no_gradient(ops):
    stock, fast = conv_pair(8, 16, 3, 1, 1)
    for layer in (stock, fast):
        layer.weight.stop_gradient = True
    x = paddle.randn([2, 8, 10, 10])
    fast(x).sum().backward()
    stock(x).sum().backward()
    assert fast.weight.grad is None
    assert_close(fast.bias.grad.numpy(), stock.bias.grad.numpy(), "bias grad")


# ------------------------------------------------------------------ the model as users see it


def stock_and_accelerated(num_classes=10):
    paddle.seed(0)
    stock = alexnet(num_classes=num_classes)
    fast = alexnet(num_classes=num_classes)
    fast.set_state_dict(stock.state_dict())
    return stock, fast, onednn.accelerate(fast, "cpu", "onednn")


def test_accelerate_keeps_the_model_and_says_what_it_did(ops):
    stock, fast, acceleration = stock_and_accelerated()
    assert list(fast.state_dict()) == list(stock.state_dict())
    assert re.fullmatch(r"conv engine: onednn \(oneDNN 3\.\d+\.\d+ in paddle's libdnnl\.so\.3, "
                        r"(compiled now in \d+ s into|loaded from) .+paddlevision_onednn-[0-9a-f]{16}\): "
                        r"5 of 5 convolutions on oneDNN", acceleration.log_line())
    assert [type(layer).__name__ for layer in fast.features] == [
        "OneDNNConv2D", "ReLU", "MaxPool2D", "OneDNNConv2D", "ReLU", "MaxPool2D", "OneDNNConv2D", "ReLU",
        "OneDNNConv2D", "ReLU", "OneDNNConv2D", "ReLU", "MaxPool2D"]
    assert all(isinstance(layer, paddle.nn.Conv2D) for layer in fast.features[::3][:2])


def record_outputs(sequential):
    outputs = {}
    for index, layer in enumerate(sequential):
        layer.register_forward_post_hook(lambda _, __, out, index=index: outputs.__setitem__(index, out.numpy()))
    return outputs


def test_hooks_on_every_layer_see_the_stock_values(ops):
    """Hooks registered after accelerate() on each layer of features, ReLUs and pools
    included: each fires and sees the stock model's NCHW values."""
    stock, fast, _ = stock_and_accelerated()
    expected, seen = record_outputs(stock.features), record_outputs(fast.features)
    x = paddle.randn([2, 3, 224, 224])
    stock.features(x)
    fast.features(x)
    assert sorted(seen) == list(range(len(stock.features)))
    for index, value in expected.items():
        assert seen[index].shape == value.shape, index
        assert np.abs(seen[index] - value).max() <= 1e-4, f"features[{index}]"


def test_slices_deepcopy_and_changing_batch_give_the_stock_values(ops):
    stock, fast, _ = stock_and_accelerated()
    stock.eval()
    fast.eval()
    copied = copy.deepcopy(fast)
    assert type(copied.features[0]).__name__ == "OneDNNConv2D"
    x = paddle.randn([3, 3, 224, 224])
    with paddle.no_grad():
        for end in (2, 3, 6):
            np.testing.assert_allclose(fast.features[:end](x).numpy(), stock.features[:end](x).numpy(), atol=1e-4)
        for n in (2, 1, 3):
            expected = stock(x[:n]).numpy()
            np.testing.assert_allclose(fast(x[:n]).numpy(), expected, atol=1e-4, err_msg=f"batch {n}")
            np.testing.assert_allclose(copied(x[:n]).numpy(), expected, atol=1e-4, err_msg=f"copy, batch {n}")


def test_hooks_and_weight_norm_on_a_conv_before_accelerate_stay(ops):
    paddle.seed(4)
    stock = paddle.nn.utils.weight_norm(paddle.nn.Conv2D(8, 16, 3, padding=1))
    fast = paddle.nn.utils.weight_norm(paddle.nn.Conv2D(8, 16, 3, padding=1))
    fast.set_state_dict(stock.state_dict())
    calls = []
    fast.register_forward_pre_hook(lambda layer, inputs: calls.append("pre"))
    fast.register_forward_post_hook(lambda layer, inputs, out: calls.append("post"))
    assert onednn.accelerate(fast, "cpu", "onednn").convs == 1
    x = paddle.randn([2, 8, 12, 12])
    fast(x).square().sum().backward()
    stock(x).square().sum().backward()
    assert calls == ["pre", "post"]
    for name in ("weight_g", "weight_v", "bias"):
        assert_close(getattr(fast, name).grad.numpy(), getattr(stock, name).grad.numpy(), name)


@pytest.mark.filterwarnings("ignore:Tensor do not have 'place' interface")  # Paddle's to_static, stock layers too
def test_a_static_graph_gets_the_stock_convolution(ops):
    stock, fast = conv_pair(8, 16, 3, 1, 1)
    x = paddle.randn([2, 8, 12, 12])
    static = paddle.jit.to_static(fast, full_graph=True)
    np.testing.assert_allclose(static(x).numpy(), stock(x).numpy(), atol=FORWARD_ATOL)


def test_double_backward_and_float64_raise_one_clear_error(ops):
    _, fast = conv_pair(3, 4, 3, 1, 0)
    x = leaf(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype("float32"))
    y = fast(x)
    # Paddle reports an error of a PyLayer's backward inside its own (OSError) message.
    with pytest.raises(Exception, match=r"OneDNNUnsupported: the oneDNN conv engine has no double backward "
                                        r"\(create_graph=True\): train with --conv-engine paddle"):
        paddle.grad([(y * y).sum()], [x], create_graph=True)
    with pytest.raises(onednn.OneDNNUnsupported, match=r"takes float32 tensors on CPU, the input is paddle.float64"):
        fast(x.astype("float64"))
    fast.to(dtype="float64")
    with pytest.raises(onednn.OneDNNUnsupported, match=r"the input is paddle.float64"):
        fast(x.astype("float64"))


def test_unsupported_convolutions_stay_on_paddle_and_are_named(ops):
    model = paddle.nn.Sequential(
        paddle.nn.Conv2D(4, 4, 3, groups=2), paddle.nn.Conv2D(4, 4, 3, bias_attr=False),
        paddle.nn.Conv2D(4, 4, 3, padding="SAME"), paddle.nn.Conv2D(4, 4, 3, padding=[0, 1, 1, 0]),
        paddle.nn.Conv2D(4, 4, 3), paddle.nn.Conv2D(4, 4, 3))
    del model[5]._updated_padding  # as if a Paddle release renamed its private attribute
    acceleration = onednn.accelerate(model, "cpu", "onednn")
    assert acceleration.convs == 1 and type(model[4]).__name__ == "OneDNNConv2D"
    assert [name for name, _ in acceleration.kept] == ["0", "1", "2", "3", "5"]
    assert acceleration.log_line().endswith(
        "1 of 6 convolutions on oneDNN; kept on paddle: 0 (groups 2), 1 (no bias), 2 (padding 'SAME'), "
        "3 (padding [0, 1, 1, 0]), 5 (Paddle " + paddle.__version__ + "'s Conv2D has changed "
        "('Conv2D' object has no attribute '_updated_padding'))")


def test_training_steps_equal_the_stock_model(ops):
    """Three of train.py's steps (its forward_loss and optimizer_step; dropout active with the
    same seeds), then evaluation: the accelerated model and the stock one agree."""
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


def test_checkpoints_move_between_the_engines(ops, lite_data, tmp_path):
    """train.py --conv-engine onednn names its engine among the first lines; its checkpoint
    evaluates the same with Paddle's convolutions, and a run resumes from it on Paddle's."""
    common = ["--data-path", lite_data, "--device", "cpu", "-b", "8", "-j", "0", *FAST_SIZES]
    out = tmp_path / "onednn"
    trained = run_script("train.py", "--conv-engine", "onednn", "--epochs", "1", "--seed", "0", "--output-dir", out,
                         *common)
    assert any(line.startswith("conv engine: onednn (") for line in trained.stdout.splitlines()[:3])
    evaluation = run_script("train.py", "--test-only", "--pretrained", out / "latest.pdparams", "--output-dir", "",
                            *common)
    summary = re.compile(r"^ \* Acc@1 .+$", re.M)
    assert "conv engine: paddle (Paddle's own layers)" in evaluation.stdout.splitlines()[:3]
    assert summary.findall(evaluation.stdout) == summary.findall(trained.stdout)
    resumed = run_script("train.py", "--resume", out, "--epochs", "2", "--print-freq", "100",
                         "--output-dir", tmp_path / "resumed", *common)
    assert "[Epoch 1" in resumed.stdout and (tmp_path / "resumed" / "model_1.pdparams").is_file()


# ------------------------------------------------------------------------ choosing the engine


def test_where_the_engine_runs():
    reason = build.platform_unsupported_reason
    assert reason("cpu", "linux", "x86_64") is None
    assert reason("gpu:0", "linux", "x86_64") == "runs on CPU only, not on gpu:0"
    assert reason("cpu", "linux", "aarch64") == "is built for Linux x86-64 only, not for linux aarch64"
    assert reason("cpu", "darwin", "arm64") == "is built for Linux x86-64 only, not for darwin arm64"
    assert reason("cpu", "win32", "AMD64") == "is built for Linux x86-64 only, not for win32 AMD64"


def test_paddle_is_the_default_and_touches_nothing(monkeypatch):
    monkeypatch.setattr(build, "load_ops", lambda: pytest.fail("the paddle engine must build nothing"))
    assert train.get_args_parser().parse_args([]).conv_engine == "paddle"
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3))
    acceleration = onednn.accelerate(model, "gpu:0")
    assert type(model[0]) is paddle.nn.Conv2D
    assert acceleration.log_line() == "conv engine: paddle (Paddle's own layers)"
    with pytest.raises(onednn.OneDNNUnavailable, match="the oneDNN conv engine runs on CPU only, not on gpu:0"):
        onednn.accelerate(model, "gpu:0", "onednn")
    with pytest.raises(ValueError, match="got 'auto'"):
        onednn.accelerate(model, "cpu", "auto")


def test_conv_engine_auto_is_refused_by_argparse(tmp_path):
    result = run_script("train.py", "--conv-engine", "auto", "--output-dir", tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"^error: argument --conv-engine: invalid choice: 'auto' \(choose from '?paddle'?, "
                     r"'?onednn'?\) \(--help lists the options\)$", result.stderr, re.M), result.stderr


def test_train_py_imports_without_fcntl():
    """train.py imports on Windows, which has no fcntl: only building the engine needs it."""
    code = "import sys; sys.modules['fcntl'] = None; import train, paddlevision.onednn; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


# ------------------------------------------------------------------------------- the build


def fake_headers(root, minor, body=""):
    dnnl = root / "oneapi" / "dnnl"
    dnnl.mkdir(parents=True)
    (dnnl / "dnnl.hpp").write_text(body)
    (dnnl / "dnnl_version.h").write_text(
        f"#define DNNL_VERSION_MAJOR 3\n#define DNNL_VERSION_MINOR {minor}\n#define DNNL_VERSION_PATCH 0\n")
    return root


def test_headers_must_match_the_library(tmp_path, monkeypatch):
    newer, older = fake_headers(tmp_path / "newer", 12), fake_headers(tmp_path / "older", 5)
    monkeypatch.setattr(build, "header_candidates", lambda: [tmp_path / "stubs", newer, older])
    assert build.find_headers((3, 6, 2)) == older
    assert build.find_headers((3, 12, 1)) == newer
    with pytest.raises(onednn.OneDNNUnavailable, match=r"newer \(3\.12\.0\).*older \(3\.5\.0\)"):
        build.find_headers((3, 4, 0))


def test_without_headers_onednn_fails_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "header_candidates", lambda: [tmp_path])
    monkeypatch.setattr(build, "_ops", None)
    with pytest.raises(onednn.OneDNNUnavailable, match=r"no oneDNN 3\.x headers .*requirements-onednn\.txt"):
        onednn.accelerate(paddle.nn.Conv2D(3, 4, 3), "cpu", "onednn")


class Compiler:
    """Stands in for Build.compile: writes the library file (or fails), counting calls."""

    def __init__(self, fail=None):
        self.calls, self.fail = 0, fail

    def __call__(self, build_dir):
        self.calls += 1
        if self.fail:
            raise onednn.OneDNNUnavailable(self.fail)
        build.library_path(build_dir).parent.mkdir(parents=True)
        build.library_path(build_dir).write_text(str(build_dir))


def test_two_venvs_and_checkouts_build_side_by_side(tmp_path, monkeypatch):
    """Builds for two paddle libraries (two virtualenvs) or two sources (two checkouts at
    different commits) get their own directories under one extension directory: neither
    rebuilds over the other; the same configuration shares its build."""
    monkeypatch.setattr(build, "library_version", lambda lib: (3, 6, 2))
    monkeypatch.setattr(build, "header_version", lambda include_dir: (3, 6, 2))
    root = tmp_path / "ext"
    first = build.Build(tmp_path / "include", tmp_path / "venv1" / "libdnnl.so.3")
    other_venv = build.Build(tmp_path / "include", tmp_path / "venv2" / "libdnnl.so.3")
    dirs = [first.directory(root), other_venv.directory(root)]
    assert first.directory(root) == dirs[0]
    changed = tmp_path / "conv2d.cc"
    changed.write_bytes(build.SOURCE.read_bytes() + b"// another commit\n")
    monkeypatch.setattr(build, "SOURCE", changed)
    dirs.append(first.directory(root))
    assert len(set(dirs)) == 3 and {d.parent for d in dirs} == {root}
    compiler = Compiler()
    assert [build.ensure_built(d, compiler) is not None for d in dirs + dirs] == [True] * 3 + [False] * 3
    assert compiler.calls == 3
    assert [build.library_path(d).read_text() for d in dirs] == [str(d) for d in dirs]


def test_a_failed_build_is_recorded_and_not_retried(tmp_path):
    """Two processes at once (the ranks of a launch): one compiles — and fails — while the
    other waits on the lock, then reports the recorded failure; so does a later process."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom paddlevision.onednn import build\n"
            "def compile(build_dir):\n    with open(sys.argv[2], 'a') as f: f.write('x')\n    time.sleep(2)\n"
            "    raise build.OneDNNUnavailable('compiling failed (g++: not found)')\n"
            "try:\n    build.ensure_built(Path(sys.argv[1]), compile)\nexcept build.OneDNNUnavailable as e:\n"
            "    print(e)\n")
    calls, build_dir = tmp_path / "calls", tmp_path / "build"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(build_dir), str(calls)], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(process.communicate(timeout=120)[0].strip() for process in processes)
    later = Compiler()
    with pytest.raises(onednn.OneDNNUnavailable) as raised:
        build.ensure_built(build_dir, later)
    assert calls.read_text() == "x" and later.calls == 0
    recorded = f"compiling failed (g++: not found) — recorded by an earlier attempt; remove {build_dir} to try again"
    assert outputs == ["compiling failed (g++: not found)", recorded] and str(raised.value) == recorded


def test_a_build_cut_short_starts_afresh(tmp_path):
    compiler = Compiler()
    build.library_path(tmp_path).parent.mkdir(parents=True)
    build.library_path(tmp_path).write_text("half")  # no "done" marker: the process died while compiling
    assert build.ensure_built(tmp_path, compiler) is not None and compiler.calls == 1
    assert build.library_path(tmp_path).read_text() == str(tmp_path)


def run_python(code, env, timeout=300):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


LOAD_AND_CONVOLVE = ("import paddle\nfrom paddlevision import onednn\n"
                     "conv = paddle.nn.Conv2D(3, 4, 3)\nacceleration = onednn.accelerate(conv, 'cpu', 'onednn')\n"
                     "print(conv(paddle.ones([1, 3, 5, 5])).shape, acceleration.origin)")


def tree(root):
    return {str(path): path.stat().st_mtime_ns for path in sorted(root.rglob("*"))}


def test_a_read_only_extension_directory_with_a_build_serves(ops, tmp_path):
    """A finished build is only read: loading it writes nothing, so a read-only copy serves."""
    root = tmp_path / "readonly"
    shutil.copytree(ops.build_dir, root / ops.build_dir.name)
    before = tree(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        result = run_python(LOAD_AND_CONVOLVE, {"PADDLE_EXTENSION_DIR": str(root)})
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("paddle.Size([1, 4, 3, 3]) oneDNN") and f"loaded from {root}" in result.stdout
    assert tree(root) == before


def test_an_unwritable_extension_directory_fails_in_one_line(lite_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for unwritable in (blocker / "extensions", blocker):  # cannot be created; a file where the directory goes
        result = run_script("train.py", "--conv-engine", "onednn", "--data-path", lite_data, "--device", "cpu",
                            "-j", "0", "--output-dir", "", *FAST_SIZES, check=False,
                            env={"PADDLE_EXTENSION_DIR": str(unwritable)})
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and error[0].startswith("error: --conv-engine onednn: "), result.stderr
        assert str(blocker) in error[0] and "PADDLE_EXTENSION_DIR" in error[0]


def test_paddle_internals_missing_give_a_reason(monkeypatch, tmp_path):
    monkeypatch.delattr(paddle._C_ops, "_run_custom_op")
    with pytest.raises(onednn.OneDNNUnavailable, match=rf"Paddle {re.escape(paddle.__version__)} lacks the "
                                                       r"custom-operator loader this engine uses"):
        build._register(tmp_path / "lib.so")


def test_compiler_output_stays_off_the_benchmark_answers(tmp_path):
    """The benchmark's train.py worker with nothing built yet and a build that fails to
    compile: every line it answers is JSON, the oneDNN mode is reported as skipped with the
    compiler's reason, and the failure is recorded in the extension directory."""
    headers = fake_headers(tmp_path / "headers", 6, body='#error "these headers are a test\'s fake"\n')
    env = {"PADDLE_EXTENSION_DIR": str(tmp_path / "ext"), "ONEDNN_INCLUDE_DIR": str(headers)}
    worker = subprocess.Popen([sys.executable, "-m", "benchmarks.train_bench", "--worker", "train.py", "-b", "2",
                               "--threads", "1"], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    requests = [{"cmd": "info"}, {"cmd": "step", "mode": "dygraph, onednn conv"}]
    stdout, stderr = worker.communicate("".join(json.dumps(r) + "\n" for r in requests), timeout=600)
    answers = [json.loads(line) for line in stdout.splitlines()]  # a stray line fails here
    assert len(answers) == 2 and answers[0]["default_engine"] == "paddle", stderr
    assert re.fullmatch(r"OneDNNUnavailable: compiling the oneDNN operators failed \(.*these headers are a test's "
                        r"fake.*; log: .+build\.log\)", answers[1]["error"])
    assert [path.name for path in (tmp_path / "ext").glob("*/failed")] == ["failed"]


def test_a_failed_allocation_leaves_no_stale_scratch(ops):
    """A reorder buffer that cannot be allocated raises; the next, smaller call still works
    (a scratch buffer that kept the failed size would hand out a null pointer)."""
    code = ("import resource, paddle\nfrom paddlevision import onednn\n"
            "conv = paddle.nn.Conv2D(16, 16, 3, stride=64)\nonednn.accelerate(conv, 'cpu', 'onednn')\n"
            "big = paddle.zeros([1, 16, 4096, 4096])\nconv(paddle.ones([1, 16, 8, 8]))\n"
            "limit = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize() + (512 << 20)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
            "try:\n    conv(big)\nexcept Exception as e:\n    print('raised', 'out of memory' in str(e))\n"
            "print(conv(paddle.ones([1, 16, 9, 9])).shape)\n")
    result = run_python(code, {})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["raised True", "paddle.Size([1, 16, 1, 1])"], result.stdout


# --------------------------------------------------------------------------- train.py --amp


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
