"""The AlexNet service: FastAPI routes over the dynamic batcher, run by uvicorn.

``POST /alexnet/prediction`` speaks Paddle Serving's pipeline protocol; ``GET /health`` is
200 once every worker's predictor is warm, 503 before; ``GET /metrics`` is Prometheus text.
The event loop only moves bytes: JSON is parsed in a thread of its own, base64 and images
are decoded in a pool, inference runs in the batcher's workers. One deadline covers a
request from its arrival to its answer; its images hold room in the batch queue until none
of their decodes runs any more. Every answer, errors included, is the protocol's JSON with
a fixed message per error; details go to the service log.
"""

import asyncio
import functools
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from paddlevision import inference
from paddlevision.image import ImageDecodeError, ImageTooLargeError
from paddlevision.model_dir import preprocess_sizes, read_metadata
from paddlevision.pipeline import Preprocessor
from paddlevision.serving.batching import DynamicBatcher, QueueFullError
from paddlevision.serving.connections import LimitedH11Protocol
from paddlevision.serving.protocol import (
    MAX_HEAD_BYTES,
    PREDICTION_PATH,
    ErrNo,
    ProtocolError,
    decode_image_value,
    error_response,
    parse_request,
    success_response,
)

logger = logging.getLogger(__name__)

CLOSE = {"connection": "close"}


class Metrics:
    """The service's Prometheus metrics, in a registry of its own so that apps in one process do not clash."""

    def __init__(self, images_in_progress):
        self.registry = CollectorRegistry()
        registry = {"registry": self.registry}
        self.requests = Counter("serving_requests", "Prediction requests answered, successful or not", **registry)
        self.images = Counter("serving_images", "Images classified", **registry)
        self.errors = Counter("serving_errors", "Error answers by kind (the lower-case err_no name)", ["kind"],
                              **registry)
        self.disconnects = Counter("serving_client_disconnects", "Clients gone before their request arrived",
                                   **registry)
        Gauge("serving_images_in_progress", "Images holding room in the batch queue (what queue_limit bounds)",
              **registry).set_function(images_in_progress)
        self.batch_size = Histogram("serving_batch_size", "Images per predictor run",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), **registry)
        self.latency = Histogram("serving_request_latency_seconds", "Arrival to answer of prediction requests",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), **registry)
        for err_no in ErrNo:  # every kind exported at 0 from the start, so rates work before the first error
            if err_no != ErrNo.OK:
                self.errors.labels(kind=err_no.name.lower())


def prefer_passive_openmp():
    """Let idle OpenMP threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``) unless the
    environment says otherwise; returns what applies. Between batches the predictor idles
    while other threads decode and parse, and by default its OpenMP threads spin for up to
    200 ms on those cores. Takes effect if no OpenMP code has run in the process yet."""
    if "OMP_WAIT_POLICY" in os.environ or "KMP_BLOCKTIME" in os.environ:
        return ", ".join(f"{name}={os.environ[name]}" for name in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")
                         if name in os.environ) + " (from the environment)"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep)"


