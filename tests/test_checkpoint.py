import functools
import hashlib
import http.server
import logging
import os
import threading

import numpy as np
import paddle
import pytest

from paddlevision import checkpoint
from paddlevision.checkpoint import CheckpointError
from paddlevision.models import AlexNet
from paddlevision.optim import build_lr_scheduler, build_optimizer


class TinyNet(paddle.nn.Layer):
    """Small enough to serve and save quickly; the last layer plays the classifier head."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.body = paddle.nn.Linear(4, 5)
        self.head = paddle.nn.Linear(5, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def assert_same_weights(a, b, skip=()):
    for name, value in a.state_dict().items():
        if name not in skip:
            np.testing.assert_array_equal(value.numpy(), b.state_dict()[name].numpy(), err_msg=name)


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
    meta = checkpoint.load_pretrained(target, tmp_path / "plain.pdparams")
    assert meta == {}
    assert_same_weights(source, target)


def test_head_mismatch_is_an_error_unless_fine_tuning(tmp_path, caplog):
    source, target = TinyNet(num_classes=7), TinyNet(num_classes=3)
    head_before = target.head.weight.numpy().copy()
    paddle.save(source.state_dict(), str(tmp_path / "w.pdparams"))
    with pytest.raises(CheckpointError, match="shape mismatch for head.weight"):
        checkpoint.load_pretrained(target, tmp_path / "w.pdparams")  # evaluating it would measure a random head
    with caplog.at_level(logging.WARNING):
        checkpoint.load_pretrained(target, tmp_path / "w.pdparams", allow_head_mismatch=True)
    assert "loading everything except the head" in caplog.text
    assert_same_weights(source, target, skip=("head.weight", "head.bias"))
    np.testing.assert_array_equal(target.head.weight.numpy(), head_before)


def test_other_mismatches_list_the_keys(tmp_path):
    state = TinyNet().state_dict()
    state["extra.weight"] = paddle.zeros([1])
    state["body.weight"] = paddle.zeros([4, 6])
    del state["body.bias"]
    paddle.save(state, str(tmp_path / "bad.pdparams"))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_pretrained(TinyNet(), tmp_path / "bad.pdparams")
    message = str(err.value)
    assert "missing keys: body.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "shape mismatch for body.weight: checkpoint [4, 6], model [4, 5]" in message


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.pdparams"):
        checkpoint.resolve_weights(tmp_path / "nope.pdparams")
    (tmp_path / "broken.pdparams").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="broken.pdparams"):
        checkpoint.read_weights(tmp_path / "broken.pdparams")


def test_download_with_checksum_and_cache(http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    root, base_url = http_dir
    source = TinyNet()
    paddle.save(source.state_dict(), str(root / "tiny.pdparams"))
    digest = hashlib.sha256((root / "tiny.pdparams").read_bytes()).hexdigest()

    target = TinyNet()
    checkpoint.load_pretrained(target, f"{base_url}/tiny.pdparams", sha256=digest)
    assert_same_weights(source, target)
    cached = tmp_path / "home" / "weights" / "tiny.pdparams"
    assert cached.is_file()

    # Served once: the cached copy is used even when the server no longer has the file.
    os.remove(root / "tiny.pdparams")
    checkpoint.load_pretrained(TinyNet(), f"{base_url}/tiny.pdparams", sha256=digest)


def test_download_with_wrong_checksum_is_rejected_and_not_cached(http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    root, base_url = http_dir
    paddle.save(TinyNet().state_dict(), str(root / "tiny.pdparams"))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load_pretrained(TinyNet(), f"{base_url}/tiny.pdparams", sha256="0" * 64)
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
        checkpoint.load_pretrained(target, f"{base_url}/tiny-{digest[:8]}.pdparams")
    assert_same_weights(source, target)
    assert "cannot be verified" not in caplog.text
    with pytest.raises(CheckpointError, match=f"expected sha256 starting with {wrong}, got {digest}"):
        checkpoint.resolve_weights(f"{base_url}/tiny-{wrong}.pdparams")
    assert [p.name for p in (tmp_path / "home" / "weights").iterdir()] == [f"tiny-{digest[:8]}.pdparams"]


def test_download_error_names_the_url(http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLEVISION_HOME", str(tmp_path / "home"))
    _, base_url = http_dir
    with pytest.raises(CheckpointError, match="cannot download .*/missing.pdparams"):
        checkpoint.resolve_weights(f"{base_url}/missing.pdparams")


def test_known_name_resolves_to_the_published_url(monkeypatch):
    calls = []
    monkeypatch.setattr(checkpoint, "download", lambda url, sha256=None: calls.append(url) or url)
    checkpoint.resolve_weights("alexnet")
    assert calls == [checkpoint.KNOWN_WEIGHTS["alexnet"]["url"]]


def _training_objects(model):
    scheduler = build_lr_scheduler(0.1, "steplr", epochs=10, step_size=1)
    return build_optimizer("sgd", model.parameters(), scheduler), scheduler


def test_training_checkpoint_round_trip(tmp_path):
    model = TinyNet()
    optimizer, scheduler = _training_objects(model)
    model(paddle.ones([2, 4])).sum().backward()
    optimizer.step()
    scheduler.step()
    checkpoint.save_training_checkpoint(str(tmp_path / "ck"), model, optimizer, scheduler, epoch=3,
                                        meta={"num_classes": 3, "class_names": ["a", "b", "c"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pdopt", "ck.pdparams"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "ck.pdparams").st_mode & 0o777 == 0o666 & ~umask
    expected_draw = paddle.rand([3]).numpy()

    restored = TinyNet()
    new_optimizer, new_scheduler = _training_objects(restored)
    next_epoch, meta = checkpoint.load_training_checkpoint(
        str(tmp_path / "ck.pdparams"), restored, new_optimizer, new_scheduler
    )
    assert next_epoch == 4 and meta["class_names"] == ["a", "b", "c"]
    assert new_scheduler.last_epoch == scheduler.last_epoch
    assert_same_weights(model, restored)
    # The RNG state was restored to the moment of saving.
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected_draw)


def _checkpoint_with_rng(tmp_path, edit_rng):
    """A checkpoint saved here (CPU, one process) whose RNG entry ``edit_rng`` rewrites as
    another run would have written it; returns its prefix and the draw that its CPU state
    gives next."""
    model = TinyNet()
    optimizer, scheduler = _training_objects(model)
    prefix = str(tmp_path / "ck")
    checkpoint.save_training_checkpoint(prefix, model, optimizer, scheduler, epoch=0)
    expected_draw = paddle.rand([3]).numpy()
    state = paddle.load(prefix + ".pdopt")
    state["rng"] = edit_rng(state["rng"])
    paddle.save(state, prefix + ".pdopt")
    paddle.seed(12345)  # move away from the saved state
    return prefix, expected_draw


def _resume(prefix, rank=0):
    model = TinyNet()
    return checkpoint.load_training_checkpoint(prefix, model, *_training_objects(model), rank=rank)


def test_resume_on_cpu_from_a_gpu_run(tmp_path, caplog):
    """The state of the GPU generator is ignored on a CPU, with one warning saying so; the
    CPU's (and Python's and numpy's) are restored."""
    def as_gpu_run(rng):
        rng[0]["gpu"] = rng[0]["cpu"]  # any GeneratorState: this one plays the card's
        return rng

    prefix, expected_draw = _checkpoint_with_rng(tmp_path, as_gpu_run)
    with caplog.at_level(logging.WARNING):
        _resume(prefix)
    assert caplog.text.count("not restored") == 1 and "the GPU generator (this run is on the CPU)" in caplog.text
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected_draw)


