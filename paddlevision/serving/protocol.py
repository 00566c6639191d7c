"""Paddle Serving's pipeline HTTP protocol, so that its clients work unchanged. Paddle-free:
the client imports it too.

Request, one key/value pair per image, values base64::

    {"key": ["image"], "value": ["<base64 image>"], "logid": 10000}

Answer, one entry per image inside each stringified list, ``logid`` echoed (0 if absent)::

    {"err_no": 0, "err_msg": "", "key": ["class_id", "prob"], "value": ["[8]", "[0.99903536]"],
     "tensors": [], "logid": 10000}

An error answers its ``err_no``, a message and empty ``key``/``value``, with its HTTP status.
"""

import base64
import binascii
import enum
import json

import numpy as np

# What a Paddle Serving pipeline answers; this service adds "logid".
RESPONSE_FIELDS = ("err_no", "err_msg", "key", "value", "tensors")
RESULT_KEYS = ["class_id", "prob"]


class ErrNo(enum.IntEnum):
    """``err_no`` and its HTTP status. 1xxx: the request is at fault; 2xxx: the service cannot answer it now."""

    def __new__(cls, value, http_status):
        member = int.__new__(cls, value)
        member._value_ = value
        member.http_status = http_status
        return member

    OK = 0, 200
    INVALID_JSON = 1001, 400
    INVALID_REQUEST = 1002, 400
    INVALID_BASE64 = 1003, 400
    INVALID_IMAGE = 1004, 400
    BODY_TOO_LARGE = 1005, 413
    NOT_FOUND = 1006, 404
    METHOD_NOT_ALLOWED = 1007, 405
    IMAGE_TOO_LARGE = 1008, 413
    OVERLOADED = 2001, 503
    NOT_READY = 2002, 503
    TIMEOUT = 2003, 504
    INTERNAL = 2004, 500


class ProtocolError(Exception):
    """A request answered with ``err_no`` and ``message``."""

    def __init__(self, err_no, message):
        super().__init__(message)
        self.err_no = err_no
        self.message = message


def parse_request(body):
    """The JSON body as ``(keys, values, logid)``, the values still base64 text."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(ErrNo.INVALID_JSON, f"request body is not valid JSON: {err}") from None
    if not isinstance(request, dict):
        raise ProtocolError(ErrNo.INVALID_REQUEST, f"request must be a JSON object, got {type(request).__name__}")
    keys, values = _string_list(request, "key"), _string_list(request, "value")
    if len(keys) != len(values):
        message = f"'key' has {len(keys)} entries but 'value' has {len(values)}; give one key per image"
        raise ProtocolError(ErrNo.INVALID_REQUEST, message)
    if not keys:
        raise ProtocolError(ErrNo.INVALID_REQUEST, "'key' and 'value' are empty; send at least one image")
    logid = request.get("logid", 0)
    if not isinstance(logid, int) or isinstance(logid, bool):
        raise ProtocolError(ErrNo.INVALID_REQUEST, f"'logid' must be an integer, got {logid!r}")
    return keys, values, logid


def _string_list(request, field):
    if field not in request:
        raise ProtocolError(ErrNo.INVALID_REQUEST, f"request has no '{field}' list")
    items = request[field]
    if not isinstance(items, list):
        raise ProtocolError(ErrNo.INVALID_REQUEST, f"'{field}' must be a list of strings, got {type(items).__name__}")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            message = f"'{field}'[{index}] must be a string, got {type(item).__name__}"
            raise ProtocolError(ErrNo.INVALID_REQUEST, message)
    return items


def decode_image_value(value, key):
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(ErrNo.INVALID_BASE64, f"value of key '{key}' is not valid base64: {err}") from None


def format_probs(probs):
    """``[0.99903536, 0.25]``: each as numpy prints a float32 (the shortest decimal that reads
    back as the same float32), as Paddle Serving's ``str(list of float32)`` did under numpy 1.x."""
    return "[" + ", ".join(str(np.float32(prob)) for prob in probs) + "]"


def success_response(class_ids, probs, logid):
    value = [str([int(class_id) for class_id in class_ids]), format_probs(probs)]
    return {"err_no": 0, "err_msg": "", "key": list(RESULT_KEYS), "value": value, "tensors": [], "logid": logid}


def error_response(err_no, message, logid=0):
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
