"""Contract tests of the Kubernetes backend against the kmock-based API emulator.

The test plays the Deployment controller (``Controller``): it creates ReplicaSets and pods and
PATCHes statuses the way the real controller reports them, and asserts what opscope concludes
at each step. Expected outcomes come from kubectl's rollout rule and Helm's history model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opscope.config import parse_config
from opscope.config.models import OpscopeConfig
from opscope.deploy.history import from_secret
from opscope.deploy.rollout import Deployer, DeployResult, Progress
from opscope.deploy.spec import ServiceSpec, service_spec
from opscope.deploy.stack import open_backend
from tests.deploy.cluster import Controller, RunningCluster, deployment_path

NS = "shop-staging"

CONFIG = """
project: shop
environments:
  staging:
    namespace: shop-staging
    replicas: 2
    resources: {cpu: 100m, memory: 128Mi}
    kubernetes: {kubeconfig: kubeconfig, context: emulator}
services:
  web: {image: "example/web:1.0.0", port: 8080, health_check: /healthz}
  api: {image: "example/api:1.0.0", port: 9090, depends_on: [web]}
  scaled:
    image: "example/scaled:1.0.0"
    port: 7070
    autoscaling: {min_replicas: 2, max_replicas: 5}
deploy:
  poll_interval: 20ms
  timeout: 20s
  health_timeout: 2s
  rollback_timeout: 10s
  lock_ttl: 15m
