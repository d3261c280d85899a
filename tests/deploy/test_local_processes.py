"""The local backend's processes: real supervisors, real example services, free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from opscope.config.deploy import SecretRef
from opscope.config.loading import load_config
from opscope.deploy.control import read_state
from opscope.deploy.local import LocalProcesses, ServiceProcess
from opscope.deploy.spec import ServiceSpec, service_spec
from opscope.errors import LocalProcessError
from tests.conftest import free_port

EXAMPLE = Path(__file__).parents[2] / "examples" / "blatam"
APP = [sys.executable, "services/app.py", "--name", "ai_system"]
#: Exits at once with a message on stderr, like a service missing its configuration.
BROKEN = [sys.executable, "-c", "import sys; sys.exit('fatal: DATABASE_URL is not set')"]
#: Listens on PORT but answers 500 to everything: never healthy.
UNHEALTHY = [
    sys.executable,
    "-c",
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(500); self.send_header('Content-Length', '0'); self.end_headers()\n"
    "    def log_message(self, *args): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n",
]
STOP_TIMEOUT = 5.0


def example_spec(port: int, version: str, command: list[str] | None = None) -> ServiceSpec:
    """The example's ai_system in development, on ``port``, reporting ``version``."""
    loaded = load_config(EXAMPLE / "opscope.yaml")
    spec = service_spec(loaded.config, "development", "ai_system", EXAMPLE)
    return replace(
        spec,
        port=port,
        version=version,
        command=command or APP,
        env={**spec.env, "VERSION": version},
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 15.0, what: str
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def get(port: int, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


async def healthy(port: int) -> None:
    """Wait until 127.0.0.1:``port`` answers /health with 200."""

    async def check() -> bool:
        try:
            response = await asyncio.to_thread(get, port, "/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    await eventually(check, what=f"127.0.0.1:{port}/health to answer 200")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def gone(pid: int) -> None:
    async def check() -> bool:
        return not alive(pid)

    await eventually(check, what=f"pid {pid} to exit")


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (connections in TIME_WAIT do not count, as
    for any server that sets SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def processes_under(root: Path) -> list[psutil.Process]:
    """Supervisors of services under ``root`` (found by their command line) and their
    descendants, plus children recorded in state files."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "opscope.deploy.supervisor" in cmdline and str(root) in cmdline:
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):
                found.update((p.pid, p) for p in process.children(recursive=True))
    for directory in root.glob("*"):
        state = read_state(directory) or {}
        for slot in ("current", "staged"):
            child = state.get(slot) or {}
            if child.get("pid") and alive(child["pid"]):
                with contextlib.suppress(psutil.Error):
                    found[child["pid"]] = psutil.Process(child["pid"])
    return list(found.values())


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[LocalProcesses]:
    """A :class:`LocalProcesses` on a temporary root; every process it started is stopped after
    the test, and any that :meth:`stop` left behind fails the test."""
    root = tmp_path / "local" / "development"
    local = LocalProcesses(root, stop_timeout=STOP_TIMEOUT)
    yield local
    before = processes_under(root)
    for directory in root.glob("*"):
        with contextlib.suppress(LocalProcessError):
            await local.stop(directory.name)
    left = [p for p in before if alive(p.pid)]
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert [p.pid for p in left] == [], "processes left after stop()"


class Client:
    """Threads requesting ``GET /`` on the front port in a loop, each on a new connection,
    recording the version answered or the failure."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.versions: list[list[str]] = [[] for _ in range(threads)]
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seen,), daemon=True) for seen in self.versions
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, seen: list[str]) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    if response.status_code == 200:
                        seen.append(response.json()["version"])
                    else:
                        self.failures.append(f"status {response.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def count(self, version: str) -> int:
        return sum(seen.count(version) for seen in self.versions)

    async def answered(self, version: str, times: int) -> None:
        async def check() -> bool:
            return self.count(version) >= times

        await eventually(check, what=f"{times} answers from version {version}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


@pytest.fixture
def clients() -> Iterator[Callable[[int], Client]]:
    started: list[Client] = []

    def start(port: int) -> Client:
        client = Client(port)
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop()


async def deploy(local: LocalProcesses, spec: ServiceSpec, revision: int) -> int:
    """Stage, wait healthy, promote; the new process's pid."""
    staged = await local.stage(spec, revision)
    await healthy(staged.port)
    await local.promote(spec)
    return staged.pid


async def test_promote_serves_the_new_version_and_stops_the_old_one(
    processes: LocalProcesses,
) -> None:
    port = free_port()
    v1, v2 = example_spec(port, "1.0.0"), example_spec(port, "2.0.0")
    old_pid = await deploy(processes, v1, 1)
    assert get(port).json()["version"] == "1.0.0"

    staged = await processes.stage(v2, 2)
    assert staged.port != port
    await healthy(staged.port)
    assert get(port).json()["version"] == "1.0.0"  # staged gets no traffic
    await processes.promote(v2)

    answer = get(port).json()
    assert (answer["version"], answer["pid"]) == ("2.0.0", staged.pid)
    await gone(old_pid)
    current = await processes.current(v2)
    assert current is not None
    assert (current.revision, current.status, current.pid) == (2, "running", staged.pid)
    assert await processes.staged(v2) is None


async def test_a_client_sees_no_failed_request_during_a_promote(
    processes: LocalProcesses, clients: Callable[[int], Client]
) -> None:
    port = free_port()
    v1, v2 = example_spec(port, "1.0.0"), example_spec(port, "2.0.0")
    await deploy(processes, v1, 1)
    client = clients(port)
    await client.answered("1.0.0", 20)

    await deploy(processes, v2, 2)
    await client.answered("2.0.0", 20)
    client.stop()

    assert client.failures == []
    for seen in client.versions:
        # Sequential requests on new connections: once the switch is seen, it stays.
        switched = seen.index("2.0.0")
        assert set(seen[:switched]) == {"1.0.0"}
        assert set(seen[switched:]) == {"2.0.0"}


async def test_an_open_connection_drains_on_the_old_version(processes: LocalProcesses) -> None:
    port = free_port()
    v1, v2 = example_spec(port, "1.0.0"), example_spec(port, "2.0.0")
    old_pid = await deploy(processes, v1, 1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n")  # a request in progress
        staged = await processes.stage(v2, 2)
        await healthy(staged.port)
        promote = asyncio.create_task(processes.promote(v2))

        async def switched() -> bool:
            response = await asyncio.to_thread(get, port)
            return bool(response.json()["version"] == "2.0.0")

        await eventually(switched, what="new connections to reach version 2.0.0")
        assert not promote.done()  # the old process waits for our connection
        assert alive(old_pid)

        conn.sendall(b"Host: localhost\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)  # half-close: the answer still comes back
        data = b""
        while chunk := await asyncio.to_thread(conn.recv, 65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b'"version": "1.0.0"' in body
    await asyncio.wait_for(promote, STOP_TIMEOUT * 3)
    await gone(old_pid)


async def test_a_broken_version_fails_fast_and_the_old_one_keeps_serving(
    processes: LocalProcesses, clients: Callable[[int], Client]
) -> None:
    port = free_port()
    v1 = example_spec(port, "1.0.0")
    broken = example_spec(port, "2.0.0", command=BROKEN)
    await deploy(processes, v1, 1)
    client = clients(port)
    await client.answered("1.0.0", 10)

    await processes.stage(broken, 2)

    async def exited() -> bool:
        staged = await processes.staged(broken)
        return staged is not None and staged.status == "exited"

    await eventually(exited, what="the broken version to exit")
    staged = await processes.staged(broken)
    assert staged is not None
    assert (staged.exit_code, staged.pid, staged.restarts) == (1, None, 0)
    assert staged.log_tail is not None
    assert "fatal: DATABASE_URL is not set" in staged.log_tail
    with pytest.raises(LocalProcessError, match="staged revision 2 is not running"):
        await processes.promote(broken)

    await processes.discard(broken)
    assert await processes.staged(broken) is None
    seen = client.count("1.0.0")
    await client.answered("1.0.0", seen + 10)
    client.stop()
    assert client.failures == []
    assert client.count("2.0.0") == 0


async def test_a_version_that_never_gets_healthy_is_discarded(
    processes: LocalProcesses, clients: Callable[[int], Client]
) -> None:
    port = free_port()
    v1 = example_spec(port, "1.0.0")
    unhealthy = example_spec(port, "2.0.0", command=UNHEALTHY)
    current_pid = await deploy(processes, v1, 1)
    client = clients(port)

    staged = await processes.stage(unhealthy, 2)

    async def answers_500() -> bool:
        try:
            response = await asyncio.to_thread(get, staged.port, "/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 500

    await eventually(answers_500, what="the unhealthy version to answer /health")
    state = await processes.staged(unhealthy)
    assert state is not None and state.status == "running"

    await processes.discard(unhealthy)
    await gone(staged.pid)
    assert await processes.staged(unhealthy) is None
    current = await processes.current(v1)
    assert current is not None and (current.revision, current.pid) == (1, current_pid)
    await client.answered("1.0.0", client.count("1.0.0") + 10)
    client.stop()
    assert client.failures == []


async def test_a_killed_current_process_is_restarted(processes: LocalProcesses) -> None:
    port = free_port()
    v1 = example_spec(port, "1.0.0")
    pid = await deploy(processes, v1, 1)

    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        current = await processes.current(v1)
        return current is not None and current.restarts == 1 and current.status == "running"

    await eventually(restarted, what="the current process to be restarted")
    current = await processes.current(v1)
    assert current is not None
    assert current.pid != pid
    assert current.exit_code == -signal.SIGKILL
    await healthy(port)  # through the front port
    assert get(port).json()["pid"] == current.pid


async def test_a_second_crash_in_a_row_waits_ten_seconds(processes: LocalProcesses) -> None:
    port = free_port()
    v1 = example_spec(port, "1.0.0")
    pid = await deploy(processes, v1, 1)
    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        current = await processes.current(v1)
        return current is not None and current.status == "running" and current.pid != pid

    await eventually(restarted, what="the first restart")
    current = await processes.current(v1)
    assert current is not None and current.pid is not None
    os.kill(current.pid, signal.SIGKILL)
    killed_at = time.time()

    async def backing_off() -> bool:
        current = await processes.current(v1)
        return current is not None and current.status == "backoff"

    await eventually(backing_off, what="the back-off after the second crash")
    current = await processes.current(v1)
    assert current is not None and current.restart_at is not None
    assert (current.restarts, current.exit_code, current.pid) == (1, -signal.SIGKILL, None)
    assert killed_at + 10 <= current.restart_at <= time.time() + 10
    assert current.log_tail is not None and "listening on" in current.log_tail


async def test_processes_outlive_the_program_that_started_them(tmp_path: Path) -> None:
    root = tmp_path / "local" / "development"
    port = free_port()
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from opscope.deploy.local import LocalProcesses\n"
        "from tests.deploy.test_local_processes import deploy, example_spec\n"
        "asyncio.run(deploy(LocalProcesses(Path(sys.argv[1])), example_spec(int(sys.argv[2]),"
        " '1.0.0'), 1))\n"
    )
    local = LocalProcesses(root, stop_timeout=STOP_TIMEOUT)
    try:
        subprocess.run(
            [sys.executable, "-c", script, str(root), str(port)],
            check=True,
            timeout=60,
            cwd=Path(__file__).parents[2],
        )

        [service] = await local.status()
        assert isinstance(service, ServiceProcess)
        assert (service.service, service.front, service.running) == (
            "ai_system",
            f"127.0.0.1:{port}",
            True,
        )
        assert service.current is not None
        assert (service.current.revision, service.current.version) == (1, "1.0.0")
        assert service.supervisor_pid is not None
        assert os.getsid(service.supervisor_pid) != os.getsid(0)  # its own session
        assert alive(service.current.pid or 0)
        uptime = service.uptime()
        assert uptime is not None and uptime >= 0
        assert get(port).json()["version"] == "1.0.0"
    finally:
        before = processes_under(root)
        await local.stop("ai_system")
        assert [p.pid for p in before if alive(p.pid)] == []


async def test_stop_ends_the_supervisor_and_all_its_processes(
    processes: LocalProcesses,
) -> None:
    port = free_port()
    v1, v2 = example_spec(port, "1.0.0"), example_spec(port, "2.0.0")
    current_pid = await deploy(processes, v1, 1)
    staged = await processes.stage(v2, 2)
    [service] = await processes.status()
    assert service.supervisor_pid is not None
    pids = [service.supervisor_pid, current_pid, staged.pid]
    assert all(alive(pid) for pid in pids)

    await processes.stop("ai_system")

    assert [pid for pid in pids if alive(pid)] == []
    assert port_free(port)
    [service] = await processes.status()
    assert (service.running, service.current, service.staged) == (False, None, None)
    assert await processes.current(v1) is None
    await processes.stop("ai_system")  # stopping again does nothing


async def test_a_taken_front_port_is_a_clear_error(processes: LocalProcesses) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(LocalProcessError) as caught:
            await processes.stage(example_spec(port, "1.0.0"), 1)

    assert str(caught.value) == (
        f"ai_system: front port 127.0.0.1:{port} is already in use by another process"
    )
    assert processes_under(processes.root) == []


async def test_a_changed_front_port_is_refused_until_stopped(processes: LocalProcesses) -> None:
    port, other = free_port(), free_port()
    await processes.stage(example_spec(port, "1.0.0"), 1)
    with pytest.raises(LocalProcessError, match=f"listens on 127.0.0.1:{port} but .* {other}"):
        await processes.stage(example_spec(other, "1.0.0"), 2)


async def test_secrets_come_from_the_environment_and_stay_off_disk(tmp_path: Path) -> None:
    root = tmp_path / "local" / "development"
    # The program checks a digest of the value, so the value itself appears in no command line.
    digest = hashlib.sha256(b"tok-4f9a").hexdigest()
    check = (
        "import hashlib, os, sys\n"
        f"ok = hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest() == '{digest}'\n"
        "sys.exit(0 if ok else 3)\n"
    )
    spec = replace(
        example_spec(free_port(), "1.0.0", command=[sys.executable, "-c", check]),
        secrets={"API_TOKEN": SecretRef(secret="ai-system", key="api-token")},
    )
    with pytest.raises(LocalProcessError, match="secret API_TOKEN is not set"):
        await LocalProcesses(root, environ={}).stage(spec, 1)

    local = LocalProcesses(root, stop_timeout=STOP_TIMEOUT, environ={"API_TOKEN": "tok-4f9a"})
    try:
        await local.stage(spec, 1)

        async def exited() -> bool:
            staged = await local.staged(spec)
            return staged is not None and staged.status == "exited"

        await eventually(exited, what="the secret check to exit")
        staged = await local.staged(spec)
        assert staged is not None and staged.exit_code == 0
        written = [p for p in root.rglob("*") if p.is_file() and b"tok-4f9a" in p.read_bytes()]
        assert written == []
    finally:
        await local.stop("ai_system")


async def test_a_root_too_deep_for_a_unix_socket_path_works(tmp_path: Path) -> None:
    root = tmp_path / ("d" * 60) / ("e" * 60) / "local" / "development"
    assert len(str(root / "ai_system" / "control.sock")) > 108
    local = LocalProcesses(root, stop_timeout=STOP_TIMEOUT)
    port = free_port()
    try:
        await deploy(local, example_spec(port, "1.0.0"), 1)
        assert get(port).json()["version"] == "1.0.0"
        [service] = await local.status()
        assert service.running
    finally:
        await local.stop("ai_system")
    assert port_free(port)


async def test_what_a_process_started_is_stopped_with_it(processes: LocalProcesses) -> None:
    # A wrapper script that leaves a background process behind, as shell wrappers do.
    script = 'sleep 300 & echo "background pid $!"; exec "$@"'
    command = ["sh", "-c", script, "sh", *APP]
    spec = example_spec(free_port(), "1.0.0", command=command)
    staged = await processes.stage(spec, 1)
    await healthy(staged.port)
    line = next(x for x in staged.log.read_text().splitlines() if x.startswith("background pid"))
    background = int(line.split()[-1])
    assert alive(background)

    await processes.discard(spec)

    await gone(staged.pid)
    await gone(background)
