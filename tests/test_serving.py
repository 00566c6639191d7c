"""The HTTP service end to end: a real web_service.py process on a free loopback port,
serving a model exported once for the module, built so that each test image gets its own
class and a probability far from the others' (tests/peaked_model.py): an answer handed to
the wrong image fails. Protocol round trip, the client, bad inputs, concurrency, health,
metrics, SIGTERM, and the shipped configuration as the README starts it."""

import asyncio
import base64
import io
import json
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.service_process import ServiceProcess, free_port
from conftest import REPO_ROOT, load_script, run_script
from hostile_images import zero_png
from paddlevision.device import usable_cpu_count
from paddlevision.inference import PredictorOptions, create_predictor
from paddlevision.pipeline import Preprocessor
from paddlevision.serving.batching import DynamicBatcher, batch_sizes
from paddlevision.serving.config import ConfigError, load_config
from paddlevision.serving.protocol import ErrNo, build_request, error_response, format_probs, parse_prediction
from peaked_model import save_peaked_weights

DEMO = REPO_ROOT / "images" / "demo.jpg"
MAX_BODY_BYTES = 1_500_000
MAX_IMAGE_PIXELS = 1_000_000
# Small batches and one math thread keep warm-up short on a shared machine.
SERVICE_FLAGS = [
    "--cpu-threads", "1", "--max-batch-size", "8", "--max-body-bytes", MAX_BODY_BYTES,
    "--max-image-pixels", MAX_IMAGE_PIXELS,
]


