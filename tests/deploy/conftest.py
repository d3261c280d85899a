"""The seed's stack as configurations: the bundled example and one with every environment on
Kubernetes (namespaces and sizes as in the seed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opscope.config import LoadedConfig, load_config, parse_config
from opscope.deploy.spec import ServiceSpec, stack_specs

EXAMPLE = Path(__file__).parents[2] / "examples" / "blatam" / "opscope.yaml"

#: The seed's environments, all on Kubernetes, with every monitoring object on.
KUBE_CONFIG = """
project: blatam
environments:
  development:
    namespace: blatam-dev
    replicas: 1
    resources: {cpu: 100m, memory: 256Mi}
    kubernetes: {version: "1.29"}
    monitoring: {service_monitor: true, prometheus_rule: true, grafana_dashboard: true}
    services:
      competitive_intelligence:
        autoscaling: {min_replicas: 1, max_replicas: 3}
  staging:
    namespace: blatam-staging
    replicas: 2
    resources: {cpu: 200m, memory: 512Mi}
    monitoring: {service_monitor: true, prometheus_rule: true, grafana_dashboard: true, cpu_threshold: 90}
  production:
    namespace: blatam-prod
    replicas: 5
    resources: {cpu: 500m, memory: 1Gi}
    kubernetes: {version: "v1.37"}
    monitoring: {service_monitor: true, prometheus_rule: true, grafana_dashboard: true}
services:
  ai_system:
    image: blatam/ai-system:1.4.2
    port: 8000
    health_check: /health
    env: {LOG_LEVEL: info}
    secrets:
      OPENAI_API_KEY: {secret: ai-system, key: openai-api-key}
  analytics_engine:
    image: blatam/analytics:2.0.1
    port: 8001
    health_check: /healthz
    depends_on: [ai_system]
    command: [python, -m, analytics]
    args: [--workers, "4"]
  competitive_intelligence:
    image: blatam/ci-system:0.9.0
    port: 8002
    health_check: /health
    autoscaling: {min_replicas: 2, max_replicas: 6, target_cpu_utilization: 75}
"""

#: Namespace of each environment, from the seed's configuration.
NAMESPACES = {"development": "blatam-dev", "staging": "blatam-staging", "production": "blatam-prod"}


@pytest.fixture(scope="session")
def example() -> LoadedConfig:
    return load_config(EXAMPLE)


@pytest.fixture(scope="session")
def kube_config() -> LoadedConfig:
    return parse_config(KUBE_CONFIG, filename="opscope.yaml", environ={})


def specs_of(loaded: LoadedConfig, environment: str) -> dict[str, ServiceSpec]:
    return {s.service: s for s in stack_specs(loaded.config, environment, Path("."))}
