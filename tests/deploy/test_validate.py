"""Strict offline validation against the official Kubernetes schemas (kubernetes-validate)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from opscope.config import LoadedConfig
from opscope.deploy.manifests import render_manifests
from opscope.deploy.validate import ManifestProblem, schema_version, validate_manifests
from opscope.errors import ConfigError
from tests.deploy.conftest import specs_of


@pytest.fixture
def deployment(kube_config: LoadedConfig) -> dict[str, Any]:
    objects = render_manifests(specs_of(kube_config, "staging")["ai_system"], "blatam")
    return copy.deepcopy(objects[0])


def test_a_rendered_deployment_is_valid(deployment: dict[str, Any]) -> None:
    assert validate_manifests([deployment], "1.30") == []


def test_an_unknown_field_is_reported_at_its_path(deployment: dict[str, Any]) -> None:
    deployment["spec"]["replicaz"] = 3
    assert validate_manifests([deployment], "1.30") == [
        ManifestProblem(
            "Deployment",
            "blatam-staging",
            "ai-system",
            "spec.replicaz",
            'unknown field "replicaz" (not in the Kubernetes 1.30 schema)',
        )
    ]


def test_a_wrong_type_is_reported_at_its_path(deployment: dict[str, Any]) -> None:
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    (problem,) = validate_manifests([deployment], "1.30")
    assert (problem.kind, problem.namespace, problem.name, problem.severity) == (
        "Deployment",
        "blatam-staging",
        "ai-system",
        "error",
    )
    assert problem.path == "spec.template.spec.containers[0].ports[0].containerPort"
    assert "'8000' is not of type 'integer'" in problem.message
    assert str(problem).startswith(
        "Deployment blatam-staging/ai-system spec.template.spec.containers[0].ports[0]"
    )


def test_a_missing_required_field_is_an_error(deployment: dict[str, Any]) -> None:
    del deployment["spec"]["selector"]
    (problem,) = validate_manifests([deployment], "1.30")
    assert problem.path == "spec"
    assert "'selector' is a required property" in problem.message


def test_custom_resources_are_notes_not_errors(kube_config: LoadedConfig) -> None:
    objects = render_manifests(specs_of(kube_config, "production")["ai_system"], "blatam")
    problems = validate_manifests(objects, "1.37")
    assert [(p.kind, p.severity) for p in problems] == [
        ("ServiceMonitor", "note"),
        ("PrometheusRule", "note"),
    ]
    other = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "blatam-prod"},
    }
    assert [p.severity for p in validate_manifests([other], "1.30")] == ["note"]


def test_an_unknown_builtin_kind_is_an_error() -> None:
    typo = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}
    (problem,) = validate_manifests([typo], "1.30")
    assert problem.severity == "error"
    assert problem.message == "Kubernetes 1.30 has no kind Deploymnet in apps/v1"


def test_errors_come_before_notes(kube_config: LoadedConfig, deployment: dict[str, Any]) -> None:
    objects = render_manifests(specs_of(kube_config, "production")["ai_system"], "blatam")
    deployment["spec"]["replicaz"] = 3
    problems = validate_manifests([*objects, deployment], "1.30")
    assert [p.severity for p in problems] == ["error", "note", "note"]


@pytest.mark.parametrize(("version", "expected"), [("1.30", "1.30"), ("v1.31.4", "1.31")])
def test_versions_are_read_as_major_minor(version: str, expected: str) -> None:
    assert schema_version(version) == expected


@pytest.mark.parametrize("version", ["1.10", "2.0", "1.99"])
def test_an_unsupported_version_names_the_supported_range(
    deployment: dict[str, Any], version: str
) -> None:
    with pytest.raises(ConfigError, match=r"installed schemas cover 1\.\d+ to 1\.\d+") as info:
        validate_manifests([deployment], version)
    assert f"Kubernetes {version} is not supported" in str(info.value)
