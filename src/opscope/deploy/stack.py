"""Whole stacks: the backend of an environment, and ``deploy --all`` in ``depends_on`` order.

:func:`deploy_stack` deploys every service of an environment level by level (a service after
everything it depends on), up to ``deploy.parallelism`` services at once within a level. At the
first failure it starts nothing new, lets the running deploys finish, and then — unless told
not to — rolls back the services this run changed, in reverse order, so the stack returns to
where it was (the failed service has already rolled itself back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opscope.clock import Clock
from opscope.config.models import OpscopeConfig
from opscope.deploy.history import current
from opscope.deploy.kube import KubeBackend
from opscope.deploy.kubeapi import KubeAPI, kube_config
from opscope.deploy.local_backend import LocalBackend
from opscope.deploy.rollout import Backend, Deployer, DeployResult
from opscope.deploy.spec import ServiceSpec, environment_config
from opscope.errors import DeployError
from opscope.store.database import Store


@contextlib.asynccontextmanager
async def open_backend(
    config: OpscopeConfig, environment: str, base: Path, *, clock: Clock | None = None
) -> AsyncIterator[Backend]:
    """The backend of ``environment`` (connections or the store closed on exit): Kubernetes
    through the environment's kubeconfig, or local processes under ``<data_dir>/local/<env>``
    with revisions in opscope's store. ``base`` is the directory of the configuration file.
    Raises :class:`~opscope.errors.ConfigError` for an unknown environment or an unusable
    kubeconfig."""
    env = environment_config(config, environment)
    if env.backend == "kubernetes":
        assert env.namespace is not None
        api = KubeAPI(kube_config(env.kubernetes, base), context=env.kubernetes.context)
        try:
            yield KubeBackend(
                api, env.namespace, config.deploy, project=config.project, clock=clock
            )
        finally:
            await api.aclose()
        return
    data_dir = Path(config.data_dir)
    store = await asyncio.to_thread(Store.open, data_dir)
    try:
        yield LocalBackend(
            data_dir / "local" / environment, store, environment, config.deploy, clock=clock
        )
    finally:
        await asyncio.to_thread(store.close)


def dependency_levels(specs: list[ServiceSpec]) -> list[list[ServiceSpec]]:
    """``specs`` grouped into levels: every service comes after all it depends on; within a
    level, configuration order (Kahn's algorithm; cycles are rejected when the config loads)."""
    names = {s.service for s in specs}
    remaining = {s.service: {d for d in s.depends_on if d in names} for s in specs}
    levels: list[list[ServiceSpec]] = []
    done: set[str] = set()
    while remaining:
        ready = [s for s in specs if s.service in remaining and remaining[s.service] <= done]
        if not ready:
            raise DeployError("dependency cycle among: " + ", ".join(sorted(remaining)))
        levels.append(ready)
        for spec in ready:
            del remaining[spec.service]
            done.add(spec.service)
    return levels


@dataclass
class StackResult:
    """The outcome of ``deploy --all``: each service's result in the order they finished,
    the services not attempted, and the rollbacks of services changed before the failure."""

    environment: str
    results: list[DeployResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rollbacks: list[DeployResult] = field(default_factory=list)
    duration: float = 0.0

    @property
    def succeeded(self) -> int:
        """Services deployed or unchanged."""
        return sum(1 for r in self.results if r.exit_code == 0)

    @property
    def failed(self) -> int:
        """Services whose deploy failed or was refused."""
        return sum(1 for r in self.results if r.exit_code != 0)

    @property
    def exit_code(self) -> int:
        """0 when every service succeeded; else the worst code among the failures and the
        stack's rollbacks (3 beats 1: something is left unhealthy)."""
        codes = [r.exit_code for r in self.results + self.rollbacks]
        bad = [c for c in codes if c != 0]
        if not bad:
            return 0
        rollback_failed = any(r.exit_code != 0 for r in self.rollbacks)
        return 3 if rollback_failed or 3 in bad else 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (``--json``), like the seed's: per service, plus counts."""
        return {
            "environment": self.environment,
            "results": [r.to_json() for r in self.results],
            "skipped": self.skipped,
            "stack_rollbacks": [r.to_json() for r in self.rollbacks],
            "success_count": self.succeeded,
            "failure_count": self.failed,
            "duration_seconds": round(self.duration, 3),
            "exit_code": self.exit_code,
        }


async def deploy_stack(
    deployer: Deployer,
    specs: list[ServiceSpec],
    *,
    parallelism: int,
    rollback: bool = True,
    force_unlock: bool = False,
    timeout: float | None = None,
) -> StackResult:
    """Deploy ``specs`` in dependency order (see the module doc). ``rollback`` applies both to
    each service's own automatic rollback and to rolling back the services changed earlier in
    this run when a later one fails."""
    clock = deployer.clock
    started = clock.time()
    result = StackResult(specs[0].environment if specs else "")
    semaphore = asyncio.Semaphore(parallelism)
    failed = False
    changed: list[tuple[ServiceSpec, DeployResult]] = []

    async def one(spec: ServiceSpec) -> None:
        nonlocal failed
        async with semaphore:
            if failed:
                result.skipped.append(spec.service)
                return
            outcome = await deployer.deploy(
                spec, rollback=rollback, force_unlock=force_unlock, timeout=timeout
            )
        result.results.append(outcome)
        if outcome.exit_code != 0:
            failed = True
        elif outcome.changed:
            changed.append((spec, outcome))

    for level in dependency_levels(specs):
        if failed:
            result.skipped += [s.service for s in level]
            continue
        await asyncio.gather(*(one(spec) for spec in level))
    if failed and rollback:
        for spec, outcome in reversed(changed):
            try:
                undone = await deployer.rollback(spec, force_unlock=force_unlock)
            except DeployError:
                # A first install has nothing to go back to; it stays, and says so.
                undone = DeployResult(
                    spec.service,
                    spec.environment,
                    "deployed",
                    "kept: first install, no earlier revision to roll back to",
                    outcome.version,
                    revision=outcome.revision,
                )
            result.rollbacks.append(undone)
    result.duration = clock.time() - started
    return result


async def plan_changes(deployer: Deployer, specs: list[ServiceSpec]) -> list[dict[str, str]]:
    """What deploying ``specs`` would change (``deploy --dry-run``, ``diff``), per object."""
    found: list[dict[str, str]] = []
    for spec in specs:
        backend = deployer.backend
        for change in await backend.changes(spec, backend.payload(spec)):
            found.append({"service": spec.service, **change})
    return found


async def environment_status(deployer: Deployer, specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    """Per service: the current revision (number, status, version) and the live state."""
    rows = []
    for spec in specs:
        revisions = await deployer.history(spec)
        latest = revisions[-1] if revisions else None
        now = current(revisions)
        summary, detail = await deployer.backend.live(spec)
        rows.append(
            {
                "service": spec.service,
                "revision": now.revision if now else None,
                "status": now.status if now else None,
                "version": now.version if now else None,
                "latest_revision": latest.revision if latest else None,
                "latest_status": latest.status if latest else None,
                "configured_version": spec.version,
                "live": summary,
                "detail": detail,
            }
        )
    return rows
