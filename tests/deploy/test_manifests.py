"""Rendered manifests: namespaces, labels, probes, resources, scaling, secrets, monitoring wiring.

Expected values come from the seed's configuration (tests/deploy/conftest.py, the bundled
example) and from hand calculation; the Kubernetes schemas and promtool judge the rest.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from opscope.config import LoadedConfig
from opscope.config.deploy import MonitoringWiring, Resources
from opscope.deploy.manifests import (
    label_value,
    manifests_yaml,
    prometheus_scrape_config,
    render_manifests,
)
from opscope.deploy.spec import ServiceSpec, service_spec
from opscope.deploy.validate import validate_manifests
from opscope.errors import ConfigError
from tests.conftest import require_tool
from tests.deploy.conftest import NAMESPACES, specs_of

SERVICES = ["ai_system", "analytics_engine", "competitive_intelligence"]
STABLE = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for o in objects:
        assert o["kind"] not in found, f"two {o['kind']} objects"
        found[o["kind"]] = o
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def rendered(loaded: LoadedConfig, environment: str, service: str) -> list[dict[str, Any]]:
    return render_manifests(specs_of(loaded, environment)[service], "blatam")


CASES = [
    ("example", "staging"),
    ("example", "production"),
    ("kube_config", "development"),
    ("kube_config", "staging"),
    ("kube_config", "production"),
]


@pytest.mark.parametrize(("config", "environment"), CASES)
def test_every_service_validates_strictly_in_its_own_namespace(
    request: pytest.FixtureRequest, config: str, environment: str
) -> None:
    loaded: LoadedConfig = request.getfixturevalue(config)
    for service in SERVICES:
        spec = specs_of(loaded, environment)[service]
        objects = render_manifests(spec, "blatam")
        problems = validate_manifests(objects, spec.kubernetes.version)
        assert [str(p) for p in problems if p.severity == "error"] == []
        # The seed applied every environment's Deployment to production's namespace.
        assert {o["metadata"]["namespace"] for o in objects} == {NAMESPACES[environment]}
        assert json.loads(json.dumps(objects)) == objects  # plain JSON-able data


def test_the_example_renders_the_seeds_objects(example: LoadedConfig) -> None:
    production = {s: [o["kind"] for o in rendered(example, "production", s)] for s in SERVICES}
    wiring = ["ServiceMonitor", "PrometheusRule", "ConfigMap"]
    assert production == {
        "ai_system": ["Deployment", "Service", "PodDisruptionBudget", *wiring],
        "analytics_engine": ["Deployment", "Service", "PodDisruptionBudget", *wiring],
        "competitive_intelligence": [
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            *wiring,
        ],
    }
    # Staging has no monitoring wiring in the example.
    assert [o["kind"] for o in rendered(example, "staging", "ai_system")] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]


@pytest.mark.parametrize(
    ("service", "port", "path"),
    [
        ("ai_system", 8000, "/health"),
        ("analytics_engine", 8001, "/healthz"),
        ("competitive_intelligence", 8002, "/health"),
    ],
)
def test_probes_use_the_services_own_port_and_path(
    kube_config: LoadedConfig, service: str, port: int, path: str
) -> None:
    c = container(rendered(kube_config, "staging", service))
    assert c["ports"] == [{"name": "http", "containerPort": port}]
    # The seed's defaults: readiness after 5s every 5s, liveness after 30s every 10s.
    assert c["readinessProbe"] == {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": 5,
        "periodSeconds": 5,
        "timeoutSeconds": 1,
        "failureThreshold": 3,
    }
    assert c["livenessProbe"]["httpGet"] == {"path": path, "port": port}
    assert (c["livenessProbe"]["initialDelaySeconds"], c["livenessProbe"]["periodSeconds"]) == (
        30,
        10,
    )


def test_probe_times_round_up_to_whole_seconds(kube_config: LoadedConfig) -> None:
    spec = specs_of(kube_config, "staging")["ai_system"]
    assert spec.readiness is not None
    spec = replace(
        spec, readiness=replace(spec.readiness, initial_delay=2.5, period=0.5, timeout=0.2)
    )
    probe = container(render_manifests(spec, "blatam"))["readinessProbe"]
    assert (probe["initialDelaySeconds"], probe["periodSeconds"], probe["timeoutSeconds"]) == (
        3,
        1,
        1,
    )


def test_a_disabled_probe_is_left_out() -> None:
    from opscope.config import parse_config
    from tests.deploy.conftest import KUBE_CONFIG

    text = KUBE_CONFIG.replace(
        "    port: 8000\n", "    port: 8000\n    probes: {liveness: false}\n", 1
    )
    loaded = parse_config(text, filename="opscope.yaml", environ={})
    c = container(rendered(loaded, "staging", "ai_system"))
    assert "livenessProbe" not in c and "readinessProbe" in c


@pytest.mark.parametrize(
    ("environment", "requests", "limits"),
    [
        ("development", {"cpu": "100m", "memory": "256Mi"}, {"cpu": "200m", "memory": "512Mi"}),
        ("production", {"cpu": "500m", "memory": "1Gi"}, {"cpu": "1000m", "memory": "2Gi"}),
    ],
)
def test_limits_are_twice_the_requests(
    kube_config: LoadedConfig, environment: str, requests: dict[str, str], limits: dict[str, str]
) -> None:
    for service in SERVICES:
        resources = container(rendered(kube_config, environment, service))["resources"]
        assert resources == {"requests": requests, "limits": limits}


def test_unset_resources_are_left_out(kube_config: LoadedConfig) -> None:
    spec = specs_of(kube_config, "staging")["ai_system"]
    spec = replace(spec, requests=Resources(memory="64Mi"), limits=Resources(memory="128Mi"))
    c = container(render_manifests(spec, "blatam"))
    assert c["resources"] == {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    spec = replace(spec, requests=Resources(), limits=Resources())
    assert "resources" not in container(render_manifests(spec, "blatam"))


def test_the_selector_never_carries_the_version(kube_config: LoadedConfig) -> None:
    objects = by_kind(rendered(kube_config, "production", "ai_system"))
    deployment, service = objects["Deployment"], objects["Service"]
    expected_selector = {
        "app.kubernetes.io/name": "ai-system",
        "app.kubernetes.io/instance": "ai-system",
    }
    assert deployment["spec"]["selector"] == {"matchLabels": expected_selector}
    assert service["spec"]["selector"] == expected_selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": expected_selector}
    labels = {
        **expected_selector,
        "app.kubernetes.io/version": "1.4.2",
        "app.kubernetes.io/part-of": "blatam",
        "app.kubernetes.io/managed-by": "opscope",
        "opscope.dev/environment": "production",
    }
    assert deployment["metadata"]["labels"] == labels
    assert deployment["spec"]["template"]["metadata"]["labels"] == labels
    assert deployment["metadata"]["name"] == "ai-system"
    assert deployment["spec"]["revisionHistoryLimit"] == 10
    assert deployment["spec"]["progressDeadlineSeconds"] == 600  # deploy.progress_deadline 10m
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]


def test_command_args_and_env_are_passed(kube_config: LoadedConfig) -> None:
    c = container(rendered(kube_config, "staging", "analytics_engine"))
    assert c["name"] == "analytics-engine"
    assert c["image"] == "blatam/analytics:2.0.1"
    assert c["command"] == ["python", "-m", "analytics"]
    assert c["args"] == ["--workers", "4"]
    assert "env" not in c
    assert "command" not in container(rendered(kube_config, "staging", "ai_system"))


def test_autoscaling_leaves_replicas_to_the_autoscaler(kube_config: LoadedConfig) -> None:
    objects = by_kind(rendered(kube_config, "production", "competitive_intelligence"))
    assert "replicas" not in objects["Deployment"]["spec"]
    assert objects["HorizontalPodAutoscaler"]["spec"] == {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "competitive-intelligence",
        },
        "minReplicas": 2,
        "maxReplicas": 6,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 75},
                },
            }
        ],
    }
    fixed = by_kind(rendered(kube_config, "production", "ai_system"))
    assert fixed["Deployment"]["spec"]["replicas"] == 5
    assert "HorizontalPodAutoscaler" not in fixed


@pytest.mark.parametrize(
    ("environment", "service", "budget"),
    [
        ("development", "ai_system", False),  # 1 replica
        ("development", "competitive_intelligence", False),  # autoscaling from 1
        ("staging", "ai_system", True),  # 2 replicas
        ("staging", "competitive_intelligence", True),  # autoscaling from 2
        ("production", "analytics_engine", True),  # 5 replicas
    ],
)
def test_a_disruption_budget_only_with_more_than_one_pod(
    kube_config: LoadedConfig, environment: str, service: str, budget: bool
) -> None:
    objects = by_kind(rendered(kube_config, environment, service))
    assert ("PodDisruptionBudget" in objects) is budget
    if budget:
        assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_secrets_are_passed_by_reference_only(kube_config: LoadedConfig) -> None:
    c = container(rendered(kube_config, "production", "ai_system"))
    assert c["env"] == [
        {"name": "LOG_LEVEL", "value": "info"},
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {
                "secretKeyRef": {"name": "ai-system", "key": "openai-api-key", "optional": False}
            },
        },
    ]


def test_a_local_environment_has_no_manifests(example: LoadedConfig) -> None:
    spec = service_spec(example.config, "development", "ai_system", Path("."))
    with pytest.raises(ConfigError, match="local backend"):
        render_manifests(spec, "blatam")


def test_autoscaling_needs_a_cpu_request(kube_config: LoadedConfig) -> None:
    spec = specs_of(kube_config, "production")["competitive_intelligence"]
    with pytest.raises(ConfigError, match="needs a CPU request"):
        render_manifests(replace(spec, requests=Resources(memory="1Gi")), "blatam")


def test_label_values_are_made_valid() -> None:
    assert label_value("1.0+build.5") == "1.0_build.5"
    assert label_value("v" * 70) == "v" * 63
    assert label_value("-x-") == "x"


# Monitoring wiring ------------------------------------------------------------------------------


def test_the_service_monitor_selects_the_service(kube_config: LoadedConfig) -> None:
    monitor = by_kind(rendered(kube_config, "staging", "analytics_engine"))["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "blatam-staging"
    assert monitor["spec"] == {
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "analytics-engine",
                "app.kubernetes.io/instance": "analytics-engine",
            }
        },
        "namespaceSelector": {"matchNames": ["blatam-staging"]},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
    }


def test_no_metrics_endpoint_no_service_monitor_no_scrape_job(kube_config: LoadedConfig) -> None:
    spec = replace(specs_of(kube_config, "staging")["ai_system"], metrics_path=None)
    assert "ServiceMonitor" not in by_kind(render_manifests(spec, "blatam"))
    assert prometheus_scrape_config([spec]) == {"scrape_configs": []}


def rule(objects: list[dict[str, Any]], alert: str) -> dict[str, Any]:
    groups = by_kind(objects)["PrometheusRule"]["spec"]["groups"]
    return next(r for g in groups for r in g["rules"] if r["alert"] == alert)


def test_alerts_compare_a_percentage_of_the_limit_with_a_percentage(
    kube_config: LoadedConfig,
) -> None:
    production = rendered(kube_config, "production", "ai_system")
    # Limit 1000m (twice 500m) = 1 core; 2Gi = 2 × 1024³ = 2147483648 bytes.
    assert rule(production, "ServiceHighCPU")["expr"] == (
        "sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total"
        '{namespace="blatam-prod", container="ai-system"}[5m])) / 1 * 100 > 80'
    )
    assert rule(production, "ServiceHighMemory")["expr"] == (
        "sum by (namespace, pod, container) (container_memory_working_set_bytes"
        '{namespace="blatam-prod", container="ai-system"}) / 2147483648 * 100 > 85'
    )
    high_cpu = rule(production, "ServiceHighCPU")
    assert high_cpu["for"] == "5m"
    assert high_cpu["labels"] == {
        "severity": "warning",
        "service": "ai_system",
        "environment": "production",
    }
    assert "{{ $labels.pod }}" in high_cpu["annotations"]["description"]
    assert "{{ $value | humanize }}" in high_cpu["annotations"]["description"]
    # Staging: limit 400m = 0.4 core; 1024Mi = 1073741824 bytes; cpu_threshold 90 in the config.
    staging = rendered(kube_config, "staging", "ai_system")
    assert rule(staging, "ServiceHighCPU")["expr"].endswith("[5m])) / 0.4 * 100 > 90")
    assert rule(staging, "ServiceHighMemory")["expr"].endswith(") / 1073741824 * 100 > 85")
    group = by_kind(staging)["PrometheusRule"]["spec"]["groups"][0]
    assert group["name"] == "ai-system-staging"


def test_a_resource_without_a_limit_has_no_alert(kube_config: LoadedConfig) -> None:
    spec = specs_of(kube_config, "staging")["ai_system"]
    spec = replace(spec, limits=Resources(memory="1Gi"))
    groups = by_kind(render_manifests(spec, "blatam"))["PrometheusRule"]["spec"]["groups"]
    assert [r["alert"] for r in groups[0]["rules"]] == ["ServiceHighMemory"]
    spec = replace(spec, limits=Resources())
    assert "PrometheusRule" not in by_kind(render_manifests(spec, "blatam"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def write_rule_file(path: Path, objects: list[dict[str, Any]]) -> Path:
    groups = [g for o in objects if o["kind"] == "PrometheusRule" for g in o["spec"]["groups"]]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("config", "environment"), [c for c in CASES if c != ("example", "staging")]
)
def test_the_rule_groups_pass_promtool(
    request: pytest.FixtureRequest, tmp_path: Path, config: str, environment: str
) -> None:
    loaded: LoadedConfig = request.getfixturevalue(config)
    objects = [o for s in SERVICES for o in rendered(loaded, environment, s)]
    result = promtool("check", "rules", str(write_rule_file(tmp_path / "rules.yml", objects)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout  # CPU and memory for three services


def test_the_cpu_and_memory_alerts_fire_at_the_threshold(
    kube_config: LoadedConfig, tmp_path: Path
) -> None:
    # production ai_system: CPU limit 1 core, alert above 80%; memory limit 2Gi, above 85%.
    write_rule_file(tmp_path / "rules.yml", rendered(kube_config, "production", "ai_system"))
    pod = 'namespace="blatam-prod", container="ai-system"'
    labels = {
        "severity": "warning",
        "service": "ai_system",
        "environment": "production",
        "namespace": "blatam-prod",
        "container": "ai-system",
    }
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 54 CPU-seconds a minute = 0.9 core = 90% of 1 core; 42 = 70%.
                    {
                        "series": f'container_cpu_usage_seconds_total{{{pod}, pod="hot"}}',
                        "values": "0+54x20",
                    },
                    {
                        "series": f'container_cpu_usage_seconds_total{{{pod}, pod="calm"}}',
                        "values": "0+42x20",
                    },
                    # 1932735283 bytes ≈ 90% of 2147483648; 1610612736 = 1.5Gi = 75%.
                    {
                        "series": f'container_memory_working_set_bytes{{{pod}, pod="hot"}}',
                        "values": "1932735283x20",
                    },
                    {
                        "series": f'container_memory_working_set_bytes{{{pod}, pod="calm"}}',
                        "values": "1610612736x20",
                    },
                ],
                "alert_rule_test": [
                    # Pending from 1m, firing only once true for 5m.
                    {"eval_time": "4m", "alertname": "ServiceHighCPU", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "ServiceHighCPU",
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, "pod": "hot"},
                                "exp_annotations": {
                                    "summary": "ai_system (production) CPU above 80% of its limit",
                                    "description": "Pod hot uses 90% of its CPU limit (1000m) in "
                                    "namespace blatam-prod.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "ServiceHighMemory",
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, "pod": "hot"},
                                "exp_annotations": {
                                    "summary": "ai_system (production) memory above 85% of its "
                                    "limit",
                                    "description": "Pod hot uses 90% of its memory limit (2Gi) in "
                                    "namespace blatam-prod.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "tests.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_a_grafana_dashboard(kube_config: LoadedConfig) -> None:
    config_map = by_kind(rendered(kube_config, "production", "analytics_engine"))["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "blatam-prod"
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    assert dashboard["title"] == "analytics_engine - production"
    assert isinstance(dashboard["schemaVersion"], int)
    assert len(dashboard["uid"]) <= 40  # Grafana's limit
    panels = dashboard["panels"]
    assert [p["title"] for p in panels] == [
        "CPU (% of limit)",
        "Memory (working set)",
        "Latency p95",
    ]
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
    assert panels[0]["targets"][0]["expr"] == (
        "sum by (pod) (rate(container_cpu_usage_seconds_total"
        '{namespace="blatam-prod", container="analytics-engine"}[5m])) / 1 * 100'
    )
    assert panels[2]["targets"][0]["expr"] == (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{namespace="blatam-prod", service="analytics-engine"}[5m])))'
    )


def test_monitoring_wiring_is_off_by_default(kube_config: LoadedConfig) -> None:
    spec = replace(specs_of(kube_config, "production")["ai_system"], monitoring=MonitoringWiring())
    assert [o["kind"] for o in render_manifests(spec, "blatam")] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]


# Prometheus scrape configuration --------------------------------------------------------------


def scrape_specs(kube_config: LoadedConfig) -> list[ServiceSpec]:
    return [s for env in NAMESPACES for s in specs_of(kube_config, env).values()]


def test_one_scrape_job_per_service_and_environment(kube_config: LoadedConfig) -> None:
    jobs = prometheus_scrape_config(scrape_specs(kube_config))["scrape_configs"]
    assert [j["job_name"] for j in jobs] == [
        f"{s}-{e}" for e in ("development", "staging", "production") for s in SERVICES
    ]
    job = jobs[SERVICES.index("analytics_engine")]  # development
    assert job["metrics_path"] == "/metrics"
    # Kubernetes service discovery, as documented for Prometheus's kubernetes_sd_config.
    assert job["kubernetes_sd_configs"] == [
        {"role": "endpoints", "namespaces": {"names": ["blatam-dev"]}}
    ]
    assert job["relabel_configs"][0] == {
        "source_labels": ["__meta_kubernetes_service_name", "__meta_kubernetes_endpoint_port_name"],
        "regex": "analytics-engine;http",
        "action": "keep",
    }


def full_prometheus_config(fragment: dict[str, Any]) -> str:
    return yaml.safe_dump({"global": {"scrape_interval": "15s"}, **fragment}, sort_keys=False)


def promtool_knows_kubernetes_sd(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.yml"
    probe.write_text(
        "scrape_configs:\n- job_name: probe\n  kubernetes_sd_configs:\n  - role: endpoints\n"
    )
    result = promtool("check", "config", str(probe))
    return "kubernetes_sd_configs not found" not in result.stdout + result.stderr


def test_the_scrape_jobs_pass_promtool(kube_config: LoadedConfig, tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes service discovery: it checks everything of
    # each job but the kubernetes_sd_configs block, which is compared with the documentation
    # above. A promtool with Kubernetes support checks the fragment exactly as written.
    fragment = prometheus_scrape_config(scrape_specs(kube_config))
    if not promtool_knows_kubernetes_sd(tmp_path):
        for job in fragment["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")
    config = tmp_path / "prometheus.yml"
    config.write_text(full_prometheus_config(fragment))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_yaml_output_is_multi_document_in_rendered_key_order(kube_config: LoadedConfig) -> None:
    objects = rendered(kube_config, "production", "ai_system")
    text = manifests_yaml(objects)
    assert text.startswith("---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n")
    assert text.count("\n---\n") == len(objects) - 1
    assert list(yaml.safe_load_all(text)) == objects
