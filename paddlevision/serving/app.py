"""The AlexNet service: FastAPI routes over the dynamic batcher, run by uvicorn.

``POST /alexnet/prediction`` speaks Paddle Serving's pipeline protocol; ``GET /health`` is
200 once every worker's predictor is warm, 503 before; ``GET /metrics`` is Prometheus text.
The event loop only moves bytes: JSON parsing, base64 and preprocessing run in a thread
pool, inference in the batcher's workers.
"""

import asyncio
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

from paddlevision import inference
from paddlevision.image import ImageDecodeError, ImageTooLargeError
from paddlevision.model_dir import preprocess_sizes, read_metadata
from paddlevision.pipeline import Preprocessor
from paddlevision.serving.batching import DynamicBatcher, QueueFullError
from paddlevision.serving.protocol import (
    ErrNo,
    ProtocolError,
    decode_image_value,
    error_response,
    parse_request,
    success_response,
)

PREDICTION_PATH = "/alexnet/prediction"
ROUTES_HINT = f"the service answers POST {PREDICTION_PATH}, GET /health and GET /metrics"

logger = logging.getLogger(__name__)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own so that apps in one process do not clash."""

    def __init__(self):
        self.registry = CollectorRegistry()
        registry = {"registry": self.registry}
        self.requests = Counter("serving_requests", "Prediction requests answered, successful or not", **registry)
        self.images = Counter("serving_images", "Images classified", **registry)
        self.errors = Counter("serving_errors", "Error answers by kind (the lower-case err_no name)", ["kind"],
                              **registry)
        self.images_in_progress = Gauge("serving_images_in_progress", "Images admitted and not yet answered",
                                        **registry)
        self.batch_size = Histogram("serving_batch_size", "Images per predictor run",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), **registry)
        self.latency = Histogram("serving_request_latency_seconds", "Arrival to answer of prediction requests",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), **registry)
        for err_no in ErrNo:  # every kind exported at 0 from the start, so rates work before the first error
            if err_no != ErrNo.OK:
                self.errors.labels(kind=err_no.name.lower())


def create_app(config):
    """Raises ``ModelDirError``/``UnsupportedOptionError`` at once for a model directory or
    device that cannot work; the predictors load in the background, as /health reports."""
    options = inference.PredictorOptions(
        use_gpu=config.device == "gpu",
        gpu_id=config.gpu_id,
        use_onednn=config.use_onednn,
        cpu_threads=config.cpu_threads,
        max_batch_size=config.max_batch_size,
    )
    # Which engine runs the directory (ONNX Runtime for an int8 model) is checked here, so
    # that a directory or device that cannot work stops the service before it listens.
    inference.check_model_dir(config.model_dir, options)
    metadata = read_metadata(config.model_dir)
    resize_size, crop_size = preprocess_sizes(config.model_dir, metadata)
    preprocessor = Preprocessor(resize_size, crop_size, max_pixels=config.max_image_pixels)
    metrics = Metrics()

    def create_predictor():
        predictor = inference.create_predictor(config.model_dir, options)
        logger.info("%s: %s", threading.current_thread().name, predictor.summary)
        return predictor

    batcher = DynamicBatcher(
        create_predictor,
        workers=config.workers,
        max_batch_size=config.max_batch_size,
        max_wait_s=config.max_batch_wait_ms / 1000.0,
        queue_limit=config.queue_limit,
        input_shape=(3, crop_size, crop_size),
        on_batch=metrics.batch_size.observe,
    )
    pool = ThreadPoolExecutor(config.preprocess_threads, thread_name_prefix="preprocess")

    def off_loop(func, *args):
        return asyncio.get_running_loop().run_in_executor(pool, func, *args)

    def error_answer(err_no, message, logid=0):
        metrics.errors.labels(kind=err_no.name.lower()).inc()
        return error_response(err_no, message, logid)

    def prepare(key, value):
        data = decode_image_value(value, key)
        try:
            return preprocessor(data, name=f"of key '{key}'")
        except ImageTooLargeError as err:
            raise ProtocolError(ErrNo.IMAGE_TOO_LARGE, str(err)) from None
        except ImageDecodeError as err:
            raise ProtocolError(ErrNo.INVALID_IMAGE, str(err)) from None

    async def classify(keys, values, logid):
        status = batcher.status()
        if status["load_error"]:
            # Permanent, unlike loading: a client waiting for readiness should stop.
            raise ProtocolError(ErrNo.INTERNAL, f"service cannot answer: {status['load_error']}")
        if status["ready_workers"] < status["workers"]:
            raise ProtocolError(ErrNo.NOT_READY, "service not ready: the model is still loading; poll GET /health")
        try:
            admission = batcher.admit(len(values))
        except QueueFullError as err:
            raise ProtocolError(ErrNo.OVERLOADED, str(err)) from None

        async def decode_and_predict():
            arrays = await asyncio.gather(*(off_loop(prepare, key, value) for key, value in zip(keys, values)))
            return await admission.predict(arrays)

        metrics.images_in_progress.inc(len(values))
        try:
            rows = await asyncio.wait_for(decode_and_predict(), config.request_timeout_s)
        except asyncio.TimeoutError:
            message = f"no answer within request_timeout_s={config.request_timeout_s}"
            raise ProtocolError(ErrNo.TIMEOUT, message) from None
        finally:
            admission.close()
            metrics.images_in_progress.dec(len(values))
        metrics.images.inc(len(rows))
        class_ids = [int(row.argmax()) for row in rows]
        return success_response(class_ids, [row[i] for row, i in zip(rows, class_ids)], logid)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        # uvicorn has finished the requests in flight (or given up on them); the workers
        # still run whatever is queued before they stop.
        await asyncio.to_thread(batcher.close)
        pool.shutdown()

    app = FastAPI(title="AlexNet", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(PREDICTION_PATH)
    async def predict(request: Request):
        started = time.perf_counter()
        logid = 0
        try:
            body = await _read_body(request, config.max_body_bytes)
            keys, values, logid = await off_loop(parse_request, body)
            answer = await classify(keys, values, logid)
        except ProtocolError as err:
            answer = error_answer(err.err_no, err.message, logid)
        except Exception as err:  # noqa: BLE001 - one request's failure must not take the service down
            logger.exception("prediction request failed")
            answer = error_answer(ErrNo.INTERNAL, f"internal error: {type(err).__name__}: {err}", logid)
        metrics.requests.inc()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(answer, status_code=ErrNo(answer["err_no"]).http_status)

    @app.get("/health")
    async def health():
        status = batcher.status()
        if status["ready_workers"] == status["workers"]:
            return JSONResponse({"status": "ready", **status})
        return JSONResponse({"status": "failed" if status["load_error"] else "loading", **status}, status_code=503)

    @app.get("/metrics")
    async def metrics_text():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        """Routing errors (unknown path, wrong method) in the protocol's format."""
        err_no = {404: ErrNo.NOT_FOUND, 405: ErrNo.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrNo.INVALID_REQUEST)
        answer = error_answer(err_no, f"{request.method} {request.url.path}: {exc.detail}; {ROUTES_HINT}")
        return JSONResponse(answer, status_code=exc.status_code, headers=exc.headers)

    return app


async def _read_body(request, limit):
    """The body, refused as soon as it is known to exceed ``limit``: from Content-Length
    before reading, or while streaming (chunked bodies, or more than was declared)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(ErrNo.BODY_TOO_LARGE, f"request body of {declared} bytes exceeds max_body_bytes={limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(ErrNo.BODY_TOO_LARGE, f"request body exceeds max_body_bytes={limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def serve(config):
    """Run until SIGTERM or SIGINT, then stop accepting, finish the requests in flight (at
    most ``shutdown_timeout_s``) and drain the batch queue; returns, so the process exits 0."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            timeout_keep_alive=config.keep_alive_timeout_s,
            timeout_graceful_shutdown=config.shutdown_timeout_s,
            access_log=config.access_log,
            log_level="info",
        )
    )
    # After a graceful shutdown uvicorn re-raises the signal it caught to the handler that
    # was installed before it ran; Python's defaults would then exit 143 (SIGTERM) or raise
    # KeyboardInterrupt (SIGINT). Stopping is the expected end here.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    server.run()
