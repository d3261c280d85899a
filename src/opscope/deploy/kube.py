"""The Kubernetes backend: server-side apply, kubectl's rollout rule, health through the API.

One :class:`KubeBackend` serves one environment (one namespace). Locks are
``coordination.k8s.io/v1`` Leases named ``opscope-lock-<release>``; revisions are Secrets
(:mod:`opscope.deploy.history`); health is checked through the API server's service proxy, so
opscope needs no network route into the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from opscope.clock import Clock, SystemClock
from opscope.config.deploy import DeploySettings
from opscope.deploy.history import (
    NAME_LABEL,
    OWNER_LABEL,
    Revision,
    from_secret,
    secret_name,
    to_secret,
)
from opscope.deploy.judgement import (
    POD_TEMPLATE_HASH,
    deployment_status,
    new_replica_set,
    pod_failure,
    recent_events,
)
from opscope.deploy.kubeapi import KubeAPI
from opscope.deploy.manifests import render_manifests
from opscope.deploy.rollout import Report, Verdict, operator_identity
from opscope.deploy.spec import ServiceSpec
from opscope.errors import DeployError, DeployRefused, KubeError

LEASE_PREFIX = "opscope-lock-"
MANAGED_BY = "app.kubernetes.io/managed-by"
#: Metadata the API server maintains; left out of diffs.
_SERVER_FIELDS = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation")


def _stamp(at: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_stamp(text: Any) -> float | None:
    if isinstance(text, datetime):
        return text.timestamp()
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _deployment(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    for obj in manifests:
        if obj.get("kind") == "Deployment":
            return obj
    raise DeployError("the rendered manifests have no Deployment")


class SecretReleaseStore:
    """Revisions as Secrets of type ``opscope.dev/release.v1`` in one namespace."""

    def __init__(self, api: KubeAPI, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    async def revisions(self, release: str) -> list[Revision]:
        """Every revision of ``release`` in the namespace, oldest first (unreadable Secrets
        are skipped)."""
        secrets = await self.api.list(
            "v1", "Secret", self.namespace, labels={OWNER_LABEL: "opscope", NAME_LABEL: release}
        )
        found = []
        for secret in secrets:
            with contextlib.suppress(ValueError, OSError, TypeError, KeyError):
                found.append(from_secret(secret))
        return sorted(found, key=lambda r: r.revision)

    async def save(self, revision: Revision) -> None:
        """Create or update the revision's Secret (server-side apply)."""
        await self.api.apply(to_secret(revision))

    async def delete(self, release: str, revision: int) -> None:
        """Delete the revision's Secret."""
        await self.api.delete("v1", "Secret", secret_name(release, revision), self.namespace)


@dataclass(frozen=True)
class ObjectDiff:
    """The difference between a live object and what applying would make of it."""

    kind: str
    name: str
    change: str  # "create", "update" or "none"
    diff: str


