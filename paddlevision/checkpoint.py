"""Training checkpoints: everything ``--resume`` needs to continue a run where it stopped.

A checkpoint ``{prefix}`` is two files:

* ``{prefix}.pdparams``: the model's state dict, loadable by a plain
  ``model.set_state_dict(paddle.load(...))``, plus the ``weights.META_KEY`` entry, so it
  also serves as ``--pretrained`` for predict and export;
* ``{prefix}.pdopt``: optimizer, LR scheduler, AMP scaler, epoch, RNG states, args.
"""

import logging
import os
import random
import shutil
import uuid
from pathlib import Path

import numpy as np
import paddle

from paddlevision.safe_pickle import SavedGeneratorState
from paddlevision.weights import (META_KEY, WeightsError, atomic_write, load_pickled, load_state_dict_checked,
                                  read_weights)

logger = logging.getLogger(__name__)


class CheckpointError(WeightsError):
    """A training checkpoint that cannot be resumed from; the message names the file."""


def atomic_save(obj, path):
    with atomic_write(path) as tmp:
        paddle.save(obj, tmp)


def atomic_copy(source, target):
    """Make ``target`` hold what ``source`` holds, atomically. A hard link where the file
    system has them: checkpoint files are never rewritten in place (each save renames a new
    file over the name), so ``latest`` and ``best_model`` can share ``model_{epoch}``'s
    storage instead of costing 230 MB each. Otherwise a copy."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        with atomic_write(target) as tmp:
            shutil.copyfile(source, tmp)
        return
    os.replace(tmp, target)


def _gpu_index(device):
    """The card of a ``paddle.get_device()`` string, ``None`` for the CPU."""
    return int(device.split(":")[1]) if device.startswith("gpu:") else None


def rng_state():
    """This process's Python, numpy and Paddle RNG states, in a form paddle.save keeps.

    Of Paddle's generators (the CPU's, one per visible card) the one of this process's card
    is kept under ``"gpu"``, so that it can be restored on another card or machine.
    """
    # numpy's key array is uint32, which paddle.load would try (and fail) to turn into a
    # tensor: store it as a list.
    name, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached_gauss),
        "cpu": paddle.get_rng_state("cpu")[0],
    }
    card = _gpu_index(paddle.get_device())
    if card is not None:
        state["gpu"] = paddle.get_cuda_rng_state()[card]
    return state


def _generator(saved):
    """Paddle's generator state from what :mod:`paddlevision.safe_pickle` read."""
    return saved.restore() if isinstance(saved, SavedGeneratorState) else saved


def _set_rng_state(state):
    """Restore what ``state`` holds for this process's devices; return a description of
    what it could not restore (``None`` when everything was)."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gauss))
    if "paddle" in state:  # the format before the device kind was recorded
        try:
            paddle.set_rng_state([_generator(saved) for saved in state["paddle"]])
        except ValueError:
            return (f"the Paddle generators: saved for {len(state['paddle'])} device(s), "
                    f"not the {paddle.get_device()} generators of this run")
        return None
    paddle.set_rng_state([_generator(state["cpu"])], "cpu")
    card = _gpu_index(paddle.get_device())
    if card is None:
        return "the GPU generator (this run is on the CPU)" if "gpu" in state else None
    if "gpu" not in state:
        return "the GPU generator (the checkpoint was saved on the CPU)"
    gpu_states = paddle.get_cuda_rng_state()
    gpu_states[card] = _generator(state["gpu"])
    paddle.set_cuda_rng_state(gpu_states)
    return None


def save_training_checkpoint(prefix, model, optimizer, lr_scheduler, epoch, args=None, scaler=None, meta=None,
                             rng_states=None):
    """Write ``{prefix}.pdopt`` then ``{prefix}.pdparams``, each atomically. Both record
    the epoch, so a crash between the two renames is detected on resume. ``rng_states``
    holds every rank's :func:`rng_state` (default: this process's only), so that each
    rank of a resumed data-parallel run continues its own random streams."""
    training_state = {
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "rng": rng_states or [rng_state()],
        "args": vars(args) if args is not None else {},
    }
    if scaler is not None:
        training_state["scaler"] = scaler.state_dict()
    atomic_save(training_state, f"{prefix}.pdopt")
    weights = dict(model.state_dict())
    weights[META_KEY] = dict(meta or {}, epoch=epoch)
    atomic_save(weights, f"{prefix}.pdparams")


def resolve_resume_prefix(resume):
    """``--resume`` takes a directory (its ``latest``), a prefix, or either file."""
    path = Path(resume)
    if path.is_dir():
        path = path / "latest"
    if path.suffix in (".pdparams", ".pdopt"):
        path = path.with_suffix("")
    for suffix in (".pdparams", ".pdopt"):
        if not path.with_name(path.name + suffix).is_file():
            raise CheckpointError(f"--resume {resume}: {path}{suffix} not found")
    return str(path)


def load_training_checkpoint(resume, model, optimizer, lr_scheduler, scaler=None, rank=0):
    """Restore everything :func:`save_training_checkpoint` wrote, with the RNG states of
    ``rank`` where they fit this process's devices (a warning says what did not); returns
    ``(next_epoch, meta)``."""
    prefix = resolve_resume_prefix(resume)
    state_dict, meta = read_weights(f"{prefix}.pdparams")
    training_state = load_pickled(f"{prefix}.pdopt")
    if not isinstance(training_state, dict):
        raise CheckpointError(f"{prefix}.pdopt is not a training checkpoint of train.py (it holds a "
                              f"{type(training_state).__name__})")
    missing = [key for key in ("optimizer", "lr_scheduler", "epoch", "rng") if key not in training_state]
    if missing:
        raise CheckpointError(f"{prefix}.pdopt is not a training checkpoint of train.py (no {', '.join(missing)})")
    if meta.get("epoch") != training_state["epoch"]:
        raise CheckpointError(
            f"{prefix}.pdparams (epoch {meta.get('epoch')}) and {prefix}.pdopt (epoch {training_state['epoch']}) "
            "come from different saves"
        )
    load_state_dict_checked(model, state_dict, source=f"{prefix}.pdparams")
    rng_states = training_state["rng"]
    try:
        optimizer.set_state_dict(training_state["optimizer"])
        lr_scheduler.set_state_dict(training_state["lr_scheduler"])
        if scaler is not None and "scaler" in training_state:
            scaler.load_state_dict(training_state["scaler"])
        if rank < len(rng_states):
            not_restored = _set_rng_state(rng_states[rank])
        else:
            not_restored = (f"any generator (the checkpoint holds the states of {len(rng_states)} processes, "
                            f"not rank {rank}'s)")
    except Exception as err:  # the file is data from anywhere: whatever Paddle or the stdlib raise for bad values
        raise CheckpointError(f"{prefix}.pdopt does not fit this training ({type(err).__name__}: {err})") from None
    if not_restored:
        logger.warning("%s: random state of %s not restored; random draws (dropout) continue from a fresh state",
                       prefix, not_restored)
    return training_state["epoch"] + 1, meta
