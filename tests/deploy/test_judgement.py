"""kubectl's rollout rule and the fail-fast pod check, on Deployment/Pod JSON as the API server
returns it. Expected phases follow kubectl's ``DeploymentStatusViewer.Status``."""

from __future__ import annotations

from typing import Any

import pytest

from opscope.deploy.judgement import (
    deployment_status,
    new_replica_set,
    pod_failure,
    recent_events,
)


def deployment(
    *,
    generation: int = 1,
    observed: int = 1,
    replicas: int | None = 3,
    updated: int = 3,
    total: int = 3,
    available: int = 3,
    conditions: list[dict[str, Any]] | None = None,
    paused: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}
    if replicas is not None:
        spec["replicas"] = replicas
    if paused:
        spec["paused"] = True
    return {
        "metadata": {"name": "web", "generation": generation, "uid": "u-1"},
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


@pytest.mark.parametrize(
    ("fields", "phase", "message"),
    [
        # generation 3 not yet observed, although every counter equals replicas
        (
            {"generation": 3, "observed": 2},
            "waiting",
            "waiting for deployment spec update to be observed (generation 3, observed 2)",
        ),
        (
            {"replicas": 4, "updated": 2, "total": 4, "available": 4},
            "waiting",
            "2 out of 4 new replicas have been updated",
        ),
        (
            {"replicas": 4, "updated": 4, "total": 5, "available": 4},
            "waiting",
            "1 old replicas are pending termination",
        ),
        # replicas 4, updated 4, available 3
        (
            {"replicas": 4, "updated": 4, "total": 4, "available": 3},
            "waiting",
            "3 of 4 updated replicas are available",
        ),
        # replicas 1 with maxUnavailable 1: the new pod never becomes available
        (
            {"replicas": 1, "updated": 1, "total": 1, "available": 0},
            "waiting",
            "0 of 1 updated replicas are available",
        ),
        ({}, "done", 'deployment "web" successfully rolled out'),
        # no spec.replicas (an autoscaler owns it): only the status counters decide
        (
            {"replicas": None, "updated": 2, "total": 2, "available": 2},
            "done",
            'deployment "web" successfully rolled out',
        ),
    ],
)
def test_kubectl_rollout_rule(fields: dict[str, Any], phase: str, message: str) -> None:
    status = deployment_status(deployment(**fields))
    assert (status.phase, status.message) == (phase, message)


def test_progress_deadline_exceeded_fails_but_only_once_observed() -> None:
    exceeded = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    failed = deployment_status(deployment(available=2, conditions=exceeded))
    assert (failed.phase, failed.message) == (
        "failed",
        'deployment "web" exceeded its progress deadline',
    )
    # kubectl looks at conditions only once the current generation has been observed
    stale = deployment_status(deployment(generation=2, observed=1, conditions=exceeded))
    assert stale.phase == "waiting"


def test_paused_is_reported_not_waited_on() -> None:
    status = deployment_status(deployment(paused=True, generation=2, observed=1))
    assert status.phase == "paused" and "kubectl rollout resume" in status.message


def pod(name: str, *, waiting: str | None = None, init: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "web", "restartCount": 3, "ready": False}
    if waiting:
        container["state"] = {"waiting": {"reason": waiting, "message": "back-off 40s"}}
        container["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    else:
        container["state"] = {"running": {}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": name}, "status": {key: [container]}}


@pytest.mark.parametrize(
    "reason",
    [
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "InvalidImageName",
    ],
)
def test_a_pod_waiting_for_a_hopeless_reason_is_a_failure(reason: str) -> None:
    failure = pod_failure([pod("web-a"), pod("web-b", waiting=reason)])
    assert failure is not None
    assert (failure.pod, failure.container, failure.reason) == ("web-b", "web", reason)
    assert failure.state == f"{reason}; back-off 40s; restarts 3; last exit code 137 (OOMKilled)"


def test_waiting_for_other_reasons_is_not_a_failure() -> None:
    assert pod_failure([pod("web-a", waiting="ContainerCreating"), pod("web-b")]) is None
    assert pod_failure([pod("web-a", waiting="CrashLoopBackOff", init=True)]) is not None


def test_the_new_replica_set_is_the_owned_one_with_the_current_template() -> None:
    current = deployment()
    template = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {}}
    old_template = {
        "metadata": {"labels": {"app": "web", "pod-template-hash": "old"}},
        "spec": {"containers": [{"image": "x:1"}]},
    }
    owner = [{"uid": "u-1"}]
    sets = [
        {"metadata": {"name": "old", "ownerReferences": owner}, "spec": {"template": old_template}},
        {
            "metadata": {"name": "foreign", "ownerReferences": [{"uid": "u-2"}]},
            "spec": {"template": template},
        },
        {"metadata": {"name": "new", "ownerReferences": owner}, "spec": {"template": template}},
    ]
    found = new_replica_set(current, sets)
    assert found is not None and found["metadata"]["name"] == "new"
    assert new_replica_set(current, sets[:2]) is None


def test_recent_events_are_the_last_ones_oldest_first() -> None:
    events = [
        {"reason": "Pulled", "message": "ok", "lastTimestamp": "2026-11-29T10:00:01Z"},
        {
            "reason": "BackOff",
            "message": "restarting",
            "count": 7,
            "lastTimestamp": "2026-11-29T10:05:00Z",
        },
        {"reason": "Started", "message": "started", "lastTimestamp": "2026-11-29T10:00:02Z"},
    ]
    assert recent_events(events, limit=2) == ["Started: started", "BackOff: restarting (×7)"]
