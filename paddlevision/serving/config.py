"""The service's settings: defaults, then a YAML file (deploy/py_serving/config.yml), then
command-line overrides (``max_batch_size`` is ``--max-batch-size``)."""

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

RENAMED = {"use_mkldnn": "use_onednn"}


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type or out of range; the message names it and where it came from."""


class ServingConfig(BaseModel):
    # strict: "port: '80'" or "workers: true" is a mistake, not 80 or 1.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 exposes the service to the network)")
    port: int = Field(18080, ge=1, le=65535, description="TCP port")
    model_dir: str = Field("./alexnet_infer", description="directory written by tools/export_model.py")
    device: Literal["cpu", "gpu"] = Field("cpu", description="cpu or gpu")
    gpu_id: int = Field(0, ge=0, description="GPU to run on with device gpu")
    cpu_threads: Optional[int] = Field(None, ge=1, description="math threads per worker (null: every core)")
    use_onednn: bool = Field(True, description="oneDNN kernels on CPU (about 4x faster for AlexNet)")
    workers: int = Field(1, ge=1, description="predictor threads, each with its own Paddle predictor")
    preprocess_threads: int = Field(2, ge=1, description="threads decoding and resizing images")
    max_batch_size: int = Field(32, ge=1, description="images per predictor run; 1 disables dynamic batching")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for images still being decoded")
    queue_limit: int = Field(256, ge=1, description="images admitted and not yet answered; beyond it requests get 503")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest request body; larger ones get 413")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest width*height decoded; larger ones get 413")
    request_timeout_s: float = Field(30.0, gt=0, description="time a request may wait for its results before 504")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, time to finish requests in flight")
    access_log: bool = Field(False, description="log every request (costs throughput under load)")


def load_config(path=None, overrides=None):
    """Defaults, updated by the YAML file at ``path`` (if any), updated by ``overrides`` (the command line)."""
    settings = _read_yaml(path) if path is not None else {}
    overrides = overrides or {}
    try:
        return ServingConfig(**{**settings, **overrides})
    except ValidationError as err:
        problems = []
        for error in err.errors():
            key = error["loc"][0]
            where = "--" + key.replace("_", "-") if key in overrides else f"{path}: {key}"
            if error["type"] == "extra_forbidden":
                renamed = f" (renamed {RENAMED[key]})" if key in RENAMED else ""
                problems.append(f"{where}: unknown setting{renamed}; known: {', '.join(ServingConfig.model_fields)}")
            else:
                problems.append(f"{where}: {error['msg'].lower()}, got {error['input']!r}")
        raise ConfigError("; ".join(problems)) from None


def _read_yaml(path):
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value, got {type(data).__name__}")
    return data
