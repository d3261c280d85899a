"""``deploy --all`` and the deploy commands of the CLI, against the Kubernetes API emulator with a
controller that rolls out every new generation by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opscope.config import parse_config
from opscope.deploy.history import from_secret
from opscope.deploy.rollout import Deployer
from opscope.deploy.spec import stack_specs
from opscope.deploy.stack import dependency_levels, deploy_stack, open_backend
from tests.deploy.cluster import AutoController, RunningCluster

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
  web: {image: "example/web:VERSION", port: 8080, health_check: /healthz}
  api: {image: "example/api:VERSION", port: 9090, depends_on: [web]}
  worker: {image: "example/worker:VERSION", port: 7070, depends_on: [api]}
  search: {image: "example/search:VERSION", port: 6060}
deploy:
  poll_interval: 20ms
  timeout: 20s
  health_timeout: 2s
  parallelism: 2
"""


@pytest.fixture
def cluster() -> Iterator[RunningCluster]:
    running = RunningCluster()
    try:
        yield running
    finally:
        running.stop()


def write_config(directory: Path, cluster: RunningCluster, version: str) -> Path:
    cluster.kubeconfig(directory / "kubeconfig")
    path = directory / "opscope.yaml"
    path.write_text(CONFIG.replace("VERSION", version))
    return path


def revisions(cluster: RunningCluster, release: str) -> list[tuple[int, str, str]]:
    secrets = cluster.list(
        f"/api/v1/namespaces/{NS}/secrets", labelSelector=f"owner=opscope,name={release}"
    )
    found = sorted((from_secret(s) for s in secrets), key=lambda r: r.revision)
    return [(r.revision, r.status, r.version) for r in found]


def image_of(cluster: RunningCluster, name: str) -> str:
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}")
    assert deployment is not None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def run_stack(path: Path, **kwargs: Any) -> Any:
    loaded = parse_config(path.read_text(), filename=str(path), environ={})
    specs = stack_specs(loaded.config, "staging", path.parent)
    async with open_backend(loaded.config, "staging", path.parent) as backend:
        deployer = Deployer(backend, loaded.config.deploy)
        return await deploy_stack(deployer, specs, parallelism=2, **kwargs)


def test_dependency_levels_follow_depends_on(tmp_path: Path, cluster: RunningCluster) -> None:
    path = write_config(tmp_path, cluster, "1.0.0")
    loaded = parse_config(path.read_text(), filename=str(path), environ={})
    levels = dependency_levels(stack_specs(loaded.config, "staging", tmp_path))
    assert [[s.service for s in level] for level in levels] == [
        ["web", "search"],
        ["api"],
        ["worker"],
    ]


async def test_stack_deploys_every_service_after_its_dependencies(
    tmp_path: Path, cluster: RunningCluster
) -> None:
    path = write_config(tmp_path, cluster, "1.0.0")
    with AutoController(cluster, NS):
        result = await run_stack(path)
    assert (result.exit_code, result.succeeded, result.failed) == (0, 4, 0)
    applied = [
        path.rsplit("/", 1)[-1]
        for method, path, _, ctype, _ in cluster.cluster.writes
        if method == "PATCH" and "apply-patch" in ctype and "/deployments/" in path
    ]
    assert applied.index("api") > applied.index("web")
    assert applied.index("worker") > applied.index("api")
    # a service starts only after the ones it depends on finished: api after web's rollout
    finished = {r.service: i for i, r in enumerate(result.results)}
    assert finished["web"] < finished["api"] < finished["worker"]