def encode(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images():
    """Four distinct encoded images: the demo and three variants of it."""
    demo = Image.open(DEMO).convert("RGB")
    return [
        DEMO.read_bytes(),
        encode(demo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG"),
        encode(demo.crop((0, 0, 300, 260)), "PNG"),
        encode(demo.rotate(90, expand=True), "JPEG"),
    ]


@pytest.fixture(scope="module")
def fitted(images, module_tmp):
    """(weights, the (class_id, prob) each image was built to get)."""
    weights = module_tmp / "alexnet4.pdparams"
    return weights, save_peaked_weights(weights, images)


@pytest.fixture(scope="module")
def expected(fitted):
    return fitted[1]


@pytest.fixture(scope="module")
def exported(fitted, module_tmp):
    out = module_tmp / "alexnet_infer"
    run_script("tools/export_model.py", "--pretrained", fitted[0], "--save-inference-dir", out, "--device", "cpu")
    return out


def test_offline_paddle_inference_gives_the_constructed_answers(exported, images, expected):
    """What the service is compared with: Paddle Inference with the service's settings."""
    predictor = create_predictor(exported, PredictorOptions(cpu_threads=1))
    probs = predictor.run(Preprocessor(256, 224).batch(images))
    assert probs.argmax(1).tolist() == [class_id for class_id, _ in expected]
    np.testing.assert_allclose(probs.max(1), [prob for _, prob in expected], atol=1e-5)


@pytest.fixture(scope="module")
def service(exported, module_tmp):
    """The running service and every /health status seen while it started."""
    statuses = []
    server = ServiceProcess("--model-dir", exported, *SERVICE_FLAGS, log_path=module_tmp / "s.log")
    try:
        server.wait_healthy(on_status=statuses.append)
        server.startup_statuses = statuses
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service.base_url, timeout=60.0) as http:
        yield http


def predict(client, images, logid=None, url="/alexnet/prediction"):
    return client.post(url, json=build_request(images, logid), timeout=60.0)


def assert_matches(answer, expected, atol=1e-5):
    class_ids, probs = parse_prediction(answer)
    assert class_ids == [class_id for class_id, _ in expected]
    np.testing.assert_allclose(probs, [prob for _, prob in expected], atol=atol)


def test_health_is_503_until_the_predictor_is_warm_then_200(service):
    statuses = [code for code in service.startup_statuses if code != 0]
    assert statuses[-1] == 200
    assert 503 in statuses  # served while loading, and said so
    assert set(statuses) == {200, 503}


def test_round_trip_gives_the_constructed_answer(client, images, expected):
    response = predict(client, images[:1], logid=10000)
    assert response.status_code == 200
    answer = response.json()
    assert answer["err_no"] == 0 and answer["err_msg"] == "" and answer["tensors"] == []
    assert answer["key"] == ["class_id", "prob"] and answer["logid"] == 10000
    class_id, prob = expected[0]
    class_text, prob_text = answer["value"]
    assert class_text == f"[{class_id}]"
    [served_prob] = parse_prediction(answer)[1]
    assert abs(served_prob - prob) <= 1e-5
    assert prob_text == format_probs([served_prob])  # as numpy prints a float32


def test_several_images_in_one_request_answer_in_order(client, images, expected):
    order = [2, 0, 3, 1, 2]
    answer = predict(client, [images[i] for i in order]).json()
    assert answer["logid"] == 0
    assert_matches(answer, [expected[i] for i in order])


# --- Paddle Serving's protocol: one test per row of the table in deploy/py_serving/README.md ---


def test_request_fields_of_servings_request_message_are_accepted(client, images, expected):
    """gateway.proto's Request also has name, method and clientip (the gateway fills name
    and method from the URL): accepted and ignored."""
    request = {**build_request(images[:1]), "name": "alexnet", "method": "prediction", "clientip": "10.0.0.1"}
    assert_matches(client.post("/alexnet/prediction", json=request).json(), expected[:1])


def test_logid_as_a_decimal_string_as_proto3_json_writes_int64(client, images, expected):
    response = client.post("/alexnet/prediction", json=build_request(images[:1], logid="9007199254740993"))
    assert response.json()["logid"] == 9007199254740993  # beyond float64's integers: read as text, not a float
    assert_matches(response.json(), expected[:1])


def test_base64_wrapped_in_lines_as_servings_example_decodes_it(client, images, expected):
    wrapped = base64.encodebytes(images[1]).decode("ascii")  # 76 columns, as `base64` and MIME write it
    assert "\n" in wrapped
    request = {"key": ["image"], "value": [wrapped]}
    assert_matches(client.post("/alexnet/prediction", json=request).json(), expected[1:2])


def test_err_no_values_lie_in_paddle_servings_ranges():
    """Paddle Serving's python/pipeline/error_catch.py (CustomExceptionCode): 3000-3999
    internal service error (INIT_ERROR = 3003), 5000-5999 user input error
    (INPUT_PARAMS_ERROR = 5000), 6000-6999 timeout (TIMEOUT = 6000), 10000 other (UNKNOW)."""
    assert (ErrNo.OK, ErrNo.INIT_ERROR, ErrNo.INVALID_REQUEST, ErrNo.TIMEOUT, ErrNo.INTERNAL) == (
        0, 3003, 5000, 6000, 10000
    )
    for err_no in ErrNo:
        if 5000 <= err_no < 6000:
            assert 400 <= err_no.http_status < 500, err_no  # the client can fix it
        elif 3000 <= err_no < 4000:
            assert err_no.http_status in (500, 503), err_no
        elif 6000 <= err_no < 7000:
            assert err_no.http_status in (408, 504), err_no
        else:
            assert err_no in (ErrNo.OK, ErrNo.INTERNAL), err_no


def raw_exchange(service, data):
    """Send ``data`` on a new connection; everything the service answers before closing it."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("data", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"POST /alexnet/prediction HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 20_000,  # and still no end
], ids=["malformed", "unfinished head over 16 KiB"])
def test_requests_uvicorn_cannot_parse_get_the_protocols_400(data, service, client, images, expected):
    head, _, body = raw_exchange(service, data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    assert json.loads(body) == error_response(ErrNo.BAD_HTTP)
    assert_matches(predict(client, images[:1]).json(), expected[:1])


def reference_dict(class_id, prob):
    """What the reference client prints for a successful answer."""
    return {
        "err_no": 0, "err_msg": "", "key": ["class_id", "prob"],
        "value": [f"[{class_id}]", format_probs([prob])], "tensors": [],
    }


def assert_printed_answer(text, expected_answer):
    """``text`` is the reference's printed dict with ``expected_answer`` (class_id, prob)."""
    printed = eval(text, {})  # the dict as Python prints it, as the reference client does
    class_id, prob = expected_answer
    assert set(printed) == {"err_no", "err_msg", "key", "value", "tensors"} and printed["err_no"] == 0, text
    assert printed["value"][0] == f"[{class_id}]", text
    assert abs(float(printed["value"][1].strip("[]")) - prob) <= 1e-5, text


def test_client_prints_the_reference_dict_with_infer_py_answer(service, exported):
    client_out = run_script(
        "deploy/py_serving/pipeline_http_client.py", "--img-path", DEMO, "--url", service.prediction_url
    ).stdout.strip()
    infer_out = run_script(
        "deploy/py_inference/infer.py", "--model-dir", exported, "--img-path", DEMO, "--use-gpu=False"
    ).stdout
    class_id, prob = re.search(r"class_id: (\d+), prob: ([0-9.e-]+)", infer_out).groups()
    assert client_out == str(reference_dict(class_id, float(prob)))


def test_client_names_each_answer_for_a_directory(service, images, expected, tmp_path):
    """Searched recursively, in sorted order, each dict after its image's name."""
    for index, folder in enumerate(["b", "a", "a", "b/c"]):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / f"img_{index}.png").write_bytes(images[index])
    result = run_script(
        "deploy/py_serving/pipeline_http_client.py", "--img-path", tmp_path, "--url", service.prediction_url
    )
    order = [("a", 1), ("a", 2), ("b/c", 3), ("b", 0)]
    lines = result.stdout.splitlines()
    assert len(lines) == len(order)
    for line, (folder, index) in zip(lines, order):
        prefix = f"image_name: {tmp_path / folder / f'img_{index}.png'}, "
        assert line.startswith(prefix), line
        assert_printed_answer(line[len(prefix):], expected[index])


