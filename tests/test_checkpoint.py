import logging
import os

import numpy as np
import paddle
import pytest
from tiny_net import TinyNet, assert_same_weights

from paddlevision import checkpoint
from paddlevision.checkpoint import CheckpointError
from paddlevision.optim import build_lr_scheduler, build_optimizer


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


@pytest.mark.parametrize("links", [True, False], ids=["hard link", "file system without links"])
def test_latest_holds_the_epoch_and_keeps_it_when_the_epoch_file_is_saved_again(tmp_path, monkeypatch, links):
    if not links:
        monkeypatch.setattr(os, "link", lambda *args: (_ for _ in ()).throw(OSError("no links here")))
    epoch_file, latest = tmp_path / "model_0.pdparams", tmp_path / "latest.pdparams"
    checkpoint.atomic_save({"w": paddle.ones([2])}, epoch_file)
    checkpoint.atomic_save({"w": paddle.zeros([2])}, latest)  # an older latest, replaced
    checkpoint.atomic_copy(epoch_file, latest)
    assert latest.read_bytes() == epoch_file.read_bytes()
    assert (latest.stat().st_ino == epoch_file.stat().st_ino) == links  # 230 MB saved per name
    checkpoint.atomic_save({"w": paddle.full([2], 7.0)}, epoch_file)  # a resumed run saving epoch 0 again
    np.testing.assert_array_equal(paddle.load(str(latest))["w"].numpy(), [1.0, 1.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pdparams", "model_0.pdparams"]
