"""One place for weights and checkpoints: resolving ``--pretrained`` (path, URL, known
name, torchvision ``.pth``), loading with head-aware mismatch handling, and atomic
training checkpoints.

File layout of a training checkpoint ``{prefix}``:

* ``{prefix}.pdparams`` — the model's state dict, loadable by plain
  ``model.set_state_dict(paddle.load(...))``, plus one extra entry ``META_KEY`` holding
  ``{"model", "num_classes", "class_names", "epoch"}`` so that predict and export need no
  ``--num-classes``;
* ``{prefix}.pdopt`` — optimizer, LR scheduler, AMP scaler, epoch, RNG states, args.
"""

import contextlib
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import paddle

logger = logging.getLogger(__name__)

META_KEY = "__paddlevision_meta__"

# Weights published with the reproduction this project continues. Their checksum is not
# recorded anywhere we can verify offline, so it is left unknown (None): a download is
# then only checked for being a loadable state dict.
KNOWN_WEIGHTS = {
    "alexnet": {
        "url": "https://paddle-model-ecology.bj.bcebos.com/model/alexnet_reprod/alexnet_pretrained.pdparams",
        "sha256": None,
    },
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the file and the offending keys named."""


# ----------------------------------------------------------------------------- files


def _temp_file_beside(directory, name, suffix):
    """A temporary file beside the final one (same file system, so the rename is atomic),
    with the permissions a plain ``open()`` would give rather than mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


@contextlib.contextmanager
def _atomic_target(path):
    """Yield a temporary path beside ``path``; when the block completes, fsync it and
    rename it to ``path``; when it fails, remove it. A crash mid-write therefore never
    leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file_beside(path.parent, path.name, ".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path):
    """``paddle.save`` to ``path`` atomically."""
    with _atomic_target(path) as tmp:
        paddle.save(obj, tmp)


def atomic_copy(source, target):
    """Copy ``source`` to ``target`` atomically."""
    with _atomic_target(target) as tmp:
        shutil.copyfile(source, tmp)


def sha256sum(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir():
    """``$PADDLEVISION_HOME/weights``, defaulting to ``~/.cache/paddlevision/weights``."""
    home = os.environ.get("PADDLEVISION_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "paddlevision")
    return Path(home) / "weights"


# torchvision names its published weights after the first hex digits of their sha256
# (alexnet-owt-7be5be79.pth) and checks downloads against them (torch.hub's HASH_REGEX).
# At least 8 digits here, so that a version number such as resnet-50 is not taken for one.
_HASH_PREFIX_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def download(url, sha256=None, directory=None):
    """Download ``url`` once into the cache and return the local path.

    The download is verified against ``sha256``, or else against the sha256 prefix that
    the file name carries in torchvision's convention (``name-<hex digits>.ext``). The file
    is written under a temporary name and renamed only after it matched, so the cache
    never holds a partial or wrong file. A cached file is re-verified on every call.
    """
    directory = Path(directory) if directory else cache_dir()
    name = os.path.basename(urllib.parse.urlparse(url).path) or "weights.pdparams"
    if sha256:
        expected = sha256.lower()
    else:
        match = _HASH_PREFIX_IN_NAME.search(name)
        expected = match.group(1) if match else None
    if expected is None:
        # Weights are pickles: an unverified download is trusted code. Say so.
        logger.warning("no sha256 known for %s: the download cannot be verified (pass one where you have it)", url)
    target = directory / name
    if target.exists():
        if expected is None or sha256sum(target).startswith(expected):
            return target
        logger.warning("cached %s does not match its sha256; downloading it again", target)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file_beside(directory, name, ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        if expected is not None:
            actual = sha256sum(tmp)
            if not actual.startswith(expected):
                what = "sha256" if sha256 else "sha256 starting with"
                raise CheckpointError(f"checksum mismatch for {url}: expected {what} {expected}, got {actual}")
        os.replace(tmp, target)
    except OSError as err:
        raise CheckpointError(f"cannot download {url}: {err}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def resolve_weights(source, sha256=None):
    """Turn ``--pretrained`` (known name, http(s) URL or local path) into a local file."""
    source = str(source)
    if source in KNOWN_WEIGHTS:
        entry = KNOWN_WEIGHTS[source]
        return download(entry["url"], sha256 or entry["sha256"])
    if urllib.parse.urlparse(source).scheme in ("http", "https"):
        return download(source, sha256)
    path = Path(source)
    if path.is_dir():
        path = path / "latest.pdparams"
    elif not path.exists() and path.with_suffix(".pdparams").exists() and path.suffix != ".pdparams":
        path = path.with_suffix(".pdparams")
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {source}")
    if sha256 is not None and sha256sum(path) != sha256.lower():
        raise CheckpointError(f"checksum mismatch for {path}: expected sha256 {sha256.lower()}")
    return path


# ------------------------------------------------------------------ torchvision .pth


def _is_linear_weight(name, value):
    return name.endswith(".weight") and value.ndim == 2


def torch_to_paddle_state_dict(torch_state_dict):
    """torchvision AlexNet state dict (tensors or arrays) → numpy arrays in Paddle's
    layout: same names, Linear weights transposed to ``[in_features, out_features]``."""
    converted = {}
    for name, value in torch_state_dict.items():
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        converted[name] = np.ascontiguousarray(array.T) if _is_linear_weight(name, array) else array
    return converted


def paddle_to_torch_state_dict(paddle_state_dict):
    """The inverse of :func:`torch_to_paddle_state_dict`, to numpy arrays."""
    converted = {}
    for name, value in paddle_state_dict.items():
        if name == META_KEY:
            continue
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        converted[name] = np.ascontiguousarray(array.T) if _is_linear_weight(name, array) else array
    return converted


def _read_torch_weights(path):
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(f"{path} is a PyTorch file; loading it needs torch installed ({err})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises unpickling, zip and runtime errors for a bad file
        raise CheckpointError(f"cannot read PyTorch weights from {path}: {err}") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a torchvision reference checkpoint rather than bare weights
    return torch_to_paddle_state_dict(state)


# ---------------------------------------------------------------------- model weights


def read_weights(path):
    """Read a weights file; returns ``(state_dict, meta)`` (``meta`` is ``{}`` for files
    that carry none, such as the reference's plain state dicts or ``.pth`` files)."""
    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        return _read_torch_weights(path), {}
    try:
        state = paddle.load(str(path))
    except Exception as err:  # paddle raises a variety of types for a corrupt pickle
        raise CheckpointError(f"cannot read weights from {path}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    state = dict(state)
    meta = state.pop(META_KEY, None) or {}
    return state, meta


def head_prefix(model):
    """Name prefix of the classifier head: the layer owning the last parameter."""
    return list(model.state_dict())[-1].rsplit(".", 1)[0] + "."


def num_classes_of(state_dict, meta=None):
    """The class count recorded in ``meta``, else read off the head's bias."""
    if meta and meta.get("num_classes"):
        return int(meta["num_classes"])
    biases = [k for k in state_dict if k.endswith(".bias")]
    if not biases:
        return None
    return int(np.shape(state_dict[biases[-1]])[0])


def load_state_dict_checked(model, state_dict, source="weights", allow_head_mismatch=False):
    """Load ``state_dict`` into ``model``.

    With ``allow_head_mismatch`` (fine-tuning to another class count), a classifier head
    whose shape does not fit is skipped with a warning. Every other mismatch — missing,
    unexpected or misshapen keys — is a :class:`CheckpointError` listing them: evaluating,
    exporting or resuming with a randomly initialised head would be silently wrong.
    """
    expected = model.state_dict()
    head = head_prefix(model)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [
        k for k in expected if k in state_dict and list(np.shape(state_dict[k])) != list(expected[k].shape)
    ]
    head_mismatch = [k for k in misshapen if allow_head_mismatch and k.startswith(head)]
    other_mismatch = [k for k in misshapen if k not in head_mismatch]
    if missing or unexpected or other_mismatch:
        details = []
        if missing:
            details.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            details.append(f"unexpected keys: {', '.join(unexpected)}")
        for k in other_mismatch:
            details.append(f"shape mismatch for {k}: checkpoint {list(np.shape(state_dict[k]))}, model {list(expected[k].shape)}")
        raise CheckpointError(f"{source} does not fit the model; " + "; ".join(details))
    if head_mismatch:
        logger.warning(
            "%s: classifier head %s has %s outputs, the model %s; loading everything except the head",
            source,
            head.rstrip("."),
            np.shape(state_dict[head_mismatch[-1]])[-1],
            expected[head_mismatch[-1]].shape[-1],
        )
        state_dict = {k: v for k, v in state_dict.items() if k not in head_mismatch}
    model.set_state_dict({k: paddle.to_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v for k, v in state_dict.items()})
    return head_mismatch


def load_pretrained(model, source, sha256=None, allow_head_mismatch=False):
    """Resolve ``source`` and load it into ``model``; returns the checkpoint's meta."""
    path = resolve_weights(source, sha256)
    state_dict, meta = read_weights(path)
    load_state_dict_checked(model, state_dict, source=str(path), allow_head_mismatch=allow_head_mismatch)
    return meta


def build_from_checkpoint(source, model_name=None, num_classes=None, sha256=None, **model_kwargs):
    """Build the model a weights file describes, for predict and export: the class count
    comes from the checkpoint (``num_classes`` only overrides it). Returns
    ``(model, meta)`` with ``meta["class_names"]`` when the checkpoint recorded them."""
    from paddlevision.models import get_model

    path = resolve_weights(source, sha256)
    state_dict, meta = read_weights(path)
    classes = num_classes or num_classes_of(state_dict, meta)
    model = get_model(model_name or meta.get("model", "alexnet"), num_classes=classes, **model_kwargs)
    load_state_dict_checked(model, state_dict, source=str(path))
    meta = dict(meta, num_classes=classes)
    return model, meta


# ----------------------------------------------------------------- training checkpoints


def _gpu_index(device):
    """The card of a ``paddle.get_device()`` string, ``None`` for the CPU."""
    return int(device.split(":")[1]) if device.startswith("gpu:") else None


def rng_state():
    """This process's Python, numpy and Paddle RNG states, in a form paddle.save keeps.

    Paddle has a generator per device: the CPU's, and one per visible card. The state of
    the card this process computes on is kept under ``"gpu"``, so that it can be restored
    on another card, or on a machine with another number of cards.
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


def _set_rng_state(state):
    """Restore what ``state`` holds for this process's devices; return a description of
    what it could not restore (``None`` when everything was)."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gauss))
    if "paddle" in state:  # the format before the device kind was recorded
        try:
            paddle.set_rng_state(state["paddle"])
        except ValueError:
            return (f"the Paddle generators: saved for {len(state['paddle'])} device(s), "
                    f"not the {paddle.get_device()} generators of this run")
        return None
    paddle.set_rng_state([state["cpu"]], "cpu")
    card = _gpu_index(paddle.get_device())
    if card is None:
        return "the GPU generator (this run is on the CPU)" if "gpu" in state else None
    if "gpu" not in state:
        return "the GPU generator (the checkpoint was saved on the CPU)"
    gpu_states = paddle.get_cuda_rng_state()
    gpu_states[card] = state["gpu"]
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
    try:
        training_state = paddle.load(f"{prefix}.pdopt")
    except Exception as err:  # paddle raises a variety of types for a corrupt pickle
        raise CheckpointError(f"cannot read training state from {prefix}.pdopt: {err}") from err
    missing = [key for key in ("optimizer", "lr_scheduler", "epoch", "rng") if key not in training_state]
    if missing:
        raise CheckpointError(f"{prefix}.pdopt is not a training checkpoint of train.py (no {', '.join(missing)})")
    if meta.get("epoch") != training_state["epoch"]:
        raise CheckpointError(
            f"{prefix}.pdparams (epoch {meta.get('epoch')}) and {prefix}.pdopt (epoch {training_state['epoch']}) "
            "come from different saves"
        )
    load_state_dict_checked(model, state_dict, source=f"{prefix}.pdparams")
    optimizer.set_state_dict(training_state["optimizer"])
    lr_scheduler.set_state_dict(training_state["lr_scheduler"])
    if scaler is not None and "scaler" in training_state:
        scaler.load_state_dict(training_state["scaler"])
    rng_states = training_state["rng"]
    if rank < len(rng_states):
        not_restored = _set_rng_state(rng_states[rank])
    else:
        not_restored = (f"any generator (the checkpoint holds the states of {len(rng_states)} processes, "
                        f"not rank {rank}'s)")
    if not_restored:
        logger.warning("%s: random state of %s not restored; random draws (dropout) continue from a fresh state",
                       prefix, not_restored)
    return training_state["epoch"] + 1, meta
