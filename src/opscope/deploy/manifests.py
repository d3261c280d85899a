"""Kubernetes manifests of one service in one environment, and the Prometheus wiring around it.

:func:`render_manifests` turns a :class:`~opscope.deploy.spec.ServiceSpec` into the objects the
API server takes (plain JSON-able dicts, every one in the environment's namespace)::

    Deployment               apps/v1          always
    Service                  v1               always (ClusterIP, port "http")
    HorizontalPodAutoscaler  autoscaling/v2   when ``autoscaling`` is set
    PodDisruptionBudget      policy/v1        when more than one pod runs
    ServiceMonitor           monitoring.coreos.com/v1   monitoring.service_monitor
    PrometheusRule           monitoring.coreos.com/v1   monitoring.prometheus_rule
    ConfigMap                v1               monitoring.grafana_dashboard (Grafana's sidecar)

:func:`prometheus_scrape_config` writes the ``scrape_configs`` a plain Prometheus (without the
operator) needs to scrape the same services through Kubernetes service discovery.

The seed rendered the same objects with three bugs this module is written against: everything
went to production's namespace, the health probe always used port 8000, and alerts compared a
rate of CPU-seconds with "80" and bytes with "85". Here every object carries ``spec.namespace``,
probes use the service's own port, and alerts compare a percentage of the limit with a
percentage.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import yaml

from opscope.config.quantity import parse_quantity
from opscope.deploy.spec import ProbeSpec, ServiceSpec
from opscope.errors import ConfigError

#: One Kubernetes object as the API server takes it (``apiVersion``, ``kind``, ``metadata``, …).
Manifest = dict[str, Any]

MANAGED_BY = "opscope"
ENVIRONMENT_LABEL = "opscope.dev/environment"
#: The port name every rendered object refers to (Service targetPort, ServiceMonitor, scrape).
PORT_NAME = "http"
#: ReplicaSets kept for ``kubectl rollout undo`` (Kubernetes' default).
REVISION_HISTORY_LIMIT = 10
#: Scrape interval of the ServiceMonitor and the scrape fragment (the seed's 15s).
SCRAPE_INTERVAL = "15s"
#: Rate window and ``for`` of the CPU/memory alerts (the seed's 5m).
ALERT_WINDOW = "5m"

_LABEL_VALUE_INVALID = re.compile(r"[^A-Za-z0-9._-]")


def label_value(text: str) -> str:
    """``text`` made a valid label value (at most 63 of ``A-Za-z0-9._-``, alphanumeric at both
    ends), the way Helm charts write versions: ``1.0+build.5`` → ``1.0_build.5``."""
    return _LABEL_VALUE_INVALID.sub("_", text)[:63].strip("._-")


def selector_labels(spec: ServiceSpec) -> dict[str, str]:
    """The labels that select a service's pods: name and instance only.

    Never the version: a Deployment's ``spec.selector`` is immutable (apps/v1), so a selector
    that changed with each release would make every upgrade fail.
    """
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/instance": spec.name}


def common_labels(spec: ServiceSpec, project: str) -> dict[str, str]:
    """Every label of a rendered object: the selector labels plus version, project, manager and
    environment (Kubernetes' recommended ``app.kubernetes.io/*`` labels)."""
    return {
        **selector_labels(spec),
        "app.kubernetes.io/version": label_value(spec.version),
        "app.kubernetes.io/part-of": label_value(project),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        ENVIRONMENT_LABEL: label_value(spec.environment),
    }


def render_manifests(spec: ServiceSpec, project: str) -> list[Manifest]:
    """The Kubernetes objects of ``spec`` (see the module docstring for which), all in
    ``spec.namespace`` and named ``spec.name``; ``project`` becomes ``app.kubernetes.io/part-of``.

    Rules, and where they come from:

    * selector: name and instance labels only (immutable in apps/v1 Deployments);
    * ``replicas`` left out while an autoscaler owns it (server-side apply field ownership);
    * requests and limits as the spec has them, unset ones left out; limits default to twice
      the requests (the seed's rule, applied in :mod:`opscope.deploy.spec`);
    * probes ``GET health_check`` on the service's own port (the seed used 8000 for all), times
      in whole seconds rounded up, readiness 5s/5s and liveness 30s/10s by default (the seed's);
    * ``progressDeadlineSeconds`` from ``deploy.progress_deadline`` (Kubernetes' default 600);
      ``revisionHistoryLimit`` 10 (Kubernetes' default); RollingUpdate with ``maxSurge`` 25% and
      ``maxUnavailable`` 0 (no pod stops before its replacement is ready);
    * a PodDisruptionBudget (``maxUnavailable: 1``) only when more than one pod runs (replicas,
      or the autoscaler's ``min_replicas``): for a single pod it would protect nothing;
    * secrets only as ``valueFrom.secretKeyRef``: no secret value is ever rendered.

    Raises :class:`ConfigError` when the spec cannot run on Kubernetes: a ``local`` backend, no
    image, or CPU autoscaling without a CPU request (the autoscaler's utilisation is a
    percentage of the request and is undefined without one).
    """
    if spec.backend != "kubernetes":
        raise ConfigError(
            f'environment "{spec.environment}" uses the {spec.backend} backend: it has no '
            "Kubernetes manifests"
        )
    if not spec.image:
        raise ConfigError(f'service "{spec.service}" needs an image in "{spec.environment}"')
    if spec.autoscaling is not None and spec.requests.cpu is None:
        raise ConfigError(
            f'service "{spec.service}" in "{spec.environment}": autoscaling on CPU needs a CPU '
            "request (resources.cpu)"
        )
    labels = common_labels(spec, project)
    objects = [_deployment(spec, labels), _service(spec, labels)]
    if spec.autoscaling is not None:
        objects.append(_autoscaler(spec, labels))
    if _min_pods(spec) > 1:
        objects.append(_disruption_budget(spec, labels))
    wiring = spec.monitoring
    if wiring.service_monitor and spec.metrics_path is not None:
        objects.append(_service_monitor(spec, labels))
    if wiring.prometheus_rule:
        rules = alert_rules(spec)
        if rules:
            objects.append(_prometheus_rule(spec, labels, rules))
    if wiring.grafana_dashboard:
        objects.append(_dashboard_config_map(spec, labels))
    return objects


def _metadata(spec: ServiceSpec, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": spec.name, "namespace": spec.namespace, "labels": dict(labels)}


def _min_pods(spec: ServiceSpec) -> int:
    return spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.replicas


def _deployment(spec: ServiceSpec, labels: dict[str, str]) -> Manifest:
    deployment_spec: dict[str, Any] = {}
    # With an autoscaler the field is left out entirely: a server-side apply that set it would
    # take ownership of replicas and reset the autoscaler's choice on every deploy.
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas
    deployment_spec.update(
        {
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": selector_labels(spec)},
            # No pod is stopped before its replacement is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [_container(spec)]},
            },
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, labels),
        "spec": deployment_spec,
    }


def _container(spec: ServiceSpec) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "ports": [{"name": PORT_NAME, "containerPort": spec.port}],
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    # Secrets only by reference: the value stays in the cluster's Secret.
    env += [
        {
            "name": variable,
            "valueFrom": {
                "secretKeyRef": {"name": ref.secret, "key": ref.key, "optional": ref.optional}
            },
        }
        for variable, ref in spec.secrets.items()
    ]
    if env:
        container["env"] = env
    resources: dict[str, Any] = {}
    for field, quantities in (("requests", spec.requests), ("limits", spec.limits)):
        values = {
            name: value
            for name, value in (("cpu", quantities.cpu), ("memory", quantities.memory))
            if value is not None
        }
        if values:
            resources[field] = values
    if resources:
        container["resources"] = resources
    if spec.readiness is not None:
        container["readinessProbe"] = _probe(spec.readiness)
    if spec.liveness is not None:
        container["livenessProbe"] = _probe(spec.liveness)
    return container


def _probe(probe: ProbeSpec) -> dict[str, Any]:
    # Kubernetes counts probe times in whole seconds; rounding up never probes sooner than asked.
    return {
        "httpGet": {"path": probe.path, "port": probe.port},
        "initialDelaySeconds": math.ceil(probe.initial_delay),
        "periodSeconds": max(1, math.ceil(probe.period)),
        "timeoutSeconds": max(1, math.ceil(probe.timeout)),
        "failureThreshold": probe.failure_threshold,
    }


def _service(spec: ServiceSpec, labels: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec),
            "ports": [
                {"name": PORT_NAME, "port": spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def _autoscaler(spec: ServiceSpec, labels: dict[str, str]) -> Manifest:
    assert spec.autoscaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.autoscaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }


def _disruption_budget(spec: ServiceSpec, labels: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(spec)}},
    }


