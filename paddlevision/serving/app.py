"""The FastAPI app of the AlexNet service and the uvicorn server running it.

Routes: ``POST /alexnet/prediction`` (Paddle Serving's pipeline protocol, see
:mod:`paddlevision.serving.protocol`), ``GET /health`` (200 once every worker's predictor
is loaded and warmed up, 503 before) and ``GET /metrics`` (Prometheus text format).

The event loop only moves bytes: JSON parsing, base64 decoding and image preprocessing
run in a thread pool, inference in the batcher's worker threads.
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from paddlevision import inference
from paddlevision.image import ImageDecodeError, ImageTooLargeError
from paddlevision.model_dir import model_precision, preprocess_sizes, read_metadata
from paddlevision.pipeline import Preprocessor, topk
from paddlevision.serving.batching import DynamicBatcher, QueueFullError
from paddlevision.serving.metrics import CONTENT_TYPE_LATEST, ServingMetrics
from paddlevision.serving.protocol import (
    ErrNo,
    ProtocolError,
    decode_image_value,
    error_response,
    parse_request,
    success_response,
)

__all__ = ["PREDICTION_PATH", "create_app", "predictor_options", "serve"]

PREDICTION_PATH = "/alexnet/prediction"
ROUTES_HINT = f"the service answers POST {PREDICTION_PATH}, GET /health and GET /metrics"

logger = logging.getLogger(__name__)


def predictor_options(config):
    """The Paddle Inference options a :class:`ServingConfig` asks for."""
    return inference.PredictorOptions(
        use_gpu=config.device == "gpu",
        gpu_id=config.gpu_id,
        use_onednn=config.use_mkldnn,
        cpu_threads=config.cpu_threads,
        max_batch_size=config.max_batch_size,
    )


def create_app(config):
    """The app for ``config``. Raises ``ModelDirError``/``UnsupportedOptionError`` at
    once for a model directory or device that cannot work; the predictors themselves
    are created in the background after start-up, which ``/health`` reports."""
    options = predictor_options(config)
    inference.find_paddle_model_files(config.model_dir)
    metadata = read_metadata(config.model_dir)
    inference.check_options(options, model_precision(config.model_dir, metadata))
    resize_size, img_size = preprocess_sizes(config.model_dir, metadata)
    preprocessor = Preprocessor(resize_size, img_size, max_pixels=config.max_image_pixels)
    metrics = ServingMetrics()
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
        input_shape=(3, img_size, img_size),
        on_batch=metrics.batch_size.observe,
    )
    pool = ThreadPoolExecutor(config.preprocess_threads, thread_name_prefix="preprocess")
    service = _Service(config, preprocessor, batcher, pool, metrics)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        # uvicorn has finished the requests in flight (or given up on them); the workers
        # still run whatever is queued before they stop.
        await asyncio.to_thread(batcher.close)
        pool.shutdown()

    app = FastAPI(title="AlexNet", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route(PREDICTION_PATH, service.predict, methods=["POST"])
    app.add_api_route("/health", service.health, methods=["GET"])
    app.add_api_route("/metrics", service.metrics_text, methods=["GET"])
    app.add_exception_handler(StarletteHTTPException, service.http_error)
    return app


class _Service:
    def __init__(self, config, preprocessor, batcher, pool, metrics):
        self.config = config
        self.preprocessor = preprocessor
        self.batcher = batcher
        self.pool = pool
        self.metrics = metrics

    async def predict(self, request: Request):
        started = time.perf_counter()
        logid = 0
        try:
            body = await _read_body(request, self.config.max_body_bytes)
            keys, values, logid = await self._off_loop(parse_request, body)
            answer = await self._classify(keys, values, logid)
        except ProtocolError as err:
            answer = self._error_answer(err.err_no, err.message, logid)
        except Exception as err:  # noqa: BLE001 - one request's failure must not take the service down
            logger.exception("prediction request failed")
            answer = self._error_answer(ErrNo.INTERNAL, f"internal error: {type(err).__name__}: {err}", logid)
        self.metrics.requests.inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(answer, status_code=ErrNo(answer["err_no"]).http_status)

    async def _classify(self, keys, values, logid):
        if self.batcher.load_error:
            # Permanent, unlike loading: a client waiting for readiness should stop.
            raise ProtocolError(ErrNo.INTERNAL, f"service cannot answer: {self.batcher.load_error}")
        if not self.batcher.ready:
            raise ProtocolError(ErrNo.NOT_READY, "service not ready: the model is still loading; poll GET /health")
        try:
            admission = self.batcher.admit(len(values))
        except QueueFullError as err:
            raise ProtocolError(ErrNo.OVERLOADED, str(err)) from None
        self.metrics.images_in_progress.inc(len(values))
        try:
            rows = await asyncio.wait_for(self._run(admission, keys, values), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(
                ErrNo.TIMEOUT, f"no answer within request_timeout_s={self.config.request_timeout_s}"
            ) from None
        finally:
            admission.close()
            self.metrics.images_in_progress.dec(len(values))
        top1 = [topk(row, 1) for row in rows]
        self.metrics.images.inc(len(rows))
        return success_response([ids[0] for ids, _ in top1], [probs[0] for _, probs in top1], logid)

    async def _run(self, admission, keys, values):
        arrays = await asyncio.gather(*(self._off_loop(self._prepare, key, value) for key, value in zip(keys, values)))
        return await admission.predict(arrays)

    def _prepare(self, key, value):
        """base64 text -> CHW array, in a pool thread."""
        data = decode_image_value(value, key)
        try:
            return self.preprocessor(data, name=f"of key '{key}'")
        except ImageTooLargeError as err:
            raise ProtocolError(ErrNo.IMAGE_TOO_LARGE, str(err)) from None
        except ImageDecodeError as err:
            raise ProtocolError(ErrNo.INVALID_IMAGE, str(err)) from None

    def _off_loop(self, func, *args):
        return asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def _error_answer(self, err_no, message, logid=0):
        self.metrics.errors.labels(kind=err_no.kind).inc()
        return error_response(err_no, message, logid)

    async def health(self):
        status = self.batcher.status()
        if status["ready_workers"] == status["workers"]:
            return JSONResponse({"status": "ready", **status})
        state = "failed" if status["load_error"] else "loading"
        return JSONResponse({"status": state, **status}, status_code=503)

    async def metrics_text(self):
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def http_error(self, request, exc):
        """Routing errors (unknown path, wrong method) in the protocol's format."""
        err_no = {404: ErrNo.NOT_FOUND, 405: ErrNo.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrNo.INVALID_REQUEST)
        answer = self._error_answer(err_no, f"{request.method} {request.url.path}: {exc.detail}; {ROUTES_HINT}")
        return JSONResponse(answer, status_code=exc.status_code, headers=exc.headers)


async def _read_body(request, limit):
    """The request body, refused with BODY_TOO_LARGE as soon as it is known to exceed
    ``limit``: from Content-Length before reading, or while streaming (chunked bodies,
    or a client sending more than it declared)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(
            ErrNo.BODY_TOO_LARGE, f"request body of {declared} bytes exceeds max_body_bytes={limit}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(ErrNo.BODY_TOO_LARGE, f"request body exceeds max_body_bytes={limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def serve(config):
    """Run the service until SIGTERM or SIGINT, then shut down gracefully: stop accepting,
    finish the requests in flight (at most ``shutdown_timeout_s``), drain the batch queue.
    Returns normally, so the process exits 0."""
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            timeout_keep_alive=config.keep_alive_timeout_s,
            timeout_graceful_shutdown=config.shutdown_timeout_s,
            access_log=config.access_log,
            log_level="info",
        )
    )
    # After a graceful shutdown uvicorn re-raises the signal it caught, to the handler
    # installed before it ran; with Python's defaults SIGTERM would then kill the process
    # (exit 143) and SIGINT raise KeyboardInterrupt. Stopping is the expected end here.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    server.run()
