"""Dynamic batching: the images of concurrent requests share predictor runs.

Each worker thread owns one predictor (a Paddle predictor's buffers belong to one instance).
A request is announced once its body has arrived, then admitted with its image count; its
images are decoded in other threads and queued one by one. A worker takes the oldest queued
image and waits, at most ``max_wait_s``, while the batch is not full and either images are
on their way (announced or being decoded) or fewer are queued than were in progress at once
during the last second: under load the clients whose answers just went out send their next
images within milliseconds, and a batch of 16 costs a quarter less CPU per image than a batch
of 4, while a lone client never waits. It runs only the batch sizes of :func:`batch_sizes`:
Paddle's oneDNN kernels are prepared per input shape, a few hundred milliseconds and about
220 MB for AlexNet's fully connected weights each, and it keeps only a handful of shapes,
so batches of every size from 1 to 32 would prepare kernels again and again. Every image has
its own future, so a request gets exactly its own rows whatever batches they ran in.
Paddle-free: predictors come from ``create_predictor``.
"""

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError

import numpy as np

logger = logging.getLogger(__name__)

RECENT_LOAD_S = 1.0  # how far back "recently in progress" looks


class QueueFullError(RuntimeError):
    """Admitting the images would exceed the queue limit."""


def batch_sizes(max_batch_size):
    """The batch sizes the predictors run: the powers of two below ``max_batch_size``, and it."""
    return sorted({max_batch_size} | {2**i for i in range(max_batch_size.bit_length()) if 2**i < max_batch_size})


class DynamicBatcher:
    """``queue_limit`` bounds the images admitted and not yet released: a request's room is
    released once it is closed and none of its images is still being decoded (a running
    decode cannot be interrupted). ``on_batch(size)`` is called after every predictor run
    with the number of images it answered."""

    def __init__(self, create_predictor, *, workers, max_batch_size, max_wait_s, queue_limit, input_shape,
                 on_batch=None):
        self._create_predictor = create_predictor
        self._workers = workers
        self._max_batch_size = max_batch_size
        self._batch_sizes = batch_sizes(max_batch_size)
        self._max_wait_s = max_wait_s
        self._queue_limit = queue_limit
        self._input_shape = tuple(input_shape)
        self._on_batch = on_batch or (lambda size: None)
        self._cond = threading.Condition()
        self._queue = collections.deque()  # (array, Future, Ticket) per decoded image
        self._announced = 0  # requests whose body has arrived, not yet admitted or closed
        self._admitted = 0  # images holding room
        self._incoming = 0  # admitted images not decoded yet
        self._recent_load = collections.deque()  # (time, images and requests in progress), decreasing
        self._expected = 0  # images a worker assembling a batch waits for
        self._closing = False
        self._ready_workers = 0
        self._failed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"predictor-{i}", daemon=True) for i in range(workers)
        ]

    def start(self):
        for thread in self._threads:
            thread.start()

    def status(self):
        with self._cond:
            return {"ready_workers": self._ready_workers, "workers": self._workers, "failed": self._failed}

    def images_in_progress(self):
        """Images holding room: admitted and not released (what ``queue_limit`` bounds)."""
        with self._cond:
            return self._admitted

    def announce(self):
        """A request on its way: batches wait for it (up to ``max_wait_s``) until it is
        admitted or closed. Always :meth:`Ticket.close` it."""
        with self._cond:
            self._announced += 1
            self._note_load()
        return Ticket(self)

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
            # oneDNN prepares kernels per input shape on first use: warm up every size run.
            for batch_size in self._batch_sizes:
                predictor.run(np.zeros((batch_size, *self._input_shape), dtype=np.float32))
        except Exception:  # noqa: BLE001 - reported by /health and every request; the service stays up
            logger.exception("worker %s could not load its predictor", threading.current_thread().name)
            with self._cond:
                self._failed = True
            return
        with self._cond:
            self._ready_workers += 1
        logger.info("%s ready (batch sizes %s)", threading.current_thread().name,
                    ", ".join(map(str, self._batch_sizes)))
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
                self._expected = self._recent_peak()
                while not self._batch_ready():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                count = self._batch_count(min(len(self._queue), self._max_batch_size))
                batch = []
                while self._queue and len(batch) < count:
                    array, future, _ = self._queue.popleft()
                    if future.set_running_or_notify_cancel():  # False: its request gave up
                        batch.append((array, future))
                if batch:
                    return batch

    def _batch_ready(self):
        """Whether a worker assembling a batch stops waiting: the batch is full, or nothing is
        on its way and at least as many images are queued as recently in progress."""
        return len(self._queue) >= self._max_batch_size or (
            self._announced + self._incoming == 0 and len(self._queue) >= self._expected
        )

    def _wake_worker(self):
        """Notify (under the lock) when a waiting worker has something to do: the first image
        queued, or a batch ready; not at every image, each waking the worker's thread."""
        if self._closing or len(self._queue) == 1 or (self._queue and self._batch_ready()):
            self._cond.notify_all()

    def _note_load(self):
        """Record the images and announced requests in progress now (under the lock)."""
        now, load = time.monotonic(), self._admitted + self._announced
        while self._recent_load and self._recent_load[-1][1] <= load:
            self._recent_load.pop()
        self._recent_load.append((now, load))

    def _recent_peak(self):
        """The most images and announced requests in progress at once during the last second."""
        while self._recent_load and self._recent_load[0][0] < time.monotonic() - RECENT_LOAD_S:
            self._recent_load.popleft()
        return self._recent_load[0][1] if self._recent_load else 0

    def _batch_count(self, queued):
        """How many of the ``queued`` images to run now: all of them if padding them to
        the next batch size wastes less than a quarter of it, else the largest batch size
        they fill, the rest joining the next batch."""
        padded = min(size for size in self._batch_sizes if size >= queued)
        return queued if 4 * queued > 3 * padded else max(size for size in self._batch_sizes if size <= queued)

    def _run(self, predictor, batch):
        arrays, futures = zip(*batch)
        size = min(size for size in self._batch_sizes if size >= len(arrays))
        inputs = np.empty((size, *self._input_shape), dtype=np.float32)
        np.stack(arrays, out=inputs[: len(arrays)])
        inputs[len(arrays) :] = 0
        try:
            probs = predictor.run(inputs)
        except Exception as err:  # noqa: BLE001 - the requests get the error, the worker lives on
            logger.exception("predictor run of %d images failed", len(batch))
            for future in futures:
                future.set_exception(err)
            return
        self._on_batch(len(batch))
        for future, row in zip(futures, probs):
            future.set_result(row)


