"""Dynamic batching: images of concurrent requests share predictor runs.

Each worker is a thread owning one predictor (a Paddle predictor's buffers belong to one
instance, so workers never share one). A worker takes the oldest queued image and adds
more, up to ``max_batch_size``; while other images are admitted but still being decoded
it waits for them, at most ``max_wait_s``. With nothing on the way a lone image runs at
once rather than waiting for company; under load batches fill up.

Every image carries its own asyncio future, resolved on its request's event loop, so a
request gets exactly its own images' rows whatever batches they ran in.

Paddle-free: predictors come from the ``create_predictor`` callable given.
"""

import asyncio
import collections
import logging
import threading
import time

import numpy as np

__all__ = ["Admission", "DynamicBatcher", "QueueFullError"]

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """Admitting the images would exceed the queue limit."""


class _Job:
    """One image: its array and the future its request awaits."""

    __slots__ = ("array", "future", "loop", "cancelled")

    def __init__(self, array, future, loop):
        self.array = array
        self.future = future
        self.loop = loop
        # Set on the event loop when the request gave up (timeout); workers skip the job.
        self.cancelled = False

    def resolve(self, row=None, error=None):
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, row, error)
        except RuntimeError:
            pass  # the event loop has closed: nobody is waiting any more


def _settle(future, row, error):
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(row)


class DynamicBatcher:
    """Worker threads running batches of queued images; see the module docstring.

    ``queue_limit`` bounds the images admitted and not yet answered (being decoded,
    queued or running); :meth:`admit` raises :class:`QueueFullError` beyond it.
    ``on_batch(size)`` is called after every predictor run (metrics).
    """

    def __init__(self, create_predictor, *, workers, max_batch_size, max_wait_s, queue_limit, input_shape,
                 on_batch=None):
        self._create_predictor = create_predictor
        self._num_workers = workers
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue_limit = queue_limit
        self._input_shape = tuple(input_shape)
        self._on_batch = on_batch or (lambda size: None)
        self._cond = threading.Condition()
        self._jobs = collections.deque()
        self._admitted = 0  # images admitted and not yet answered
        self._incoming = 0  # of those, images not yet queued (still being decoded)
        self._closing = False
        self._ready_workers = 0
        self.load_error = None  # why a worker could not create or warm up its predictor
        self._threads = [
            threading.Thread(target=self._work, name=f"predictor-{i}", daemon=True) for i in range(workers)
        ]

    def start(self):
        """Start the workers; each creates and warms up its predictor, then serves."""
        for thread in self._threads:
            thread.start()

    @property
    def ready(self):
        with self._cond:
            return self._ready_workers == self._num_workers

    def status(self):
        with self._cond:
            return {"ready_workers": self._ready_workers, "workers": self._num_workers, "load_error": self.load_error}

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

    # Worker side.

    def _work(self):
        try:
            predictor = self._create_predictor()
            # oneDNN prepares kernels per input shape on first use: warm up the two ends.
            for batch_size in sorted({1, self._max_batch_size}):
                predictor.run(np.zeros((batch_size, *self._input_shape), dtype=np.float32))
        except Exception as err:  # noqa: BLE001 - reported by /health, the service stays up
            logger.exception("worker %s could not load its predictor", threading.current_thread().name)
            with self._cond:
                self.load_error = f"{type(err).__name__}: {err}"
            return
        with self._cond:
            self._ready_workers += 1
        logger.info("%s ready", threading.current_thread().name)
        while (batch := self._next_batch()) is not None:
            self._run(predictor, batch)

    def _next_batch(self):
        """The next jobs to run together, or ``None`` once closing and drained."""
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._jobs or self._closing)
                if not self._jobs:
                    return None
                deadline = time.monotonic() + self._max_wait_s
                while len(self._jobs) < self._max_batch_size and self._incoming > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = []
                while self._jobs and len(batch) < self._max_batch_size:
                    job = self._jobs.popleft()
                    if not job.cancelled:
                        batch.append(job)
                if batch:
                    return batch

    def _run(self, predictor, batch):
        try:
            probs = predictor.run(np.stack([job.array for job in batch]))
        except Exception as err:  # noqa: BLE001 - the requests get the error, the worker lives on
            logger.exception("predictor run of %d images failed", len(batch))
            for job in batch:
                job.resolve(error=err)
            return
        self._on_batch(len(batch))
        for job, row in zip(batch, probs):
            job.resolve(row=row)

    # Request side, called by Admission on the event loop.

    def _enqueue(self, jobs):
        with self._cond:
            self._incoming -= len(jobs)
            self._jobs.extend(jobs)
            self._cond.notify_all()

    def _release(self, admitted, incoming):
        with self._cond:
            self._admitted -= admitted
            self._incoming -= incoming
            # A worker may be waiting for these images.
            self._cond.notify_all()


class Admission:
    """Room for one request's images: :meth:`predict` them, then :meth:`close` (always)."""

    def __init__(self, batcher, count):
        self._batcher = batcher
        self._count = count
        self._jobs = None

    async def predict(self, arrays):
        """Probability rows of ``arrays`` (the admitted count), in order."""
        if len(arrays) != self._count:
            raise ValueError(f"admitted {self._count} images, got {len(arrays)}")
        loop = asyncio.get_running_loop()
        self._jobs = [_Job(array, loop.create_future(), loop) for array in arrays]
        self._batcher._enqueue(self._jobs)
        return await asyncio.gather(*(job.future for job in self._jobs))

    def close(self):
        """Give the room back; images not run yet are dropped (the request gave up)."""
        for job in self._jobs or ():
            job.cancelled = True
        self._batcher._release(self._count, 0 if self._jobs is not None else self._count)
