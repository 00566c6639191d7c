import functools
import hashlib
import http.server
import logging
import os
import threading

import numpy as np
import paddle
import pytest
from conftest import run_script
from tiny_net import TinyNet, assert_same_weights

from paddlevision import weights
from paddlevision.weights import TorchRequiredError, WeightsError


@pytest.fixture
def http_dir(tmp_path):
    """A local http server over tmp_path/www; yields (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_plain_state_dict_loads(tmp_path):
    source, target = TinyNet(), TinyNet()
    paddle.save(source.state_dict(), str(tmp_path / "plain.pdparams"))
    meta = weights.load_pretrained(target, tmp_path / "plain.pdparams")
    assert meta == {}
    assert_same_weights(source, target)


def test_head_mismatch_is_an_error_unless_fine_tuning(tmp_path, caplog):
    source, target = TinyNet(num_classes=7), TinyNet(num_classes=3)
    head_before = target.head.weight.numpy().copy()
    paddle.save(source.state_dict(), str(tmp_path / "w.pdparams"))
    with pytest.raises(WeightsError, match="shape mismatch for head.weight"):
        weights.load_pretrained(target, tmp_path / "w.pdparams")  # evaluating it would measure a random head
    with caplog.at_level(logging.WARNING):
        weights.load_pretrained(target, tmp_path / "w.pdparams", allow_head_mismatch=True)
    assert "loading everything except the head" in caplog.text
    assert_same_weights(source, target, skip=("head.weight", "head.bias"))
    np.testing.assert_array_equal(target.head.weight.numpy(), head_before)


def test_other_mismatches_list_the_keys(tmp_path):
    state = TinyNet().state_dict()
    state["extra.weight"] = paddle.zeros([1])
    state["body.weight"] = paddle.zeros([4, 6])
    del state["body.bias"]
    paddle.save(state, str(tmp_path / "bad.pdparams"))
    with pytest.raises(WeightsError) as err:
        weights.load_pretrained(TinyNet(), tmp_path / "bad.pdparams")
    message = str(err.value)
    assert "missing keys: body.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "shape mismatch for body.weight: checkpoint [4, 6], model [4, 5]" in message


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(WeightsError, match="not found: .*nope.pdparams"):
        weights.resolve_weights(tmp_path / "nope.pdparams")
    (tmp_path / "broken.pdparams").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="broken.pdparams"):
        weights.read_weights(tmp_path / "broken.pdparams")


def test_download_with_checksum_and_cache(http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    root, base_url = http_dir
    source = TinyNet()
    paddle.save(source.state_dict(), str(root / "tiny.pdparams"))
    digest = hashlib.sha256((root / "tiny.pdparams").read_bytes()).hexdigest()

    target = TinyNet()
    weights.load_pretrained(target, f"{base_url}/tiny.pdparams", sha256=digest)
    assert_same_weights(source, target)
    cached = tmp_path / "home" / "weights" / "tiny.pdparams"
    assert cached.is_file()

    # Served once: the cached copy is used even when the server no longer has the file.
    os.remove(root / "tiny.pdparams")
    weights.load_pretrained(TinyNet(), f"{base_url}/tiny.pdparams", sha256=digest)


def test_download_with_wrong_checksum_is_rejected_and_not_cached(http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    root, base_url = http_dir
    paddle.save(TinyNet().state_dict(), str(root / "tiny.pdparams"))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        weights.load_pretrained(TinyNet(), f"{base_url}/tiny.pdparams", sha256="0" * 64)
    assert list((tmp_path / "home" / "weights").iterdir()) == []


def test_download_checks_the_sha256_prefix_in_the_file_name(http_dir, tmp_path, monkeypatch, caplog):
    """torchvision's convention: alexnet-owt-7be5be79.pth carries its sha256's first digits."""
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    root, base_url = http_dir
    source = TinyNet()
    paddle.save(source.state_dict(), str(root / "tiny.pdparams"))
    digest = hashlib.sha256((root / "tiny.pdparams").read_bytes()).hexdigest()
    os.replace(root / "tiny.pdparams", root / f"tiny-{digest[:8]}.pdparams")
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    (root / f"tiny-{wrong}.pdparams").write_bytes((root / f"tiny-{digest[:8]}.pdparams").read_bytes())

    target = TinyNet()
    with caplog.at_level(logging.WARNING):
        weights.load_pretrained(target, f"{base_url}/tiny-{digest[:8]}.pdparams")
    assert_same_weights(source, target)
    assert "cannot be verified" not in caplog.text
    with pytest.raises(WeightsError, match=f"expected sha256 starting with {wrong}, got {digest}"):
        weights.resolve_weights(f"{base_url}/tiny-{wrong}.pdparams")
    assert [p.name for p in (tmp_path / "home" / "weights").iterdir()] == [f"tiny-{digest[:8]}.pdparams"]


def test_download_error_names_the_url(http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    _, base_url = http_dir
    with pytest.raises(WeightsError, match="cannot download .*/missing.pdparams"):
        weights.resolve_weights(f"{base_url}/missing.pdparams")


def test_known_name_resolves_to_the_published_url(monkeypatch):
    calls = []
    monkeypatch.setattr(weights, "download", lambda url, sha256=None: calls.append(url) or url)
    weights.resolve_weights("alexnet")
    assert calls == [weights.KNOWN_WEIGHTS["alexnet"]["url"]]


def test_published_weights_without_a_known_checksum_warn(http_dir, tmp_path, monkeypatch, caplog):
    """No checksum is recorded for the reference's weights: fetching them says it cannot verify."""
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    root, base_url = http_dir
    paddle.save(TinyNet().state_dict(), str(root / "alexnet_pretrained.pdparams"))
    monkeypatch.setitem(weights.KNOWN_WEIGHTS["alexnet"], "url", f"{base_url}/alexnet_pretrained.pdparams")
    with caplog.at_level(logging.WARNING):
        path = weights.resolve_weights("alexnet")
    assert path == tmp_path / "home" / "weights" / "alexnet_pretrained.pdparams"
    assert "the download cannot be verified" in caplog.text


