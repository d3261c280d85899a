"""The local backend's processes: the client of the per-service supervisors.

Each service of a local environment runs under its own supervisor
(:mod:`opscope.deploy.supervisor`), a background process that owns the service's stable *front*
port (``127.0.0.1:<spec.port>``) and proxies it to the *current* revision's process. A deploy
*stages* the new revision (it starts on its own backend port and receives no traffic), checks
it, then *promotes* it (new connections go to it; the old process drains and is stopped) or
*discards* it (the current one never stopped serving)::

    processes = LocalProcesses(data_dir / "local" / "development")
    staged = await processes.stage(spec, revision=3)      # starts the supervisor if needed
    ...                                                   # probe 127.0.0.1:staged.port
    await processes.promote(spec)                         # or: await processes.discard(spec)

Supervisors are detached (own session): they outlive the process that started them, and a new
:class:`LocalProcesses` on the same root finds them. Secrets (``spec.secrets``) are read from
this process's environment at each :meth:`~LocalProcesses.stage` and passed to the supervisor
over its private socket, so they are never written to disk. Every failure raises
:class:`~opscope.errors.LocalProcessError` naming the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from opscope.deploy.control import (
    PID_FILE,
    ChildState,
    ProcessSpec,
    read_state,
    same_process,
    socket_address,
    stop_leftovers,
)
from opscope.deploy.spec import ServiceSpec
from opscope.errors import LocalProcessError

#: Seconds a control request other than promote, discard and stop may take.
REQUEST_TIMEOUT = 10.0
#: Seconds the supervisor may take to start (leftover processes may need stopping first).
START_TIMEOUT = 90.0
#: Seconds between two looks at a process that should exit.
POLL_INTERVAL = 0.05
#: The module run as a supervisor.
SUPERVISOR_MODULE = "opscope.deploy.supervisor"
FRONT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Staged:
    """A revision just started as the staged process: ``pid``, its backend ``port`` on
    127.0.0.1 (probe it there before promoting) and its ``log`` file."""

    revision: int
    pid: int
    port: int
    log: Path


@dataclass(frozen=True)
class ServiceProcess:
    """The processes of one service of the environment.

    ``running`` says whether the supervisor answers; when it does not, ``current`` and
    ``staged`` are the last state it recorded and ``problem`` may say why it did not answer.
    ``front`` is the stable address (``127.0.0.1:8000``).
    """

    service: str
    directory: Path
    front: str
    running: bool
    supervisor_pid: int | None
    current: ChildState | None
    staged: ChildState | None
    problem: str | None = None

    def uptime(self, now: float | None = None) -> float | None:
        """Seconds the current process has been running (``None`` when nothing runs)."""
        if not self.running or self.current is None:
            return None
        return self.current.uptime(time.time() if now is None else now)


class _NotRunning(LocalProcessError):
    """No supervisor listens on the service's control socket."""


def describe_process(spec: ServiceSpec) -> dict[str, Any]:
    """What runs for ``spec`` on the local backend, as stored in a revision: ``argv``, absolute
    ``cwd``, plain ``env`` (with ``VERSION`` set to the service's version unless the
    configuration sets it), ``secrets`` (variable name → optional; values are read at start,
    never stored) and ``version``. Raises :class:`LocalProcessError` when ``spec`` is not a local
    service with a command."""
    if spec.backend != "local":
        raise LocalProcessError(
            f"{spec.service}: environment {spec.environment} uses the {spec.backend} backend"
        )
    if not spec.command:
        raise LocalProcessError(f"{spec.service}: a local service needs a command")
    return {
        "argv": [*spec.command, *(spec.args or [])],
        "cwd": str(spec.workdir.resolve()),
        "env": {"VERSION": spec.version, **spec.env},
        "secrets": {name: ref.optional for name, ref in spec.secrets.items()},
        "version": spec.version,
    }


