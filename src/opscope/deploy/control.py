"""What the local backend's supervisor and its clients share: files, messages and child states.

Each service of a local environment has a directory (``<data_dir>/local/<environment>/<service>``)
owned by one supervisor process::

    supervisor.pid     pid of the supervisor; locked (flock) for as long as it runs
    control.sock       Unix socket of the control protocol
    state.json         last known state, replaced atomically on every change
    supervisor.log     the supervisor's own log (start-up errors, restarts, stops)
    revision-<N>.log   stdout and stderr of revision N's processes, appended

The control protocol is JSON lines over ``control.sock``: the client sends one request object
with an ``op`` and gets one reply object, ``{"ok": true, …}`` or ``{"ok": false, "error": "…"}``:

* ``stage`` {``revision``, ``spec``: :class:`ProcessSpec`} → {``pid``, ``port``, ``log``}:
  start the revision's process as the *staged* child (replacing a staged one);
* ``state`` {} → the state document (as in ``state.json``);
* ``promote`` {``stop_timeout``?} → {``revision``, ``previous``: the old child's exit status or
  null}: new connections go to the staged child; the old current one is stopped once drained;
* ``discard`` {``stop_timeout``?} → {}: stop the staged child;
* ``stop`` {``stop_timeout``?} → {}: stop both children, then the supervisor exits.

``stop_timeout`` is in seconds (SIGTERM, then SIGKILL after it); it defaults to the supervisor's.

The state document is ``{"service", "front", "supervisor": {"pid", "started_at"}, "running",
"updated_at", "current": child | null, "staged": child | null}`` with each child as written by
:meth:`ChildState.to_json`. Environment values (which may hold secrets) are never written to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import psutil

log = logging.getLogger(__name__)

PID_FILE = "supervisor.pid"
SOCKET_FILE = "control.sock"
STATE_FILE = "state.json"
SUPERVISOR_LOG = "supervisor.log"
#: Lines of a log kept in a child's ``log_tail``.
TAIL_LINES = 20
#: Characters of a log kept in a child's ``log_tail``.
TAIL_CHARS = 4000
#: Seconds two start times of a process may differ and still name the same one: a recorded
#: ``time.time()`` against the kernel's start time, which Linux counts from a boot time given in
#: whole seconds. A pid is reused only after the pid space wraps, far later than this.
SAME_START = 2.0
#: Longest Unix socket path the kernel takes (``sun_path`` is 108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH = 100

ChildStatus = Literal["running", "backoff", "exited"]
"""``running``: the process is alive; ``backoff``: the current process crashed and is restarted
at ``restart_at``; ``exited``: the process ended on its own and is not restarted (a staged
one)."""


class ProcessSpec(TypedDict):
    """What a child runs: ``argv`` (program and arguments), working directory ``cwd`` (absolute),
    environment variables ``env`` added to the supervisor's own (secrets included; kept in memory
    only), and ``service``/``version`` for state and logs."""

    service: str
    version: str
    argv: list[str]
    cwd: str
    env: dict[str, str]


def revision_log(directory: Path, revision: int) -> Path:
    """The log file of ``revision``'s processes in a service directory."""
    return directory / f"revision-{revision}.log"


@dataclass(frozen=True)
class ChildState:
    """One process slot of a service: the *current* revision (behind the front port) or the
    *staged* one (started, not yet receiving traffic).

    Times are Unix seconds. ``pid`` is set while ``status`` is ``running``. ``port`` is the
    backend port on 127.0.0.1 (fresh at every start). ``restarts`` counts restarts after crashes.
    ``exit_code`` is the last exit status, negative when a signal ended the process (``-9``:
    SIGKILL). ``log_tail`` holds the last lines of ``log`` once the process has exited.
    """

    revision: int
    version: str
    status: ChildStatus
    pid: int | None
    port: int
    started_at: float
    restarts: int
    exit_code: int | None
    restart_at: float | None
    command: list[str]
    log: Path
    log_tail: str | None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.status == "running"

    def uptime(self, now: float) -> float | None:
        """Seconds the process has been running at ``now``; ``None`` when it is not running."""
        return max(0.0, now - self.started_at) if self.running else None

    def to_json(self) -> dict[str, Any]:
        """This state as a JSON object (``log`` as a string)."""
        return {
            "revision": self.revision,
            "version": self.version,
            "status": self.status,
            "pid": self.pid,
            "port": self.port,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "restart_at": self.restart_at,
            "command": self.command,
            "log": str(self.log),
            "log_tail": self.log_tail,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChildState:
        """The state written by :meth:`to_json`."""
        return cls(
            revision=int(data["revision"]),
            version=str(data["version"]),
            status=data["status"],
            pid=data["pid"],
            port=int(data["port"]),
            started_at=float(data["started_at"]),
            restarts=int(data["restarts"]),
            exit_code=data["exit_code"],
            restart_at=data["restart_at"],
            command=list(data["command"]),
            log=Path(data["log"]),
            log_tail=data["log_tail"],
        )


def log_tail(path: Path, *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of the file at ``path``; ``""``
    when it is missing."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - chars * 4))
            data = file.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])[-chars:]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON so that a reader sees the old or the new file,
    never a partial one (write a temporary file, then rename it over)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as file:
        json.dump(data, file, indent=1)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state document of a service directory, or ``None`` when there is none (or it cannot
    be read: it is rewritten at the next change)."""
    try:
        data = json.loads((directory / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def socket_address(directory: Path) -> tuple[str, int | None]:
    """A path to connect to ``directory``'s control socket, and a directory descriptor to close
    after connecting (or ``None``).

    A path too long for ``sun_path`` is reached through ``/proc/self/fd/<fd>/control.sock`` on
    Linux, with ``fd`` an ``O_PATH`` descriptor of the directory; elsewhere it raises
    :class:`OSError`.
    """
    path = str(directory / SOCKET_FILE)
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path, None
    if not sys.platform.startswith("linux"):
        raise OSError(f"control socket path too long for this system: {path}")
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{SOCKET_FILE}", fd


def signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group led by ``pid``; nothing when it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def same_process(pid: int, started_at: float) -> psutil.Process | None:
    """The live process ``pid`` if it started at ``started_at`` (Unix seconds, within
    ``SAME_START`` seconds); ``None`` when it is gone, a zombie, or the pid now belongs to
    another process."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started_at) >= SAME_START:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def stop_leftovers(document: dict[str, Any], timeout: float) -> list[int]:
    """Stop the children recorded in a state ``document`` that still run (their supervisor is
    gone): SIGTERM to each one's group, SIGKILL after ``timeout`` seconds. Returns their pids.
    Blocks; call it from a thread in async code."""
    found = []
    for slot in ("current", "staged"):
        child = document.get(slot)
        if isinstance(child, dict) and child.get("pid"):
            process = same_process(int(child["pid"]), float(child["started_at"]))
            if process is not None:
                found.append(process)
    for process in found:
        log.warning("stopping pid %s left by a supervisor that is gone", process.pid)
        signal_group(process.pid, signal.SIGTERM)
    psutil.wait_procs(found, timeout=timeout)
    for process in found:
        signal_group(process.pid, signal.SIGKILL)
    return [p.pid for p in found]