def test_readme_commands_as_pasted_with_the_shipped_config(exported, expected, tmp_path):
    """The README's `web_service.py --model-dir ... &` then the client at once: the
    service runs config.yml as shipped (only the model and a free port given) and the
    client waits for it to load instead of failing with Connection refused."""
    server = ServiceProcess("--model-dir", exported, log_path=tmp_path / "service.log")
    try:
        result = run_script(
            "deploy/py_serving/pipeline_http_client.py", "--img-path", DEMO, "--url", server.prediction_url,
            timeout=300,
        )
        health = httpx.get(f"{server.base_url}/health", timeout=10).json()
    finally:
        status = server.stop()
    assert_printed_answer(result.stdout.strip(), expected[0])
    assert status == 0, server.log()
    shipped = load_config(REPO_ROOT / "deploy" / "py_serving" / "config.yml")
    assert health["workers"] == shipped.workers
    threads = usable_cpu_count()
    assert f"Paddle Inference: CPU, {threads} thread{'s' if threads > 1 else ''}, oneDNN on, bf16 off" in server.log()


def test_client_waits_through_start_up_when_keep_alive_expires(exported, expected, tmp_path):
    """Loading the model stalls the service's event loop past a short keep-alive timeout, so
    the connection the waiting client reuses is closed under its next request (a reset)."""
    server = ServiceProcess("--model-dir", exported, "--keep-alive-timeout-s", "0.2", log_path=tmp_path / "s.log")
    try:
        result = run_script("deploy/py_serving/pipeline_http_client.py", "--img-path", DEMO,
                            "--url", server.prediction_url, check=False)
    finally:
        assert server.stop() == 0, server.log()
    assert result.returncode == 0, result.stderr
    assert_printed_answer(result.stdout.strip(), expected[0])


