"""The service's settings: defaults, then a YAML file (deploy/py_serving/config.yml), then
command-line overrides (``max_batch_size`` is ``--max-batch-size``)."""

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    preprocess_threads: int = Field(2, ge=1, description="threads decoding base64 and images")
    max_batch_size: int = Field(32, ge=1, description="images per predictor run; 1 disables dynamic batching")
    max_batch_wait_ms: float = Field(100.0, ge=0,
                                     description="how long a batch waits for images on their way or expected")
    queue_limit: int = Field(256, ge=1, description="images admitted and not yet answered; beyond it requests get 503")
    max_images_per_request: int = Field(32, ge=1,
                                        description="images in one request; more get 413 (at most queue_limit)")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest request body; larger ones get 413")
    max_image_pixels: int = Field(40_000_000, ge=1,
                                  description="largest width*height, decoded or once resized; larger ones get 413")
    max_connections: int = Field(32, ge=1, description="open connections; requests on more get 503 and are closed")
    request_timeout_s: float = Field(30.0, gt=0, description="arrival of a request to its answer; then 408 or 504")
    header_timeout_s: float = Field(10.0, gt=0,
                                    description="a connection's next request head must arrive within this; else closed")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, time to finish requests in flight")
    access_log: bool = Field(False, description="log every request (costs throughput under load)")

    @model_validator(mode="after")
    def _request_fits_the_queue(self):
        if self.max_images_per_request > self.queue_limit:
            raise ValueError(f"max_images_per_request ({self.max_images_per_request}) exceeds queue_limit "
                             f"({self.queue_limit}): such a request could never be admitted")
        return self


def load_config(path=None, overrides=None):
    """Defaults, updated by the YAML file at ``path`` (if any), updated by ``overrides`` (the command line)."""
    settings = _read_yaml(path) if path is not None else {}
    overrides = overrides or {}
    try:
        return ServingConfig(**{**settings, **overrides})
    except ValidationError as err:
        problems = []
        for error in err.errors():
            if not error["loc"]:  # the settings together: max_images_per_request against queue_limit
                keys = [key for key in ("max_images_per_request", "queue_limit") if key in {**settings, **overrides}]
                where = ", ".join("--" + key.replace("_", "-") if key in overrides else f"{path}: {key}"
                                  for key in keys)
                problems.append(f"{where or 'defaults'}: {error['msg'].removeprefix('Value error, ')}")
                continue
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