def _comparable(obj: dict[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in _SERVER_FIELDS}
    return {k: v for k, v in {**obj, "metadata": meta}.items() if k != "status"}


class KubeBackend:
    """Deploys to one namespace through one API server (a :class:`~.rollout.Backend`).

    ``project`` is written into the ``app.kubernetes.io/part-of`` label.
    """

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        settings: DeploySettings,
        *,
        project: str,
        clock: Clock | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.settings = settings
        self.project = project
        self.clock = clock or SystemClock()
        self.releases = SecretReleaseStore(api, namespace)
        self.holder = f"{operator_identity()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        #: The Deployment as the last apply returned it, by name: the wait's first look.
        self._applied: dict[str, dict[str, Any]] = {}

    # -- what to deploy -------------------------------------------------------------------------

    def payload(self, spec: ServiceSpec) -> dict[str, Any]:
        """``{"manifests": [...], "health": {"service", "port", "path"}}``."""
        return {
            "manifests": render_manifests(spec, self.project),
            "health": {"service": spec.name, "port": spec.port, "path": spec.health_check},
        }

    async def preflight(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Refuse when the live Deployment's selector differs from the rendered one (immutable
        in ``apps/v1``: the API server would reject the apply after other objects changed) or
        when the Deployment exists but is managed by something other than opscope."""
        wanted = _deployment(payload["manifests"])
        live = await self.api.get(
            "apps/v1", "Deployment", wanted["metadata"]["name"], self.namespace
        )
        if live is None:
            return
        owner = (live.get("metadata", {}).get("labels") or {}).get(MANAGED_BY)
        where = f"{self.namespace}/{wanted['metadata']['name']}"
        if owner != "opscope":
            manager = owner or f"something else (no {MANAGED_BY} label)"
            raise DeployRefused(
                f"Deployment {where} exists and is managed by {manager}, not opscope; "
                "refusing to take it over"
            )
        old = live.get("spec", {}).get("selector")
        new = wanted.get("spec", {}).get("selector")
        if old != new:
            raise DeployRefused(
                f"Deployment {self.namespace}/{wanted['metadata']['name']}: spec.selector would "
                f"change from {_flow(old)} to {_flow(new)}; the selector of an apps/v1 Deployment "
                "is immutable — nothing was applied (delete the Deployment to change it)"
            )

    # -- the lock -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self, spec: ServiceSpec, *, force: bool) -> AsyncIterator[None]:
        """Hold the Lease ``opscope-lock-<release>`` while deploying, renewed every third of
        ``deploy.lock_ttl``. A holder whose Lease was not renewed within its duration is taken
        over; a live one is refused by name unless ``force``."""
        name = LEASE_PREFIX + spec.release
        await self._acquire(name, spec, force=force)
        renewer = asyncio.create_task(self._renew(name))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(DeployError):
                lease = await self.api.get("coordination.k8s.io/v1", "Lease", name, self.namespace)
                if lease and lease.get("spec", {}).get("holderIdentity") == self.holder:
                    await self.api.delete("coordination.k8s.io/v1", "Lease", name, self.namespace)

    def _lease(self, name: str, spec: ServiceSpec, resource_version: str | None) -> dict[str, Any]:
        now = _stamp(self.clock.time())
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {MANAGED_BY: "opscope", NAME_LABEL: spec.release},
        }
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": int(self.settings.lock_ttl.total_seconds()),
                "acquireTime": now,
                "renewTime": now,
            },
        }

    async def _acquire(self, name: str, spec: ServiceSpec, *, force: bool) -> None:
        lease = await self.api.get("coordination.k8s.io/v1", "Lease", name, self.namespace)
        if lease is None:
            try:
                await self.api.create(self._lease(name, spec, None))
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise
                lease = await self.api.get("coordination.k8s.io/v1", "Lease", name, self.namespace)
                if lease is None:
                    raise DeployRefused(
                        f"lock {self.namespace}/{name} changed concurrently"
                    ) from exc
        held = lease.get("spec", {})
        holder = held.get("holderIdentity")
        renewed = _parse_stamp(held.get("renewTime")) or _parse_stamp(held.get("acquireTime"))
        duration = held.get("leaseDurationSeconds") or 0
        now = self.clock.time()
        live = holder and renewed is not None and renewed + duration > now
        if live and not force and holder != self.holder:
            assert renewed is not None
            raise DeployRefused(
                f"{spec.release} in {self.namespace} is being deployed by {holder} (lock renewed "
                f"{now - renewed:.0f}s ago, expires in {renewed + duration - now:.0f}s); wait for "
                "it, or pass --force-unlock if that deploy is dead"
            )
        version = lease.get("metadata", {}).get("resourceVersion")
        try:
            await self.api.replace(self._lease(name, spec, version))
        except KubeError as exc:
            if exc.status == 409:
                raise DeployRefused(
                    f"lock {self.namespace}/{name} was taken by another deploy just now"
                ) from exc
            raise

    async def _renew(self, name: str) -> None:
        interval = self.settings.lock_ttl.total_seconds() / 3
        while True:
            await self.clock.sleep(interval)
            with contextlib.suppress(DeployError):
                lease = await self.api.get("coordination.k8s.io/v1", "Lease", name, self.namespace)
                if lease is None or lease.get("spec", {}).get("holderIdentity") != self.holder:
                    return
                lease["spec"]["renewTime"] = _stamp(self.clock.time())
                await self.api.replace(lease)

    # -- rollout --------------------------------------------------------------------------------

    async def apply(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Server-side apply of every manifest, in the order rendered."""
        self._applied.clear()  # only a complete apply hands its Deployment to the wait
        applied: dict[str, dict[str, Any]] = {}
        for obj in payload["manifests"]:
            try:
                stored = await self.api.apply(obj)
            except KubeError as exc:
                if exc.status == 404 and "namespace" in str(exc).lower():
                    raise DeployError(
                        f"namespace {self.namespace} does not exist: create it "
                        f"(kubectl create namespace {self.namespace})"
                    ) from exc
                raise
            if obj["kind"] == "Deployment":
                applied[obj["metadata"]["name"]] = stored
        self._applied = applied

    async def wait(
        self, spec: ServiceSpec, payload: dict[str, Any], deadline: float, report: Report
    ) -> Verdict:
        """Poll the Deployment every ``deploy.poll_interval`` until kubectl's rule says done,
        failed or paused; fail at once when a pod of the new ReplicaSet waits with a reason in
        :data:`~opscope.deploy.judgement.FAILING_REASONS`; time out at ``deadline``."""
        name = _deployment(payload["manifests"])["metadata"]["name"]
        selector = _deployment(payload["manifests"])["spec"]["selector"]["matchLabels"]
        poll = self.settings.poll_interval.total_seconds()
        last = "waiting for the rollout"
        applied = self._applied.pop(name, None)  # saves a read right after the apply
        async with self._watching(name, selector) as changed:
            while True:
                changed.clear()  # before reading: a change after the read wakes the next round
                verdict, last = await self._judge(name, selector, report, applied)
                applied = None
                if verdict is not None:
                    return verdict
                now = self.clock.time()
                if now >= deadline:
                    return Verdict("timeout", f"timed out waiting for the rollout: {last}")
                await self._pause(changed, min(poll, deadline - now))

    async def _judge(
        self,
        name: str,
        selector: dict[str, str],
        report: Report,
        applied: dict[str, Any] | None = None,
    ) -> tuple[Verdict | None, str]:
        """One look at the rollout: a final verdict, or ``None`` and the status message.
        ``applied`` (the object the apply returned) stands in for a fresh read; the pods are
        then looked at from the next look on (a new ReplicaSet has none yet)."""
        live = applied or await self.api.get("apps/v1", "Deployment", name, self.namespace)
        if live is None:
            message = f"Deployment {self.namespace}/{name} disappeared"
            return Verdict("failed", message), message
        status = deployment_status(live)
        report(status.message, status)
        if status.phase == "done":
            return Verdict("done", status.message), status.message
        if status.phase == "paused":
            return Verdict("paused", status.message), status.message
        if applied is not None and status.phase == "waiting":
            return None, status.message
        failure = await self._failing_pod(live, selector)
        if status.phase == "failed":
            return Verdict("failed", status.message, failure or ""), status.message
        if failure:
            first = failure.splitlines()[0]
            return Verdict("failed", f"rollout cannot succeed: {first}", failure), status.message
        return None, status.message

    @contextlib.asynccontextmanager
    async def _watching(self, name: str, selector: dict[str, str]) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the Deployment or one of its pods changes (two API watches),
        so that a rollout is judged again at once instead of at the next poll; polling stays
        the fallback when watching is not possible."""
        changed = asyncio.Event()
        watches = [
            asyncio.create_task(
                self.api.watch_changes(
                    "apps/v1", "Deployment", self.namespace, changed, fields={"metadata.name": name}
                )
            ),
            asyncio.create_task(
                self.api.watch_changes("v1", "Pod", self.namespace, changed, labels=selector)
            ),
        ]
        try:
            yield changed
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)

    async def _pause(self, changed: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds`` on the injected clock, or less when ``changed`` is set."""
        sleep = asyncio.ensure_future(self.clock.sleep(seconds))
        wake = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({sleep, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            wake.cancel()

    async def _failing_pod(
        self, deployment: dict[str, Any], selector: dict[str, str]
    ) -> str | None:
        replica_sets = await self.api.list("apps/v1", "ReplicaSet", self.namespace, labels=selector)
        new = new_replica_set(deployment, replica_sets)
        if new is None:
            return None
        template_hash = (new.get("metadata", {}).get("labels") or {}).get(POD_TEMPLATE_HASH)
        if template_hash is None:
            return None
        pods = await self.api.list(
            "v1", "Pod", self.namespace, labels={**selector, POD_TEMPLATE_HASH: template_hash}
        )
        failure = pod_failure(pods)
        if failure is None:
            return None
        events = await self.api.list(
            "v1",
            "Event",
            self.namespace,
            fields={"involvedObject.kind": "Pod", "involvedObject.name": failure.pod},
        )
        lines = [f"pod {failure.pod}, container {failure.container}: {failure.state}"]
        lines += [f"  event: {line}" for line in recent_events(events)]
        return "\n".join(lines)

    async def verify(self, spec: ServiceSpec, payload: dict[str, Any], deadline: float) -> Verdict:
        """``GET`` the health path through the API server's service proxy until it answers 2xx
        (retrying every poll interval), or ``deadline``."""
        health = payload["health"]
        poll = self.settings.poll_interval.total_seconds()
        while True:
            try:
                code, body = await self.api.proxy_get(
                    self.namespace, health["service"], health["port"], health["path"]
                )
                if 200 <= code < 300:
                    return Verdict("done", f"GET {health['path']} answered {code}")
                last = f"GET {health['path']} answered {code}: {body.strip()[:200]}"
            except KubeError as exc:
                last = str(exc)
            now = self.clock.time()
            if now >= deadline:
                return Verdict("failed", f"health check failed: {last}")
            await self.clock.sleep(min(poll, deadline - now))

    async def commit(self, spec: ServiceSpec) -> None:
        """Nothing to do: the Deployment controller already switched traffic."""

    async def abandon(self, spec: ServiceSpec) -> bool:
        """A failed rollout stays applied until a rollback re-applies the previous revision."""
        return False

    async def remove(self, spec: ServiceSpec, payload: dict[str, Any]) -> None:
        """Delete the objects of a failed first install, in reverse order."""
        for obj in reversed(payload["manifests"]):
            meta = obj["metadata"]
            await self.api.delete(
                obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")
            )

    # -- diff -----------------------------------------------------------------------------------

    async def diff(self, payload: dict[str, Any]) -> list[ObjectDiff]:
        """For every manifest, the unified diff (YAML) between the live object and the result
        of a server-side dry-run apply of it (``kubectl diff``'s method)."""
        found = []
        for obj in payload["manifests"]:
            meta = obj["metadata"]
            live = await self.api.get(
                obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")
            )
            merged = await self.api.apply(obj, dry_run=True)
            before, after = _comparable(live), _comparable(merged)
            label = f"{obj['kind']}/{meta['name']}"
            if before == after:
                found.append(ObjectDiff(obj["kind"], meta["name"], "none", ""))
                continue
            lines = difflib.unified_diff(
                _yaml(before).splitlines(keepends=True),
                _yaml(after).splitlines(keepends=True),
                fromfile=f"live/{label}" if live else "/dev/null",
                tofile=f"opscope/{label}",
            )
            found.append(
                ObjectDiff(
                    obj["kind"], meta["name"], "update" if live else "create", "".join(lines)
                )
            )
        return found

    async def changes(self, spec: ServiceSpec, payload: dict[str, Any]) -> list[dict[str, str]]:
        """:meth:`diff` as plain dicts."""
        return [
            {"object": f"{d.kind}/{d.name}", "change": d.change, "diff": d.diff}
            for d in await self.diff(payload)
        ]

    async def live(self, spec: ServiceSpec) -> tuple[str, str]:
        """``"3/3 available"`` (or ``absent``, ``paused``) and kubectl's rollout message."""
        deployment = await self.api.get("apps/v1", "Deployment", spec.name, self.namespace)
        if deployment is None:
            return "absent", ""
        status = deployment_status(deployment)
        desired = "?" if status.desired is None else str(status.desired)
        summary = f"{status.available}/{desired} available"
        if status.phase in ("paused", "failed"):
            summary += f", {status.phase}"
        return summary, status.message


def _yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False) if obj else ""


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=True).strip()
