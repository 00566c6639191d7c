"""Helpers of train.py, in the shape of torchvision's references/classification utils.py."""

import datetime
import json
import os
import random
import time
from collections import defaultdict, deque

import numpy as np
import paddle
import paddle.distributed as dist

from paddlevision.device import distributed_backend


class SmoothedValue:
    """A window of recent values and a running total. Values may be paddle scalars, turned
    into floats only when printed, so that updating a meter never waits for the device."""

    def __init__(self, window_size=20, fmt="{median:.4f} ({global_avg:.4f})"):
        self.window = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value, n=1):
        """``value`` is the mean of ``n`` samples."""
        self.window.append(value)
        self.count += n
        self.total = self.total + value * n

    def add(self, total, n):
        """``n`` samples summing to ``total``: a count stays exact in the running total."""
        self.window.append(total / n)
        self.count += n
        self.total = self.total + total

    @property
    def median(self):
        return float(np.median([float(v) for v in self.window]))

    @property
    def avg(self):
        return float(np.mean([float(v) for v in self.window]))

    @property
    def global_avg(self):
        return float(self.total) / max(self.count, 1)

    @property
    def value(self):
        return float(self.window[-1])

    def __str__(self):
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    def __init__(self, delimiter="  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **values):
        for name, value in values.items():
            self.meters[name].update(value)

    def add_meter(self, name, meter):
        self.meters[name] = meter

    def __getattr__(self, name):
        meters = self.__dict__.get("meters", {})
        if name in meters:
            return meters[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __str__(self):
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def synchronize_between_processes(self):
        """Sum each meter's count and total over all processes (the windows stay local)."""
        meters = list(self.meters.values())
        sums = reduce_across_processes([x for meter in meters for x in (meter.count, meter.total)])
        for meter, count, total in zip(meters, sums[::2], sums[1::2]):
            meter.count, meter.total = int(count), total

    def log_every(self, iterable, print_freq, header=""):
        start = end = time.time()
        iter_time = SmoothedValue(fmt="{avg:.4f}")
        data_time = SmoothedValue(fmt="{avg:.4f}")
        total = len(iterable)
        width = len(str(total))
        for i, obj in enumerate(iterable):
            data_time.update(time.time() - end)
            yield obj
            printing = i % print_freq == 0 or i == total - 1
            # Converting the meters to text waits for the device; the step's time is taken
            # after that, so that it counts the device's work, not only its queueing.
            meters = str(self) if printing else None
            iter_time.update(time.time() - end)
            if printing:
                eta = datetime.timedelta(seconds=int(iter_time.global_avg * (total - i - 1)))
                print_main(
                    self.delimiter.join(
                        [header, f"[{i:>{width}}/{total}]", f"eta: {eta}", meters, f"time: {iter_time}",
                         f"data: {data_time}"]
                    )
                )
            end = time.time()
        print_main(f"{header} Total time: {datetime.timedelta(seconds=int(time.time() - start))}")


def correct_counts(output, target, topk=(1,)):
    """Per k, the number of samples whose label is among the top-k predictions, as paddle
    scalars. k is clamped to the class count (top-5 of a 4-class model is top-4)."""
    num_classes = output.shape[1]
    maxk = min(max(topk), num_classes)
    _, pred = paddle.topk(output, k=maxk, axis=1)
    hits = pred == target.reshape([-1, 1])
    return [hits[:, : min(k, num_classes)].astype("float32").sum() for k in topk]


def get_world_size():
    return dist.get_world_size()


def get_rank():
    return dist.get_rank()


def is_main_process():
    return get_rank() == 0


def print_main(*args, **kwargs):
    if is_main_process():
        print(*args, **kwargs, flush=True)


def init_distributed_mode(args):
    """Joins the process group under ``paddle.distributed.launch``: gloo for ``--device cpu``,
    else Paddle's choice (NCCL on GPU). ``args.device`` is the device ``setup_device`` set;
    it is set again after ``init_parallel_env``, which makes the launcher's GPU the expected
    place on a CUDA build whatever the device (see ``distributed_backend``)."""
    args.world_size = get_world_size()
    args.rank = get_rank()
    args.distributed = args.world_size > 1
    if args.distributed:
        backend = distributed_backend(args.device, os.environ)
        if backend is not None:
            os.environ["PADDLE_DISTRI_BACKEND"] = backend
        dist.init_parallel_env()
        paddle.set_device(args.device)


def global_share(count):
    """``count * world_size / (count summed over all processes)`` as a paddle scalar (the host
    does not wait for it): the weight that turns this process's mean loss over ``count``
    samples into its part of the mean over every process's samples, once the gradients are
    averaged over the processes. 0 when no process has a sample."""
    total = paddle.to_tensor(float(count), dtype="float32")
    dist.all_reduce(total)
    return float(count) * get_world_size() / paddle.clip(total, min=1.0)


def zero_gradient_loss(model):
    """A loss whose gradient is zero for every trainable parameter of ``model``: added to a
    process's loss, it gives every parameter a gradient on every process (an empty batch or
    an unused layer included), so that all processes all-reduce the same buckets."""
    return paddle.add_n([param.sum() for param in model.parameters() if not param.stop_gradient]) * 0.0


def all_reduce_gradients(model):
    """Average the gradients of ``model`` over all processes, as DataParallel's reducer would;
    for steps taken under ``DataParallel.no_sync()`` (Paddle's documented pattern)."""
    from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients

    fused_allreduce_gradients(list(model.parameters()), None)


def reduce_across_processes(values):
    """Sum a list of float scalars (or paddle scalars) over all processes."""
    tensor = paddle.stack(
        [v.astype("float64").reshape([]) if isinstance(v, paddle.Tensor) else paddle.to_tensor(float(v), dtype="float64")
         for v in values]
    )
    if get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.numpy().tolist()


def gather_objects(obj):
    """``obj`` of every process, as a list indexed by rank."""
    if get_world_size() == 1:
        return [obj]
    gathered = []
    dist.all_gather_object(gathered, obj)
    return gathered


class ShardedEvalSampler(paddle.io.Sampler):
    """Every ``world_size``-th index starting at ``rank``: a partition of the dataset
    with no padding, so a gathered evaluation counts each sample exactly once."""

    def __init__(self, dataset, rank=None, world_size=None):
        self.num_samples = len(dataset)
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def __iter__(self):
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self):
        return len(range(self.rank, self.num_samples, self.world_size))


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


class MetricsWriter:
    """One JSON object a line (main process only), flushed per record so that a crash keeps
    what was logged before it. Without ``append`` the file starts afresh."""

    def __init__(self, path, append=False):
        self.path = path
        self.file = None
        if path is not None and is_main_process():
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.file = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, **record):
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