class Ticket:
    """One request's claim on the batcher, from :meth:`DynamicBatcher.announce` to
    :meth:`close`: :meth:`admit` its images, :meth:`decode` each of them in a decode
    thread (:meth:`track` those jobs), await :meth:`predictions`."""

    def __init__(self, batcher):
        self._batcher = batcher
        self._count = 0
        self._started = 0  # decodes begun
        self._decoding = 0  # decodes running now
        self._jobs = []
        self._admitted = self._closed = False
        self.results = []  # one Future per image: its probability row

    def admit(self, count):
        """Reserve room for ``count`` images; :class:`QueueFullError` if there is none."""
        batcher = self._batcher
        with batcher._cond:
            if batcher._admitted + count > batcher._queue_limit:
                raise QueueFullError(
                    f"{batcher._admitted} images in progress, {count} more would exceed queue_limit="
                    f"{batcher._queue_limit}"
                )
            batcher._announced -= 1
            batcher._admitted += count
            batcher._incoming += count
            batcher._note_load()
            self._admitted = True
            self._count = count
            self.results = [Future() for _ in range(count)]

    def track(self, jobs):
        """The decode jobs submitted for this request, cancelled by :meth:`close` if not started."""
        self._jobs = list(jobs)

    def decode(self, index, work):
        """Run ``work()`` (in a decode thread) for image ``index`` and queue the array it
        returns; what it raises becomes that image's result. Nothing runs once closed."""
        batcher = self._batcher
        with batcher._cond:
            if self._closed:
                return
            self._started += 1
            self._decoding += 1
        try:
            array = work()
        except BaseException as err:  # noqa: BLE001 - delivered to the request, which answers it
            array, error = None, err
        else:
            error = None
        with batcher._cond:
            self._decoding -= 1
            batcher._incoming -= 1
            if error is None and not self._closed:
                batcher._queue.append((array, self.results[index], self))
            self._release_if_done()
            batcher._wake_worker()
        if error is not None:
            _set_exception(self.results[index], error)

    async def predictions(self):
        """The probability rows in order; the first image that failed raises."""
        return await asyncio.gather(*map(asyncio.wrap_future, self.results))

    def close(self):
        """The request is answered: decodes not started never run, queued images are
        dropped, and the room is released as soon as no decode of it runs any more."""
        batcher = self._batcher
        with batcher._cond:
            if self._closed:
                return
            self._closed = True
            if not self._admitted:
                batcher._announced -= 1
            else:
                batcher._incoming -= self._count - self._started
                if any(ticket is self for _, _, ticket in batcher._queue):
                    batcher._queue = collections.deque(item for item in batcher._queue if item[2] is not self)
                self._release_if_done()
            batcher._wake_worker()
        for job in self._jobs:
            job.cancel()
        for future in self.results:
            future.cancel()

    def _release_if_done(self):
        if self._closed and self._admitted and self._decoding == 0:
            self._batcher._admitted -= self._count
            self._admitted = False


def _set_exception(future, error):
    try:
        future.set_exception(error)
    except InvalidStateError:  # cancelled: the request was answered already
        pass
