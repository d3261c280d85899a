"""opscope's rollout verdicts against the real ``kubectl rollout status --watch=false`` on the
same Deployment objects (served by the API emulator): kubectl's verdict is the expected value.

kubectl prints one line per look (``Waiting for deployment "web" rollout to finish: 3 of 4
updated replicas are available...``, ``deployment "web" successfully rolled out``) and exits 1
with ``error: deployment "web" exceeded its progress deadline``; opscope's message for each
waiting state is the part after kubectl's prefix.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opscope.deploy.judgement import deployment_status
from tests.conftest import require_tool
from tests.deploy.cluster import RunningCluster, deployment_path

NS = "conformance"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RunningCluster]:
    running = RunningCluster()
    try:
        yield running
    finally:
        running.stop()


def make_deployment(
    cluster: RunningCluster, name: str, replicas: int | None, generations: int
) -> None:
    """Create Deployment ``name`` and change its spec until it is at ``generations``."""
    labels = {"app.kubernetes.io/name": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": name, "image": "example/web:1"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}
    cluster.create(f"/apis/apps/v1/namespaces/{NS}/deployments", body)
    for generation in range(2, generations + 1):
        template = {"metadata": {"annotations": {"change": str(generation)}}}
        cluster.patch(deployment_path(NS, name), {"spec": {"template": template}})


SCENARIOS: dict[str, tuple[int | None, int, dict[str, Any]]] = {
    # name: (spec.replicas, generation, status)
    "unobserved": (
        3,
        3,
        {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
    ),
    "updating": (
        4,
        1,
        {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 2, "availableReplicas": 4},
    ),
    "terminating": (
        4,
        1,
        {"observedGeneration": 1, "replicas": 5, "updatedReplicas": 4, "availableReplicas": 4},
    ),
    "unavailable": (
        4,
        1,
        {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 3},
    ),
    "complete": (
        2,
        2,
        {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    ),
    "autoscaled": (
        None,
        1,
        {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    ),
    "deadline": (
        2,
        1,
        {
            "observedGeneration": 1,
            "replicas": 2,
            "updatedReplicas": 1,
            "availableReplicas": 1,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "deadline-1" has timed out progressing.',
                }
            ],
        },
    ),
}


#: What kubectl v1.32 answers for each scenario (its rollout_status.go messages).
KUBECTL_SAYS = {
    "unobserved": "Waiting for deployment spec update to be observed...",
    "updating": 'Waiting for deployment "{name}" rollout to finish: 2 out of 4 new replicas have '
    "been updated...",
    "terminating": 'Waiting for deployment "{name}" rollout to finish: 1 old replicas are pending '
    "termination...",
    "unavailable": 'Waiting for deployment "{name}" rollout to finish: 3 of 4 updated replicas are '
    "available...",
    "complete": 'deployment "{name}" successfully rolled out',
    "autoscaled": 'deployment "{name}" successfully rolled out',
    "deadline": 'error: deployment "{name}" exceeded its progress deadline',
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rollout_verdict_matches_kubectl(
    cluster: RunningCluster, tmp_path: Path, name: str
) -> None:
    kubectl = require_tool("kubectl")
    replicas, generations, status = SCENARIOS[name]
    make_deployment(cluster, name, replicas, generations)
    cluster.patch(deployment_path(NS, name) + "/status", {"status": status})
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    result = subprocess.run(
        [kubectl, "rollout", "status", f"deployment/{name}", "-n", NS, "--watch=false"],
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = (result.stdout + result.stderr).strip()
    ours = deployment_status(cluster.get(deployment_path(NS, name)) or {})
    assert said == KUBECTL_SAYS[name].format(name=name)  # the scenario is what it claims

    if result.returncode == 1:
        assert said == f'error: deployment "{name}" exceeded its progress deadline'
        assert (ours.phase, ours.message) == ("failed", said.removeprefix("error: "))
    elif said.endswith("successfully rolled out"):
        assert result.returncode == 0
        assert (ours.phase, ours.message) == ("done", said)
    elif said == "Waiting for deployment spec update to be observed...":
        assert ours.phase == "waiting"
        assert ours.message.startswith("waiting for deployment spec update to be observed")
    else:
        prefix = f'Waiting for deployment "{name}" rollout to finish: '
        assert said.startswith(prefix) and said.endswith("..."), said
        assert ours.phase == "waiting"
        assert ours.message == said.removeprefix(prefix).removesuffix("...")
