"""Paddle Serving's pipeline HTTP protocol, so that its clients work unchanged. Paddle-free:
the client imports it too. Where this follows Paddle Serving and where plain HTTP, and why,
is the table in deploy/py_serving/README.md.

Request, one key/value pair per image, values base64 (line breaks allowed)::

    {"key": ["image"], "value": ["<base64 image>"], "logid": 10000}

Answer, one entry per image inside each stringified list, ``logid`` echoed (0 if absent)::

    {"err_no": 0, "err_msg": "", "key": ["class_id", "prob"], "value": ["[8]", "[0.99903536]"],
     "tensors": [], "logid": 10000}

An error answers its ``err_no`` with its fixed message and empty ``key``/``value``, with
its HTTP status.
"""

import base64
import binascii
import enum
import json
import re

import numpy as np

from paddlevision.image import IMAGE_FORMATS

PREDICTION_PATH = "/alexnet/prediction"
ROUTES = f"the service answers POST {PREDICTION_PATH}, GET /health and GET /metrics"
MAX_HEAD_BYTES = 16 * 1024  # request line and headers
# What a Paddle Serving pipeline answers; this service adds "logid".
RESPONSE_FIELDS = ("err_no", "err_msg", "key", "value", "tensors")
RESULT_KEYS = ["class_id", "prob"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,19}")


class ErrNo(enum.IntEnum):
    """``err_no``, its HTTP status and the one message a client gets for it. The numbers lie
    in Paddle Serving's ranges (python/pipeline/error_catch.py, CustomExceptionCode): 3xxx
    the service cannot answer (3003 is its INIT_ERROR), 5xxx the request is at fault (5000
    is its INPUT_PARAMS_ERROR), 6xxx timeouts (6000 is its TIMEOUT), 10000 anything else
    (its UNKNOW)."""

    def __new__(cls, value, http_status, message):
        member = int.__new__(cls, value)
        member._value_ = value
        member.http_status = http_status
        member.message = message
        return member

    OK = 0, 200, ""
    INIT_ERROR = 3003, 500, "the model failed to load; the service log says why"
    NOT_READY = 3101, 503, "the model is still loading; retry once GET /health answers 200"
    OVERLOADED = 3102, 503, "the service is busy (queue_limit images or max_connections connections); retry later"
    INVALID_REQUEST = 5000, 400, (
        "the request must be a JSON object with lists 'key' and 'value' of equally many strings, one pair per "
        "image, and an optional integer 'logid'"
    )
    INVALID_JSON = 5001, 400, "the request body is not JSON"
    INVALID_BASE64 = 5002, 400, "an image value is not base64"
    INVALID_IMAGE = 5003, 400, f"an image value is not a whole image in a supported format ({', '.join(IMAGE_FORMATS)})"
    IMAGE_TOO_LARGE = 5004, 413, "an image has more pixels than max_image_pixels, as decoded or once resized"
    TOO_MANY_IMAGES = 5005, 413, "the request has more images than max_images_per_request"
    BODY_TOO_LARGE = 5006, 413, "the request body is larger than max_body_bytes"
    NOT_FOUND = 5007, 404, f"unknown path; {ROUTES}"
    METHOD_NOT_ALLOWED = 5008, 405, f"wrong method; {ROUTES}"
    BAD_HTTP = 5009, 400, f"malformed HTTP request, or over {MAX_HEAD_BYTES} bytes of request head without its end"
    TIMEOUT = 6000, 504, "no answer within request_timeout_s"
    REQUEST_TIMEOUT = 6001, 408, "the request did not arrive within request_timeout_s"
    INTERNAL = 10000, 500, "internal error; the service log says more"


class ProtocolError(Exception):
    """A request answered with ``err_no``: ``index`` is the image at fault, if one is;
    ``detail`` goes to the service log only."""

    def __init__(self, err_no, index=None, detail=None):
        super().__init__(err_no.message)
        self.err_no = err_no
        self.index = index
        self.detail = detail


def parse_request(body, max_images):
    """The JSON body as ``(values, logid)``, the values still base64 text."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(ErrNo.INVALID_JSON, detail=f"{type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(request, dict):
        raise ProtocolError(ErrNo.INVALID_REQUEST, detail=f"a JSON {type(request).__name__}, not an object")
    keys, values = _string_list(request, "key"), _string_list(request, "value")
    if len(keys) != len(values) or not values:
        raise ProtocolError(ErrNo.INVALID_REQUEST, detail=f"{len(keys)} keys, {len(values)} values")
    if len(values) > max_images:
        raise ProtocolError(ErrNo.TOO_MANY_IMAGES, detail=f"{len(values)} images")
    if request.get("tensors"):
        raise ProtocolError(ErrNo.INVALID_REQUEST, detail="'tensors' given: this service takes images in 'value'")
    return values, _logid(request.get("logid", 0))


def _string_list(request, field):
    items = request.get(field)
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ProtocolError(ErrNo.INVALID_REQUEST, detail=f"'{field}' is not a list of strings")
    return items


def _logid(logid):
    """An int64, as a JSON number or, as proto3's JSON mapping writes int64, a decimal string."""
    if isinstance(logid, str) and _DECIMAL.fullmatch(logid):
        logid = int(logid)
    if not isinstance(logid, int) or isinstance(logid, bool) or not INT64_MIN <= logid <= INT64_MAX:
        raise ProtocolError(ErrNo.INVALID_REQUEST, detail="'logid' is not an int64")
    return logid


def decode_image_value(value, index):
    """Base64 text → bytes. Line breaks and other whitespace are ignored (``base64`` and
    MIME wrap at 76 columns; Paddle Serving's example service decodes such values); any
    other character outside the alphabet is an error."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(ErrNo.INVALID_BASE64, index, str(err)) from None


def format_probs(probs):
    """``[0.99903536, 0.25]``: each as numpy prints a float32 (the shortest decimal that reads
    back as the same float32), as Paddle Serving's ``str(list of float32)`` did under numpy 1.x."""
    return "[" + ", ".join(str(np.float32(prob)) for prob in probs) + "]"


def success_response(class_ids, probs, logid):
    value = [str([int(class_id) for class_id in class_ids]), format_probs(probs)]
    return {"err_no": 0, "err_msg": "", "key": list(RESULT_KEYS), "value": value, "tensors": [], "logid": logid}


def error_response(err_no, logid=0, index=None):
    """The answer for ``err_no``: its fixed message, naming the image at fault (``value[i]``) if one is."""
    message = err_no.message if index is None else f"{err_no.message} (value[{index}])"
    return {"err_no": int(err_no), "err_msg": message, "key": [], "value": [], "tensors": [], "logid": logid}


def build_request(images, logid=None):
    """A request for encoded images: key ``image`` for one, as the reference client sends it,
    ``image_0``, ``image_1``, ... for several."""
    keys = ["image"] if len(images) == 1 else [f"image_{i}" for i in range(len(images))]
    request = {"key": keys, "value": [base64.b64encode(image).decode("ascii") for image in images]}
    if logid is not None:
        request["logid"] = logid
    return request


def parse_prediction(answer):
    """``(class_ids, probs)`` of a successful answer."""
    if answer.get("err_no") != ErrNo.OK or answer.get("key") != RESULT_KEYS:
        raise ValueError(f"not a successful prediction: {answer}")
    class_ids, probs = (json.loads(text) for text in answer["value"])
    return class_ids, probs