def _service_monitor(spec: ServiceSpec, labels: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(spec, labels),
        "spec": {
            "selector": {"matchLabels": selector_labels(spec)},
            "namespaceSelector": {"matchNames": [spec.namespace]},
            "endpoints": [
                {"port": PORT_NAME, "path": spec.metrics_path, "interval": SCRAPE_INTERVAL}
            ],
        },
    }


def _number(value: Decimal) -> str:
    """A PromQL number literal without exponent or trailing zeros: ``1.000`` → ``1``."""
    return format(value.normalize(), "f")


def _container_selector(spec: ServiceSpec) -> str:
    return f'namespace="{spec.namespace}", container="{spec.name}"'


def cpu_percent_expr(spec: ServiceSpec, *, by: str = "namespace, pod, container") -> str | None:
    """PromQL: CPU use of each pod's container as a percentage of its CPU limit, or ``None``
    without a limit.

    ``rate(container_cpu_usage_seconds_total[5m])`` is in cores (CPU-seconds per second,
    cAdvisor); the limit is converted to cores (``500m`` → ``0.5``), so the quotient × 100 is a
    percentage.
    """
    if spec.limits.cpu is None:
        return None
    cores = parse_quantity(spec.limits.cpu)
    return (
        f"sum by ({by}) (rate(container_cpu_usage_seconds_total{{{_container_selector(spec)}}}"
        f"[{ALERT_WINDOW}])) / {_number(cores)} * 100"
    )


