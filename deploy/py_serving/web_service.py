"""Serve an exported AlexNet over HTTP with Paddle Serving's pipeline protocol.

    python deploy/py_serving/web_service.py --model-dir ./alexnet_infer

reads ``config.yml`` next to this script (``--config`` for another file); every setting
there has a flag (``--port 18080``, ``--max-batch-size 1`` or ``--no-batching``, ...).
SIGTERM or Ctrl-C stops it gracefully with exit status 0. See README.md here.
"""

import argparse
import logging
import sys
from pathlib import Path


from paddlevision.inference import ModelDirError, UnsupportedOptionError
from paddlevision.serving.app import serve
from paddlevision.serving.config import ConfigError, add_config_arguments, config_from_args

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yml"


def get_args_parser():
    parser = argparse.ArgumentParser(description="AlexNet HTTP service (Paddle Serving pipeline protocol)")
    add_config_arguments(parser, default_config=str(DEFAULT_CONFIG))
    return parser


def main(args):
    try:
        config = config_from_args(args)
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