def render(answer, headers=None):
    """The answer as JSON bytes (ASCII, compact), with its err_no's HTTP status."""
    body = json.dumps(answer, separators=(",", ":")).encode("ascii")
    return Response(body, status_code=ErrNo(answer["err_no"]).http_status, media_type="application/json",
                    headers=headers)


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
    wait_policy = prefer_passive_openmp()

    def create_predictor():
        predictor = inference.create_predictor(config.model_dir, options)
        logger.info("%s: %s; %s", threading.current_thread().name, predictor.summary, wait_policy)
        for warning in predictor.warnings:  # e.g. a full-range int8 model on a CPU without VNNI
            logger.warning("%s: %s", threading.current_thread().name, warning)
        return predictor

    metrics = Metrics(lambda: batcher.images_in_progress())
    batcher = DynamicBatcher(
        create_predictor,
        workers=config.workers,
        max_batch_size=config.max_batch_size,
        max_wait_s=config.max_batch_wait_ms / 1000.0,
        queue_limit=config.queue_limit,
        input_shape=(3, crop_size, crop_size),
        on_batch=metrics.batch_size.observe,
    )
    # JSON is parsed in a thread of its own, so that a request never waits behind decodes.
    parse_pool = ThreadPoolExecutor(1, thread_name_prefix="parse")
    decode_pool = ThreadPoolExecutor(config.preprocess_threads, thread_name_prefix="preprocess")

    def decode(value, index):
        data = decode_image_value(value, index)
        try:
            return preprocessor(data, name=f"value[{index}]")
        except ImageTooLargeError as err:
            raise ProtocolError(ErrNo.IMAGE_TOO_LARGE, index, str(err)) from None
        except ImageDecodeError as err:
            raise ProtocolError(ErrNo.INVALID_IMAGE, index, str(err)) from None

    async def classify(ticket, values):
        status = batcher.status()
        if status["failed"]:
            # Permanent, unlike loading: a client waiting for readiness should stop.
            raise ProtocolError(ErrNo.INIT_ERROR)
        if status["ready_workers"] < status["workers"]:
            raise ProtocolError(ErrNo.NOT_READY)
        try:
            ticket.admit(len(values))
        except QueueFullError as err:
            raise ProtocolError(ErrNo.OVERLOADED, detail=str(err)) from None
        ticket.track(decode_pool.submit(ticket.decode, index, functools.partial(decode, value, index))
                     for index, value in enumerate(values))
        return await ticket.predictions()

    def error_answer(err, logid, client, headers=None):
        """The answer for ``err``; what only the log gets (the detail) is logged at INFO, the
        rest (not ready, busy, timed out: counted in the metrics) at DEBUG."""
        metrics.errors.labels(kind=err.err_no.name.lower()).inc()
        logger.log(logging.INFO if err.detail else logging.DEBUG, "%s logid=%s: %s %d%s%s", client, logid,
                   err.err_no.name, err.err_no, "" if err.index is None else f" at value[{err.index}]",
                   f": {err.detail!r}" if err.detail else "")
        return render(error_response(err.err_no, logid, err.index), headers)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        # uvicorn has finished the requests in flight (or given up on them); the workers
        # still run whatever is queued before they stop.
        await asyncio.to_thread(batcher.close)
        parse_pool.shutdown()
        decode_pool.shutdown()

    app = FastAPI(title="AlexNet", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def predict(request: Request):
        started = time.perf_counter()
        client = _peer(request)
        logid, body_read, ticket = 0, False, None
        try:
            async with asyncio.timeout(config.request_timeout_s):
                body = await _read_body(request, config.max_body_bytes)
                body_read = True
                ticket = batcher.announce()
                values, logid = await asyncio.get_running_loop().run_in_executor(
                    parse_pool, parse_request, body, config.max_images_per_request
                )
                del body
                rows = await classify(ticket, values)
            class_ids = [int(row.argmax()) for row in rows]
            response = render(success_response(class_ids, [row[i] for row, i in zip(rows, class_ids)], logid))
            metrics.images.inc(len(rows))
        except TimeoutError:
            err = ProtocolError(ErrNo.TIMEOUT if body_read else ErrNo.REQUEST_TIMEOUT)
            response = error_answer(err, logid, client, None if body_read else CLOSE)
        except ProtocolError as err:
            response = error_answer(err, logid, client, None if body_read else CLOSE)
        except ClientDisconnect:
            metrics.disconnects.inc()
            logger.info("%s: disconnected before its request arrived", client)
            response = Response(status_code=400, headers=CLOSE)  # nobody is there to read it
        except Exception:  # noqa: BLE001 - one request's failure must not take the service down
            logger.exception("%s logid=%s: prediction request failed", client, logid)
            response = error_answer(ProtocolError(ErrNo.INTERNAL), logid, client, None if body_read else CLOSE)
        finally:
            if ticket is not None:
                ticket.close()
        metrics.requests.inc()
        metrics.latency.observe(time.perf_counter() - started)
        return response

    # A Starlette route: the endpoint takes the request as it is, without FastAPI's
    # per-request dependency solving.
    app.router.routes.append(Route(PREDICTION_PATH, predict, methods=["POST"]))

    @app.get("/health")
    async def health():
        status = batcher.status()
        ready = status["ready_workers"] == status["workers"]
        state = "ready" if ready else "failed" if status["failed"] else "loading"
        answer = {"status": state, "ready_workers": status["ready_workers"], "workers": status["workers"]}
        return Response(json.dumps(answer, separators=(",", ":")), 200 if ready else 503,
                        media_type="application/json")

    @app.get("/metrics")
    async def metrics_text():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def routing_error(request, exc):
        """Unknown path or wrong method: the request's body, if any, is not read."""
        err_no = {404: ErrNo.NOT_FOUND, 405: ErrNo.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrNo.INVALID_REQUEST)
        err = ProtocolError(err_no, detail=f"{request.method} {request.url.path}")
        return error_answer(err, 0, _peer(request), {**(exc.headers or {}), **CLOSE})

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc):
        """Anything raised outside the prediction route's own handling."""
        logger.error("%s: %s %r failed", _peer(request), request.method, request.url.path, exc_info=exc)
        return error_answer(ProtocolError(ErrNo.INTERNAL), 0, _peer(request), CLOSE)

    app.state.refuse_connection = refusal_app(metrics.errors.labels(kind=ErrNo.OVERLOADED.name.lower()).inc)
    return app


async def _read_body(request, limit):
    """The body, refused as soon as it is known to exceed ``limit``: from Content-Length
    before reading, or while streaming (chunked bodies, or more than was declared)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(ErrNo.BODY_TOO_LARGE, detail=f"Content-Length {declared}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(ErrNo.BODY_TOO_LARGE, detail=f"more than {limit} bytes streamed")
        chunks.append(chunk)
    return b"".join(chunks)


def _peer(request):
    client = request.client
    return f"{client.host}:{client.port}" if client else "client"


def refusal_app(count):
    """The ASGI app answering every request of a connection beyond ``max_connections``:
    the protocol's 503 OVERLOADED, then the connection closes; ``count()`` for each."""
    body = json.dumps(error_response(ErrNo.OVERLOADED), separators=(",", ":")).encode("ascii")

    async def refuse(scope, receive, send):
        if scope["type"] != "http":
            return
        count()
        await send({"type": "http.response.start", "status": ErrNo.OVERLOADED.http_status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return refuse


def serve(config):
    """Run until SIGTERM or SIGINT, then stop accepting, finish the requests in flight (at
    most ``shutdown_timeout_s``) and drain the batch queue; returns, so the process exits 0."""
    app = create_app(config)
    protocol = functools.partial(
        LimitedH11Protocol,
        header_timeout_s=config.header_timeout_s,
        max_connections=config.max_connections,
        refusal_app=app.state.refuse_connection,
        bad_request_body=json.dumps(error_response(ErrNo.BAD_HTTP, 0), separators=(",", ":")).encode(),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            http=protocol,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
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
