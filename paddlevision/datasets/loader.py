"""Batches of ``(images, labels)`` for train.py; unreadable images are named or skipped in
the main process.

A decoding error never travels as an exception through Paddle's loader: in Paddle 3.3 a
worker's exception reaches the main thread as ``SystemError: Blocking queue is killed`` and
the loader's clean-up then hangs at exit; with ``num_workers=0`` it ends Paddle's reader
thread and the main thread waits forever. The failure travels as data instead (file name and
reason are strings, which Paddle carries in a batch beside the arrays).
"""

import contextlib
import logging
import os
import signal

import numpy as np
import paddle
from paddle.io import Dataset

from paddlevision.image import ImageDecodeError

__all__ = ["ImageLoader"]

logger = logging.getLogger(__name__)


class _FailuresAsData(Dataset):
    """``dataset``'s samples, with the ImageDecodeError returned instead of raised."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except ImageDecodeError as error:
            return error


def _collate(items):
    # Runs where the samples were read (a worker): only strings and arrays leave it.
    batch = {"unreadable": [[str(item.name), item.reason] for item in items if isinstance(item, ImageDecodeError)]}
    readable = [item for item in items if not isinstance(item, ImageDecodeError)]
    if readable:
        batch["images"] = np.stack([np.asarray(image, dtype=np.float32) for image, _ in readable])
        batch["labels"] = np.array([label for _, label in readable], dtype=np.int64)
    else:
        # Paddle's queue takes a batch without arrays for the end of the data, and cannot
        # put a zero-size array in shared memory: a batch of unreadable images carries one
        # element.
        batch["placeholder"] = np.zeros(1, dtype=np.int8)
    return batch


def _exit_quietly_on_sigterm(worker_id):
    # Paddle's worker loop gives SIGTERM a handler that dies of the signal, which the main
    # process's SIGCHLD handler then reports as a SystemError, in the middle of the clean-up
    # of the same SIGTERM sent to the whole process group (a scheduler stopping the job).
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


class ImageLoader:
    """``(images, labels)`` batches of ``dataset`` in the order of ``batch_sampler``.

    ``num_workers > 0`` reads in Paddle's DataLoader workers (shared memory, prefetch);
    ``num_workers=0`` in the calling thread, a batch at a time, where any error raises
    where it happens (for debugging).

    An unreadable image raises :class:`ImageDecodeError`, after the workers have stopped;
    with ``skip_bad_images`` it is logged and left out of its batch (which then comes out
    smaller, or not at all — :meth:`batches` can keep it as ``(None, None)``), and
    ``num_skipped`` counts those of the last pass.
    """

    def __init__(self, dataset, batch_sampler, num_workers=0, skip_bad_images=False):
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0
        self._samples = _FailuresAsData(dataset)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        return self.batches()

    def batches(self, keep_unreadable=False):
        """The batches; with ``keep_unreadable``, a batch of which nothing could be read (with
        ``skip_bad_images``) comes out as ``(None, None)`` instead of not at all, so that
        processes training together can still take its step."""
        self.num_skipped = 0
        source = self._worker_batches() if self.num_workers else self._in_process_batches()
        with contextlib.closing(source):  # an error below stops the workers before it propagates
            for batch in source:
                for name, reason in batch["unreadable"]:
                    error = ImageDecodeError(name, reason)
                    if not self.skip_bad_images:
                        raise error
                    logger.warning("skipped: %s", error)
                    self.num_skipped += 1
                if "images" in batch:
                    yield batch["images"], batch["labels"]
                elif keep_unreadable:
                    yield None, None

    def _in_process_batches(self):
        for indices in self.batch_sampler:
            batch = _collate([self._samples[i] for i in indices])
            yield {key: paddle.to_tensor(value) if isinstance(value, np.ndarray) else value
                   for key, value in batch.items()}

    def _worker_batches(self):
        loader = paddle.io.DataLoader(self._samples, batch_sampler=self.batch_sampler, num_workers=self.num_workers,
                                      collate_fn=_collate, worker_init_fn=_exit_quietly_on_sigterm)
        batches = iter(loader)
        try:
            yield from batches
        finally:
            # Stop the workers now. Left to the iterator's __del__ at interpreter exit, the
            # shutdown needs a new thread (multiprocessing's queue feeder), which can no
            # longer start then, and hangs.
            batches._try_shutdown_all()
