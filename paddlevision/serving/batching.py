"""Dynamic batching: the images of concurrent requests share predictor runs.

Each worker thread owns one predictor (a Paddle predictor's buffers belong to one instance).
A worker takes the oldest queued image and adds more, up to ``max_batch_size``; while other
admitted images are still being decoded it waits for them, at most ``max_wait_s``. A lone
image with nothing on the way runs at once; under load batches fill up. Every image has its
own future, so a request gets exactly its own rows whatever batches they ran in.
Paddle-free: predictors come from ``create_predictor``.
"""

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future

import numpy as np

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """Admitting the images would exceed the queue limit."""


class DynamicBatcher:
    """``queue_limit`` bounds the images admitted and not yet answered (being decoded, queued
    or running); ``on_batch(size)`` is called after every predictor run."""

    def __init__(self, create_predictor, *, workers, max_batch_size, max_wait_s, queue_limit, input_shape,
                 on_batch=None):
        self._create_predictor = create_predictor
        self._workers = workers
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue_limit = queue_limit
        self._input_shape = tuple(input_shape)
        self._on_batch = on_batch or (lambda size: None)
        self._cond = threading.Condition()
        self._queue = collections.deque()  # (array, Future) per image
        self._admitted = 0  # images admitted and not yet answered
        self._incoming = 0  # of those, the ones not queued yet (still being decoded)
        self._closing = False
        self._ready_workers = 0
        self._load_error = None
        self._threads = [
            threading.Thread(target=self._work, name=f"predictor-{i}", daemon=True) for i in range(workers)
        ]

    def start(self):
        for thread in self._threads:
            thread.start()

    def status(self):
        with self._cond:
            return {"ready_workers": self._ready_workers, "workers": self._workers, "load_error": self._load_error}

    def admit(self, count):
        """Reserve room for ``count`` images before decoding them."""
        with self._cond:
            if self._admitted + count > self._queue_limit:
                raise QueueFullError(
                    f"server busy: {self._admitted} images in progress, {count} more would exceed the queue "
                    f"limit of {self._queue_limit}; retry later"
                )
            self._admitted += count
            self._incoming += count
        return Admission(self, count)

    def close(self):
        """Let the workers finish every queued image, then stop them."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self):
        try:
            predictor = self._create_predictor()
            # oneDNN prepares kernels per input shape on first use: warm up both ends.
            for batch_size in sorted({1, self._max_batch_size}):
                predictor.run(np.zeros((batch_size, *self._input_shape), dtype=np.float32))
        except Exception as err:  # noqa: BLE001 - reported by /health and every request; the service stays up
            logger.exception("worker %s could not load its predictor", threading.current_thread().name)
            with self._cond:
                self._load_error = f"{type(err).__name__}: {err}"
            return
        with self._cond:
            self._ready_workers += 1
        logger.info("%s ready", threading.current_thread().name)
        while (batch := self._next_batch()) is not None:
            self._run(predictor, batch)

    def _next_batch(self):
        """The next images to run together, or ``None`` once closing and drained."""
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return None
                deadline = time.monotonic() + self._max_wait_s
                while len(self._queue) < self._max_batch_size and self._incoming > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = []
                while self._queue and len(batch) < self._max_batch_size:
                    array, future = self._queue.popleft()
                    if future.set_running_or_notify_cancel():  # False: its request gave up
                        batch.append((array, future))
                if batch:
                    return batch

    def _run(self, predictor, batch):
        arrays, futures = zip(*batch)
        try:
            probs = predictor.run(np.stack(arrays))
        except Exception as err:  # noqa: BLE001 - the requests get the error, the worker lives on
            logger.exception("predictor run of %d images failed", len(batch))
            for future in futures:
                future.set_exception(err)
            return
        self._on_batch(len(batch))
        for future, row in zip(futures, probs):
            future.set_result(row)

    def _enqueue(self, items):
        with self._cond:
            self._incoming -= len(items)
            self._queue.extend(items)
            self._cond.notify_all()

    def _release(self, admitted, incoming):
        with self._cond:
            self._admitted -= admitted
            self._incoming -= incoming
            self._cond.notify_all()  # a worker may be waiting for these images


class Admission:
    """Room for one request's images: :meth:`predict` them, then :meth:`close` (always)."""

    def __init__(self, batcher, count):
        self._batcher = batcher
        self._count = count
        self._futures = []

    async def predict(self, arrays):
        """The probability rows of the admitted images, in order."""
        self._futures = [Future() for _ in arrays]
        self._batcher._enqueue(list(zip(arrays, self._futures)))
        return await asyncio.gather(*map(asyncio.wrap_future, self._futures))

    def close(self):
        """Give the room back; images not run yet are dropped (the request gave up)."""
        for future in self._futures:
            future.cancel()
        self._batcher._release(self._count, 0 if self._futures else self._count)