def memory_percent_expr(spec: ServiceSpec, *, by: str = "namespace, pod, container") -> str | None:
    """PromQL: memory working set of each pod's container as a percentage of its memory limit,
    or ``None`` without a limit.

    ``container_memory_working_set_bytes`` is what the kubelet compares with the limit before
    an OOM kill; the limit is converted to bytes (``1Gi`` → ``1073741824``).
    """
    if spec.limits.memory is None:
        return None
    limit = parse_quantity(spec.limits.memory)
    return (
        f"sum by ({by}) (container_memory_working_set_bytes{{{_container_selector(spec)}}})"
        f" / {_number(limit)} * 100"
    )


def alert_rules(spec: ServiceSpec) -> list[dict[str, Any]]:
    """Prometheus alerting rules of ``spec``: CPU and memory above ``monitoring.cpu_threshold``
    / ``memory_threshold`` percent of the limit for 5m (the seed's thresholds 80 and 85,
    compared like with like). A resource without a limit has no rule."""
    wiring = spec.monitoring
    rules: list[dict[str, Any]] = []
    labels = {"severity": "warning", "service": spec.service, "environment": spec.environment}
    cpu = cpu_percent_expr(spec)
    if cpu is not None:
        rules.append(
            {
                "alert": "ServiceHighCPU",
                "expr": f"{cpu} > {wiring.cpu_threshold}",
                "for": ALERT_WINDOW,
                "labels": dict(labels),
                "annotations": {
                    "summary": f"{spec.service} ({spec.environment}) CPU above "
                    f"{wiring.cpu_threshold}% of its limit",
                    "description": "Pod {{ $labels.pod }} uses {{ $value | humanize }}% of its "
                    f"CPU limit ({spec.limits.cpu}) in namespace {spec.namespace}.",
                },
            }
        )
    memory = memory_percent_expr(spec)
    if memory is not None:
        rules.append(
            {
                "alert": "ServiceHighMemory",
                "expr": f"{memory} > {wiring.memory_threshold}",
                "for": ALERT_WINDOW,
                "labels": dict(labels),
                "annotations": {
                    "summary": f"{spec.service} ({spec.environment}) memory above "
                    f"{wiring.memory_threshold}% of its limit",
                    "description": "Pod {{ $labels.pod }} uses {{ $value | humanize }}% of its "
                    f"memory limit ({spec.limits.memory}) in namespace {spec.namespace}.",
                },
            }
        )
    return rules


def rule_group_name(spec: ServiceSpec) -> str:
    """Name of the PrometheusRule's group: ``<name>-<environment>``."""
    return f"{spec.name}-{spec.environment}"


def _prometheus_rule(
    spec: ServiceSpec, labels: dict[str, str], rules: list[dict[str, Any]]
) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(spec, labels),
        "spec": {"groups": [{"name": rule_group_name(spec), "rules": rules}]},
    }


