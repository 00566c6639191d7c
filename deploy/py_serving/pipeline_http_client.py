"""Query the AlexNet service as Paddle Serving's pipeline_http_client.py does.

    python deploy/py_serving/pipeline_http_client.py --img-path ./images/demo.jpg

prints each answer as the reference does (Paddle Serving's fields, without this service's
``logid``); for a directory or a glob, after its image's name, as infer.py names them.
A service still starting is waited for up to --wait seconds. Exit status 1 if an answer
has a non-zero err_no or the service cannot be reached.
"""

from paddlevision.interrupts import Interrupts

if __name__ == "__main__":  # before the slow imports: Ctrl-C during them ends in one line too
    INTERRUPTS = Interrupts().install()

import json
import os
import sys
import time
from pathlib import Path

import httpx

from paddlevision.batch_predict import expand_image_paths
from paddlevision.serving.protocol import RESPONSE_FIELDS, ErrNo, build_request
from paddlevision_cli import ArgumentParser, run_command

POLL_INTERVAL_S = 0.25


def get_args_parser():
    parser = ArgumentParser(description="Client of the AlexNet HTTP service")
    parser.add_argument("--img-path", default="./images/demo.jpg",
                        help="an image, a directory (searched recursively) or a glob")
    parser.add_argument("--url", default="http://127.0.0.1:18080/alexnet/prediction",
                        help="prediction URL of the service")
    parser.add_argument("--timeout", default=60.0, type=float, help="seconds to wait for each answer")
    parser.add_argument("--wait", default=60.0, type=float,
                        help="seconds to wait for a service that is still starting (0: do not wait)")
    return parser


def post(client, url, body):
    response = client.post(url, content=body, headers={"Content-Type": "application/json"})
    try:
        return response.json()
    except ValueError:
        return {"err_no": -1, "err_msg": f"HTTP {response.status_code}, not a JSON answer: {response.text[:200]}"}


def post_when_ready(client, url, body, wait_s):
    """:func:`post`, retried while the connection is refused or lost, or the model is still loading.
    Lost: loading the model can stall the service's event loop past its keep-alive timeout, so
    it closes a reused connection under a request it has not read yet."""
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            answer = post(client, url, body)
            if answer.get("err_no") != ErrNo.NOT_READY:
                return answer
            reason = answer.get("err_msg", "not ready")
        except httpx.ConnectError as err:
            reason = f"cannot connect: {err}"
        except (httpx.ReadError, httpx.RemoteProtocolError) as err:
            reason = f"connection lost: {err}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"error: the service at {url} was not ready within --wait {wait_s:g} s ({reason})")
        if not waiting:
            print(f"waiting up to {wait_s:g} s for the service at {url} to be ready ({reason})", file=sys.stderr,
                  flush=True)
            waiting = True
        time.sleep(min(POLL_INTERVAL_S, remaining))


def main(args):
    try:
        paths = expand_image_paths(args.img_path)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}")
    name_answers = not os.path.isfile(args.img_path)
    status = 0
    answered = False  # the wait is for start-up only
    with httpx.Client(timeout=args.timeout) as client:
        for path in paths:
            try:
                body = json.dumps(build_request([Path(path).read_bytes()]))
            except OSError as err:
                print(f"error: cannot read {path}: {err.strerror or err}", file=sys.stderr, flush=True)
                status = 1
                continue
            try:
                if answered:
                    answer = post(client, args.url, body)
                else:
                    answer = post_when_ready(client, args.url, body, args.wait)
            except httpx.HTTPError as err:
                raise SystemExit(f"error: cannot query {args.url}: {err}")
            answered = True
            printed = {field: answer[field] for field in RESPONSE_FIELDS if field in answer}
            print(f"image_name: {path}, {printed}" if name_answers else printed, flush=True)
            status = status or int(answer.get("err_no") != 0)
    return status


if __name__ == "__main__":
    sys.exit(run_command(INTERRUPTS, lambda: main(get_args_parser().parse_args())))
