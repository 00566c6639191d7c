"""Weights and checkpoints are read as data: hostile pickles are refused before anything
they name runs, and every file paddle.save writes for this project still loads."""

import builtins
import collections
import os
import pickle
import struct
import subprocess

import numpy as np
import paddle
import pytest

from paddlevision import checkpoint, safe_pickle
from paddlevision.weights import UnsafeWeightsError, WeightsError, read_weights


class _Reduce:
    """Pickles as ``function(*args)``: what a hostile file asks the unpickler to call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _marker_command(marker):
    return f"touch {marker}"


HOSTILE = {
    "os.system": lambda m: _Reduce(os.system, _marker_command(m)),
    "builtins.eval": lambda m: _Reduce(builtins.eval, f"open({str(m)!r}, 'w')"),
    "builtins.exec": lambda m: _Reduce(builtins.exec, f"open({str(m)!r}, 'w')"),
    "subprocess.check_call": lambda m: _Reduce(subprocess.check_call, ["touch", str(m)]),
    "builtins.getattr": lambda m: _Reduce(getattr, _Reduce(builtins.__import__, "os"), "system"),
    "nested in a state dict": lambda m: {"features.0.weight": np.zeros(3, np.float32),
                                         "deep": [{"x": (1, _Reduce(os.system, _marker_command(m)))}]},
    "numpy.load": lambda m: _Reduce(np.load, str(m)),
    "numpy.fromfile": lambda m: _Reduce(np.fromfile, "/etc/hostname"),
    "numpy.testing runstring": lambda m: _Reduce(np.testing._private.utils.runstring,
                                                 f"open({str(m)!r}, 'w')", {}),
    "object array": lambda m: {"w": np.array([_Reduce(os.system, _marker_command(m))], dtype=object)},
    "paddle.load": lambda m: _Reduce(paddle.load, str(m)),
}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_pickles_are_refused_before_they_run(kind, protocol, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps(HOSTILE[kind](marker), protocol=protocol))
    with pytest.raises(UnsafeWeightsError, match=r"evil\.pdparams: it asks to run \S+ while loading: refused"):
        read_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("opcodes", [
    b"cos\nsystem\n(S'true'\ntR.",  # protocol 0 GLOBAL + REDUCE
    b"(S'true'\nios\nsystem\n.",  # protocol 0 INST: builds os.system('true') without REDUCE
    b"\x80\x02cbuiltins\neval\nq\x00X\x04\x00\x00\x001+1q\x01\x85q\x02Rq\x03.",
    b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",  # STACK_GLOBAL alone
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.",  # a codec other than latin1
])
def test_hand_written_opcodes_are_refused(opcodes, tmp_path):
    path = tmp_path / "evil.pdopt"
    path.write_bytes(opcodes)
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused"):
        safe_pickle.load(path)


@pytest.mark.parametrize("content, reason", [
    (b"", "truncated"),
    (b"not a pickle", "not a paddle.save file"),
    (pickle.dumps({"w": np.ones(1000, np.float32)}, protocol=4)[:200], "truncated"),
    (b"(" * 200_000 + b".", "not a paddle.save file"),
])
def test_broken_files_are_one_weights_error(content, reason, tmp_path):
    path = tmp_path / "broken.pdparams"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=rf"cannot read .*broken\.pdparams: {reason}"):
        read_weights(path)


def _paddle_load_numpy(path):
    loaded = paddle.load(str(path), return_numpy=True)
    return loaded


def _assert_same(ours, reference):
    if isinstance(reference, dict):
        assert type(ours) is type(reference) or isinstance(ours, dict)
        assert list(ours) == list(reference)
        for key in reference:
            _assert_same(ours[key], reference[key])
    elif isinstance(reference, (list, tuple)):
        assert len(ours) == len(reference)
        for a, b in zip(ours, reference):
            _assert_same(a, b)
    elif isinstance(reference, np.ndarray):
        assert ours.dtype == reference.dtype and ours.shape == reference.shape
        np.testing.assert_array_equal(ours, reference)
    elif type(reference).__name__ == "GeneratorState":
        assert isinstance(ours, safe_pickle.SavedGeneratorState)
        assert ours.restore().current_seed() == reference.current_seed()
    else:
        assert ours == reference


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_paddle_save_files_load_as_paddle_load_gives_them(protocol, tmp_path):
    """A model's and an optimizer's state dicts, an OrderedDict and a GeneratorState, as
    paddle.save writes them at each pickle protocol it supports."""
    paddle.seed(3)
    layer = paddle.nn.Linear(3, 2)
    optimizer = paddle.optimizer.Momentum(learning_rate=paddle.optimizer.lr.StepDecay(0.1, 2),
                                          parameters=layer.parameters())
    layer(paddle.ones([1, 3])).sum().backward()
    optimizer.step()
    state = {
        "model": layer.state_dict(),
        "ordered": collections.OrderedDict([("b", np.arange(4, dtype=np.int64)), ("a", np.float64(2.5))]),
        "optimizer": optimizer.state_dict(),
        "rng": [{"cpu": paddle.get_rng_state("cpu")[0], "python": (3, (1, 2), None)}],
        "flags": {"bool": True, "none": None, "complex": 1 + 2j, "set": {1, 2}},
        "half": np.ones((2, 2), np.float16),
    }
    path = tmp_path / f"state_{protocol}.pdopt"
    paddle.save(state, str(path), protocol=protocol)
    _assert_same(safe_pickle.load(path), _paddle_load_numpy(path))


def test_every_checkpoint_train_py_writes_loads_and_resumes(trained_run):
    out, _, _ = trained_run
    for name in ("latest.pdparams", "latest.pdopt"):
        _assert_same(safe_pickle.load(out / name), _paddle_load_numpy(out / name))
    state_dict, meta = read_weights(out / "latest.pdparams")
    assert meta["epoch"] == 0 and set(state_dict) == set(paddle.load(str(out / "latest.pdparams"))) - {
        "__paddlevision_meta__"}


def test_previous_release_checkpoint_format_resumes(tmp_path):
    """Before the device kind was recorded, the .pdopt held paddle.get_rng_state() under
    "paddle"; such a checkpoint still resumes, random states restored."""
    layer = paddle.nn.Linear(2, 2)
    scheduler = paddle.optimizer.lr.StepDecay(0.1, 1)
    optimizer = paddle.optimizer.Momentum(learning_rate=scheduler, parameters=layer.parameters())
    paddle.seed(11)
    expected = paddle.rand([3]).numpy()
    paddle.seed(11)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    old_format = {
        "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(), "epoch": 4, "args": {},
        "rng": [{"python": __import__("random").getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
                 "paddle": paddle.get_rng_state()}],
    }
    paddle.save(old_format, str(tmp_path / "latest.pdopt"))
    paddle.save(dict(layer.state_dict(), __paddlevision_meta__={"epoch": 4}), str(tmp_path / "latest.pdparams"))
    paddle.seed(999)
    next_epoch, meta = checkpoint.load_training_checkpoint(tmp_path, layer, optimizer, scheduler)
    assert next_epoch == 5 and meta["epoch"] == 4
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected)


def _ops(*parts):
    """A protocol-2 pickle from opcode bytes and (for readability) ints as BININT."""
    return b"\x80\x02" + b"".join(part if isinstance(part, bytes) else b"J" + struct.pack("<i", part) for part in parts)


_U8 = b"cnumpy\ndtype\nX\x02\x00\x00\x00u1\x85R"  # dtype('u1') through the allow-list
_NEW_ARRAY = b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"  # numpy's own opening


CONSTRUCTIONS = {
    # ndarray(shape, dtype, buffer=another array): a view, then BUILD frees the viewed memory under it.
    "view of an array": _ops(b"cnumpy\nndarray\n(", 64, b"\x85", _U8, b"cnumpy\nndarray\n(", 64, b"\x85", _U8,
                             b"tRtR."),
    # BUILD twice on one array: the second frees the data of the first, which a view may hold.
    "array built twice": _ops(_NEW_ARRAY, b"(K\x01K\x02\x85", _U8, b"\x89C\x02abtb(K\x01K\x01\x85", _U8,
                              b"\x89C\x01ctb."),
    # tuple(array): rows of a 2-D array are views; tuple(bytearray(n)) costs 8n bytes from a few.
    "tuple of an array": _ops(b"cbuiltins\ntuple\n", _NEW_ARRAY, b"(K\x01K\x02K\x02\x86", _U8,
                              b"\x89C\x04abcdtb\x85R."),
    "bytearray": _ops(b"cbuiltins\nbytearray\n", 1 << 24, b"\x85R."),
}


@pytest.mark.parametrize("name", CONSTRUCTIONS)
def test_constructions_beyond_numbers_are_refused(name, tmp_path):
    """Each of these made numpy read or write freed memory (a 1 KB .pdparams crashed
    tools/predict.py with SIGSEGV, or corrupted malloc's lists while loading) or allocated
    far more than the file holds."""
    path = tmp_path / "evil.pdparams"
    path.write_bytes(CONSTRUCTIONS[name])
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused"):
        safe_pickle.load(path)


def test_a_dtype_cannot_be_rebuilt_into_one_that_reads_past_its_array(tmp_path):
    """dtype.__setstate__ on a float64 copy can give it a sub-array shape while its itemsize
    stays 8: numpy then reads far past the data (heap contents, or SIGSEGV)."""
    dtype = np.dtype("f8", False, True)
    dtype.__setstate__((3, "<", (np.dtype("f8"), (100_000,)), None, None, -1, -1, 0))
    array = np.ndarray.__new__(np.ndarray, (0,), "b")
    array.__setstate__((1, (2,), dtype, False, np.array([1.5, 2.5]).tobytes()))
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"w": array}, protocol=2))
    loaded = safe_pickle.load(path)["w"]
    assert loaded.dtype == np.float64 and loaded.dtype.subdtype is None
    np.testing.assert_array_equal(np.ascontiguousarray(loaded.T), [1.5, 2.5])


def test_shared_references_cost_what_the_file_holds(tmp_path):
    """The pickle memo lets a file of a few hundred bytes refer to one list 2**60 times;
    converting each reference anew never ends (20 levels: seconds). Shared objects stay shared."""
    nested = [np.zeros(1, np.float32)]
    for _ in range(20):
        nested = [nested, nested]
    path = tmp_path / "dag.pdparams"
    path.write_bytes(pickle.dumps({"w": nested}, protocol=4))
    loaded = safe_pickle.load(path)["w"]
    assert loaded[0] is loaded[1]