def test_client_gives_up_after_wait_with_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/alexnet/prediction"  # nothing listens there
    started = time.monotonic()
    result = run_script("deploy/py_serving/pipeline_http_client.py", "--img-path", DEMO, "--url", url,
                        "--wait", "1", check=False)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert f"error: the service at {url} was not ready within --wait 1 s (cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_that_fails_to_load_is_reported_at_once_not_waited_for(exported, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("inference.json", "inference_meta.json"):
        shutil.copy(exported / name, broken)
    (broken / "inference.pdiparams").write_bytes(b"not weights")
    server = ServiceProcess("--model-dir", broken, "--cpu-threads", "1", log_path=tmp_path / "service.log")
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{server.base_url}/health", timeout=5)
                if health.json()["status"] == "failed":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        started = time.monotonic()
        result = run_script("deploy/py_serving/pipeline_http_client.py", "--img-path", DEMO,
                            "--url", server.prediction_url, check=False)
    finally:
        server.stop()
    assert result.returncode == 1 and time.monotonic() - started < 30
    answer = eval(result.stdout.strip(), {})
    assert answer["err_no"] == ErrNo.INIT_ERROR == 3003  # Paddle Serving's INIT_ERROR
    assert answer["err_msg"] == ErrNo.INIT_ERROR.message
    # Why is in the service's log only: no path, no exception text to clients.
    assert health.status_code == 503 and health.json() == {"status": "failed", "ready_workers": 0, "workers": 1}
    assert "could not load its predictor" in server.log()


def b64(data):
    return base64.b64encode(data).decode("ascii")


def huge_png():
    return encode(Image.new("L", (2000, 1000)), "PNG")  # 2e6 pixels > MAX_IMAGE_PIXELS


