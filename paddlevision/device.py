"""The machine and the device Paddle computes on: GPUs, CPU features, usable cores, and
the one setup every entry point runs (``setup_device``)."""

import functools
import os

__all__ = ["DeviceError", "configure_cpu_math", "cpu_vendor_and_flags", "default_device", "device_for_process",
           "gpu_available", "setup_device", "usable_cpu_count"]


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


def usable_cpu_count():
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_device():
    return "gpu" if gpu_available() else "cpu"


def device_for_process(device, world_size, launcher_gpus=None):
    """The device this process should set for ``--device``, given the number of processes
    and the cards ``paddle.distributed.launch`` selected for it (``FLAGS_selected_gpus``).

    Paddle maps plain ``gpu`` to the launcher's card, but ``gpu:N`` to card N in every
    process, which would put all ranks on one card: with several processes, ``gpu:N`` is
    accepted only when N is this process's card.
    """
    if world_size > 1 and device.startswith("gpu:"):
        card = device.split(":", 1)[1]
        if launcher_gpus is None or card != launcher_gpus.split(",")[0]:
            raise DeviceError(f"--device {device}: under paddle.distributed.launch every process would use card "
                              f"{card}; choose the cards with the launcher's --gpus and pass --device gpu")
        return "gpu"
    return device


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