class LocalProcesses:
    """The supervised processes of the services of one local environment.

    ``root`` is the environment's directory (``<data_dir>/local/<environment>``), one
    subdirectory per service; ``stop_timeout`` is the seconds between SIGTERM and SIGKILL when
    a process is stopped. ``environ`` is where secrets are read from (default ``os.environ``).
    """

    def __init__(
        self,
        root: Path,
        *,
        stop_timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.stop_timeout = stop_timeout
        self._environ = os.environ if environ is None else environ

    def directory(self, service: str) -> Path:
        """The directory of ``service``'s supervisor: state, logs and control socket."""
        return self.root / service

    async def stage(self, spec: ServiceSpec, revision: int) -> Staged:
        """Start ``revision`` of ``spec`` as the staged process, starting the service's
        supervisor first if none runs; a process already staged is stopped first.

        Returns once the process is spawned, not when it is healthy: probe ``Staged.port``, and
        watch :meth:`staged` for an early exit. Raises :class:`LocalProcessError` when the
        front port is taken by another program, a secret is not set, the program cannot be
        started, or the supervisor listens on another port than ``spec.port`` (stop it first).
        """
        return await self.stage_process(spec, describe_process(spec), revision)

    async def stage_process(
        self, spec: ServiceSpec, described: dict[str, Any], revision: int
    ) -> Staged:
        """:meth:`stage` of a process described by :func:`describe_process` (e.g. the one
        recorded in an earlier revision): secrets are resolved now, from ``environ``. The
        service and its front port come from ``spec``."""
        process = self._resolve(spec.service, described)
        directory = self.directory(spec.service)
        document = await self._supervisor(spec, directory)
        front = f"{FRONT_HOST}:{spec.port}"
        if document["front"] != front:
            raise LocalProcessError(
                f"{spec.service}: its supervisor listens on {document['front']} but the "
                f"service's port is now {spec.port}; stop the service first"
            )
        reply = await self._request(
            directory, {"op": "stage", "revision": revision, "spec": process}
        )
        return Staged(
            revision=revision, pid=reply["pid"], port=reply["port"], log=Path(reply["log"])
        )

    async def staged(self, spec: ServiceSpec) -> ChildState | None:
        """The staged process of ``spec``'s service, ``None`` when there is none or no
        supervisor runs. An exited one has ``status == "exited"``, its ``exit_code`` and the
        ``log_tail`` of its output."""
        return await self._child(spec.service, "staged")

    async def current(self, spec: ServiceSpec) -> ChildState | None:
        """The process behind ``spec``'s front port, ``None`` when there is none or no
        supervisor runs. After a crash it is ``backoff`` until restarted at ``restart_at``."""
        return await self._child(spec.service, "current")

    async def promote(self, spec: ServiceSpec) -> None:
        """Make the staged process current: new connections to the front port go to it, open
        ones drain, then the old process is stopped (SIGTERM, SIGKILL after ``stop_timeout``).
        Returns once the old process is gone. Raises :class:`LocalProcessError` when nothing is
        staged or the staged process has exited."""
        await self._request(
            self.directory(spec.service),
            {"op": "promote", "stop_timeout": self.stop_timeout},
            timeout=self._stop_budget(),
        )

    async def discard(self, spec: ServiceSpec) -> None:
        """Stop the staged process, if any; the current one keeps serving."""
        try:
            await self._request(
                self.directory(spec.service),
                {"op": "discard", "stop_timeout": self.stop_timeout},
                timeout=self._stop_budget(),
            )
        except _NotRunning:
            return

    async def status(self) -> list[ServiceProcess]:
        """Every service that has a directory under ``root``, by name: whether its supervisor
        runs, its front address, current and staged processes."""
        found = []
        directories = sorted(self.root.iterdir()) if self.root.is_dir() else []
        for directory in directories:
            if not directory.is_dir():
                continue
            problem = None
            try:
                document: dict[str, Any] | None = await self._request(directory, {"op": "state"})
                running = True
            except LocalProcessError as exc:
                document = read_state(directory)
                running = False
                problem = None if isinstance(exc, _NotRunning) else str(exc)
            if document is None:
                continue
            current, staged = document.get("current"), document.get("staged")
            found.append(
                ServiceProcess(
                    service=directory.name,
                    directory=directory,
                    front=str(document["front"]),
                    running=running and bool(document.get("running", True)),
                    supervisor_pid=(document.get("supervisor") or {}).get("pid"),
                    current=ChildState.from_json(current) if current else None,
                    staged=ChildState.from_json(staged) if staged else None,
                    problem=problem,
                )
            )
        return found

    async def stop(self, service_name: str) -> None:
        """Stop the service's processes and its supervisor, and wait until they are gone (the
        front port is then free). Processes left by a supervisor that died are stopped too.
        Stopping a service that does not run does nothing."""
        directory = self.directory(service_name)
        if not directory.is_dir():
            return
        try:
            document = await self._request(directory, {"op": "state"})
        except _NotRunning:
            document = None
        except LocalProcessError:  # alive but not answering: signals instead
            document = None
            await asyncio.to_thread(self._kill_supervisor, directory)
        if document is not None:
            await self._request(
                directory,
                {"op": "stop", "stop_timeout": self.stop_timeout},
                timeout=self._stop_budget(),
            )
            supervisor = document["supervisor"]
            await self._gone(int(supervisor["pid"]), float(supervisor["started_at"]), service_name)
        recorded = read_state(directory)
        if recorded is not None:
            await asyncio.to_thread(stop_leftovers, recorded, self.stop_timeout)

    # -- internals -------------------------------------------------------------------------

    def _resolve(self, service: str, described: dict[str, Any]) -> ProcessSpec:
        """The process to start: ``described`` plus the values of its secrets."""
        workdir = Path(described["cwd"])
        if not workdir.is_dir():
            raise LocalProcessError(f"{service}: working directory {workdir} does not exist")
        env = dict(described["env"])
        for name, optional in described["secrets"].items():
            value = self._environ.get(name)
            if value is None:
                if optional:
                    continue
                raise LocalProcessError(
                    f"{service}: secret {name} is not set; the local backend reads secrets "
                    "from opscope's environment"
                )
            env[name] = value
        return ProcessSpec(
            service=service,
            version=described["version"],
            argv=list(described["argv"]),
            cwd=str(workdir),
            env=env,
        )

    async def _supervisor(self, spec: ServiceSpec, directory: Path) -> dict[str, Any]:
        """The state of the service's supervisor, started first if none runs."""
        try:
            return await self._request(directory, {"op": "state"})
        except _NotRunning:
            pass
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        launcher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            SUPERVISOR_MODULE,
            "--dir",
            str(directory),
            "--listen",
            f"{FRONT_HOST}:{spec.port}",
            "--service",
            spec.service,
            "--stop-timeout",
            str(self.stop_timeout),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(launcher.communicate(), START_TIMEOUT)
        except TimeoutError:
            launcher.kill()
            await launcher.wait()
            raise LocalProcessError(
                f"{spec.service}: the supervisor did not start within {START_TIMEOUT:g}s"
            ) from None
        # Exit code 3: another client started it first, which is as good.
        if launcher.returncode not in (0, 3):
            message = stderr.decode(errors="replace").strip() or f"exit {launcher.returncode}"
            raise LocalProcessError(f"{spec.service}: {message}")
        return await self._request(directory, {"op": "state"})

    async def _child(self, service: str, slot: str) -> ChildState | None:
        try:
            document = await self._request(self.directory(service), {"op": "state"})
        except _NotRunning:
            return None
        data = document.get(slot)
        return ChildState.from_json(data) if data else None

    async def _request(
        self, directory: Path, request: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Send one control request and return the reply; raises :class:`_NotRunning` when no
        supervisor listens, :class:`LocalProcessError` on a refused request or a timeout."""
        service = directory.name
        try:
            path, fd = socket_address(directory)
        except FileNotFoundError as exc:
            raise _NotRunning(f"{service}: no supervisor runs") from exc
        except OSError as exc:
            raise LocalProcessError(f"{service}: {exc}") from exc
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=1 << 24), timeout
            )
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise _NotRunning(f"{service}: no supervisor runs") from exc
        except (OSError, TimeoutError) as exc:
            raise LocalProcessError(f"{service}: cannot reach the supervisor: {exc}") from exc
        finally:
            if fd is not None:
                os.close(fd)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError as exc:
            raise LocalProcessError(
                f"{service}: the supervisor did not answer {request['op']} within {timeout:g}s"
            ) from exc
        except OSError as exc:
            raise LocalProcessError(f"{service}: supervisor connection failed: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise LocalProcessError(f"{service}: the supervisor closed the connection")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise LocalProcessError(f"{service}: {reply.get('error', 'request refused')}")
        return reply

    def _stop_budget(self) -> float:
        # Draining, then SIGTERM, then SIGKILL: two stop timeouts and some slack.
        return 2 * self.stop_timeout + REQUEST_TIMEOUT

    async def _gone(self, pid: int, started_at: float, service: str) -> None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while same_process(pid, started_at) is not None:
            if time.monotonic() > deadline:
                raise LocalProcessError(f"{service}: the supervisor (pid {pid}) did not exit")
            await asyncio.sleep(POLL_INTERVAL)

    def _kill_supervisor(self, directory: Path) -> None:
        """Stop an unresponsive supervisor by signals (blocking)."""
        try:
            pid = int((directory / PID_FILE).read_text().strip())
            process = psutil.Process(pid)
            if SUPERVISOR_MODULE not in " ".join(process.cmdline()):
                return
        except (OSError, ValueError, psutil.Error):
            return
        process.terminate()
        _, alive = psutil.wait_procs([process], timeout=self.stop_timeout)
        for survivor in alive:
            survivor.kill()
