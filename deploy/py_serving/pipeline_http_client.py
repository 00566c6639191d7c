"""Query the AlexNet service as Paddle Serving's pipeline_http_client.py does.

    python deploy/py_serving/pipeline_http_client.py --img-path ./images/demo.jpg

sends one request per image (``--img-path``: a file, a directory or a glob, in sorted
order) and prints each answer as the reference prints it:
``{'err_no': 0, 'err_msg': '', 'key': ['class_id', 'prob'], 'value': ['[8]', '[0.99903536]'], 'tensors': []}``
(Paddle Serving's answer fields; the ``logid`` this service adds is left out). The exit
status is 1 if any answer has a non-zero err_no or the service cannot be reached.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from paddlevision.batch_predict import expand_image_paths
from paddlevision.serving.protocol import RESPONSE_FIELDS, build_request

DEFAULT_URL = "http://127.0.0.1:18080/alexnet/prediction"


def get_args_parser():
    parser = argparse.ArgumentParser(description="Client of the AlexNet HTTP service")
    parser.add_argument("--img-path", default="./images/demo.jpg", help="an image, a directory of images, or a glob")
    parser.add_argument("--url", default=DEFAULT_URL, help="prediction URL of the service")
    parser.add_argument("--timeout", default=60.0, type=float, help="seconds to wait for each answer")
    return parser


def query(client, url, path):
    """The service's answer for one image file, as a dict."""
    body = build_request([Path(path).read_bytes()])
    response = client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})
    try:
        return response.json()
    except ValueError:
        return {"err_no": -1, "err_msg": f"HTTP {response.status_code}, not a JSON answer: {response.text[:200]}"}


def main(args):
    try:
        paths = expand_image_paths(args.img_path)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}")
    status = 0
    with httpx.Client(timeout=args.timeout) as client:
        for path in paths:
            try:
                answer = query(client, args.url, path)
            except httpx.HTTPError as err:
                raise SystemExit(f"error: cannot query {args.url}: {err}")
            except OSError as err:
                print(f"error: cannot read {path}: {err.strerror or err}", file=sys.stderr, flush=True)
                status = 1
                continue
            print({field: answer[field] for field in RESPONSE_FIELDS if field in answer}, flush=True)
            status = status or int(answer.get("err_no") != 0)
    return status


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