async def test_stack_stops_at_the_first_failure_and_rolls_back_what_it_changed(
    tmp_path: Path, cluster: RunningCluster
) -> None:
    with AutoController(cluster, NS) as controller:
        assert (await run_stack(write_config(tmp_path, cluster, "1.0.0"))).exit_code == 0
        controller.modes["example/api:2.0.0"] = "crashloop"
        result = await run_stack(write_config(tmp_path, cluster, "2.0.0"))
        assert result.exit_code == 1
        outcomes = {r.service: r.outcome for r in result.results}
        assert outcomes == {"web": "deployed", "search": "deployed", "api": "rolled-back"}
        assert result.skipped == ["worker"]
        assert sorted(r.service for r in result.rollbacks) == ["search", "web"]
        assert all(r.outcome == "deployed" for r in result.rollbacks)
    # everything runs 1.0.0 again; worker was never touched
    for name in ("web", "search", "api", "worker"):
        assert image_of(cluster, name) == f"example/{name}:1.0.0"
    assert revisions(cluster, "web") == [
        (1, "superseded", "1.0.0"),
        (2, "superseded", "2.0.0"),
        (3, "deployed", "1.0.0"),
    ]
    assert revisions(cluster, "api") == [
        (1, "superseded", "1.0.0"),
        (2, "rolled-back", "2.0.0"),
        (3, "deployed", "1.0.0"),
    ]
    assert revisions(cluster, "worker") == [(1, "deployed", "1.0.0")]


def opscope(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "opscope", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_deploy_history_status_diff_and_rollback(
    tmp_path: Path, cluster: RunningCluster
) -> None:
    write_config(tmp_path, cluster, "1.0.0")
    with AutoController(cluster, NS) as controller:
        first = opscope("deploy", "--all", "--env", "staging", "--json", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        summary = json.loads(first.stdout)
        assert (summary["success_count"], summary["failure_count"]) == (4, 0)

        same = opscope("diff", "web", "--env", "staging", cwd=tmp_path)
        assert same.returncode == 0, same.stdout + same.stderr
        write_config(tmp_path, cluster, "1.1.0")
        changed = opscope("diff", "web", "--env", "staging", cwd=tmp_path)
        assert changed.returncode == 2, changed.stderr
        assert "-      - image: example/web:1.0.0" in changed.stdout
        assert "+      - image: example/web:1.1.0" in changed.stdout
        dry = opscope("deploy", "web", "--env", "staging", "--dry-run", cwd=tmp_path)
        assert dry.returncode == 0 and "example/web:1.1.0" in dry.stdout
        assert image_of(cluster, "web") == "example/web:1.0.0"  # --dry-run changed nothing

        controller.modes["example/web:1.1.0"] = "crashloop"
        failed = opscope("deploy", "web", "--env", "staging", cwd=tmp_path)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "rolled-back" in failed.stdout and "CrashLoopBackOff" in failed.stdout
        assert "restarts 3" in failed.stderr  # the container state, under the summary

        controller.modes.clear()
        upgraded = opscope("deploy", "web", "--env", "staging", "--json", cwd=tmp_path)
        assert upgraded.returncode == 0, upgraded.stderr
        assert json.loads(upgraded.stdout)["revision"] == 4

        history = opscope("history", "web", "--env", "staging", "--json", cwd=tmp_path)
        assert [(r["revision"], r["status"], r["version"]) for r in json.loads(history.stdout)] == [
            (1, "superseded", "1.0.0"),
            (2, "rolled-back", "1.1.0"),
            (3, "superseded", "1.0.0"),
            (4, "deployed", "1.1.0"),
        ]
        status = opscope("status", "--env", "staging", "--json", cwd=tmp_path)
        rows = {r["service"]: r for r in json.loads(status.stdout)["services"]}
        assert (rows["web"]["revision"], rows["web"]["version"]) == (4, "1.1.0")
        assert rows["web"]["live"] == "2/2 available"

        back = opscope("rollback", "web", "--env", "staging", "--to", "1", "--json", cwd=tmp_path)
        assert back.returncode == 0, back.stderr
        assert json.loads(back.stdout)["revision"] == 5
        assert image_of(cluster, "web") == "example/web:1.0.0"

    missing = opscope("rollback", "web", "--env", "staging", "--to", "99", cwd=tmp_path)
    assert missing.returncode == 3 and "no revision 99" in missing.stderr
    unknown = opscope("deploy", "nope", "--env", "staging", cwd=tmp_path)
    assert unknown.returncode == 2 and 'unknown service "nope"' in unknown.stderr
