"""Serve an exported AlexNet over HTTP with Paddle Serving's pipeline protocol.

    python deploy/py_serving/web_service.py --model-dir ./alexnet_infer

Settings come from config.yml next to this script (--config for another file); each has a
flag (--port 18080, --max-batch-size 1 or --no-batching, ...). SIGTERM or Ctrl-C exits 0.
"""

import argparse
import logging
import sys
from pathlib import Path

import yaml

from paddlevision.inference import ModelDirError, UnsupportedOptionError
from paddlevision.serving.app import serve
from paddlevision.serving.config import ConfigError, ServingConfig, load_config
from paddlevision_cli import ArgumentParser


def yaml_scalar(text):
    """A flag's value read as the file's would be: ``--cpu-threads null``, ``--use-onednn false``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def get_args_parser():
    parser = ArgumentParser(description="AlexNet HTTP service (Paddle Serving pipeline protocol)")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent / "config.yml"),
                        help="YAML file of settings (default: config.yml next to this script)")
    for name, field in ServingConfig.model_fields.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, metavar="VALUE",
                            type=str if field.annotation is str else yaml_scalar,
                            help=f"{field.description} (default: {field.default!r})")
    parser.add_argument("--no-batching", dest="max_batch_size", action="store_const", const=1,
                        default=argparse.SUPPRESS, help="one image per predictor run (--max-batch-size 1)")
    return parser


def main(args):
    overrides = vars(args)
    try:
        config = load_config(overrides.pop("config"), overrides)
    except ConfigError as err:
        raise SystemExit(f"error: {err}")
    # force: importing paddle has already given the root logger a handler of its own.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s", force=True)
    try:
        serve(config)
    except (ModelDirError, UnsupportedOptionError) as err:
        raise SystemExit(f"error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
