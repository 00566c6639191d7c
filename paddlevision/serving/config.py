"""The HTTP service's settings: a flat YAML file (``deploy/py_serving/config.yml``) whose
every key can be overridden on the command line (``model_dir`` -> ``--model-dir``).

Values are checked strictly, so a typo fails at start-up naming the key instead of being
silently ignored: an unknown key, a value of the wrong type (``port: "80"``, ``workers:
true``) or one out of range is a :class:`ConfigError`.
"""

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, get_args

import yaml

__all__ = ["ConfigError", "ServingConfig", "add_config_arguments", "config_from_args", "load_config"]

DEVICES = ("cpu", "gpu")


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type or out of range; the message names it."""


def _setting(default, help, minimum=None, maximum=None):
    return dataclasses.field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum})


@dataclass(frozen=True)
class ServingConfig:
    host: str = _setting("127.0.0.1", "address to listen on (0.0.0.0 exposes the service to the network)")
    port: int = _setting(18080, "TCP port", minimum=1, maximum=65535)
    model_dir: str = _setting("./alexnet_infer", "directory written by tools/export_model.py")
    device: str = _setting("cpu", "cpu or gpu")
    gpu_id: int = _setting(0, "GPU to run on with device gpu", minimum=0)
    cpu_threads: Optional[int] = _setting(None, "math threads per worker (null: every core)", minimum=1)
    use_mkldnn: bool = _setting(True, "oneDNN kernels on CPU (about 4x faster for AlexNet)")
    workers: int = _setting(1, "predictor threads, each with its own Paddle predictor", minimum=1)
    preprocess_threads: int = _setting(2, "threads decoding and resizing images", minimum=1)
    max_batch_size: int = _setting(32, "images per predictor run; 1 disables dynamic batching", minimum=1)
    max_batch_wait_ms: float = _setting(
        5.0, "how long a batch waits for images still being decoded before it runs", minimum=0
    )
    queue_limit: int = _setting(256, "images admitted and not yet answered; beyond it requests get 503", minimum=1)
    max_body_bytes: int = _setting(10 * 1024 * 1024, "largest request body; larger ones get 413", minimum=1)
    max_image_pixels: int = _setting(40_000_000, "largest width*height decoded; larger images are refused", minimum=1)
    request_timeout_s: float = _setting(30.0, "time a request may wait for its results before 504", minimum=0.001)
    keep_alive_timeout_s: float = _setting(5.0, "idle HTTP keep-alive connections are closed after this", minimum=0.001)
    shutdown_timeout_s: float = _setting(30.0, "on SIGTERM, time to finish requests in flight", minimum=0)
    access_log: bool = _setting(False, "log every request (costs throughput under load)")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_value(field, getattr(self, field.name))
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")


def _value_type(field):
    """The type a setting holds, and whether it may be null (``Optional[...]``)."""
    args = get_args(field.type)
    if args:
        return next(arg for arg in args if arg is not type(None)), True
    return field.type, False


def _check_value(field, value):
    expected, nullable = _value_type(field)
    if value is None and nullable:
        return
    # bool is an int in Python, but "workers: true" is a mistake, not 1 worker.
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[expected]
        kind += " or null" if nullable else ""
        raise ConfigError(f"{field.name} must be {kind}, got {value!r} ({type(value).__name__})")
    minimum, maximum = field.metadata["minimum"], field.metadata["maximum"]
    if minimum is not None and value < minimum:
        raise ConfigError(f"{field.name} must be at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{field.name} must be at most {maximum}, got {value!r}")


def _fields():
    return {field.name: field for field in dataclasses.fields(ServingConfig)}


def load_config(path=None, overrides=None):
    """Defaults, updated by the YAML file at ``path`` (if any), updated by ``overrides``."""
    settings = {}
    if path is not None:
        settings.update(_read_yaml(path))
    settings.update(overrides or {})
    known = _fields()
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)}; known settings: {', '.join(known)}")
    try:
        return ServingConfig(**settings)
    except ConfigError as err:
        where = f" in {path} or the command line" if path is not None else ""
        raise ConfigError(f"{err}{where}") from None


def _read_yaml(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value, got {type(data).__name__}")
    return data


def _parse_scalar(text):
    """A command-line value read as YAML reads it, so ``--cpu-threads null`` and
    ``--use-mkldnn false`` mean what they mean in the file; type errors are then
    reported by the same check as the file's."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_config_arguments(parser, default_config=None):
    """``--config`` and one ``--<setting>`` flag per setting (default: the file's value),
    plus ``--no-batching`` (``--max-batch-size 1``)."""
    parser.add_argument("--config", default=default_config, help="YAML file of settings")
    for name, field in _fields().items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=str if _value_type(field)[0] is str else _parse_scalar,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"{field.metadata['help']} (default: {field.default!r})",
        )
    parser.add_argument(
        "--no-batching",
        dest="max_batch_size",
        action="store_const",
        const=1,
        default=argparse.SUPPRESS,
        help="one image per predictor run (the same as --max-batch-size 1)",
    )


def config_from_args(args):
    """The :class:`ServingConfig` that parsed :func:`add_config_arguments` flags describe."""
    known = _fields()
    overrides = {name: value for name, value in vars(args).items() if name in known}
    return load_config(args.config, overrides)
