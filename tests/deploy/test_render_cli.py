"""`opscope render`: YAML on stdout, files with --out, JSON with --json, exit code 2 on misuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from opscope import cli
from opscope.deploy import manifests
from tests.deploy.conftest import EXAMPLE, KUBE_CONFIG


def opscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscope", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_render_all_prints_every_object_as_yaml() -> None:
    result = opscope("render", "--all", "--env", "production", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    wiring = ["ServiceMonitor", "PrometheusRule"]
    expected = []
    for name in ("ai-system", "analytics-engine", "competitive-intelligence"):
        scaling = ["HorizontalPodAutoscaler"] if name == "competitive-intelligence" else []
        expected += [(k, name) for k in ["Deployment", "Service", *scaling, "PodDisruptionBudget"]]
        expected += [(k, name) for k in wiring] + [("ConfigMap", f"{name}-dashboard")]
    assert kinds == expected
    assert {d["metadata"]["namespace"] for d in documents} == {"blatam-prod"}
    # The custom resources were not validated: said on stderr, once per object.
    assert result.stderr.count("custom resource monitoring.coreos.com/v1") == 6


def test_render_one_service(tmp_path: Path) -> None:
    result = opscope("render", "analytics_engine", "--env", "staging", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert documents[0]["spec"]["replicas"] == 2  # staging
    assert result.stderr == ""


def test_out_writes_one_file_per_service_and_the_scrape_fragment(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = opscope(
        "render", "--all", "--env", "production", "-c", str(EXAMPLE), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    names = ["ai-system.yaml", "analytics-engine.yaml", "competitive-intelligence.yaml"]
    assert sorted(p.name for p in out.iterdir()) == [*names, "prometheus-scrape.yml"]
    assert result.stdout.splitlines() == [
        f"wrote {out / n}" for n in [*names, "prometheus-scrape.yml"]
    ]
    documents = list(yaml.safe_load_all((out / "analytics-engine.yaml").read_text()))
    assert {d["metadata"]["name"] for d in documents} == {
        "analytics-engine",
        "analytics-engine-dashboard",
    }
    scrape = yaml.safe_load((out / "prometheus-scrape.yml").read_text())
    assert [j["job_name"] for j in scrape["scrape_configs"]] == [
        "ai_system-production",
        "analytics_engine-production",
        "competitive_intelligence-production",
    ]


def test_json_prints_objects_and_notes() -> None:
    result = opscope("render", "ai_system", "--env", "production", "-c", str(EXAMPLE), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [o["kind"] for o in data["objects"]] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    ]
    assert [n.split(":")[0] for n in data["notes"]] == [
        "ServiceMonitor blatam-prod/ai-system",
        "PrometheusRule blatam-prod/ai-system",
    ]


def test_a_secret_value_never_reaches_the_output(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text(KUBE_CONFIG)
    value = "sk-live-4f9c2e7a1b"
    result = opscope(
        "render",
        "ai_system",
        "--env",
        "production",
        "-c",
        str(config),
        env={"OPENAI_API_KEY": value},
    )
    assert result.returncode == 0, result.stderr
    assert value not in result.stdout + result.stderr
    deployment = next(yaml.safe_load_all(result.stdout))
    (variable,) = [
        e
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "OPENAI_API_KEY"
    ]
    assert variable == {
        "name": "OPENAI_API_KEY",
        "valueFrom": {
            "secretKeyRef": {"name": "ai-system", "key": "openai-api-key", "optional": False}
        },
    }


def test_a_value_from_the_environment_in_env_is_flagged(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text(KUBE_CONFIG.replace("{LOG_LEVEL: info}", "{DB_PASSWORD: '${DB_PASSWORD}'}"))
    result = opscope(
        "render",
        "ai_system",
        "--env",
        "staging",
        "-c",
        str(config),
        env={"DB_PASSWORD": "hunter2x"},
    )
    assert result.returncode == 0, result.stderr
    assert "the output contains values from environment variables" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ai_system", "--all", "--env", "staging"], "name one SERVICE or pass --all"),
        (["--env", "staging"], "name one SERVICE or pass --all"),
        (
            ["--all", "--env", "development"],
            'environment "development" uses the local backend: it has no Kubernetes manifests '
            "(kubernetes environments: staging, production)",
        ),
        (
            ["--all", "--env", "qa"],
            'unknown environment "qa" (known: development, staging, production)',
        ),
        (
            ["billing", "--env", "staging"],
            'unknown service "billing" (known: ai_system, analytics_engine, competitive_intelligence)',
        ),
        (["ai_system"], "Missing option '--env'"),
    ],
)
def test_misuse_exits_2_with_nothing_on_stdout(args: list[str], message: str) -> None:
    result = opscope("render", *args, "-c", str(EXAMPLE))
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in " ".join(result.stderr.split())


def test_an_unsupported_kubernetes_version_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text(KUBE_CONFIG.replace('version: "1.29"', 'version: "1.19"'))
    result = opscope("render", "--all", "--env", "development", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Kubernetes 1.19 is not supported: installed schemas cover" in result.stderr


def test_schema_problems_exit_2_with_each_problem_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = manifests.render_manifests

    def with_typo(spec: Any, project: str) -> list[dict[str, Any]]:
        objects = real(spec, project)
        objects[0]["spec"]["replicaz"] = 2
        return objects

    monkeypatch.setattr(manifests, "render_manifests", with_typo)
    result = CliRunner().invoke(
        cli.app, ["render", "--all", "--env", "staging", "-c", str(EXAMPLE)]
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f'error: Deployment blatam-staging/{name} spec.replicaz: unknown field "replicaz" '
        "(not in the Kubernetes 1.30 schema)"
        for name in ("ai-system", "analytics-engine", "competitive-intelligence")
    ]
