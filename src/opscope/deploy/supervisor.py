"""The supervisor of one local service: a front proxy and the service's processes.

One long-lived process per (environment, service), started by :mod:`opscope.deploy.local` as::

    python -m opscope.deploy.supervisor --dir DIR --listen 127.0.0.1:PORT

It binds the front port and its control socket, forks into the background (new session, output
to ``DIR/supervisor.log``) and exits 0 once the background process is ready, or prints one line
naming the problem and exits non-zero: 2 when the front port is taken, 3 when a supervisor
already runs for ``DIR``. ``--foreground`` skips the fork.

The background process keeps two *children* (see :mod:`opscope.deploy.control` for the
protocol): the *current* one, behind the front port, and at most one *staged* one, running on
its own backend port until it is promoted or discarded. Each child runs with ``PORT`` set to a
fresh free loopback port, in its own process group (signals reach its own children too), with
stdout and stderr appended to ``DIR/revision-<N>.log``.

A current child that exits is restarted like a Kubernetes container with ``restartPolicy:
Always`` in CrashLoopBackOff: at once after the first crash, then after 10s, 20s, 40s, … up to
5 minutes; a child that ran for 10 minutes starts the sequence over (the kubelet's
``doBackOff``). A staged child that exits stays exited, with its exit code and log tail, so a
deploy fails fast. Stopping a child sends SIGTERM to its group, SIGKILL after ``stop_timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from opscope.deploy.control import (
    PID_FILE,
    SOCKET_FILE,
    STATE_FILE,
    SUPERVISOR_LOG,
    ChildState,
    ChildStatus,
    ProcessSpec,
    log_tail,
    read_state,
    revision_log,
    signal_group,
    stop_leftovers,
    write_json_atomic,
)
from opscope.deploy.proxy import Backend, FrontProxy

log = logging.getLogger("opscope.supervisor")

#: Delay before the second restart in a row, in seconds (the kubelet's initial back-off).
BACKOFF_INITIAL = 10.0
#: Longest delay between restarts, in seconds (the kubelet's maximum back-off).
BACKOFF_MAX = 300.0
#: A child that ran this long before crashing starts the back-off over, in seconds.
BACKOFF_RESET = 600.0
#: Exit codes of the launcher.
EXIT_PORT_IN_USE = 2
EXIT_ALREADY_RUNNING = 3
#: Seconds the launcher waits for the background process to be ready.
READY_TIMEOUT = 60.0
#: Longest control request line, in bytes.
REQUEST_LIMIT = 1 << 20


def restart_delay(crashes: int) -> float:
    """Seconds to wait before restarting after the ``crashes``-th crash in a row (1-based):
    0 for the first, then 10, 20, 40, … capped at 300."""
    if crashes <= 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_INITIAL * 2.0 ** (crashes - 2))


def crashes_in_a_row(previous: int, ran_for: float) -> int:
    """The crash count after a crash of a process that ran ``ran_for`` seconds, when
    ``previous`` crashes came before it in a row: a long enough run resets the count."""
    return 1 if ran_for >= BACKOFF_RESET else previous + 1


class RequestError(Exception):
    """A control request that cannot be carried out; its message is the reply's ``error``."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """One revision's process, started and restarted as the supervisor's policy says.

    ``keep_running`` is false while the child is staged and true once it is current: only a
    current child is restarted. ``on_change`` is called after every change of state.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        revision: int,
        log_path: Path,
        *,
        base_env: dict[str, str],
        on_change: Callable[[], None],
    ) -> None:
        self.spec = spec
        self.revision = revision
        self.log_path = log_path
        self.keep_running = False
        self.status: ChildStatus = "exited"
        self.pid: int | None = None
        self.port = 0
        self.started_at = 0.0
        self.restarts = 0
        self.exit_code: int | None = None
        self.restart_at: float | None = None
        self._base_env = base_env
        self._on_change = on_change
        self._process: asyncio.subprocess.Process | None = None
        self._crashes = 0
        self._stopping = False
        self._watching: asyncio.Task[None] | None = None
        self._restarting: asyncio.Task[None] | None = None

    def state(self) -> ChildState:
        """This child as a :class:`ChildState`."""
        return ChildState(
            revision=self.revision,
            version=self.spec["version"],
            status=self.status,
            pid=self.pid,
            port=self.port,
            started_at=self.started_at,
            restarts=self.restarts,
            exit_code=self.exit_code,
            restart_at=self.restart_at,
            command=list(self.spec["argv"]),
            log=self.log_path,
            log_tail=None if self.status == "running" else log_tail(self.log_path),
        )

    async def start(self) -> None:
        """Start the process on a fresh backend port; raises :class:`OSError` when it cannot be
        started (missing program, bad working directory, …)."""
        port = free_port()
        env = {**self._base_env, **self.spec["env"], "PORT": str(port)}
        argv = self.spec["argv"]
        with self.log_path.open("ab") as out:
            out.write(
                f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} revision {self.revision} "
                f"({self.spec['version']}) starting on port {port}: {argv}\n".encode()
            )
            out.flush()
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=self.spec["cwd"],
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                out.write(f"--- cannot start: {exc}\n".encode())
                raise
        self._process = process
        self.pid = process.pid
        self.port = port
        self.status = "running"
        self.restart_at = None
        self.started_at = time.time()
        self._watching = asyncio.create_task(
            self._watch(process), name=f"watch revision {self.revision}"
        )
        log.info("revision %s started: pid %s, port %s", self.revision, self.pid, port)
        self._on_change()

    async def stop(self, timeout: float) -> int | None:
        """Stop the process (SIGTERM to its group, SIGKILL after ``timeout`` seconds) and any
        pending restart; returns its exit status (``None`` if it never ran)."""
        self._stopping = True
        if self._restarting is not None and self._restarting is not asyncio.current_task():
            self._restarting.cancel()
        process = self._process
        if process is not None and process.returncode is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                log.warning("revision %s: alive %ss after SIGTERM, killing", self.revision, timeout)
            # SIGKILL to the group even after a clean exit: what the process left behind
            # goes with it.
            signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        if process is not None:
            self.exit_code = process.returncode
        self.status = "exited"
        self.pid = None
        self.restart_at = None
        self._on_change()
        return self.exit_code

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping or process is not self._process:
            return
        signal_group(process.pid, signal.SIGKILL)  # what it left behind in its group
        self._exited(code, ran_for=time.time() - self.started_at)

    def _exited(self, code: int | None, *, ran_for: float) -> None:
        self.exit_code = code
        self.pid = None
        if not self.keep_running:
            self.status = "exited"
            log.info("staged revision %s exited with %s", self.revision, code)
            self._on_change()
            return
        self._crashes = crashes_in_a_row(self._crashes, ran_for)
        delay = restart_delay(self._crashes)
        self.status = "backoff"
        self.restart_at = time.time() + delay
        log.warning(
            "revision %s exited with %s after %.1fs; restarting in %ss",
            self.revision,
            code,
            ran_for,
            delay,
        )
        self._on_change()
        self._restarting = asyncio.create_task(
            self._restart(delay), name=f"restart revision {self.revision}"
        )

    async def _restart(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        self.restarts += 1
        try:
            await self.start()
        except OSError as exc:
            log.error("revision %s cannot be restarted: %s", self.revision, exc)
            self._exited(None, ran_for=0.0)


class Supervisor:
    """The front proxy, the current and staged children, and the control server of one
    service directory."""

    def __init__(
        self,
        directory: Path,
        *,
        front: socket.socket,
        control: socket.socket,
        service: str,
        stop_timeout: float,
    ) -> None:
        self.directory = directory
        self.service = service
        self.stop_timeout = stop_timeout
        host, port = front.getsockname()[:2]
        self.front = f"{host}:{port}"
        self.current: Child | None = None
        self.staged: Child | None = None
        self.proxy = FrontProxy(front, self._backend)
        self._control_sock = control
        self._control: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._running = True
        self._base_env = dict(os.environ)
        self._started_at = psutil.Process().create_time()

    async def run(self, ready: Callable[[], None]) -> None:
        """Serve until stopped (``stop`` request, SIGTERM or SIGINT); ``ready`` is called once
        the front port and control socket accept connections."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._signalled, signum)
        await self.proxy.start()
        self._control = await asyncio.start_unix_server(
            self._serve_control, sock=self._control_sock, limit=REQUEST_LIMIT
        )
        self.write_state()
        log.info("supervising %s on %s", self.service, self.front)
        ready()
        await self._done.wait()
        self._control.close()
        await self._control.wait_closed()

    def _signalled(self, signum: int) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        task = asyncio.create_task(self.shutdown(self.stop_timeout))
        task.add_done_callback(lambda _: self._done.set())

    def _backend(self) -> Backend | None:
        child = self.current
        if child is None:
            return None
        return child, child.port if child.status == "running" else None

    def document(self) -> dict[str, Any]:
        """The state document (see :mod:`opscope.deploy.control`)."""
        return {
            "service": self.service,
            "front": self.front,
            "supervisor": {"pid": os.getpid(), "started_at": self._started_at},
            "running": self._running,
            "updated_at": time.time(),
            "current": self.current.state().to_json() if self.current else None,
            "staged": self.staged.state().to_json() if self.staged else None,
        }

    def write_state(self) -> None:
        """Replace ``state.json`` with the current state."""
        try:
            write_json_atomic(self.directory / STATE_FILE, self.document())
        except OSError as exc:
            log.error("cannot write %s: %s", STATE_FILE, exc)

    async def stage(self, spec: ProcessSpec, revision: int) -> dict[str, Any]:
        """Start ``revision`` as the staged child, replacing a staged one."""
        async with self._lock:
            if self.staged is not None:
                await self.staged.stop(self.stop_timeout)
                self.staged = None
            child = Child(
                spec,
                revision,
                revision_log(self.directory, revision),
                base_env=self._base_env,
                on_change=self.write_state,
            )
            try:
                await child.start()
            except OSError as exc:
                raise RequestError(f"cannot start revision {revision}: {exc}") from exc
            self.staged = child
            self.write_state()
            return {"pid": child.pid, "port": child.port, "log": str(child.log_path)}

    async def promote(self, stop_timeout: float) -> dict[str, Any]:
        """Send new connections to the staged child, then stop the old current child once its
        connections have drained (at most ``stop_timeout`` seconds)."""
        async with self._lock:
            staged = self.staged
            if staged is None:
                raise RequestError("nothing is staged")
            if staged.status != "running":
                raise RequestError(
                    f"staged revision {staged.revision} is not running "
                    f"(exited with {staged.exit_code})"
                )
            old, self.current, self.staged = self.current, staged, None
            staged.keep_running = True
            self.write_state()
            log.info("revision %s promoted", staged.revision)
            previous = None
            if old is not None:
                if not await self.proxy.drained(old, timeout=stop_timeout):
                    log.warning(
                        "revision %s still has %s connections after %ss; stopping it",
                        old.revision,
                        self.proxy.active(old),
                        stop_timeout,
                    )
                previous = await old.stop(stop_timeout)
            return {"revision": staged.revision, "previous": previous}

    async def discard(self, stop_timeout: float) -> dict[str, Any]:
        """Stop the staged child, if any; the current one keeps serving."""
        async with self._lock:
            if self.staged is not None:
                await self.staged.stop(stop_timeout)
                self.staged = None
                self.write_state()
            return {}

    async def shutdown(self, stop_timeout: float) -> dict[str, Any]:
        """Stop accepting connections, stop both children, close the proxy."""
        async with self._lock:
            if not self._running:
                return {}
            await self.proxy.stop_accepting()
            children = [c for c in (self.current, self.staged) if c is not None]
            await asyncio.gather(*(c.stop(stop_timeout) for c in children))
            await self.proxy.close()
            self.current = self.staged = None
            self._running = False
            self.write_state()
            log.info("stopped")
            return {}

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stopping = False
        try:
            line = await reader.readline()
            request = json.loads(line)
            if not isinstance(request, dict):
                raise RequestError("a request is a JSON object")
            stopping = request.get("op") == "stop"
            reply = {"ok": True, **await self._handle(request)}
        except RequestError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc!r}"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except OSError as exc:
            log.warning("control client went away: %s", exc)
        if stopping and reply["ok"]:
            self._done.set()

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        stop_timeout = float(request.get("stop_timeout", self.stop_timeout))
        if op == "state":
            return self.document()
        if op == "stage":
            return await self.stage(_process_spec(request["spec"]), int(request["revision"]))
        if op == "promote":
            return await self.promote(stop_timeout)
        if op == "discard":
            return await self.discard(stop_timeout)
        if op == "stop":
            return await self.shutdown(stop_timeout)
        raise RequestError(f"unknown op {op!r}")


def _process_spec(data: Any) -> ProcessSpec:
    """Check a ``spec`` of a stage request."""
    if not isinstance(data, dict):
        raise RequestError("spec must be an object")
    argv, env = data.get("argv"), data.get("env")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise RequestError("spec.argv must be a non-empty list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise RequestError("spec.env must map names to strings")
    return ProcessSpec(
        service=str(data["service"]),
        version=str(data["version"]),
        argv=argv,
        cwd=str(data["cwd"]),
        env=env,
    )


def _bind_front(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_control() -> socket.socket:
    # Relative to the working directory (the service directory): no sun_path length limit.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET_FILE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(SOCKET_FILE)
    os.chmod(SOCKET_FILE, 0o600)
    sock.listen(16)
    return sock


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m opscope.deploy.supervisor")
    parser.add_argument("--dir", required=True, type=Path, help="the service's directory")
    parser.add_argument("--listen", required=True, help="front address, HOST:PORT")
    parser.add_argument("--service", default=None, help="service name (default: dir name)")
    parser.add_argument("--stop-timeout", type=float, default=10.0, help="SIGKILL after (s)")
    parser.add_argument("--foreground", action="store_true", help="do not fork")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor; returns the launcher's exit code."""
    args = _parse_args(argv)
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chdir(directory)
    lock = os.open(PID_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(lock, 32).decode(errors="replace").strip() or "?"
        print(f"a supervisor already runs for {directory} (pid {owner})", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        front = _bind_front(args.listen)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"front port {args.listen} is already in use by another process",
                file=sys.stderr,
            )
            return EXIT_PORT_IN_USE
        print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    control = _bind_control()
    if args.foreground:
        _serve(directory, args, lock=lock, front=front, control=control, ready_fd=None)
        return 0
    read_end, write_end = os.pipe()
    if os.fork() != 0:
        os.close(write_end)
        return _await_ready(read_end, directory)
    os.close(read_end)
    os.setsid()
    _redirect_output(directory / SUPERVISOR_LOG)
    code = 1
    try:
        _serve(directory, args, lock=lock, front=front, control=control, ready_fd=write_end)
        code = 0
    except BaseException:
        log.exception("the supervisor failed")
    finally:
        logging.shutdown()
        os._exit(code)


def _await_ready(read_end: int, directory: Path) -> int:
    ready, _, _ = select.select([read_end], [], [], READY_TIMEOUT)
    message = os.read(read_end, 64) if ready else b""
    if message == b"ready":
        return 0
    tail = log_tail(directory / SUPERVISOR_LOG, lines=5)
    print(f"the supervisor did not start: {tail or 'no output'}", file=sys.stderr)
    return 1


def _redirect_output(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _serve(
    directory: Path,
    args: argparse.Namespace,
    *,
    lock: int,
    front: socket.socket,
    control: socket.socket,
    ready_fd: int | None,
) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    stop_leftovers(read_state(directory) or {}, args.stop_timeout)
    supervisor = Supervisor(
        directory,
        front=front,
        control=control,
        service=args.service or directory.name,
        stop_timeout=args.stop_timeout,
    )

    def ready() -> None:
        if ready_fd is not None:
            with contextlib.suppress(OSError):  # the launcher gave up waiting
                os.write(ready_fd, b"ready")
            os.close(ready_fd)

    try:
        asyncio.run(supervisor.run(ready))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_FILE)
        os.ftruncate(lock, 0)


if __name__ == "__main__":
    sys.exit(main())