def oversized_chunks():
    for _ in range(4):
        yield b"x" * (MAX_BODY_BYTES // 2)


def one_image(value, **fields):
    return dict(json={"key": ["image"], "value": [value], **fields})


# case: (request, HTTP status, err_no, index of the image at fault or None)
BAD_REQUESTS = {
    "invalid JSON": (dict(content=b'{"key": ["image"], '), 400, ErrNo.INVALID_JSON, None),
    "JSON nested too deeply": (dict(content=b"[" * 100_000), 400, ErrNo.INVALID_JSON, None),
    "not an object": (dict(json=["image"]), 400, ErrNo.INVALID_REQUEST, None),
    "no key list": (dict(json={"value": ["aGk="]}), 400, ErrNo.INVALID_REQUEST, None),
    "no value list": (dict(json={"key": ["image"]}), 400, ErrNo.INVALID_REQUEST, None),
    "key/value mismatch": (dict(json={"key": ["a", "b"], "value": ["aGk="]}), 400, ErrNo.INVALID_REQUEST, None),
    "no images": (dict(json={"key": [], "value": []}), 400, ErrNo.INVALID_REQUEST, None),
    "non-string value": (one_image(123), 400, ErrNo.INVALID_REQUEST, None),
    "value not a list": (dict(json={"key": ["image"], "value": "aGk="}), 400, ErrNo.INVALID_REQUEST, None),
    "non-integer logid": (one_image("aGk=", logid="x"), 400, ErrNo.INVALID_REQUEST, None),
    "logid beyond int64": (one_image("aGk=", logid=2**63), 400, ErrNo.INVALID_REQUEST, None),
    "tensors instead of images": (one_image("aGk=", tensors=[{"name": "x"}]), 400, ErrNo.INVALID_REQUEST, None),
    "more images than max_images_per_request": (
        dict(json={"key": [f"k{i}" for i in range(33)], "value": ["aGk="] * 33}), 413, ErrNo.TOO_MANY_IMAGES, None
    ),
    "invalid base64": (one_image("not base64!"), 400, ErrNo.INVALID_BASE64, 0),
    "lone surrogate in the key, invalid base64": (
        dict(content=b'{"key": ["\\ud800"], "value": ["%%%"]}'), 400, ErrNo.INVALID_BASE64, 0
    ),
    "not an image": (one_image(b64(b"hello world")), 400, ErrNo.INVALID_IMAGE, 0),
    "a format outside the documented ones (GIF)": (
        one_image(b64(encode(Image.new("RGB", (8, 8)), "GIF"))), 400, ErrNo.INVALID_IMAGE, 0
    ),
    "truncated JPEG": (one_image(b64(DEMO.read_bytes()[:5000])), 400, ErrNo.INVALID_IMAGE, 0),
    "zero-byte image": (one_image(""), 400, ErrNo.INVALID_IMAGE, 0),
    "huge dimensions": (one_image(b64(huge_png())), 413, ErrNo.IMAGE_TOO_LARGE, 0),
    "body over the limit (Content-Length)": (dict(content=b" " * (MAX_BODY_BYTES + 1)), 413, ErrNo.BODY_TOO_LARGE,
                                             None),
    "body over the limit (streamed)": (dict(content=oversized_chunks()), 413, ErrNo.BODY_TOO_LARGE, None),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_an_error_answer_and_the_next_request_works(case, client, images, expected):
    """Every error is the protocol's JSON with the HTTP status of its class and the class's
    fixed message (naming the image at fault), never exception text."""
    kwargs, status, err_no, index = BAD_REQUESTS[case]
    response = client.post("/alexnet/prediction", **kwargs)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    assert response.json() == error_response(err_no, 0, index)
    assert_matches(predict(client, images[:1]).json(), expected[:1])


@pytest.mark.parametrize(
    "method, path, status, err_no",
    [
        ("GET", "/alexnet/prediction", 405, ErrNo.METHOD_NOT_ALLOWED),
        ("PUT", "/alexnet/prediction", 405, ErrNo.METHOD_NOT_ALLOWED),
        ("POST", "/imagenet/prediction", 404, ErrNo.NOT_FOUND),
        ("GET", "/", 404, ErrNo.NOT_FOUND),
    ],
)
def test_wrong_method_or_path(method, path, status, err_no, client, images, expected):
    """Answered without reading a body the request may have, so the connection closes."""
    response = client.request(method, path, content=b"{}")
    assert response.status_code == status and response.headers["connection"] == "close"
    assert response.json() == error_response(err_no)
    assert_matches(predict(client, images[:1]).json(), expected[:1])


async def _parallel_requests(url, image_indices, images):
    limits = httpx.Limits(max_connections=len(image_indices))
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        responses = await asyncio.gather(
            *(http.post(url, json=build_request([images[i]], logid=n)) for n, i in enumerate(image_indices))
        )
    return [response.json() for response in responses]


def metric(client, sample):
    """The value of one sample of GET /metrics, e.g. ``serving_batch_size_count``."""
    text = client.get("/metrics").text
    return float(re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M).group(1))


def batch_size_stats(client):
    return metric(client, "serving_batch_size_count"), metric(client, "serving_batch_size_sum")


def test_parallel_requests_each_get_their_own_images_result(service, client, images, expected):
    runs_before, images_before = batch_size_stats(client)
    indices = [n % 4 for n in range(24)]  # 24 connections at once, within max_connections
    answers = asyncio.run(_parallel_requests(service.prediction_url, indices, images))
    for n, (answer, i) in enumerate(zip(answers, indices)):
        assert answer["logid"] == n
        assert_matches(answer, [expected[i]])
    runs, batched_images = batch_size_stats(client)
    assert batched_images - images_before == 24
    assert runs - runs_before < 24  # images shared predictor runs


def test_metrics_report_requests_errors_batches_and_latency(client, images):
    predict(client, images[:1])
    client.post("/alexnet/prediction", content=b"not json")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    for name in (
        "serving_requests_total", "serving_images_total", "serving_images_in_progress",
        "serving_batch_size_bucket", "serving_request_latency_seconds_bucket",
    ):
        assert re.search(rf"^{name}(\{{.*\}})? \S+$", text, re.M), name
    assert metric(client, 'serving_errors_total{kind="invalid_json"}') >= 1
    assert metric(client, 'serving_errors_total{kind="overloaded"}') == 0


def test_sigterm_finishes_the_request_in_flight_and_exits_0(exported, images, expected, tmp_path):
    # Without batching, 16 images run one by one: long enough to signal in the middle.
    server = ServiceProcess(
        "--model-dir", exported, "--cpu-threads", "1", "--no-batching", log_path=tmp_path / "service.log"
    )
    try:
        server.wait_healthy()
        answers = []
        request = threading.Thread(
            target=lambda: answers.append(httpx.post(server.prediction_url, json=build_request(images * 4), timeout=60))
        )
        request.start()
        with httpx.Client(base_url=server.base_url) as http:
            deadline = time.monotonic() + 30
            while metric(http, "serving_images_in_progress") == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert server.stop() == 0, server.log()
        request.join(60)
    finally:
        server.stop()
    [response] = answers
    assert response.status_code == 200
    assert_matches(response.json(), expected * 4)
    assert "Shutting down" in server.log()


@pytest.mark.parametrize(
    "text, message",
    [
        ("port: 8080\nmax_batch: 4\n", "max_batch: unknown setting; known: host, port,"),
        ("use_mkldnn: false\n", "use_mkldnn: unknown setting (renamed use_onednn)"),
        ('port: "80"\n', "port: input should be a valid integer, got '80'"),
        ("workers: true\n", "workers: input should be a valid integer, got True"),
        ("port: 70000\n", "port: input should be less than or equal to 65535, got 70000"),
        ("request_timeout_s: 0\n", "request_timeout_s: input should be greater than 0, got 0"),
        ("device: tpu\n", "device: input should be 'cpu' or 'gpu', got 'tpu'"),
        ("- port\n", "must be a mapping of setting: value"),
        ("port: [8080\n", "is not valid YAML"),
    ],
)
def test_config_file_errors_are_one_line_naming_the_file_and_the_setting(text, message, tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, {})
    assert str(path) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)