"""


@dataclass
class Kube:
    cluster: RunningCluster
    controller: Controller
    config: OpscopeConfig
    base: Path
    events: list[Progress] = field(default_factory=list)

    def spec(
        self, service: str = "web", version: str | None = None, replicas: int | None = None
    ) -> ServiceSpec:
        spec = service_spec(self.config, "staging", service, self.base)
        if replicas is not None:
            spec = dataclasses.replace(spec, replicas=replicas)
        if version is not None:
            image = spec.image.rsplit(":", 1)[0] + ":" + version if spec.image else None
            spec = dataclasses.replace(spec, image=image, version=version)
        return spec

    async def run(self, make: Callable[[Deployer], Any]) -> Any:
        async with open_backend(self.config, "staging", self.base) as backend:
            deployer = Deployer(backend, self.config.deploy, progress=self.events.append)
            return await make(deployer)

    def start(self, make: Callable[[Deployer], Any]) -> asyncio.Task[Any]:
        return asyncio.create_task(self.run(make))

    def deploy(self, spec: ServiceSpec, **kwargs: Any) -> asyncio.Task[DeployResult]:
        return self.start(lambda d: d.deploy(spec, **kwargs))

    def deployment(self, name: str = "web") -> dict[str, Any] | None:
        return self.cluster.get(deployment_path(NS, name))

    def revisions(self, release: str = "web") -> list[tuple[int, str, str]]:
        secrets = self.cluster.list(
            f"/api/v1/namespaces/{NS}/secrets", labelSelector=f"owner=opscope,name={release}"
        )
        found = [from_secret(s) for s in secrets]
        return [(r.revision, r.status, r.version) for r in sorted(found, key=lambda r: r.revision)]

    def saw(self, text: str) -> bool:
        return any(text in e.message for e in self.events)

    async def roll(self, name: str, mode: str = "ready", generation: int | None = None) -> None:
        """Play the controller once the Deployment exists (at ``generation`` if given)."""
        await until(
            lambda: (
                (d := self.deployment(name)) is not None
                and (generation is None or d["metadata"]["generation"] >= generation)
            ),
            f"Deployment {name} at generation {generation}",
        )
        await asyncio.to_thread(self.controller.roll, NS, name, mode)

    async def deploy_ready(self, spec: ServiceSpec) -> DeployResult:
        """Deploy ``spec`` with a controller that rolls it out at once."""
        before = self.deployment(spec.name)
        generation = (before["metadata"]["generation"] + 1) if before else 1
        task = self.deploy(spec)
        await self.roll(spec.name, "ready", generation)
        return await asyncio.wait_for(task, 10)


async def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    cluster = RunningCluster()
    try:
        cluster.kubeconfig(tmp_path / "kubeconfig")
        loaded = parse_config(CONFIG, filename=str(tmp_path / "opscope.yaml"), environ={})
        yield Kube(cluster, Controller(cluster), loaded.config, tmp_path)
    finally:
        cluster.stop()


async def test_first_deploy_records_revision_1_deployed(kube: Kube) -> None:
    result = await kube.deploy_ready(kube.spec())
    assert (result.outcome, result.exit_code, result.revision) == ("deployed", 0, 1)
    assert kube.revisions() == [(1, "deployed", "1.0.0")]
    live = kube.deployment()
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1.0.0"
    # the deploy lock is released
    assert (
        kube.cluster.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/opscope-lock-web")
        is None
    )


async def test_new_generation_not_yet_observed_is_not_done(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0"))
    await kube.deploy_ready(kube.spec(version="1.1.0"))
    task = kube.deploy(kube.spec(version="1.2.0"))
    await until(lambda: kube.deployment()["metadata"]["generation"] == 3, "generation 3")
    # The controller has not observed generation 3 yet, but every counter equals replicas.
    kube.controller.set_status(
        NS,
        "web",
        observedGeneration=2,
        replicas=2,
        updatedReplicas=2,
        readyReplicas=2,
        availableReplicas=2,
    )
    await until(lambda: kube.saw("generation 3, observed 2"), "the not-observed message")
    await asyncio.sleep(0.2)  # several polls
    assert not task.done()
    await asyncio.to_thread(kube.controller.roll, NS, "web", "ready")
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.revision) == ("deployed", 3)
    assert kube.revisions() == [
        (1, "superseded", "1.0.0"),
        (2, "superseded", "1.1.0"),
        (3, "deployed", "1.2.0"),
    ]


async def test_new_pod_never_available_waits_then_deadline_fails_and_rolls_back(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0", replicas=1))
    task = kube.deploy(kube.spec(version="2.0.0", replicas=1))
    await until(lambda: kube.deployment()["metadata"]["generation"] == 2, "generation 2")
    # replicas 1 with maxUnavailable 1: the old pod is gone, the new one never becomes available
    kube.controller.set_status(
        NS,
        "web",
        observedGeneration=2,
        replicas=1,
        updatedReplicas=1,
        readyReplicas=0,
        availableReplicas=0,
        unavailableReplicas=1,
    )
    await until(lambda: kube.saw("0 of 1 updated replicas are available"), "the waiting message")
    await asyncio.sleep(0.2)
    assert not task.done()
    await asyncio.to_thread(kube.controller.deadline_exceeded, NS, "web")
    # the rollback re-applies revision 1 (generation 3); the controller rolls it out
    await kube.roll("web", "ready", generation=3)
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.exit_code) == ("rolled-back", 1)
    assert "exceeded its progress deadline" in result.message
    assert (result.rolled_back_to, result.rollback_revision) == (1, 3)
    assert kube.revisions() == [
        (1, "superseded", "1.0.0"),
        (2, "rolled-back", "2.0.0"),
        (3, "deployed", "1.0.0"),
    ]
    live = kube.deployment()
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1.0.0"


async def test_four_updated_three_available_is_not_done(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0", replicas=4))
    task = kube.deploy(kube.spec(version="1.1.0", replicas=4))
    await until(lambda: kube.deployment()["metadata"]["generation"] == 2, "generation 2")
    await asyncio.to_thread(
        kube.controller.set_status,
        NS,
        "web",
        observedGeneration=2,
        replicas=4,
        updatedReplicas=4,
        readyReplicas=3,
        availableReplicas=3,
    )
    await until(lambda: kube.saw("3 of 4 updated replicas are available"), "the waiting message")
    await asyncio.sleep(0.2)
    assert not task.done()
    await asyncio.to_thread(kube.controller.roll, NS, "web", "ready")
    result = await asyncio.wait_for(task, 10)
    assert result.outcome == "deployed"


async def test_crash_looping_new_pod_fails_at_the_next_poll_and_rolls_back(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0"))
    task = kube.deploy(kube.spec(version="2.0.0-bad"))
    await until(lambda: kube.deployment()["metadata"]["generation"] == 2, "generation 2")
    started = time.monotonic()
    # CrashLoopBackOff with 3 restarts; no deadline condition on the Deployment yet
    await asyncio.to_thread(kube.controller.roll, NS, "web", "crashloop")
    await until(lambda: kube.saw("CrashLoopBackOff"), "the crash to be noticed", timeout=2)
    noticed = time.monotonic() - started
    await kube.roll("web", "ready", generation=3)
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.exit_code, result.rolled_back_to) == ("rolled-back", 1, 1)
    assert "CrashLoopBackOff" in result.message
    assert "restarts 3" in result.detail and "last exit code 1" in result.detail
    assert "BackOff: Back-off restarting failed container web" in result.detail
    assert noticed < 1.0  # poll interval 20 ms: long before any progress deadline
    assert [r[:2] for r in kube.revisions()] == [
        (1, "superseded"),
        (2, "rolled-back"),
        (3, "deployed"),
    ]


async def test_paused_deployment_is_reported_and_the_command_ends(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0"))
    kube.cluster.patch(deployment_path(NS, "web"), {"spec": {"paused": True}})
    result = await asyncio.wait_for(kube.deploy(kube.spec(version="1.1.0")), 10)
    assert (result.outcome, result.exit_code) == ("paused", 3)
    assert "paused" in result.message
    assert kube.revisions()[-1][:2] == (2, "failed")
    # not rolled back: the paused Deployment keeps the applied template
    live = kube.deployment()
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1.1.0"


async def test_selector_change_is_refused_and_nothing_is_applied(kube: Kube) -> None:
    # A Deployment created by an older setup, with a different (immutable) selector.
    kube.cluster.create(
        f"/apis/apps/v1/namespaces/{NS}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": NS,
                "labels": {"app.kubernetes.io/managed-by": "opscope"},
            },
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "x:0"}]},
                },
            },
        },
    )
    writes_before = len(kube.cluster.cluster.writes)
    result = await asyncio.wait_for(kube.deploy(kube.spec()), 10)
    assert (result.outcome, result.exit_code) == ("refused", 1)
    assert "spec.selector" in result.message and "immutable" in result.message
    assert kube.cluster.cluster.writes[writes_before:] == []
    assert kube.revisions() == []


async def test_autoscaled_service_never_sets_replicas(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec("scaled"))
    applied = [
        body
        for method, path, _, ctype, body in kube.cluster.cluster.writes
        if method == "PATCH" and "apply-patch" in ctype and path.endswith("/deployments/scaled")
    ]
    assert applied and all("replicas" not in body["spec"] for body in applied)
    hpa = kube.cluster.get(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/scaled")
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)


def _lease(holder: str, renewed_seconds_ago: float) -> dict[str, Any]:
    stamp = time.strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - renewed_seconds_ago)
    )
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "opscope-lock-web", "namespace": NS},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 900,
            "acquireTime": stamp,
            "renewTime": stamp,
        },
    }


async def test_a_lease_whose_holder_expired_is_taken_over(kube: Kube) -> None:
    kube.cluster.create(
        f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        _lease("alice@laptop/4242/dead", renewed_seconds_ago=3600),
    )
    result = await kube.deploy_ready(kube.spec())
    assert result.outcome == "deployed"
    assert (
        kube.cluster.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/opscope-lock-web")
        is None
    )


async def test_a_live_lease_holder_is_refused_by_name_and_force_unlock_takes_it(kube: Kube) -> None:
    kube.cluster.create(
        f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        _lease("alice@laptop/4242/live", renewed_seconds_ago=10),
    )
    writes_before = len(kube.cluster.cluster.writes)
    result = await asyncio.wait_for(kube.deploy(kube.spec()), 10)
    assert (result.outcome, result.exit_code) == ("refused", 1)
    assert "alice@laptop/4242/live" in result.message and "--force-unlock" in result.message
    assert not [w for w in kube.cluster.cluster.writes[writes_before:] if "deployments" in w[1]]
    task = kube.deploy(kube.spec(), force_unlock=True)
    await kube.roll("web", "ready", generation=1)
    assert (await asyncio.wait_for(task, 10)).outcome == "deployed"


async def test_rollback_to_n_restores_exactly_n_manifests_as_a_new_revision(kube: Kube) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await kube.deploy_ready(kube.spec(version=version))

    async def history(d: Deployer) -> Any:
        return await d.history(kube.spec())

    first = (await kube.run(history))[0]
    writes_before = len(kube.cluster.cluster.writes)
    task = kube.start(lambda d: d.rollback(kube.spec(), to=1))
    await kube.roll("web", "ready", generation=4)
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.revision) == ("deployed", 4)
    applied = [
        body
        for method, path, _, ctype, body in kube.cluster.cluster.writes[writes_before:]
        if method == "PATCH"
        and "apply-patch" in ctype
        and "/secrets/" not in path
        and "/leases/" not in path
    ]
    assert applied == first.payload["manifests"]
    assert kube.revisions() == [
        (1, "superseded", "1.0.0"),
        (2, "superseded", "1.1.0"),
        (3, "superseded", "1.2.0"),
        (4, "deployed", "1.0.0"),
    ]
    fourth = (await kube.run(history))[-1]
    assert (fourth.rollback_of, fourth.description) == (1, "Rollback to 1 complete")


async def test_failing_health_check_fails_the_deploy_and_rolls_back(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0"))
    kube.cluster.cluster.health[(NS, "web")] = (503, '{"status":"database unreachable"}')
    task = kube.deploy(kube.spec(version="1.1.0"))
    await kube.roll("web", "ready", generation=2)
    await until(lambda: kube.saw("health check failed"), "the health check to fail")
    kube.cluster.cluster.health.pop((NS, "web"))
    await kube.roll("web", "ready", generation=3)
    result = await asyncio.wait_for(task, 10)
    assert result.outcome == "rolled-back"
    assert (
        "GET /healthz answered 503" in result.message and "database unreachable" in result.message
    )


async def test_unhealthy_rollback_is_its_own_state_and_a_later_run_resumes(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec(version="1.0.0"))
    kube.config = kube.config.model_copy(
        update={"deploy": kube.config.deploy.model_copy(update={"rollback_timeout": _td(0.5)})}
    )
    task = kube.deploy(kube.spec(version="2.0.0"))
    await kube.roll("web", "crashloop", generation=2)
    await kube.roll("web", "unavailable", generation=3)  # the rollback does not become healthy
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.exit_code) == ("rollback-unhealthy", 3)
    assert "rollback applied, not yet healthy" in result.message
    assert kube.revisions() == [
        (1, "deployed", "1.0.0"),
        (2, "failed", "2.0.0"),
        (3, "pending", "1.0.0"),
    ]
    # A later run is not blocked by the pending revision: it settles it and deploys.
    later = await kube.deploy_ready(kube.spec(version="2.0.1"))
    assert (later.outcome, later.revision) == ("deployed", 4)
    assert kube.revisions() == [
        (1, "superseded", "1.0.0"),
        (2, "failed", "2.0.0"),
        (3, "failed", "1.0.0"),
        (4, "deployed", "2.0.1"),
    ]


async def test_failed_first_install_is_removed(kube: Kube) -> None:
    task = kube.deploy(kube.spec())
    await kube.roll("web", "imagepull", generation=1)
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.exit_code) == ("rolled-back", 1)
    assert "ImagePullBackOff" in result.message and "first install removed" in result.message
    assert kube.deployment() is None
    assert kube.cluster.get(f"/api/v1/namespaces/{NS}/services/web") is None
    assert kube.revisions() == [(1, "rolled-back", "1.0.0")]


async def test_history_keeps_history_max_but_never_the_deployed_revision(kube: Kube) -> None:
    kube.config = kube.config.model_copy(
        update={"deploy": kube.config.deploy.model_copy(update={"history_max": 3})}
    )
    for minor in range(5):
        await kube.deploy_ready(kube.spec(version=f"1.{minor}.0"))
    assert [r[0] for r in kube.revisions()] == [3, 4, 5]
    assert kube.revisions()[-1][1] == "deployed"


async def test_unchanged_deploy_records_no_revision(kube: Kube) -> None:
    await kube.deploy_ready(kube.spec())
    result = await asyncio.wait_for(kube.deploy(kube.spec()), 10)
    assert (result.outcome, result.exit_code, result.revision) == ("unchanged", 0, 1)
    assert kube.revisions() == [(1, "deployed", "1.0.0")]


def _td(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


@pytest.fixture
def slow_polling(tmp_path: Path) -> Iterator[Kube]:
    """The emulator with a poll interval of one hour: only the API watches can move a wait."""
    cluster = RunningCluster()
    try:
        cluster.kubeconfig(tmp_path / "kubeconfig")
        text = CONFIG.replace("poll_interval: 20ms", "poll_interval: 1h").replace(
            "timeout: 20s", "timeout: 2h"
        )
        loaded = parse_config(text, filename=str(tmp_path / "opscope.yaml"), environ={})
        yield Kube(cluster, Controller(cluster), loaded.config, tmp_path)
    finally:
        cluster.stop()


async def test_the_wait_follows_watch_events_not_only_the_poll_interval(
    slow_polling: Kube,
) -> None:
    # As kubectl rollout status: a status change ends the wait at once; with a poll interval
    # of one hour, polling alone would keep these deploys waiting past the test's timeout.
    kube = slow_polling
    first = await kube.deploy_ready(kube.spec(version="1.0.0"))
    assert (first.outcome, first.revision) == ("deployed", 1)
    task = kube.deploy(kube.spec(version="2.0.0-bad"))
    await kube.roll("web", "crashloop", generation=2)  # a pod event, no Deployment deadline
    await kube.roll("web", "ready", generation=3)  # the automatic rollback's rollout
    result = await asyncio.wait_for(task, 10)
    assert (result.outcome, result.rolled_back_to) == ("rolled-back", 1)
    assert "CrashLoopBackOff" in result.message
