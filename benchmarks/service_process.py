"""deploy/py_serving/web_service.py as a child process on a free loopback port, for the load
benchmark and the tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

WEB_SERVICE = Path(__file__).resolve().parents[1] / "deploy" / "py_serving" / "web_service.py"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def memory_bytes(pid, field="VmRSS"):
    """A size from /proc/<pid>/status: resident memory now (``VmRSS``), its peak (``VmHWM``), ..."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


class ServiceProcess:
    """``web_service.py --port <free port> *args``, its output in ``log_path``; with
    ``address_space_limit`` (bytes) the process cannot map more (``prlimit --as``): an
    allocation beyond it fails inside the service instead of growing until the kernel's
    OOM killer ends something on the machine."""

    def __init__(self, *args, log_path, address_space_limit=None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.prediction_url = f"{self.base_url}/alexnet/prediction"
        self.log_path = Path(log_path)
        command = [sys.executable, str(WEB_SERVICE), "--port", str(self.port), *map(str, args)]
        if address_space_limit is not None:
            command = ["prlimit", f"--as={int(address_space_limit)}", *command]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout=120.0, interval=0.02, on_status=None):
        """Poll GET /health until 200; ``on_status(code)`` sees every answer (0: no connection).
        RuntimeError with the log if the service exits or is not healthy in time."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log()}")
                try:
                    code = client.get(f"{self.base_url}/health").status_code
                except httpx.TransportError:
                    code = 0
                if on_status is not None:
                    on_status(code)
                if code == 200:
                    return
                time.sleep(interval)
        raise RuntimeError(f"service not healthy after {timeout} s:\n{self.log()}")

    def cpu_seconds(self):
        return cpu_seconds(self.process.pid)

    def rss_bytes(self, field="VmRSS"):
        return memory_bytes(self.process.pid, field)

    def reset_peak_rss(self):
        """Start ``VmHWM`` again from the current resident size (Linux >= 4.0)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def stop(self, timeout=60.0):
        """SIGTERM, then the exit status; a process that ignores it is killed and RuntimeError raised."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"service ignored SIGTERM for {timeout} s:\n{self.log()}") from None

    def log(self):
        return self.log_path.read_text(encoding="utf-8", errors="replace")
