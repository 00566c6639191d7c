"""Batches of ``(images, labels)`` for train.py, with unreadable images named or skipped in
the main process.

An image that cannot be decoded never travels as an exception through Paddle's loader. In
Paddle 3.3 a worker's exception reaches the main thread as ``SystemError: Blocking queue is
killed``, and the loader's clean-up then hangs at interpreter exit; with ``num_workers=0``
the exception ends Paddle's reader thread and the main thread waits forever. Instead the
failure travels as data: its file name and reason are strings, which Paddle carries in the
batch structure beside the arrays, and :class:`ImageLoader` raises
:class:`~paddlevision.image.ImageDecodeError`, or skips the image, when the batch arrives.
"""

import contextlib
import logging

import numpy as np
import paddle
from paddle.io import Dataset

from paddlevision.image import ImageDecodeError

__all__ = ["ImageLoader"]

logger = logging.getLogger(__name__)


class _Unreadable:
    """Takes the place of a sample whose image could not be decoded."""

    def __init__(self, error):
        self.name = str(error.name)
        self.reason = error.reason


class _FailuresAsData(Dataset):
    """``dataset``'s samples, with an :class:`_Unreadable` instead of an ImageDecodeError."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except ImageDecodeError as error:
            return _Unreadable(error)


def _collate(items):
    batch = {"unreadable": [[item.name, item.reason] for item in items if isinstance(item, _Unreadable)]}
    readable = [item for item in items if not isinstance(item, _Unreadable)]
    if readable:
        batch["images"] = np.stack([np.asarray(image, dtype=np.float32) for image, _ in readable])
        batch["labels"] = np.array([label for _, label in readable], dtype=np.int64)
    else:
        # Paddle's queue takes a batch without arrays for the end of the data, and cannot
        # put a zero-size array in shared memory: a batch of unreadable images carries one
        # element.
        batch["placeholder"] = np.zeros(1, dtype=np.int8)
    return batch


class ImageLoader:
    """``(images, labels)`` batches of ``dataset`` in the order of ``batch_sampler``.

    With ``num_workers > 0`` Paddle's DataLoader reads them in worker processes (shared
    memory, prefetching, pinned buffers for the copy to a GPU). With ``num_workers=0`` they
    are read in the calling thread, one at a time: no prefetch, and each batch is copied to
    the device synchronously -- a mode for debugging, where an error raises where it happens.

    An unreadable image raises :class:`ImageDecodeError` naming the file, after the workers
    have been stopped; with ``skip_bad_images`` it is logged and left out of its batch (a
    batch may come out smaller, and a batch of only unreadable images not at all).
    ``num_skipped`` counts the images the last pass left out.
    """

    def __init__(self, dataset, batch_sampler, num_workers=0, skip_bad_images=False):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0
        self._samples = _FailuresAsData(dataset)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
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

    def _in_process_batches(self):
        for indices in self.batch_sampler:
            batch = _collate([self._samples[i] for i in indices])
            yield {key: paddle.to_tensor(value) if isinstance(value, np.ndarray) else value
                   for key, value in batch.items()}

    def _worker_batches(self):
        loader = paddle.io.DataLoader(self._samples, batch_sampler=self.batch_sampler, num_workers=self.num_workers,
                                      collate_fn=_collate)
        batches = iter(loader)
        try:
            yield from batches
        finally:
            # Stop the workers now. Left to the iterator's __del__ at interpreter exit, the
            # shutdown needs a new thread (multiprocessing's queue feeder), which can no
            # longer start then, and hangs.
            batches._try_shutdown_all()
