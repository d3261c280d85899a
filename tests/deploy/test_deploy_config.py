"""The deploy sections of opscope.yaml: problems are reported with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from opscope.config import parse_config
from opscope.config.quantity import parse_quantity, scale_quantity
from opscope.deploy.spec import service_spec
from opscope.errors import ConfigError, ConfigFileError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, environ={})
    return [str(p) for p in caught.value.problems]


def test_a_dependency_cycle_is_rejected_when_the_config_loads() -> None:
    text = (
        "services:\n"
        "  a: {image: x:1, depends_on: [b]}\n"
        "  b: {image: x:1, depends_on: [c]}\n"
        "  c: {image: x:1, depends_on: [a]}\n"
    )
    assert problems(text) == [
        "opscope.yaml:2:31 services.a.depends_on: dependency cycle: a → b → c → a"
    ]


def test_unknown_dependencies_and_overrides_name_their_line() -> None:
    text = (
        "environments:\n"
        "  prod:\n"
        "    namespace: shop\n"
        "    services: {web: {replicas: 3}, wbe: {replicas: 1}}\n"
        "services:\n"
        "  web: {image: x:1, depends_on: [db]}\n"
    )
    assert problems(text) == [
        'opscope.yaml:6:34 services.web.depends_on[0]: unknown service "db"',
        'opscope.yaml:4:41 environments.prod.services.wbe: unknown service "wbe"',
    ]


def test_autoscaling_without_a_cpu_request_is_refused_when_the_config_loads() -> None:
    # the HPA's averageUtilization is a percentage of the CPU request: without one the
    # autoscaler cannot compute it (Kubernetes, "Horizontal Pod Autoscaling")
    text = (
        "environments:\n"
        "  staging: {namespace: shop-staging}\n"
        "  prod: {namespace: shop, resources: {cpu: 500m}}\n"
        "services:\n"
        "  web: {image: x:1, autoscaling: {min_replicas: 1, max_replicas: 3}}\n"
    )
    assert problems(text) == [
        'opscope.yaml:5:8 services.web: service "web" autoscales on CPU in environment '
        '"staging" but has no CPU request (resources.cpu)'
    ]


def test_each_backend_requires_what_it_runs() -> None:
    text = (
        "environments:\n"
        "  dev: {backend: local}\n"
        "  prod: {namespace: shop}\n"
        "services:\n"
        "  web: {port: 8080}\n"
    )
    assert problems(text) == [
        'opscope.yaml:5:8 services.web: service "web" needs a command in local environment "dev"',
        'opscope.yaml:5:8 services.web: service "web" needs an image in environment "prod"',
    ]


def test_field_errors_name_the_field() -> None:
    text = (
        "environments:\n"
        "  prod: {namespace: Shop_Prod, resources: {cpu: lots}}\n"
        "services:\n"
        "  web: {image: x:1, autoscaling: {min_replicas: 5, max_replicas: 2}}\n"
    )
    found = problems(text)
    assert any(
        p.startswith("opscope.yaml:2:21 environments.prod.namespace: expected a DNS label")
        for p in found
    )
    assert any(
        "environments.prod.resources.cpu: expected a Kubernetes quantity" in p for p in found
    )
    assert any(
        "services.web.autoscaling: max_replicas (2) is smaller than min_replicas (5)" in p
        for p in found
    )


def test_kubernetes_environment_needs_a_namespace() -> None:
    found = problems("environments:\n  prod: {replicas: 2}\n")
    assert found == [
        "opscope.yaml:2:9 environments.prod: a kubernetes environment needs a namespace"
    ]


def test_effective_settings_merge_environment_over_service(tmp_path: Path) -> None:
    text = (
        "environments:\n"
        "  prod:\n"
        "    namespace: shop\n"
        "    replicas: 5\n"
        "    resources: {cpu: 500m, memory: 1Gi}\n"
        "    services:\n"
        "      web: {replicas: 8, env: {LOG_LEVEL: warn}, image: 'x/web:2.0.0'}\n"
        "services:\n"
        "  web: {image: 'x/web:1.0.0', port: 8080, env: {LOG_LEVEL: info, MODE: fast}}\n"
        "  api: {image: 'registry:5000/x/api', port: 9090}\n"
    )
    config = parse_config(text, environ={}).config
    web = service_spec(config, "prod", "web", tmp_path)
    assert (web.name, web.namespace, web.replicas, web.version) == ("web", "shop", 8, "2.0.0")
    assert web.env == {"LOG_LEVEL": "warn", "MODE": "fast"}
    assert (web.limits.cpu, web.limits.memory) == ("1000m", "2Gi")  # twice the requests
    assert web.readiness is not None and (web.readiness.port, web.readiness.path) == (
        8080,
        "/health",
    )
    api = service_spec(config, "prod", "api", tmp_path)
    assert api.replicas == 5
    assert len(api.version) == 12  # no tag (":5000" is the registry's port): a settings digest
    with pytest.raises(ConfigError, match='unknown environment "staging"'):
        service_spec(config, "staging", "web", tmp_path)


def test_quantities_follow_kubernetes() -> None:
    assert parse_quantity("250m") == parse_quantity("0.25")
    assert parse_quantity("1Gi") == 1024**3
    assert parse_quantity("1e3") == 1000
    assert scale_quantity("256Mi", 2) == "512Mi"
    assert scale_quantity("1.5", 2) == "3"
    assert scale_quantity("0.25", 2) == "0.5"
