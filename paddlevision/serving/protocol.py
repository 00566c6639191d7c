"""Paddle Serving's pipeline HTTP protocol, so that clients written for Paddle Serving work
unchanged. Paddle-free: the HTTP client imports it too.

Request (``POST /alexnet/prediction``), one key/value pair per image, values base64::

    {"key": ["image"], "value": ["<base64 image>"], "logid": 10000}

Answer, one entry per image inside each stringified list, ``logid`` echoed (0 if the
request had none)::

    {"err_no": 0, "err_msg": "", "key": ["class_id", "prob"], "value": ["[8]", "[0.99903536]"],
     "tensors": [], "logid": 10000}

An error answers ``err_no`` from :class:`ErrNo`, a message in ``err_msg`` and empty
``key``/``value``, with the HTTP status of that error.
"""

import base64
import binascii
import enum
import json

import numpy as np

__all__ = [
    "ErrNo",
    "ProtocolError",
    "RESPONSE_FIELDS",
    "build_request",
    "decode_image_value",
    "error_response",
    "format_class_ids",
    "format_probs",
    "parse_prediction",
    "parse_request",
    "success_response",
]

# What a Paddle Serving pipeline answers; this service adds "logid".
RESPONSE_FIELDS = ("err_no", "err_msg", "key", "value", "tensors")
RESULT_KEYS = ["class_id", "prob"]


class ErrNo(enum.IntEnum):
    """``err_no`` values, each with its HTTP status. 1xxx: the request is at fault (4xx);
    2xxx: the service cannot answer it now (5xx)."""

    OK = 0
    INVALID_JSON = 1001
    INVALID_REQUEST = 1002
    INVALID_BASE64 = 1003
    INVALID_IMAGE = 1004
    BODY_TOO_LARGE = 1005
    NOT_FOUND = 1006
    METHOD_NOT_ALLOWED = 1007
    IMAGE_TOO_LARGE = 1008
    OVERLOADED = 2001
    NOT_READY = 2002
    TIMEOUT = 2003
    INTERNAL = 2004

    @property
    def http_status(self):
        return _HTTP_STATUS[self]

    @property
    def kind(self):
        """The ``kind`` label of the error counter."""
        return self.name.lower()


_HTTP_STATUS = {
    ErrNo.OK: 200,
    ErrNo.INVALID_JSON: 400,
    ErrNo.INVALID_REQUEST: 400,
    ErrNo.INVALID_BASE64: 400,
    ErrNo.INVALID_IMAGE: 400,
    ErrNo.BODY_TOO_LARGE: 413,
    ErrNo.NOT_FOUND: 404,
    ErrNo.METHOD_NOT_ALLOWED: 405,
    ErrNo.IMAGE_TOO_LARGE: 413,
    ErrNo.OVERLOADED: 503,
    ErrNo.NOT_READY: 503,
    ErrNo.TIMEOUT: 504,
    ErrNo.INTERNAL: 500,
}


class ProtocolError(Exception):
    """A request that gets an error answer: ``err_no`` and the message for ``err_msg``."""

    def __init__(self, err_no, message):
        super().__init__(message)
        self.err_no = err_no
        self.message = message


def parse_request(body):
    """The JSON body as ``(keys, values, logid)``, the values still base64 text.

    Raises :class:`ProtocolError` for anything that is not a well-formed request."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(ErrNo.INVALID_JSON, f"request body is not valid JSON: {err}") from None
    if not isinstance(request, dict):
        raise ProtocolError(ErrNo.INVALID_REQUEST, f"request must be a JSON object, got {type(request).__name__}")
    keys = _string_list(request, "key")
    values = _string_list(request, "value")
    if len(keys) != len(values):
        raise ProtocolError(
            ErrNo.INVALID_REQUEST, f"'key' has {len(keys)} entries but 'value' has {len(values)}; give one key per image"
        )
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
            raise ProtocolError(
                ErrNo.INVALID_REQUEST, f"'{field}'[{index}] must be a string, got {type(item).__name__}"
            )
    return items


def decode_image_value(value, key):
    """The image bytes of one base64 ``value``; ``key`` names it in the error."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(ErrNo.INVALID_BASE64, f"value of key '{key}' is not valid base64: {err}") from None


def format_class_ids(class_ids):
    """``[8, 3]``: Python's list printing."""
    return str([int(class_id) for class_id in class_ids])


def format_probs(probs):
    """``[0.99903536, 0.25]``: each probability printed as numpy prints a float32 (the
    shortest decimal that reads back as the same float32), comma-separated in brackets —
    what Paddle Serving's ``str(list of float32)`` printed under numpy 1.x."""
    return "[" + ", ".join(str(np.float32(prob)) for prob in probs) + "]"


def success_response(class_ids, probs, logid):
    return {
        "err_no": int(ErrNo.OK),
        "err_msg": "",
        "key": list(RESULT_KEYS),
        "value": [format_class_ids(class_ids), format_probs(probs)],
        "tensors": [],
        "logid": logid,
    }


def error_response(err_no, message, logid=0):
    return {"err_no": int(err_no), "err_msg": message, "key": [], "value": [], "tensors": [], "logid": logid}


def build_request(images, logid=None):
    """A request body (dict) for encoded images: key ``image`` for one image, as the
    reference client sends it, ``image_0``, ``image_1``, ... for several."""
    keys = ["image"] if len(images) == 1 else [f"image_{i}" for i in range(len(images))]
    request = {"key": keys, "value": [base64.b64encode(image).decode("ascii") for image in images]}
    if logid is not None:
        request["logid"] = logid
    return request


def parse_prediction(answer):
    """``(class_ids, probs)`` lists of a successful answer."""
    if answer.get("err_no") != ErrNo.OK or answer.get("key") != RESULT_KEYS:
        raise ValueError(f"not a successful prediction: {answer}")
    class_ids, probs = (json.loads(text) for text in answer["value"])
    return class_ids, probs
