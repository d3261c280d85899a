"""Deploys on the local backend through the engine and the CLI: real processes, the example
service, free loopback ports, a client hitting the service's stable port throughout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from opscope.config import parse_config
from opscope.deploy.local import LocalProcesses
from opscope.deploy.rollout import Deployer, DeployResult
from opscope.deploy.spec import service_spec
from opscope.deploy.stack import open_backend
from opscope.errors import LocalProcessError
from tests.conftest import free_port
from tests.deploy.test_local_processes import UNHEALTHY, Client, alive, processes_under

EXAMPLE = Path(__file__).parents[2] / "examples" / "blatam"
GOOD = [sys.executable, "services/app.py", "--name", "web"]
BROKEN = [sys.executable, "-c", "import sys; sys.exit('fatal: DATABASE_URL is not set')"]


class Local:
    """One local environment ``dev`` with one service ``web`` on a free port."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.data_dir = tmp_path / "data"

    def config_text(self, version: str, command: list[str], timeout: str = "20s") -> str:
        return (
            f"data_dir: {self.data_dir}\n"
            "environments:\n  dev: {backend: local}\n"
            "services:\n"
            "  web:\n"
            f"    version: '{version}'\n"
            f"    port: {self.port}\n"
            f"    command: {json.dumps(command)}\n"
            f"    workdir: {EXAMPLE}\n"
            f"deploy: {{timeout: {timeout}, poll_interval: 50ms, stop_timeout: 5s}}\n"
        )

    async def deploy(self, version: str, command: list[str], **kwargs: Any) -> DeployResult:
        loaded = parse_config(self.config_text(version, command, **kwargs), environ={})
        spec = service_spec(loaded.config, "dev", "web", self.tmp_path)
        async with open_backend(loaded.config, "dev", self.tmp_path) as backend:
            return await Deployer(backend, loaded.config.deploy).deploy(spec)

    async def rollback(self) -> DeployResult:
        loaded = parse_config(self.config_text("x", GOOD), environ={})
        spec = service_spec(loaded.config, "dev", "web", self.tmp_path)
        async with open_backend(loaded.config, "dev", self.tmp_path) as backend:
            return await Deployer(backend, loaded.config.deploy).rollback(spec)

    async def history(self) -> list[tuple[int, str, str]]:
        loaded = parse_config(self.config_text("x", GOOD), environ={})
        spec = service_spec(loaded.config, "dev", "web", self.tmp_path)
        async with open_backend(loaded.config, "dev", self.tmp_path) as backend:
            revisions = await Deployer(backend, loaded.config.deploy).history(spec)
        return [(r.revision, r.status, r.version) for r in revisions]

    def served_version(self) -> str:
        return str(httpx.get(f"http://127.0.0.1:{self.port}/", timeout=5).json()["version"])


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    environment = Local(tmp_path)
    yield environment
    root = environment.data_dir / "local" / "dev"
    before = processes_under(root)
    processes = LocalProcesses(root, stop_timeout=5)
    for directory in root.glob("*"):
        if directory.is_dir():
            with contextlib.suppress(LocalProcessError):
                await processes.stop(directory.name)
    left = [p for p in before if alive(p.pid)]
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert [p.pid for p in left] == [], "processes left after stop()"


async def test_broken_version_is_not_switched_to_and_rollback_restores(local: Local) -> None:
    first = await local.deploy("1.0.0", GOOD)
    assert (first.outcome, first.revision) == ("deployed", 1)
    assert local.served_version() == "1.0.0"

    client = Client(local.port)
    try:
        broken = await local.deploy("1.1.0", BROKEN)
        assert (broken.outcome, broken.exit_code) == ("rolled-back", 1)
        assert (
            "exited with code 1" in broken.message and "revision 1 kept serving" in broken.message
        )
        assert "fatal: DATABASE_URL is not set" in broken.detail
        await client.answered("1.0.0", client.count("1.0.0") + 20)  # still served after
        assert local.served_version() == "1.0.0"

        second = await local.deploy("2.0.0", GOOD)
        assert (second.outcome, second.revision) == ("deployed", 3)
        await client.answered("2.0.0", 20)

        back = await local.rollback()
        assert (back.outcome, back.revision) == ("deployed", 4)
        await client.answered("1.0.0", client.count("1.0.0") + 20)
    finally:
        client.stop()
    assert client.failures == []  # no failed request during and after any of it
    assert local.served_version() == "1.0.0"
    assert await local.history() == [
        (1, "superseded", "1.0.0"),
        (2, "rolled-back", "1.1.0"),
        (3, "superseded", "2.0.0"),
        (4, "deployed", "1.0.0"),
    ]


async def test_a_version_that_never_becomes_healthy_times_out_and_is_discarded(
    local: Local,
) -> None:
    await local.deploy("1.0.0", GOOD)
    result = await local.deploy("1.1.0", UNHEALTHY, timeout="2s")
    assert result.outcome == "rolled-back"
    assert re.search(
        r"timed out waiting for health: GET http://127\.0\.0\.1:\d+/health answered 500",
        result.message,
    )
    assert local.served_version() == "1.0.0"


async def test_a_redeploy_of_the_running_revision_is_unchanged(local: Local) -> None:
    await local.deploy("1.0.0", GOOD)
    pid = httpx.get(f"http://127.0.0.1:{local.port}/", timeout=5).json()["pid"]
    again = await local.deploy("1.0.0", GOOD)
    assert (again.outcome, again.exit_code) == ("unchanged", 0)
    assert httpx.get(f"http://127.0.0.1:{local.port}/", timeout=5).json()["pid"] == pid


def opscope(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscope", *args],
        check=False,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_bundled_example_deploys_with_deploy_all(tmp_path: Path) -> None:
    # The example as shipped, on free ports, in a fresh directory.
    work = tmp_path / "blatam"
    work.mkdir()
    (work / "services").mkdir()
    (work / "services" / "app.py").write_text((EXAMPLE / "services" / "app.py").read_text())
    (work / "rules").mkdir()
    for rule_file in (EXAMPLE / "rules").glob("*.yml"):
        (work / "rules" / rule_file.name).write_text(rule_file.read_text())
    text = (EXAMPLE / "opscope.yaml").read_text()
    ports = {name: free_port() for name in ("8000", "8001", "8002")}
    for old, new in ports.items():
        text = text.replace(f"port: {old}", f"port: {new}")
    (work / "opscope.yaml").write_text(text)
    try:
        deployed = opscope("deploy", "--all", "--env", "development", "--json", cwd=work)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert json.loads(deployed.stdout)["success_count"] == 3
        for name, port in zip(
            ("ai_system", "analytics_engine", "competitive_intelligence"),
            ports.values(),
            strict=True,
        ):
            answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()
            assert answer["service"] == name
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "http_requests_total" in metrics
        status = opscope("status", "--env", "development", "--json", cwd=work)
        rows = json.loads(status.stdout)["services"]
        assert [r["live"] for r in rows] == [f"running on 127.0.0.1:{p}" for p in ports.values()]
    finally:
        stopped = opscope("stop", "--all", "--env", "development", cwd=work)
    assert stopped.returncode == 0, stopped.stderr
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
