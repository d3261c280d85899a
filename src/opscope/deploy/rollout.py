"""The deploy engine, backend-neutral: plan → lock → apply → wait → verify → record → roll back.

One call of :meth:`Deployer.deploy` takes one release (a service in an environment) from its
current revision to the configured one, the way ``helm upgrade --install --wait
--rollback-on-failure`` does, with three differences: the rollout is judged by kubectl's rule
plus a fail-fast on pods that will never become ready (:mod:`opscope.deploy.judgement`); the
health endpoint is checked before success is declared; and an interrupted or half-finished
previous run is settled instead of blocking the release (Helm's "another operation is in
progress").

Outcomes (:data:`Outcome`) and the CLI's exit codes (:data:`EXIT_CODES`):

=====================  ====  =============================================================
``deployed``             0   the new revision is rolled out and healthy
``unchanged``            0   nothing differed from the deployed revision, which is healthy
``rolled-back``          1   the deploy failed; the previous revision is back and healthy
``refused``              1   refused before applying anything (immutable field, lock held)
``rollback-unhealthy``   3   the deploy failed; the previous revision is applied, not healthy
``failed``               3   the deploy failed and nothing was rolled back
``paused``               3   the Deployment is paused: applied, rollout not verified
=====================  ====  =============================================================
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from opscope.clock import Clock, SystemClock
from opscope.config.deploy import DeploySettings
from opscope.deploy.history import ReleaseStore, Revision, current, to_prune
from opscope.deploy.judgement import RolloutStatus
from opscope.deploy.spec import ServiceSpec
from opscope.durations import format_duration
from opscope.errors import DeployError, DeployRefused

Outcome = Literal[
    "deployed", "unchanged", "rolled-back", "refused", "rollback-unhealthy", "failed", "paused"
]
EXIT_CODES: dict[str, int] = {
    "deployed": 0,
    "unchanged": 0,
    "rolled-back": 1,
    "refused": 1,
    "rollback-unhealthy": 3,
    "failed": 3,
    "paused": 3,
}


@dataclass(frozen=True)
class Progress:
    """One step of a deploy, for live display: ``phase`` is ``lock``, ``apply``, ``wait``,
    ``verify``, ``rollback``, ``warning`` or the final outcome; ``status`` carries the replica
    counters while waiting on Kubernetes; ``elapsed`` is seconds since the deploy started."""

    service: str
    environment: str
    phase: str
    message: str
    elapsed: float
    status: RolloutStatus | None = None


ProgressCallback = Callable[[Progress], None]
Report = Callable[[str, RolloutStatus | None], None]


@dataclass(frozen=True)
class Verdict:
    """How waiting or verifying ended: ``done``, ``failed``, ``paused`` or ``timeout``;
    ``detail`` holds extra lines (a failing container's state and recent events)."""

    phase: Literal["done", "failed", "paused", "timeout"]
    message: str
    detail: str = ""


class Backend(Protocol):
    """What a deploy target provides to the engine."""

    @property
    def releases(self) -> ReleaseStore:
        """Where this backend keeps revisions."""

    def payload(self, spec: ServiceSpec) -> dict[str, Any]:
        """What to deploy for ``spec`` (stored in the revision; applied by :meth:`apply`). It has
        a ``health`` entry ``{"path": …, "port": …}`` used by :meth:`verify`."""

    async def preflight(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Refuse (:class:`DeployRefused`) before anything is applied, e.g. when an immutable
        field would change."""

    def lock(self, spec: ServiceSpec, *, force: bool) -> AbstractAsyncContextManager[None]:
        """Hold the release's deploy lock; :class:`DeployRefused` naming a live holder."""

    async def apply(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Start rolling out ``payload``."""

    async def wait(
        self, spec: ServiceSpec, payload: dict[str, Any], deadline: float, report: Report
    ) -> Verdict:
        """Wait until the rollout is done, failed or paused, or ``deadline`` (clock time)."""

    async def verify(self, spec: ServiceSpec, payload: dict[str, Any], deadline: float) -> Verdict:
        """Check the health endpoint until it answers 2xx, or ``deadline``."""

    async def commit(self, spec: ServiceSpec) -> None:
        """Make a verified rollout current (locally: switch traffic, stop the old process)."""

    async def abandon(self, spec: ServiceSpec) -> bool:
        """Drop a failed rollout; ``True`` when the previous revision kept serving throughout,
        so that nothing needs to be re-applied (local processes), ``False`` otherwise."""

    async def remove(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Delete what a failed first install applied (there is nothing to roll back to)."""

    async def changes(self, spec: ServiceSpec, payload: dict[str, Any]) -> list[dict[str, str]]:
        """What deploying ``payload`` would change, without changing anything: one entry per
        object, ``{"object", "change": "create"|"update"|"none", "diff"}``."""

    async def live(self, spec: ServiceSpec) -> tuple[str, str]:
        """The live state of ``spec`` in a few words, and a longer detail."""


@dataclass
class DeployResult:
    """How one release's deploy or rollback ended.

    ``revision`` is the revision this run recorded for the configured version (``None`` when
    none was: refused or unchanged); ``rollback_revision`` the one an automatic rollback
    recorded and ``rolled_back_to`` the revision it restored. Times in seconds.
    """

    service: str
    environment: str
    outcome: Outcome
    message: str
    version: str
    revision: int | None = None
    rolled_back_to: int | None = None
    rollback_revision: int | None = None
    detail: str = ""
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this outcome (:data:`EXIT_CODES`)."""
        return EXIT_CODES[self.outcome]

    @property
    def changed(self) -> bool:
        """Whether this run changed what runs (so that a failed stack deploy rolls it back)."""
        return self.outcome == "deployed"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (``--json``)."""
        return {
            "service": self.service,
            "environment": self.environment,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "detail": self.detail,
            "version": self.version,
            "revision": self.revision,
            "rolled_back_to": self.rolled_back_to,
            "rollback_revision": self.rollback_revision,
            "duration_seconds": round(self.duration, 3),
            "warnings": self.warnings,
        }


def operator_identity() -> str:
    """``user@host`` of whoever runs opscope (recorded in revisions and locks)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class Deployer:
    """Deploys, rolls back and lists revisions of releases on one backend.

    ``clock`` provides deadlines and timestamps; ``progress`` receives :class:`Progress` events.
    """

    def __init__(
        self,
        backend: Backend,
        settings: DeploySettings,
        *,
        clock: Clock | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.clock = clock or SystemClock()
        self._progress = progress or (lambda event: None)
        self.identity = operator_identity()

    async def history(self, spec: ServiceSpec) -> list[Revision]:
        """Every kept revision of ``spec``'s release, oldest first."""
        return await self.backend.releases.revisions(spec.release)

    async def deploy(
        self,
        spec: ServiceSpec,
        *,
        rollback: bool | None = None,
        force_unlock: bool = False,
        timeout: float | None = None,
    ) -> DeployResult:
        """Deploy the configured version of ``spec``; on failure roll back to the current
        revision unless ``rollback`` is false (default: ``deploy.rollback``). ``timeout`` (s)
        replaces ``deploy.timeout``. Raises :class:`DeployError` for failures of the deploy
        machinery itself (API unreachable, store errors); rollout failures are outcomes."""
        payload = self.backend.payload(spec)
        return await self._run(
            spec,
            payload,
            version=spec.version,
            rollback=self.settings.rollback if rollback is None else rollback,
            force_unlock=force_unlock,
            timeout=self.settings.timeout.total_seconds() if timeout is None else timeout,
            rollback_of=None,
        )

    async def rollback(
        self,
        spec: ServiceSpec,
        *,
        to: int | None = None,
        force_unlock: bool = False,
        timeout: float | None = None,
    ) -> DeployResult:
        """Deploy the manifests of revision ``to`` (default: the newest revision before the
        current one that was deployed once) as a new revision. Raises :class:`DeployError`
        when there is no such revision."""
        revisions = await self.history(spec)
        now = current(revisions)
        if to is None:
            before = [
                r
                for r in revisions
                if r.status in ("deployed", "superseded")
                and (now is None or r.revision < now.revision)
            ]
            if not before:
                raise DeployError(
                    f"{spec.release} in {spec.environment}: no earlier deployed revision to "
                    "roll back to (see: opscope history)"
                )
            target = before[-1]
        else:
            found = [r for r in revisions if r.revision == to]
            if not found:
                kept = ", ".join(str(r.revision) for r in revisions) or "none"
                raise DeployError(
                    f"{spec.release} in {spec.environment}: no revision {to} (kept: {kept})"
                )
            target = found[0]
        return await self._run(
            spec,
            target.payload,
            version=target.version,
            rollback=False,
            force_unlock=force_unlock,
            timeout=self.settings.timeout.total_seconds() if timeout is None else timeout,
            rollback_of=target.revision,
        )

    def _emit(
        self,
        spec: ServiceSpec,
        started: float,
        phase: str,
        message: str,
        status: RolloutStatus | None = None,
    ) -> None:
        self._progress(
            Progress(
                spec.service, spec.environment, phase, message, self.clock.time() - started, status
            )
        )

    async def _run(
        self,
        spec: ServiceSpec,
        payload: dict[str, Any],
        *,
        version: str,
        rollback: bool,
        force_unlock: bool,
        timeout: float,
        rollback_of: int | None,
    ) -> DeployResult:
        started = self.clock.time()
        result = DeployResult(spec.service, spec.environment, "failed", "", version)
        if spec.backend == "kubernetes" and timeout < spec.progress_deadline_seconds:
            warning = (
                f"timeout {format_duration_s(timeout)} is shorter than the Deployment's "
                f"progressDeadlineSeconds ({spec.progress_deadline_seconds}s): opscope gives up "
                "before Kubernetes would report the rollout as failed"
            )
            result.warnings.append(warning)
            self._emit(spec, started, "warning", warning)
        try:
            await self.backend.preflight(spec, payload)
            self._emit(spec, started, "lock", "taking the deploy lock")
            async with self.backend.lock(spec, force=force_unlock):
                await self._locked(spec, payload, result, started, rollback, timeout, rollback_of)
        except DeployRefused as exc:
            result.outcome, result.message = "refused", str(exc)
        result.duration = self.clock.time() - started
        self._emit(spec, started, result.outcome, result.message)
        return result

    async def _settle(self, revisions: list[Revision]) -> list[Revision]:
        """Mark revisions left ``pending`` by an interrupted run as failed (we hold the lock,
        so no one is working on them)."""
        settled = []
        for revision in revisions:
            if revision.status != "pending":
                settled.append(revision)
                continue
            interrupted = revision.with_status(
                "failed", f"{revision.description} (interrupted)", at=self.clock.time()
            )
            await self.backend.releases.save(interrupted)
            settled.append(interrupted)
        return settled

    async def _locked(
        self,
        spec: ServiceSpec,
        payload: dict[str, Any],
        result: DeployResult,
        started: float,
        rollback: bool,
        timeout: float,
        rollback_of: int | None,
    ) -> None:
        releases = self.backend.releases
        revisions = await self._settle(await releases.revisions(spec.release))
        previous = current(revisions)
        deadline = started + timeout
        unchanged = (
            rollback_of is None
            and previous is not None
            and previous.status == "deployed"
            and previous.payload == payload
        )
        if unchanged:
            assert previous is not None
            self._emit(spec, started, "apply", f"revision {previous.revision} is up to date")
            verdict = await self._rollout(spec, payload, deadline, started)
            if verdict.phase == "done":
                await self.backend.commit(spec)
                result.outcome, result.revision = "unchanged", previous.revision
                result.message = f"unchanged: revision {previous.revision} is deployed and healthy"
            else:
                await self.backend.abandon(spec)
                result.outcome, result.message = _unverified(verdict)
                result.detail = verdict.detail
            return

        number = max((r.revision for r in revisions), default=0) + 1
        target = next((r for r in revisions if r.revision == rollback_of), None)
        kind = "Rollback" if rollback_of is not None else ("Upgrade" if revisions else "Install")
        revision = Revision(
            release=spec.release,
            environment=spec.environment,
            namespace=spec.namespace,
            revision=number,
            status="pending",
            version=result.version,
            image=(spec.image if spec.backend == "kubernetes" else None)
            if target is None
            else target.image,
            config_digest=spec.digest() if target is None else target.config_digest,
            payload=payload,
            description=(
                f"Rollback to {rollback_of}" if rollback_of is not None else f"{kind} in progress"
            ),
            created_at=self.clock.time(),
            updated_at=self.clock.time(),
            rollback_of=rollback_of,
            deployed_by=self.identity,
        )
        await releases.save(revision)
        result.revision = number
        self._emit(spec, started, "apply", f"applying revision {number} ({result.version})")
        verdict = await self._rollout(spec, payload, deadline, started)
        if verdict.phase == "done":
            await self.backend.commit(spec)
            done = f"{revision.description} complete" if target else f"{kind} complete"
            current_revisions = await self._make_current(
                revisions, revision.with_status("deployed", done, at=self.clock.time())
            )
            result.outcome, result.message = "deployed", done
            await self._prune(spec.release, current_revisions)
            return
        result.detail = verdict.detail
        if verdict.phase == "paused":
            await releases.save(
                revision.with_status("failed", verdict.message, at=self.clock.time())
            )
            result.outcome, result.message = "paused", verdict.message
            return
        failure = verdict.message
        self._emit(spec, started, "failed", failure)
        if not rollback:
            await self.backend.abandon(spec)
            await releases.save(revision.with_status("failed", failure, at=self.clock.time()))
            result.outcome, result.message = "failed", f"{failure}; not rolled back"
            return
        if await self.backend.abandon(spec):
            kept = f"revision {previous.revision}" if previous else "the previous version"
            text = f"{failure}; not switched to, {kept} kept serving"
            await releases.save(revision.with_status("rolled-back", text, at=self.clock.time()))
            result.outcome, result.message = "rolled-back", text
            result.rolled_back_to = previous.revision if previous else None
            return
        if previous is None:
            self._emit(spec, started, "rollback", "removing the failed first install")
            await self.backend.remove(spec, payload)
            text = f"{failure}; first install removed"
            await releases.save(revision.with_status("rolled-back", text, at=self.clock.time()))
            result.outcome, result.message = "rolled-back", text
            return
        await self._auto_rollback(spec, revision, previous, failure, result, started)

    async def _auto_rollback(
        self,
        spec: ServiceSpec,
        failed: Revision,
        previous: Revision,
        failure: str,
        result: DeployResult,
        started: float,
    ) -> None:
        """Re-apply ``previous`` as a new revision within ``deploy.rollback_timeout``."""
        releases = self.backend.releases
        number = failed.revision + 1
        self._emit(
            spec, started, "rollback", f"rolling back to revision {previous.revision} ({number})"
        )
        restoring = Revision(
            release=previous.release,
            environment=previous.environment,
            namespace=previous.namespace,
            revision=number,
            status="pending",
            version=previous.version,
            image=previous.image,
            config_digest=previous.config_digest,
            payload=previous.payload,
            description=f"Rollback to {previous.revision}",
            created_at=self.clock.time(),
            updated_at=self.clock.time(),
            rollback_of=previous.revision,
            deployed_by=self.identity,
        )
        await releases.save(restoring)
        result.rolled_back_to, result.rollback_revision = previous.revision, number
        deadline = self.clock.time() + self.settings.rollback_timeout.total_seconds()
        verdict = await self._rollout(spec, previous.payload, deadline, started, phase="rollback")
        if verdict.phase == "done":
            await self.backend.commit(spec)
            text = f"{failure}; rolled back to revision {previous.revision} (revision {number})"
            await releases.save(failed.with_status("rolled-back", text, at=self.clock.time()))
            revisions = await releases.revisions(spec.release)
            kept = await self._make_current(
                revisions,
                restoring.with_status(
                    "deployed", f"Rollback to {previous.revision} complete", at=self.clock.time()
                ),
            )
            result.outcome, result.message = "rolled-back", text
            await self._prune(spec.release, kept)
            return
        await releases.save(failed.with_status("failed", failure, at=self.clock.time()))
        text = f"Rollback to {previous.revision} applied, not yet healthy: {verdict.message}"
        await releases.save(restoring.with_status("pending", text, at=self.clock.time()))
        result.outcome = "rollback-unhealthy"
        result.message = f"{failure}; rollback applied, not yet healthy: {verdict.message}"
        result.detail = "\n".join(x for x in (result.detail, verdict.detail) if x)

    async def _rollout(
        self,
        spec: ServiceSpec,
        payload: dict[str, Any],
        deadline: float,
        started: float,
        *,
        phase: str = "wait",
    ) -> Verdict:
        """Apply, wait for the rollout, then verify health; bounded by ``deadline``. A failure
        of the machinery (API errors) is a failed verdict, so that it is recorded and rolled
        back like any other."""

        def report(message: str, status: RolloutStatus | None) -> None:
            self._emit(spec, started, phase, message, status)

        try:
            await self.backend.apply(spec, payload)
            return await self._wait_and_verify(spec, payload, deadline, started, phase, report)
        except DeployRefused:
            raise
        except DeployError as exc:
            return Verdict("failed", str(exc))

    async def _wait_and_verify(
        self,
        spec: ServiceSpec,
        payload: dict[str, Any],
        deadline: float,
        started: float,
        phase: str,
        report: Report,
    ) -> Verdict:
        verdict = await self.backend.wait(spec, payload, deadline, report)
        if verdict.phase != "done":
            return verdict
        health = payload.get("health") or {}
        self._emit(
            spec,
            started,
            "verify" if phase == "wait" else phase,
            f"checking {health.get('path', 'health')}",
        )
        verify_deadline = min(
            deadline, self.clock.time() + self.settings.health_timeout.total_seconds()
        )
        return await self.backend.verify(spec, payload, verify_deadline)

    async def _make_current(self, revisions: list[Revision], deployed: Revision) -> list[Revision]:
        """Save ``deployed`` and mark every other ``deployed`` revision ``superseded``; returns
        the release's revisions as they now are (we hold the lock: no one else writes them)."""
        now: list[Revision] = []
        for other in revisions:
            if other.revision == deployed.revision:
                continue
            kept = other
            if other.status == "deployed":
                kept = other.with_status("superseded", other.description, at=self.clock.time())
                await self.backend.releases.save(kept)
            now.append(kept)
        await self.backend.releases.save(deployed)
        return sorted([*now, deployed], key=lambda r: r.revision)

    async def _prune(self, release: str, revisions: list[Revision]) -> None:
        for old in to_prune(revisions, self.settings.history_max):
            await self.backend.releases.delete(release, old.revision)


def _unverified(verdict: Verdict) -> tuple[Outcome, str]:
    if verdict.phase == "paused":
        return "paused", verdict.message
    return "failed", f"the deployed revision is not healthy: {verdict.message}"


def format_duration_s(seconds: float) -> str:
    """Seconds in Prometheus duration notation (``90`` → ``1m30s``)."""
    return format_duration(timedelta(seconds=seconds))
