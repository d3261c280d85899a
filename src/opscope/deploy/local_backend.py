"""The local backend: services as supervised processes on this machine (a
:class:`~opscope.deploy.rollout.Backend`).

A deploy stages the new revision's process on a fresh port (:mod:`opscope.deploy.local`),
waits until it answers its health endpoint there — failing at once if it exits — and only then
promotes it behind the service's stable front port, stopping the old process gracefully. A
revision that fails is discarded: the old process never stopped serving, so the failure needs
no re-apply (:meth:`LocalBackend.abandon` says so to the engine).

Revisions live in opscope's store (state documents ``releases/<environment>/<release>/<n>``).
The deploy lock is an exclusive ``flock`` on ``deploy.lock`` in the service's directory
(``<data_dir>/local/<environment>/<service>/``), released by the kernel if its holder dies, so
a crashed deploy never blocks the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from opscope.clock import Clock, SystemClock
from opscope.config.deploy import DeploySettings
from opscope.deploy.history import Revision
from opscope.deploy.local import LocalProcesses, Staged, describe_process
from opscope.deploy.rollout import Report, Verdict, operator_identity
from opscope.deploy.spec import ServiceSpec
from opscope.errors import DeployRefused
from opscope.store.database import Store

HOST = "127.0.0.1"


class StoreReleaseStore:
    """Revisions of one environment's releases as state documents in opscope's store."""

    def __init__(self, store: Store, environment: str) -> None:
        self.store = store
        self.environment = environment

    def _prefix(self, release: str) -> str:
        return f"releases/{self.environment}/{release}/"

    async def revisions(self, release: str) -> list[Revision]:
        """Every kept revision of ``release``, oldest first."""
        documents = await asyncio.to_thread(self.store.load_state, self._prefix(release))
        found = [Revision.from_json(json.loads(text)) for text, _ in documents.values()]
        return sorted(found, key=lambda r: r.revision)

    async def save(self, revision: Revision) -> None:
        """Create or update one revision."""
        key = f"{self._prefix(revision.release)}{revision.revision:08d}"
        text = json.dumps(revision.to_json(), sort_keys=True)
        await asyncio.to_thread(self.store.put_state, {key: text}, at=revision.updated_at)

    async def delete(self, release: str, revision: int) -> None:
        """Forget one revision."""
        key = f"{self._prefix(release)}{revision:08d}"
        await asyncio.to_thread(self.store.delete_state, [key])


class LocalBackend:
    """Deploys the services of one local environment as supervised processes.

    ``root`` is ``<data_dir>/local/<environment>``; ``store`` is opscope's store (revisions).
    """

    def __init__(
        self,
        root: Path,
        store: Store,
        environment: str,
        settings: DeploySettings,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.root = root
        self.settings = settings
        self.clock = clock or SystemClock()
        self.processes = LocalProcesses(root, stop_timeout=settings.stop_timeout.total_seconds())
        self.releases = StoreReleaseStore(store, environment)
        self._staged: dict[str, Staged | None] = {}

    def payload(self, spec: ServiceSpec) -> dict[str, Any]:
        """``{"process": describe_process(spec), "port", "health": {"path", "port"}}``."""
        return {
            "process": describe_process(spec),
            "port": spec.port,
            "health": {"path": spec.health_check, "port": spec.port},
        }

    async def preflight(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Nothing can be refused before starting a process; problems show when it starts."""

    @contextlib.asynccontextmanager
    async def lock(self, spec: ServiceSpec, *, force: bool) -> AsyncIterator[None]:
        """An exclusive ``flock`` for the service (``force`` cannot take a lock a live process
        holds: the kernel releases it when its holder dies)."""
        directory = self.processes.directory(spec.service)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "deploy.lock"
        handle = path.open("a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another opscope process"
                raise DeployRefused(
                    f"{spec.service} in {spec.environment} is being deployed by {holder}; wait "
                    "for it (the lock is released as soon as that process ends)"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(
                f"{operator_identity()} (pid {os.getpid()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})"
            )
            handle.flush()
            yield
        finally:
            handle.close()  # releases the flock

    async def _current_payload(self, spec: ServiceSpec) -> dict[str, Any] | None:
        current = await self.processes.current(spec)
        if current is None:
            return None
        for revision in await self.releases.revisions(spec.release):
            if revision.revision == current.revision:
                return revision.payload
        return None

    async def apply(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Stage ``payload``'s process — unless the current process already runs exactly it."""
        current = await self.processes.current(spec)
        if current is not None and current.running and await self._current_payload(spec) == payload:
            self._staged[spec.service] = None
            return
        revisions = await self.releases.revisions(spec.release)
        number = max((r.revision for r in revisions), default=0)
        self._staged[spec.service] = await self.processes.stage_process(
            spec, payload["process"], number
        )

    async def _probe(self, port: int, path: str) -> tuple[bool, str]:
        url = f"http://{HOST}:{port}{path}"
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return False, f"GET {url}: {type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return True, f"GET {url} answered {response.status_code}"
        return False, f"GET {url} answered {response.status_code}: {response.text.strip()[:200]}"

    async def wait(
        self, spec: ServiceSpec, payload: dict[str, Any], deadline: float, report: Report
    ) -> Verdict:
        """Wait until the staged process answers its health endpoint on its own port; fail at
        once when it exits (with its exit code and the end of its log)."""
        staged = self._staged.get(spec.service)
        path = payload["health"]["path"]
        # A local health check costs a loopback request: look more often than on a cluster.
        poll = min(self.settings.poll_interval.total_seconds(), 0.25)
        while True:
            if staged is None:
                current = await self.processes.current(spec)
                if current is None or not current.running:
                    return Verdict("failed", f"{spec.service} is not running")
                ok, message = await self._probe(payload["port"], path)
            else:
                state = await self.processes.staged(spec)
                if state is None or state.status == "exited":
                    code = None if state is None else state.exit_code
                    tail = "" if state is None else (state.log_tail or "")
                    return Verdict(
                        "failed",
                        f"the new process exited with code {code} before it became healthy",
                        f"last output of {' '.join(payload['process']['argv'])}:\n{tail}".rstrip(),
                    )
                ok, message = await self._probe(staged.port, path)
            report(message, None)
            if ok:
                return Verdict("done", message)
            now = self.clock.time()
            if now >= deadline:
                return Verdict("timeout", f"timed out waiting for health: {message}")
            await self.clock.sleep(min(poll, deadline - now))

    async def verify(self, spec: ServiceSpec, payload: dict[str, Any], deadline: float) -> Verdict:
        """The health endpoint already answered 2xx in :meth:`wait`, on the process that will
        receive traffic; nothing more to check before switching."""
        return Verdict("done", "healthy")

    async def commit(self, spec: ServiceSpec) -> None:
        """Switch the front port to the staged process and stop the old one gracefully."""
        if self._staged.pop(spec.service, None) is not None:
            await self.processes.promote(spec)

    async def abandon(self, spec: ServiceSpec) -> bool:
        """Stop the staged process; ``True`` when the current one kept serving meanwhile."""
        if self._staged.pop(spec.service, None) is not None:
            await self.processes.discard(spec)
        current = await self.processes.current(spec)
        return current is not None and current.running

    async def remove(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Stop the service's processes and supervisor (a failed first install)."""
        await self.processes.stop(spec.service)

    async def changes(self, spec: ServiceSpec, payload: dict[str, Any]) -> list[dict[str, str]]:
        """The process that would start, against the one that runs (JSON, unified diff)."""
        before = await self._current_payload(spec)
        label = f"process/{spec.service}"
        if before == payload:
            return [{"object": label, "change": "none", "diff": ""}]
        old = (
            json.dumps(before, indent=2, sort_keys=True).splitlines(keepends=True) if before else []
        )
        new = json.dumps(payload, indent=2, sort_keys=True).splitlines(keepends=True)
        diff = "".join(
            difflib.unified_diff(
                old,
                new,
                fromfile=f"running/{label}" if before else "/dev/null",
                tofile=f"opscope/{label}",
            )
        )
        return [{"object": label, "change": "update" if before else "create", "diff": diff}]

    async def live(self, spec: ServiceSpec) -> tuple[str, str]:
        """``"running on 127.0.0.1:8000"`` (or ``stopped``, ``restarting``) and pid/uptime."""
        found = {p.service: p for p in await self.processes.status()}
        process = found.get(spec.service)
        if process is None:
            return "not running", ""
        if not process.running:
            return "stopped", process.problem or "supervisor not running"
        current = process.current
        if current is None:
            return f"no process on {process.front}", ""
        if current.status == "backoff":
            return f"restarting on {process.front}", (
                f"exited with code {current.exit_code}; restarts {current.restarts}"
            )
        uptime = process.uptime() or 0.0
        return f"running on {process.front}", (
            f"pid {current.pid}, revision {current.revision}, up {uptime:.0f}s, "
            f"restarts {current.restarts}"
        )
