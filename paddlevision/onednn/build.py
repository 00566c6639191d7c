"""Compiling conv2d.cc once per configuration and loading it.

The operators are compiled against the oneDNN library the paddle wheel ships
(``paddle/libs/libdnnl.so.3``). The wheel's own oneDNN headers are stubs that include a
``oneapi/dnnl/`` it does not ship, so the headers come from ``$ONEDNN_INCLUDE_DIR`` or the
``onednn-devel`` wheel (``pip install --no-deps -r requirements-onednn.txt``); they are
accepted only with the library's major version and a minor version no newer than the
library's (oneDNN keeps its ABI backward compatible within a major version).

Each configuration (source, headers, library, Paddle, Python, flags) builds into its own
directory of Paddle's extension directory (``$PADDLE_EXTENSION_DIR``, default
``~/.cache/paddle_extensions``), named by its signature, so that two virtualenvs or
checkouts never rebuild over each other. A finished build is marked ``done`` and then only
read (a read-only directory serves too); a failed one is marked ``failed`` with its reason,
which every later process (each rank of a distributed launch, say) reports without
compiling again. The compiler runs in a child process whose output goes to ``build.log``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paddle

SOURCE = Path(__file__).with_name("conv2d.cc")
EXTENSION_NAME = "paddlevision_onednn"
# oneDNN runs on the OpenMP runtime Paddle loaded (libiomp5 serves its GOMP calls), so its
# thread count is the one Paddle sets; the operators start no OpenMP runtime of their own.
CXX_FLAGS = ["-O3"]
HEADERS_HINT = "pip install --no-deps -r requirements-onednn.txt, or set ONEDNN_INCLUDE_DIR"
BUILD_TIMEOUT = 900  # seconds; a compiler that hangs counts as a failed build
DONE, FAILED, LOG = "done", "failed", "build.log"


class OneDNNUnavailable(RuntimeError):
    """The oneDNN operators cannot be built or loaded here; the message says why."""


def platform_unsupported_reason(device: str, system: str = sys.platform, machine: str = platform.machine()):
    """Why the engine cannot run for ``device`` on this system, or None when it can."""
    if not device.startswith("cpu"):
        return f"runs on CPU only, not on {device}"
    if not system.startswith("linux") or machine.lower() not in ("x86_64", "amd64"):
        return f"is built for Linux x86-64 only, not for {system} {machine}"
    return None


# ------------------------------------------------------------------- headers and library


def paddle_onednn_library() -> Path:
    return Path(paddle.__file__).parent / "libs" / "libdnnl.so.3"


def library_version(lib: Path) -> tuple[int, int, int]:
    class Version(ctypes.Structure):  # dnnl_version_t
        _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                    ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]

    handle = ctypes.CDLL(str(lib))
    handle.dnnl_version.restype = ctypes.POINTER(Version)
    version = handle.dnnl_version().contents
    return version.major, version.minor, version.patch


def header_version(include_dir: Path) -> tuple[int, int, int] | None:
    """The version of the oneDNN headers under ``include_dir``, or None when there are none."""
    dnnl = include_dir / "oneapi" / "dnnl"
    if not (dnnl / "dnnl.hpp").is_file() or not (dnnl / "dnnl_version.h").is_file():
        return None
    text = (dnnl / "dnnl_version.h").read_text(errors="replace")
    parts = [re.search(rf"#define DNNL_VERSION_{name}\s+(\d+)", text) for name in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        return None
    return tuple(int(part.group(1)) for part in parts)


def header_candidates() -> list[Path]:
    candidates = [Path(os.environ["ONEDNN_INCLUDE_DIR"])] if os.environ.get("ONEDNN_INCLUDE_DIR") else []
    candidates.append(Path(paddle.__file__).parent / "include" / "third_party" / "install" / "onednn" / "include")
    candidates.append(Path(sysconfig.get_paths()["data"]) / "include")  # where onednn-devel installs them
    return candidates


def find_headers(lib_version: tuple[int, int, int]) -> Path:
    seen = []
    for include_dir in header_candidates():
        version = header_version(include_dir)
        if version and version[0] == lib_version[0] and version[1] <= lib_version[1]:
            return include_dir
        seen.append(f"{include_dir} ({'none' if version is None else '.'.join(map(str, version))})")
    raise OneDNNUnavailable(
        f"no oneDNN {lib_version[0]}.x headers no newer than paddle's libdnnl {'.'.join(map(str, lib_version))} "
        f"in {'; '.join(seen)} ({HEADERS_HINT})")


# ------------------------------------------------------------------------------ building


@dataclass(frozen=True)
class Build:
    """What a build is made from; its signature names its directory."""

    include_dir: Path
    library: Path

    def signature(self) -> str:
        digest = hashlib.sha256(SOURCE.read_bytes())
        for part in (self.include_dir, header_version(self.include_dir), self.library,
                     library_version(self.library), paddle.__version__, sys.version, CXX_FLAGS):
            digest.update(repr(part).encode())
        return digest.hexdigest()[:16]

    def directory(self, root: Path) -> Path:
        return root / f"{EXTENSION_NAME}-{self.signature()}"

    def compile(self, build_dir: Path) -> None:
        """``paddle.utils.cpp_extension.load`` in a child process, its output in build.log."""
        options = {"name": EXTENSION_NAME, "sources": [str(SOURCE)], "extra_include_paths": [str(self.include_dir)],
                   "extra_cxx_cflags": CXX_FLAGS, "build_directory": str(build_dir), "verbose": True,
                   "extra_ldflags": [f"-L{self.library.parent}", f"-l:{self.library.name}",
                                     f"-Wl,-rpath,{self.library.parent}"]}
        script = ("import json, sys\nfrom paddle.utils import cpp_extension\n"
                  "cpp_extension.load(**json.loads(sys.argv[1]))")
        log_path = build_dir / LOG
        with open(log_path, "w") as log:
            try:
                result = subprocess.run([sys.executable, "-c", script, json.dumps(options)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise OneDNNUnavailable(f"compiling the oneDNN operators took over {BUILD_TIMEOUT} s (log: {log_path})")
        if result.returncode != 0:
            raise OneDNNUnavailable(f"compiling the oneDNN operators failed ({_last_error(log_path)}; log: {log_path})")


def _last_error(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0][:300]


def library_path(build_dir: Path) -> Path:
    return build_dir / EXTENSION_NAME / f"{EXTENSION_NAME}.so"


def ensure_built(build_dir: Path, compile) -> float | None:
    """Make sure ``build_dir`` holds a finished build, calling ``compile(build_dir)`` unless
    an earlier process made it; returns the seconds compiling took, None when it was
    there. A failure ``compile`` raises (OneDNNUnavailable) is recorded and raised again to
    every later caller without compiling; a build cut short is started afresh."""
    if (build_dir / DONE).is_file():
        return None
    _raise_recorded_failure(build_dir)
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(build_dir / "lock"):
            if (build_dir / DONE).is_file():  # built by another process while this one waited
                return None
            _raise_recorded_failure(build_dir)
            shutil.rmtree(build_dir / EXTENSION_NAME, ignore_errors=True)
            start = time.perf_counter()
            try:
                compile(build_dir)
            except OneDNNUnavailable as exc:
                (build_dir / FAILED).write_text(str(exc))
                raise
            seconds = time.perf_counter() - start
            (build_dir / DONE).write_text(f"compiled in {seconds:.0f} s\n")
            return seconds
    except OSError as exc:
        raise OneDNNUnavailable(f"cannot build in {build_dir}: {exc} (set PADDLE_EXTENSION_DIR to a writable "
                                f"directory)") from exc


def _raise_recorded_failure(build_dir: Path):
    if (build_dir / FAILED).is_file():
        reason = (build_dir / FAILED).read_text(errors="replace").strip()
        raise OneDNNUnavailable(f"{reason} — recorded by an earlier attempt; remove {build_dir} to try again")


@contextmanager
def _exclusive(lock_path: Path):
    """An exclusive lock on ``lock_path`` across processes (the ranks of one launch)."""
    import fcntl  # POSIX only, like the engine: imported here so that the package imports anywhere

    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Ops:
    """The loaded operators: ``run("onednn_conv2d", x, weight, bias, strides, paddings)``."""

    run: Callable
    build_dir: Path
    origin: str  # for the log line


_ops: Ops | None = None


def load_ops() -> Ops:
    """The operators, built on first use and afterwards loaded from the extension
    directory. Raises OneDNNUnavailable."""
    global _ops
    if _ops is None:
        from paddle.utils import cpp_extension

        lib = paddle_onednn_library()
        if not lib.is_file():
            raise OneDNNUnavailable(f"the paddle wheel has no {lib}")
        version = library_version(lib)
        build = Build(find_headers(version), lib)
        try:
            root = Path(cpp_extension.get_build_directory())
        except OSError as exc:
            raise OneDNNUnavailable(f"extension directory: {exc} (set PADDLE_EXTENSION_DIR to a writable "
                                    f"directory)") from exc
        build_dir = build.directory(root)
        seconds = ensure_built(build_dir, build.compile)
        run = _register(library_path(build_dir))
        how = f"compiled now in {seconds:.0f} s into" if seconds is not None else "loaded from"
        _ops = Ops(run, build_dir, f"oneDNN {'.'.join(map(str, version))} in paddle's {lib.name}, {how} {build_dir}")
    return _ops


def _register(library: Path) -> Callable:
    """Register the operators of ``library`` with Paddle and return Paddle's runner of custom
    operators. Both are Paddle internals (what ``cpp_extension.load`` does, without writing
    the Python wrapper it generates into the build directory), checked here."""
    try:
        from paddle import _C_ops
        from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

        run = _C_ops._run_custom_op
    except (ImportError, AttributeError) as exc:
        raise OneDNNUnavailable(f"Paddle {paddle.__version__} lacks the custom-operator loader this engine uses "
                                f"({exc})") from exc
    try:
        load_op_meta_info_and_register_op(str(library))
    except Exception as exc:  # a build for another Paddle, a deleted file
        raise OneDNNUnavailable(f"loading {library} failed: {type(exc).__name__}: {exc}") from exc
    return run