def test_resume_with_paddle_states_of_another_length(tmp_path, caplog):
    """A checkpoint of the previous format, written by a 4-GPU process (one state per
    card): paddle.set_rng_state refuses it on this device, which is said, not raised."""
    def as_four_card_run(rng):
        rng[0]["paddle"] = [rng[0].pop("cpu")] * 4
        return rng

    prefix, _ = _checkpoint_with_rng(tmp_path, as_four_card_run)
    with caplog.at_level(logging.WARNING):
        assert _resume(prefix)[0] == 1
    assert caplog.text.count("not restored") == 1 and "saved for 4 device(s)" in caplog.text


def test_resume_with_more_processes_than_saved(tmp_path, caplog):
    prefix, _ = _checkpoint_with_rng(tmp_path, lambda rng: rng)
    with caplog.at_level(logging.WARNING):
        _resume(prefix, rank=1)
    assert "holds the states of 1 processes, not rank 1's" in caplog.text


def test_gpu_generator_of_this_process_card_is_saved_and_restored(monkeypatch):
    """On card 1 of two, the state of card 1's generator is saved, and restored onto
    whichever card the resuming process uses; the other card's is left alone. Paddle's CUDA
    calls are stood in for, as this machine has no GPU."""
    cards = {"states": ["card0", "card1"]}
    monkeypatch.setattr(paddle, "get_cuda_rng_state", lambda: list(cards["states"]))
    monkeypatch.setattr(paddle, "set_cuda_rng_state", lambda states: cards.update(states=list(states)))
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:1")
    state = checkpoint.rng_state()
    assert state["gpu"] == "card1"

    for device, restored in (("gpu:1", ["fresh0", "card1"]), ("gpu:0", ["card1", "fresh1"])):
        cards["states"] = ["fresh0", "fresh1"]
        monkeypatch.setattr(paddle, "get_device", lambda: device)
        assert checkpoint._set_rng_state(state) is None
        assert cards["states"] == restored
    del state["gpu"]
    assert checkpoint._set_rng_state(state) == "the GPU generator (the checkpoint was saved on the CPU)"


def test_resume_detects_mismatched_pair(tmp_path):
    model = TinyNet()
    optimizer, scheduler = _training_objects(model)
    checkpoint.save_training_checkpoint(str(tmp_path / "a"), model, optimizer, scheduler, epoch=1)
    checkpoint.save_training_checkpoint(str(tmp_path / "b"), model, optimizer, scheduler, epoch=2)
    os.replace(tmp_path / "b.pdopt", tmp_path / "a.pdopt")
    with pytest.raises(CheckpointError, match="different saves"):
        checkpoint.load_training_checkpoint(str(tmp_path / "a"), model, optimizer, scheduler)
    with pytest.raises(CheckpointError, match="b.pdopt not found"):
        checkpoint.resolve_resume_prefix(str(tmp_path / "b"))


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.pdparams"
    checkpoint.atomic_save({"w": paddle.ones([2])}, path)
    original = path.read_bytes()

    def crash(obj, target):
        with open(target, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(paddle, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_save({"w": paddle.zeros([2])}, path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pdparams"]


def test_build_from_checkpoint_reads_class_count(tmp_path):
    model = AlexNet(num_classes=4)
    weights = dict(model.state_dict())
    paddle.save(weights, str(tmp_path / "plain.pdparams"))
    built, meta = checkpoint.build_from_checkpoint(tmp_path / "plain.pdparams")
    assert meta["num_classes"] == 4 and built.num_classes == 4


def test_corrupt_pth_is_a_checkpoint_error(tmp_path):
    pytest.importorskip("torch", reason="reading .pth files needs torch")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        checkpoint.read_weights(tmp_path / "garbage.pth")
