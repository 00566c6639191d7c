"""What this machine offers: GPUs visible to Paddle, CPU vendor and feature flags, usable
cores. One place for these checks, shared by training (utils.py) and inference."""

import functools
import os


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
