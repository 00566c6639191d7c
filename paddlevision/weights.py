"""Model weights: resolving ``--pretrained`` (known name, http(s) URL, local path),
downloading into a verified cache, reading ``.pdparams`` and torchvision ``.pth`` files,
and loading them into a model with every mismatch named."""

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import paddle

from paddlevision import safe_pickle

logger = logging.getLogger(__name__)

# An extra entry of a .pdparams written by this project: {"model", "num_classes",
# "class_names", "epoch"}, so that predict and export need no --num-classes.
META_KEY = "__paddlevision_meta__"

# Weights published with the reproduction this project continues. No checksum for them is
# recorded anywhere we can check offline, so none is claimed: downloading them warns that
# the file cannot be verified.
KNOWN_WEIGHTS = {
    "alexnet": {
        "url": "https://paddle-model-ecology.bj.bcebos.com/model/alexnet_reprod/alexnet_pretrained.pdparams",
        "sha256": None,
    },
}

# torchvision names its published weights after the first hex digits of their sha256
# (alexnet-owt-7be5be79.pth), as torch.hub's HASH_REGEX reads them. At least 8 digits, so
# that a version number such as resnet-50 is not taken for one.
_HASH_PREFIX_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")
# How torch.load(weights_only=True) names a global it refuses.
_TORCH_REFUSED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+)")


class WeightsError(RuntimeError):
    """Weights that cannot be found, fetched, read or loaded; the message names the file."""


class UnsafeWeightsError(WeightsError):
    """A weights or checkpoint file that asks to run code while it is read: refused."""


class TorchRequiredError(WeightsError):
    """A PyTorch file met without torch installed."""


@contextlib.contextmanager
def atomic_write(path, suffix=".tmp"):
    """Yield a temporary path beside ``path`` (same file system, so the rename is atomic);
    rename it to ``path`` after the block, remove it if the block fails. A crash therefore
    never leaves a truncated or unverified file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    # The permissions a plain open() would give, rather than mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
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


def download(url, sha256=None, directory=None):
    """Download ``url`` once into the cache and return the local path.

    The file is checked against ``sha256``, else against the sha256 prefix its name
    carries in torchvision's convention; a cached file is checked again on every call.
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
    try:
        with atomic_write(target, suffix=".part") as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            if expected is not None:
                actual = sha256sum(tmp)
                if not actual.startswith(expected):
                    what = "sha256" if sha256 else "sha256 starting with"
                    raise WeightsError(f"checksum mismatch for {url}: expected {what} {expected}, got {actual}")
    except OSError as err:
        raise WeightsError(f"cannot download {url}: {err}") from err
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
        raise WeightsError(f"weights file not found: {source}")
    if sha256 is not None and sha256sum(path) != sha256.lower():
        raise WeightsError(f"checksum mismatch for {path}: expected sha256 {sha256.lower()}")
    return path


def _is_linear_weight(name, value):
    return name.endswith(".weight") and value.ndim == 2


def torch_to_paddle_state_dict(torch_state_dict):
    """A torchvision state dict (tensors or arrays) as numpy arrays in Paddle's layout:
    the same names, Linear weights transposed to ``[in_features, out_features]``."""
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
        raise TorchRequiredError(
            f"{path} is a PyTorch file: reading it needs torch installed (pip install torch), or convert it once "
            f"on a machine with torch: python tools/convert_torch_weights.py --src {path.name} "
            f"--dst {path.stem}.pdparams"
        ) from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises unpickling, zip and runtime errors for a bad file
        refused = _TORCH_REFUSED_GLOBAL.search(str(err))
        if refused:  # torch's own allow-list said no; its message suggests turning it off
            raise UnsafeWeightsError(f"{path}: {safe_pickle.refusal(refused.group(1))}") from None
        raise WeightsError(f"cannot read PyTorch weights from {path}: {str(err).strip().splitlines()[0]}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a torchvision reference checkpoint rather than bare weights
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return torch_to_paddle_state_dict(state)


def load_pickled(path):
    """What a ``paddle.save`` file holds, with arrays as numpy arrays, read as data
    (:mod:`paddlevision.safe_pickle`): a file that asks to run code is refused."""
    try:
        return safe_pickle.load(path)
    except safe_pickle.UnsafePickleError as err:
        raise UnsafeWeightsError(f"{path}: {err}") from None
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path}: {err}") from None


def read_weights(path):
    """``(state_dict, meta)`` of a weights file, arrays as numpy arrays; ``meta`` is
    ``{}`` for files that carry none (the reference's plain state dicts, ``.pth`` files)."""
    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        return _read_torch_weights(path), {}
    state = load_pickled(path)
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
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
    """Load ``state_dict`` into ``model``; returns the head keys it skipped.

    Only a classifier head of another class count, and only with ``allow_head_mismatch``
    (fine-tuning), is skipped, with a warning. Any other mismatch is an error listing the
    keys: evaluating, exporting or resuming with a random layer would be silently wrong.
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
        raise WeightsError(f"{source} does not fit the model; " + "; ".join(details))
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
    """Resolve ``source`` and load it into ``model``; returns the file's meta."""
    path = resolve_weights(source, sha256)
    state_dict, meta = read_weights(path)
    load_state_dict_checked(model, state_dict, source=str(path), allow_head_mismatch=allow_head_mismatch)
    return meta