def test_corrupt_pth_is_a_weights_error(tmp_path):
    pytest.importorskip("torch", reason="reading .pth files needs torch")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="garbage.pth"):
        weights.read_weights(tmp_path / "garbage.pth")


def test_pth_holding_no_state_dict_is_a_weights_error(tmp_path):
    torch = pytest.importorskip("torch", reason="writing .pth files needs torch")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(WeightsError, match="tensor.pth does not hold a state dict"):
        weights.read_weights(tmp_path / "tensor.pth")


WITHOUT_TORCH = "import sys; sys.modules['torch'] = None  # `import torch` now raises ImportError\n"


def test_pth_without_torch_says_how_to_go_on(tmp_path):
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"never read")
    result = run_script("-c", WITHOUT_TORCH + f"""
from paddlevision.weights import TorchRequiredError, read_weights
try:
    read_weights({str(tmp_path / "alexnet-owt-7be5be79.pth")!r})
except TorchRequiredError as err:
    print(err)
""")
    assert "needs torch installed (pip install torch)" in result.stdout
    assert ("tools/convert_torch_weights.py --src alexnet-owt-7be5be79.pth --dst alexnet-owt-7be5be79.pdparams"
            in result.stdout)
    assert issubclass(TorchRequiredError, WeightsError)  # what the scripts catch


def test_predict_with_a_pth_without_torch_is_one_line(tmp_path):
    (tmp_path / "alexnet.pth").write_bytes(b"never read")
    result = run_script("-c", WITHOUT_TORCH + f"""
import runpy
sys.argv = ["tools/predict.py", "--pretrained", {str(tmp_path / "alexnet.pth")!r}, "--device", "cpu"]
runpy.run_path("tools/predict.py", run_name="__main__")
""", check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'alexnet.pth'} is a PyTorch file: reading it needs torch installed (pip install torch), "
        "or convert it once on a machine with torch: python tools/convert_torch_weights.py --src alexnet.pth "
        "--dst alexnet.pdparams"
    ]


def test_weights_do_not_import_the_models():
    """models -> weights only: importing the weights first must not reach back into models."""
    result = run_script("-c", "import sys, paddlevision.weights, paddlevision.checkpoint; "
                              "print(sorted(m for m in sys.modules if m.startswith('paddlevision.models')))")
    assert result.stdout.strip() == "[]"