def grafana_dashboard(spec: ServiceSpec) -> dict[str, Any]:
    """A Grafana dashboard (JSON model, schemaVersion 39) titled ``<service> - <environment>``:
    CPU as a percentage of the limit (cores when there is no limit), memory working set in
    bytes, and p95 request latency from ``http_request_duration_seconds`` histograms (the
    seed's three panels, each pod a series). The data source is a dashboard variable."""
    cpu = cpu_percent_expr(spec, by="pod")
    if cpu is None:
        cpu_panel = (
            "CPU (cores)",
            "sum by (pod) (rate(container_cpu_usage_seconds_total"
            f"{{{_container_selector(spec)}}}[{ALERT_WINDOW}]))",
            "short",
        )
    else:
        cpu_panel = ("CPU (% of limit)", cpu, "percent")
    latency = (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
        f'{{namespace="{spec.namespace}", service="{spec.name}"}}[{ALERT_WINDOW}])))'
    )
    panels = [
        cpu_panel,
        (
            "Memory (working set)",
            f"sum by (pod) (container_memory_working_set_bytes{{{_container_selector(spec)}}})",
            "bytes",
        ),
        ("Latency p95", latency, "s"),
    ]
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    uid = hashlib.sha256(f"{spec.namespace}/{spec.name}/{spec.environment}".encode()).hexdigest()[
        :16
    ]
    return {
        "uid": f"opscope-{uid}",
        "title": f"{spec.service} - {spec.environment}",
        "tags": ["opscope", spec.environment],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                }
            ]
        },
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": datasource,
                # A 24-column grid: two half-width panels, then latency at full width below.
                "gridPos": {
                    "h": 8,
                    "w": 24 if index == 2 else 12,
                    "x": 12 * (index % 2),
                    "y": 8 * (index // 2),
                },
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": datasource,
                        "expr": expr,
                        "legendFormat": "p95" if index == 2 else "{{pod}}",
                    }
                ],
            }
            for index, (title, expr, unit) in enumerate(panels)
        ],
    }


def _dashboard_config_map(spec: ServiceSpec, labels: dict[str, str]) -> Manifest:
    metadata = _metadata(spec, labels)
    metadata["name"] = f"{spec.name}-dashboard"
    # The label Grafana's dashboard sidecar (kiwigrid k8s-sidecar) watches by default.
    metadata["labels"]["grafana_dashboard"] = "1"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {
            f"{spec.name}-{label_value(spec.environment)}.json": json.dumps(
                grafana_dashboard(spec), indent=2
            )
        },
    }


def prometheus_scrape_config(specs: list[ServiceSpec]) -> dict[str, Any]:
    """A ``prometheus.yml`` fragment, ``{"scrape_configs": [...]}``, scraping each service
    through Kubernetes service discovery (for a Prometheus without the operator).

    One job per service named ``<service>-<environment>`` (the seed's job names), role
    ``endpoints`` limited to the service's namespace, keeping only the endpoints of the
    service's own Service on port ``http``; ``metrics_path`` from the spec, every 15s (the
    seed's interval). Targets get ``namespace``, ``service``, ``pod`` and ``environment``
    labels, as the dashboard's queries expect. Services without a metrics endpoint
    (``metrics_path: false``) are left out.
    """
    jobs: list[dict[str, Any]] = []
    for spec in specs:
        if spec.metrics_path is None:
            continue
        jobs.append(
            {
                "job_name": f"{spec.service}-{spec.environment}",
                "scrape_interval": SCRAPE_INTERVAL,
                "metrics_path": spec.metrics_path,
                "kubernetes_sd_configs": [
                    {"role": "endpoints", "namespaces": {"names": [spec.namespace]}}
                ],
                "relabel_configs": [
                    {
                        "source_labels": [
                            "__meta_kubernetes_service_name",
                            "__meta_kubernetes_endpoint_port_name",
                        ],
                        "regex": f"{spec.name};{PORT_NAME}",
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {
                        "source_labels": ["__meta_kubernetes_service_name"],
                        "target_label": "service",
                    },
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    {"target_label": "environment", "replacement": spec.environment},
                ],
            }
        )
    return {"scrape_configs": jobs}


class _ManifestDumper(yaml.SafeDumper):
    """Multi-line strings (a dashboard's JSON) as literal blocks, which stay readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_ManifestDumper.add_representer(str, _represent_str)


def manifests_yaml(objects: Iterable[Manifest]) -> str:
    """``objects`` as multi-document YAML, each document starting with ``---``, keys in the
    order they were rendered, long lines (PromQL) unfolded."""
    return yaml.dump_all(
        list(objects),
        Dumper=_ManifestDumper,
        sort_keys=False,
        explicit_start=True,
        allow_unicode=True,
        width=4096,
    )