def test_flags_override_the_file_and_read_as_yaml_values(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("port: 8080\ncpu_threads: 2\nuse_onednn: true\nmodel_dir: from_file\n")
    parser = load_script("deploy/py_serving/web_service.py").get_args_parser()
    flags = ["--cpu-threads", "null", "--use-onednn", "false", "--no-batching", "--model-dir", "2024"]
    overrides = vars(parser.parse_args(["--config", str(path), *flags]))
    config = load_config(overrides.pop("config"), overrides)
    assert (config.port, config.cpu_threads, config.use_onednn, config.max_batch_size, config.model_dir) == (
        8080, None, False, 1, "2024"
    )
    with pytest.raises(ConfigError, match="^--workers: input should be greater than or equal to 1, got 0$"):
        load_config(path, {"workers": 0})


def test_command_line_errors_are_one_line(tmp_path):
    result = run_script(
        "deploy/py_serving/web_service.py", "--config", REPO_ROOT / "deploy/py_serving/config.yml",
        "--port", "http", check=False,
    )
    assert result.returncode != 0 and result.stderr == "error: --port: input should be a valid integer, got 'http'\n"
    result = run_script("deploy/py_serving/web_service.py", "--model-dir", tmp_path / "none", check=False)
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_overload_and_timeout_answers(exported, images, expected, tmp_path):
    """Six 40-Mpx images decoded one at a time (about 0.25 s each) outlast a 1 s deadline:
    504, while their room in the queue (queue_limit 6) refuses another request with 503;
    the room is freed once the decode running at the deadline ends, and the service answers
    again."""
    server = ServiceProcess("--model-dir", exported, *SERVICE_FLAGS, "--max-image-pixels", "40000000",
                            "--queue-limit", "6", "--max-images-per-request", "6", "--preprocess-threads", "1",
                            "--request-timeout-s", "1", "--max-batch-wait-ms", "0", log_path=tmp_path / "s.log")
    slow = [zero_png(6324, 6324)] * 6
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
            answers = []
            request = threading.Thread(target=lambda: answers.append(predict(httpx, slow, url=server.prediction_url)))
            request.start()
            deadline = time.monotonic() + 10
            while metric(http, "serving_images_in_progress") < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            overloaded = predict(http, images[:1])
            request.join(30)
            [timed_out] = answers
            assert overloaded.status_code == 503 and overloaded.json() == error_response(ErrNo.OVERLOADED)
            assert timed_out.status_code == 504 and timed_out.json() == error_response(ErrNo.TIMEOUT)
            while metric(http, "serving_images_in_progress") > 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert metric(http, "serving_images_in_progress") == 0
            assert_matches(predict(http, images[:1]).json(), expected[:1])
            assert http.get("/health").status_code == 200
            assert metric(http, 'serving_errors_total{kind="overloaded"}') == 1
            assert metric(http, 'serving_errors_total{kind="timeout"}') == 1
    finally:
        server.stop()


# --- The batcher alone, with a stand-in predictor (the interface of paddlevision.inference's) ---


class RecordingPredictor:
    """Answers each row with a one-hot of its first value, and records the batch shapes run."""

    def __init__(self):
        self.shapes = []

    def run(self, batch):
        self.shapes.append(batch.shape)
        return np.eye(64, dtype=np.float32)[batch[:, 0, 0, 0].astype(int)]


def started_batcher(predictor, **settings):
    batcher = DynamicBatcher(lambda: predictor, **{"workers": 1, "max_batch_size": 8, "max_wait_s": 0.05,
                                                   "queue_limit": 64, "input_shape": (1, 1, 1), **settings})
    batcher.start()
    deadline = time.monotonic() + 10
    while batcher.status()["ready_workers"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    return batcher


def classify_values(batcher, pool, values):
    """One request of images whose 'decoded' array is its value; the class of each row."""
    ticket = batcher.announce()
    try:
        ticket.admit(len(values))
        ticket.track(pool.submit(ticket.decode, i, lambda v=v: np.full((1, 1, 1), v, np.float32))
                     for i, v in enumerate(values))
        return [int(row.argmax()) for row in asyncio.run(ticket.predictions())]
    finally:
        ticket.close()


def test_batch_sizes_are_the_powers_of_two_below_the_maximum_and_it():
    assert batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]
    assert batch_sizes(1) == [1]


def test_the_predictor_runs_only_those_sizes_and_each_request_gets_its_rows():
    predictor = RecordingPredictor()
    batcher = started_batcher(predictor)
    requests = [list(range(start, start + count)) for start, count in [(0, 3), (3, 5), (8, 7), (15, 1), (16, 6)]]
    with ThreadPoolExecutor(2) as pool:
        answers = []
        threads = [threading.Thread(target=lambda r=r: answers.append((r, classify_values(batcher, pool, r))))
                   for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    batcher.close()
    assert sorted(answers) == sorted((r, r) for r in requests)
    assert {shape[0] for shape in predictor.shapes} <= {1, 2, 4, 8}
    assert predictor.shapes[: len(batch_sizes(8))] == [(size, 1, 1, 1) for size in batch_sizes(8)]  # the warm-up


def test_closing_a_request_cancels_its_decodes_not_started_and_holds_its_room_while_one_runs():
    batcher = started_batcher(RecordingPredictor())
    running, release = threading.Event(), threading.Event()
    decoded = []

    def slow():
        running.set()
        release.wait(30)
        decoded.append("slow")
        return np.zeros((1, 1, 1), np.float32)

    def fast():
        decoded.append("fast")
        return np.zeros((1, 1, 1), np.float32)

    with ThreadPoolExecutor(1) as pool:
        ticket = batcher.announce()
        ticket.admit(3)
        ticket.track([pool.submit(ticket.decode, 0, slow), pool.submit(ticket.decode, 1, fast),
                      pool.submit(ticket.decode, 2, fast)])
        assert running.wait(10)
        ticket.close()  # e.g. the request's deadline passed
        assert batcher.images_in_progress() == 3  # the running decode still holds the room
        release.set()
    assert decoded == ["slow"]  # the two decodes not started never ran
    assert batcher.images_in_progress() == 0
    batcher.close()


def test_a_batch_waits_for_as_many_images_as_were_recently_in_progress_and_a_lone_one_does_not():
    """A request of four images, then four one-image requests 20 ms apart (as clients whose
    answers just went out come back): those still run as one batch of 4. After a quiet
    second a lone request runs at once, although max_wait_s is 2 s."""
    predictor = RecordingPredictor()
    batcher = started_batcher(predictor, max_wait_s=2.0)
    warm_up_runs = len(predictor.shapes)
    with ThreadPoolExecutor(2) as pool:
        assert classify_values(batcher, pool, [0, 1, 2, 3]) == [0, 1, 2, 3]
        del predictor.shapes[warm_up_runs:]
        threads = [threading.Thread(target=classify_values, args=(batcher, pool, [i])) for i in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.02)
        for thread in threads:
            thread.join(30)
        assert [shape[0] for shape in predictor.shapes[warm_up_runs:]] == [4]
        time.sleep(1.2)
        started = time.monotonic()
        assert classify_values(batcher, pool, [7]) == [7]
        assert time.monotonic() - started < 1.0
    batcher.close()
