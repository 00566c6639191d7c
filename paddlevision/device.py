"""The machine and the device Paddle computes on: GPUs, CPU features, usable cores, and
the one setup every entry point runs (``setup_device``)."""

import functools
import os

__all__ = ["VNNI_FLAGS", "DeviceError", "configure_cpu_math", "cpu_has_vnni", "cpu_vendor_and_flags", "default_device",
           "device_for_process", "distributed_backend", "gpu_available", "setup_device", "usable_cpu_count"]

# /proc/cpuinfo flags of x86 instructions that multiply uint8 by int8 into int32 without a
# saturating int16 step: AVX-512 VNNI, AVX-VNNI and AMX.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class DeviceError(ValueError):
    """A device this machine, this Paddle build or this process layout cannot use."""


def gpu_available():
    """True when this Paddle build has CUDA and sees at least one GPU."""
    import paddle

    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


@functools.lru_cache(maxsize=None)
def cpu_vendor_and_flags():
    """``(vendor_id, frozenset of feature flags)`` of the first CPU in /proc/cpuinfo
    (empty on systems without it)."""
    vendor, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    vendor = value.strip()
                elif key.strip() == "flags":
                    flags = frozenset(value.split())
                    break
    except OSError:
        pass
    return vendor, flags


def cpu_has_vnni(flags=None):
    """Whether a CPU with these /proc/cpuinfo ``flags`` (default: this one's) has VNNI or AMX."""
    flags = cpu_vendor_and_flags()[1] if flags is None else flags
    return any(flag in flags for flag in VNNI_FLAGS)


def usable_cpu_count():
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_device():
    return "gpu" if gpu_available() else "cpu"


def device_for_process(device, world_size, launcher_gpus=None):
    """The device this process should set for ``--device``, given the number of processes
    and the cards ``paddle.distributed.launch`` selected for it (``FLAGS_selected_gpus``,
    indices among the visible GPUs; set by the launcher's collective controller, also for
    a single process).

    Paddle maps plain ``gpu`` to the launcher's card, but ``gpu:N`` to card N in every
    process: with several processes that puts all ranks on one card, and under a launcher
    that chose another card it trains on a card the launcher did not give. So under the
    launcher ``gpu:N`` is accepted only when N is this process's card.
    """
    if not device.startswith("gpu:") or (world_size <= 1 and launcher_gpus is None):
        return device
    card = device.split(":", 1)[1]
    given = None if launcher_gpus is None else launcher_gpus.split(",")[0]
    if card == given:
        return "gpu"
    if world_size > 1:
        raise DeviceError(f"--device {device}: under paddle.distributed.launch every process would use card "
                          f"{card}; choose the cards with the launcher's --gpus and pass --device gpu")
    raise DeviceError(f"--device {device}: paddle.distributed.launch gave this process card {given} "
                      f"(FLAGS_selected_gpus, from its --gpus), not {card}; pass --device gpu, or choose the card "
                      "with the launcher's --gpus")


def distributed_backend(device, environ):
    """The ``PADDLE_DISTRI_BACKEND`` to set before ``init_parallel_env`` for processes on
    ``device``; ``None`` leaves Paddle's choice.

    ``init_parallel_env`` (python/paddle/distributed/parallel.py) reads it, default
    ``auto``: on a CUDA build that is NCCL, with ``CUDAPlace(FLAGS_selected_gpus)`` as the
    expected place; ``gloo`` makes the processes CPU-only. The launcher sets ``gloo`` only
    when it selected no devices (launch/controllers/collective.py), so ``--device cpu`` on
    a machine with GPUs has to ask for it.
    """
    requested = environ.get("PADDLE_DISTRI_BACKEND")
    if device == "cpu":
        if requested not in (None, "auto", "gloo"):
            raise DeviceError(f"--device cpu: PADDLE_DISTRI_BACKEND={requested} is a GPU backend; CPU processes "
                              "communicate through gloo (unset the variable)")
        return "gloo"
    if requested == "gloo":
        raise DeviceError(f"--device {device}: PADDLE_DISTRI_BACKEND=gloo keeps the processes on the CPU; unset the "
                          "variable (Paddle chooses NCCL for GPUs)")
    return None


def setup_device(device=None):
    """Select ``device`` (``gpu``/``cpu``/``gpu:N``; ``None`` picks gpu when there is one)
    for this process and return it; on CPU, :func:`configure_cpu_math`."""
    import paddle

    device = device or default_device()
    device = device_for_process(device, paddle.distributed.get_world_size(), os.environ.get("FLAGS_selected_gpus"))
    if device.startswith("gpu") and not gpu_available():
        raise DeviceError(f"--device {device}: this Paddle build has no usable GPU "
                          f"(compiled with CUDA: {paddle.is_compiled_with_cuda()}); use --device cpu")
    if device.split(":")[0] not in ("cpu", "gpu"):
        raise DeviceError(f"--device {device}: expected cpu, gpu or gpu:N")
    paddle.set_device(device)
    if device == "cpu":
        configure_cpu_math()
    return device


def configure_cpu_math(num_threads=None):
    """Give Paddle's CPU kernels this process's share of the cores, on their fast path.

    ``import paddle`` pins MKL to one thread; the share is the usable cores divided among
    the processes ``paddle.distributed.launch`` started here. On AMD CPUs the bundled MKL
    takes its generic SSE path unless ``MKL_DEBUG_CPU_TYPE=5`` selects the AVX2 kernels
    (about twice as fast for AlexNet's convolutions); MKL reads it at its first call, and
    a value already in the environment wins.
    """
    import paddle

    vendor, flags = cpu_vendor_and_flags()
    if vendor == "AuthenticAMD" and {"avx2", "fma"} <= flags:
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    if num_threads is None:
        processes_here = int(os.environ.get("PADDLE_LOCAL_SIZE", "1"))
        num_threads = max(1, usable_cpu_count() // processes_here)
    paddle.base.core.set_num_threads(num_threads)
    return num_threads
