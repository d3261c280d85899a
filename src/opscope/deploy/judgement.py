"""Judging a Kubernetes rollout from the objects the API server returns (plain dicts).

:func:`deployment_status` is ``kubectl rollout status``'s rule for Deployments
(``DeploymentStatusViewer.Status`` in kubectl's ``pkg/polymorphichelpers/rollout_status.go``),
plus the paused check. :func:`pod_failure` goes beyond kubectl: a pod of the *new* ReplicaSet
waiting in one of :data:`FAILING_REASONS` fails the rollout at once instead of after the
progress deadline (600 s by default), which is what kubectl and ``helm --wait`` wait for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: Container waiting reasons that do not resolve by waiting: the container crashed and is being
#: restarted with a backoff, or its image or configuration cannot be used.
FAILING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "InvalidImageName",
    }
)
#: Reason of the Progressing condition once ``progressDeadlineSeconds`` has passed.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
#: Label the Deployment controller adds to the pods of one ReplicaSet.
POD_TEMPLATE_HASH = "pod-template-hash"

Phase = Literal["waiting", "done", "failed", "paused"]


@dataclass(frozen=True)
class RolloutStatus:
    """One look at a rollout.

    ``phase`` is ``waiting`` (look again), ``done``, ``failed`` or ``paused``; ``message`` says why
    in kubectl's words. The counters are the Deployment's (``spec.replicas`` as ``desired``).
    """

    phase: Phase
    message: str
    desired: int | None = None
    updated: int = 0
    ready: int = 0
    available: int = 0
    total: int = 0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) else 0


def deployment_status(deployment: dict[str, Any]) -> RolloutStatus:
    """The state of a Deployment's rollout, by kubectl's rule:

    1. paused (``spec.paused``): reported, not waited on;
    2. ``metadata.generation > status.observedGeneration``: waiting for the spec to be observed;
    3. Progressing condition with reason ``ProgressDeadlineExceeded``: failed;
    4. waiting while ``updatedReplicas < spec.replicas``, while ``status.replicas >
       updatedReplicas`` (old replicas pending termination), while ``availableReplicas <
       updatedReplicas``;
    5. done otherwise.
    """
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    desired = spec.get("replicas")
    desired = desired if isinstance(desired, int) else None
    updated, total = _int(status.get("updatedReplicas")), _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))

    def result(phase: Phase, message: str) -> RolloutStatus:
        return RolloutStatus(
            phase,
            message,
            desired=desired,
            updated=updated,
            ready=_int(status.get("readyReplicas")),
            available=available,
            total=total,
        )

    if spec.get("paused"):
        return result(
            "paused",
            f'deployment "{name}" is paused; resume it (kubectl rollout resume) to continue',
        )
    generation = _int(meta.get("generation"))
    observed = _int(status.get("observedGeneration"))
    if generation > observed:
        return result(
            "waiting",
            f"waiting for deployment spec update to be observed "
            f"(generation {generation}, observed {observed})",
        )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == PROGRESS_DEADLINE_EXCEEDED
        ):
            return result("failed", f'deployment "{name}" exceeded its progress deadline')
    if desired is not None and updated < desired:
        return result("waiting", f"{updated} out of {desired} new replicas have been updated")
    if total > updated:
        return result("waiting", f"{total - updated} old replicas are pending termination")
    if available < updated:
        return result("waiting", f"{available} of {updated} updated replicas are available")
    return result("done", f'deployment "{name}" successfully rolled out')


def _template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    labels = dict(template.get("metadata", {}).get("labels") or {})
    labels.pop(POD_TEMPLATE_HASH, None)
    metadata = {**template.get("metadata", {}), "labels": labels}
    return {**template, "metadata": metadata}


def new_replica_set(
    deployment: dict[str, Any], replica_sets: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's current pod template, or ``None`` if the controller
    has not created it yet: among the ReplicaSets the Deployment owns (``ownerReferences`` uid),
    the oldest whose pod template equals the Deployment's, ignoring ``pod-template-hash``
    (kubectl's ``deploymentutil.FindNewReplicaSet``)."""
    uid = deployment.get("metadata", {}).get("uid")
    template = _template_without_hash(deployment.get("spec", {}).get("template", {}))
    owned = [
        rs
        for rs in replica_sets
        if any(ref.get("uid") == uid for ref in rs.get("metadata", {}).get("ownerReferences") or [])
    ]
    owned.sort(key=lambda rs: str(rs.get("metadata", {}).get("creationTimestamp", "")))
    for rs in owned:
        if _template_without_hash(rs.get("spec", {}).get("template", {})) == template:
            return rs
    return None


@dataclass(frozen=True)
class PodFailure:
    """A pod of the new ReplicaSet that will not become ready by waiting.

    ``state`` is the container's state in one line (reason, message, restarts, last exit);
    ``events`` are the pod's most recent events, oldest first, as ``reason: message``.
    """

    pod: str
    container: str
    reason: str
    state: str
    events: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Several lines for a terminal: what failed, then the recent events."""
        lines = [f"pod {self.pod}, container {self.container}: {self.state}"]
        lines += [f"  event: {event}" for event in self.events]
        return "\n".join(lines)


def _container_state(status: dict[str, Any]) -> str:
    waiting = (status.get("state") or {}).get("waiting") or {}
    parts = [waiting.get("reason", "waiting")]
    if waiting.get("message"):
        parts.append(str(waiting["message"]))
    parts.append(f"restarts {_int(status.get('restartCount'))}")
    last = (status.get("lastState") or {}).get("terminated")
    if last:
        parts.append(
            f"last exit code {last.get('exitCode')}"
            + (f" ({last['reason']})" if last.get("reason") else "")
        )
    return "; ".join(parts)


def pod_failure(pods: list[dict[str, Any]]) -> PodFailure | None:
    """The first pod (by name) with a container or init container waiting for one of
    :data:`FAILING_REASONS`, or ``None``. ``pods`` should be the new ReplicaSet's pods."""
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        status = pod.get("status") or {}
        containers = (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        )
        for container in containers:
            reason = ((container.get("state") or {}).get("waiting") or {}).get("reason")
            if reason in FAILING_REASONS:
                return PodFailure(
                    pod=pod.get("metadata", {}).get("name", "?"),
                    container=container.get("name", "?"),
                    reason=reason,
                    state=_container_state(container),
                )
    return None


def recent_events(events: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """The ``limit`` most recent events as ``reason: message`` (×count when repeated), oldest
    first, ordered by ``lastTimestamp`` (else ``eventTime``, else ``firstTimestamp``)."""

    def when(event: dict[str, Any]) -> str:
        stamps = ("lastTimestamp", "eventTime", "firstTimestamp")
        return next((str(event[k]) for k in stamps if event.get(k)), "")

    chosen = sorted(events, key=when)[-limit:]
    lines = []
    for event in chosen:
        count = _int(event.get("count"))
        suffix = f" (×{count})" if count > 1 else ""
        lines.append(f"{event.get('reason', '?')}: {event.get('message', '')}{suffix}")
    return lines
