"""Helpers shared by the benchmarks: free ports, process start/stop, waiting for HTTP, metrics.

Not a benchmark itself. Times are seconds unless a name says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

#: The repository root (``bench/..``).
REPO = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (nothing listens there)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def listener_of(port: int) -> str:
    """A description of the process listening on TCP ``port`` ("pid 123 (name)") if visible."""
    with contextlib.suppress(psutil.AccessDenied, PermissionError, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "a process of another user"
                with contextlib.suppress(psutil.Error):
                    return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                return f"pid {conn.pid}"
    return "an unknown process"


def wait_http(
    url: str,
    *,
    timeout: float = 20.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``url`` every 50 ms until it answers 200; raise RuntimeError after ``timeout`` s.

    ``alive()`` returning ``False`` (the process serving it exited) aborts the wait at once.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the process serving {url} exited")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM ``process`` (this one only), SIGKILL after ``timeout`` s; return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def rss_bytes(pid: int) -> int:
    """Resident set size (bytes) of process ``pid`` plus all its descendants."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample ``(name, labels, value)`` of a Prometheus text payload."""
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric_sum(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> float:
    """Sum of the samples named ``name`` (``_total`` included) whose labels include ``match``."""
    return sum(
        value
        for sample_name, labels, value in samples
        if sample_name == name and all(labels.get(k) == v for k, v in match.items())
    )


def machine() -> str:
    """One line describing where the benchmark ran (CPUs, load, Python)."""
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def print_json(payload: dict[str, object]) -> None:
    """Print ``payload`` as one indented JSON object."""
    print(json.dumps(payload, indent=2, sort_keys=False))


async def watch_loop(
    stalls: list[tuple[float, float]], *, period: float = 0.005, threshold: float = 0.010
) -> None:
    """Record event-loop stalls until cancelled: ``(start Unix s, length s)`` of each wake-up
    that came more than ``threshold`` s later than the ``period`` s sleep asked for."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(period)
        late = time.perf_counter() - before - period
        if late > threshold:
            stalls.append((time.time() - late, late))


def cpu_pressure_us() -> int | None:
    """Total µs tasks on this machine have waited for a CPU (Linux PSI "some"), if available."""
    try:
        text = Path("/proc/pressure/cpu").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            return int(line.rpartition("total=")[2])
    return None
