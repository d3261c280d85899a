"""The ``environments``, ``services`` and ``deploy`` sections: what opscope deploys, and where.

::

    environments:
      development: {backend: local, services: {ai_system: {command: [python, app.py]}}}
      staging:     {namespace: blatam-staging, replicas: 2, resources: {cpu: 200m, memory: 512Mi}}
      production:
        namespace: blatam-prod
        replicas: 5
        resources: {cpu: 500m, memory: 1Gi}    # requests; limits default to twice these
        kubernetes: {context: prod, version: "1.30"}
        services:
          ai_system: {replicas: 8}             # any service field, for this environment only
    services:
      ai_system:
        image: blatam/ai-system:1.4.2
        port: 8000
        health_check: /health
        env: {LOG_LEVEL: info}
        secrets: {OPENAI_API_KEY: {secret: ai-system, key: openai-api-key}}
      analytics_engine:
        image: blatam/analytics:2.0.1
        port: 8001
        depends_on: [ai_system]
        autoscaling: {min_replicas: 2, max_replicas: 10, target_cpu_utilization: 70}
    deploy:
      timeout: 10m
      history_max: 10

A service's Kubernetes name is its key with ``_`` replaced by ``-`` (``ai_system`` →
``ai-system``); it must be a valid DNS label. The effective settings of a service in an
environment are, from strongest to weakest: ``environments.<env>.services.<service>``, the
service's own fields, the environment's ``replicas``/``resources``/``limits``, the defaults.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field, StrictBool, StrictInt, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from opscope.config.quantity import is_quantity, scale_quantity
from opscope.config.types import Model, PositiveDuration

#: A DNS label (RFC 1123), as Kubernetes requires of namespace names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
#: A service key: lower-case letters, digits, ``_`` and ``-``, starting with a letter.
_SERVICE_KEY = re.compile(r"^[a-z]([-_a-z0-9]*[a-z0-9])?\Z")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: Longest Kubernetes service name: a DNS-1035 label of 63, minus room for the ReplicaSet and pod
#: hashes Kubernetes appends to Deployment names (``-<10 chars>-<5 chars>``), as Helm advises.
MAX_SERVICE_NAME = 47


def kube_name(service: str) -> str:
    """The Kubernetes object name of a service key: ``ai_system`` → ``ai-system``."""
    return service.replace("_", "-")


def _quantity(text: str) -> str:
    if not is_quantity(text):
        raise PydanticCustomError(
            "quantity",
            'expected a Kubernetes quantity such as 100m, 0.5, 256Mi or 1Gi, got "{q}"',
            {"q": text},
        )
    return text


def _namespace(text: str) -> str:
    if len(text) > 63 or not _DNS_LABEL.match(text):
        raise PydanticCustomError(
            "namespace",
            'expected a DNS label (lower-case letters, digits and "-", at most 63), got "{n}"',
            {"n": text},
        )
    return text


def _http_path(text: str) -> str:
    if not text.startswith("/"):
        raise PydanticCustomError(
            "path", 'expected a path starting with "/", got "{p}"', {"p": text}
        )
    return text


#: A Kubernetes resource quantity.
Quantity = Annotated[str, AfterValidator(_quantity)]
#: A Kubernetes namespace name.
Namespace = Annotated[str, AfterValidator(_namespace)]
#: An absolute HTTP path.
HttpPath = Annotated[str, AfterValidator(_http_path)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class Resources(Model):
    """CPU and memory of one container, as Kubernetes quantities."""

    cpu: Quantity | None = None
    """CPU, e.g. ``100m`` (a tenth of a core) or ``2``."""
    memory: Quantity | None = None
    """Memory, e.g. ``256Mi`` or ``1Gi``."""

    def doubled(self) -> Resources:
        """Twice these quantities: the default limits (the seed's rule, limits = 2 × requests)."""
        return Resources(
            cpu=None if self.cpu is None else scale_quantity(self.cpu, 2),
            memory=None if self.memory is None else scale_quantity(self.memory, 2),
        )


class SecretRef(Model):
    """A key of a Kubernetes Secret, passed to the container as an environment variable.

    Only the reference is written into manifests (``valueFrom.secretKeyRef``): the value stays in
    the cluster. On the local backend the variable is read from opscope's own environment.
    """

    secret: Namespace
    """Name of the Secret, in the environment's namespace."""
    key: str = Field(min_length=1)
    """Key inside the Secret."""
    optional: StrictBool = False
    """Start the container even when the Secret or key is missing."""


class HttpProbe(Model):
    """An HTTP probe (Kubernetes ``httpGet``); unset fields come from the service's port and
    ``health_check``."""

    path: HttpPath | None = None
    """Path requested; defaults to the service's ``health_check``."""
    port: Port | None = None
    """Port requested; defaults to the service's ``port``."""
    initial_delay: PositiveDuration | None = None
    """Wait this long after the container starts before the first probe."""
    period: PositiveDuration | None = None
    """Time between probes."""
    timeout: PositiveDuration | None = None
    """A probe not answered in this long fails."""
    failure_threshold: StrictInt | None = Field(default=None, ge=1)
    """Consecutive failures that count as failed."""


class Probes(Model):
    """Liveness and readiness probes. Defaults: readiness every 5s after 5s, liveness every 10s
    after 30s, both ``GET health_check`` on the service's own port. ``false`` removes one."""

    readiness: HttpProbe | Literal[False] = Field(default_factory=HttpProbe)
    """Decides whether a pod receives traffic (and counts as available in a rollout)."""
    liveness: HttpProbe | Literal[False] = Field(default_factory=HttpProbe)
    """Restarts a container that stops answering."""


class Autoscaling(Model):
    """A HorizontalPodAutoscaler (autoscaling/v2) on CPU utilisation. While it is set, opscope
    leaves ``replicas`` to the autoscaler."""

    min_replicas: StrictInt = Field(default=1, ge=1)
    """Fewest replicas."""
    max_replicas: StrictInt = Field(ge=1)
    """Most replicas."""
    target_cpu_utilization: StrictInt = Field(default=80, ge=1, le=100)
    """Average CPU use, as a percentage of the requests, the autoscaler aims at."""

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise PydanticCustomError(
                "autoscaling",
                "max_replicas ({mx}) is smaller than min_replicas ({mn})",
                {"mx": self.max_replicas, "mn": self.min_replicas},
            )
        return self


class ServiceSettings(Model):
    """The fields of a service that an environment may override."""

    image: str | None = None
    """Container image (``registry/name:tag``); required on Kubernetes environments."""
    version: str | None = None
    """Version shown in labels and history; defaults to the image tag, else a digest of the
    service's settings."""
    port: Port | None = None
    """Port the service listens on (``containerPort``; the stable port on the local backend);
    default 8000."""
    health_check: HttpPath | None = None
    """Health endpoint, answered with 2xx when healthy; default ``/health``."""
    metrics_path: HttpPath | Literal[False] | None = None
    """Prometheus metrics endpoint, default ``/metrics``; ``false``: the service has none."""
    command: list[str] | None = None
    """Container command (Kubernetes); the process started on the local backend, where it is
    required."""
    args: list[str] | None = None
    """Arguments after ``command``."""
    env: dict[str, str] | None = None
    """Environment variables; an environment's ``env`` is merged over the service's."""
    secrets: dict[str, SecretRef] | None = None
    """Environment variables taken from Kubernetes Secrets, by variable name."""
    replicas: StrictInt | None = Field(default=None, ge=0)
    """Pods of this service (defaults to the environment's ``replicas``)."""
    resources: Resources | None = None
    """Requests (defaults to the environment's ``resources``)."""
    limits: Resources | None = None
    """Limits (defaults to the environment's, else twice the requests)."""
    probes: Probes | None = None
    """Liveness and readiness probes."""
    autoscaling: Autoscaling | None = None
    """Scale between ``min_replicas`` and ``max_replicas`` on CPU."""
    workdir: Path | None = None
    """Local backend: working directory of the process, relative to the configuration file."""

    @model_validator(mode="after")
    def _env_names(self) -> ServiceSettings:
        names = list(self.env or {}) + list(self.secrets or {})
        for name in names:
            if not _ENV_NAME.match(name):
                raise PydanticCustomError(
                    "env", 'invalid environment variable name "{n}"', {"n": name}
                )
        both = set(self.env or {}) & set(self.secrets or {})
        if both:
            raise PydanticCustomError(
                "env",
                "{n} set both in env and in secrets",
                {"n": ", ".join(sorted(both))},
            )
        return self


class ServiceConfig(ServiceSettings):
    """A deployable service."""

    depends_on: list[str] = Field(default_factory=list)
    """Services deployed before this one by ``deploy --all``."""


def _optional(field: FieldInfo) -> tuple[Any, FieldInfo]:
    return (Optional[field.annotation], FieldInfo(default=None, description=field.description))  # noqa: UP045


#: Per-environment overrides of a service: every field of :class:`ServiceSettings`, all optional.
ServiceOverride = create_model(
    "ServiceOverride",
    __base__=Model,
    __doc__="Settings of one service in one environment; they replace the service's own "
    "(``env`` and ``secrets`` are merged key by key).",
    **{name: _optional(field) for name, field in ServiceSettings.model_fields.items()},  # type: ignore[call-overload]
)


class KubernetesTarget(Model):
    """Which cluster an environment deploys to, and which API version its manifests target."""

    context: str | None = None
    """kubeconfig context; default: the current context."""
    kubeconfig: Path | None = None
    """kubeconfig file; default: ``$KUBECONFIG``, else ``~/.kube/config``."""
    version: str = Field(default="1.30", pattern=r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?$")
    """Kubernetes version whose official schemas validate the manifests (1.25 to 1.37)."""


class MonitoringWiring(Model):
    """What ``render`` adds so that a Prometheus and a Grafana watch the services."""

    service_monitor: StrictBool = False
    """A prometheus-operator ServiceMonitor per service (needs the operator's CRDs)."""
    prometheus_rule: StrictBool = False
    """A prometheus-operator PrometheusRule per service: CPU and memory as a percentage of the
    limit."""
    grafana_dashboard: StrictBool = False
    """A ConfigMap labelled ``grafana_dashboard: "1"`` holding a dashboard (CPU, memory, p95
    latency) for Grafana's sidecar."""
    cpu_threshold: StrictInt = Field(default=80, ge=1, le=1000)
    """PrometheusRule: warn when CPU use exceeds this percentage of the limit for 5m."""
    memory_threshold: StrictInt = Field(default=85, ge=1, le=1000)
    """PrometheusRule: warn when memory use exceeds this percentage of the limit for 5m."""


class EnvironmentConfig(Model):
    """One environment (development, staging, production, …)."""

    backend: Literal["kubernetes", "local"] = "kubernetes"
    """``kubernetes``: a cluster via its API; ``local``: processes on this machine."""
    namespace: Namespace | None = None
    """Kubernetes namespace (required on the kubernetes backend)."""
    replicas: StrictInt = Field(default=1, ge=0)
    """Default pods per service."""
    resources: Resources = Field(default_factory=Resources)
    """Default requests per container."""
    limits: Resources | None = None
    """Default limits; unset: twice the requests."""
    kubernetes: KubernetesTarget = Field(default_factory=KubernetesTarget)
    """Cluster and API version."""
    monitoring: MonitoringWiring = Field(default_factory=MonitoringWiring)
    """Prometheus/Grafana objects rendered with the services."""
    services: dict[str, ServiceOverride] = Field(default_factory=dict)
    """Per-service overrides in this environment."""

    @model_validator(mode="after")
    def _namespace_for_kubernetes(self) -> EnvironmentConfig:
        if self.backend == "kubernetes" and self.namespace is None:
            raise PydanticCustomError("namespace", "a kubernetes environment needs a namespace", {})
        return self


class DeploySettings(Model):
    """How deploys wait, verify, roll back and keep history."""

    timeout: PositiveDuration = timedelta(minutes=10)
    """opscope's own deadline for one service's rollout (apply to healthy)."""
    progress_deadline: PositiveDuration = timedelta(minutes=10)
    """``progressDeadlineSeconds`` written into Deployments (Kubernetes' default 600s)."""
    poll_interval: PositiveDuration = timedelta(seconds=2)
    """Time between two looks at a rollout; a crash-looping pod fails the deploy within one."""
    health_timeout: PositiveDuration = timedelta(seconds=60)
    """How long the health endpoint may take to answer 2xx after the rollout is complete."""
    rollback: StrictBool = True
    """Roll back automatically when a deploy fails (``--no-rollback`` turns it off per run)."""
    rollback_timeout: PositiveDuration = timedelta(minutes=5)
    """Time budget of an automatic rollback."""
    history_max: StrictInt = Field(default=10, ge=1)
    """Revisions kept per release (the last deployed one is never pruned)."""
    parallelism: StrictInt = Field(default=4, ge=1, le=64)
    """Services deployed at once by ``deploy --all`` (within a ``depends_on`` level)."""
    lock_ttl: PositiveDuration = timedelta(minutes=15)
    """A deploy lock not renewed for this long is taken over by the next deploy."""
    stop_timeout: PositiveDuration = timedelta(seconds=10)
    """Local backend: SIGTERM, then SIGKILL after this long."""


def deploy_problems(
    environments: dict[str, EnvironmentConfig], services: dict[str, ServiceConfig]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks across sections, as ``(location, message)`` pairs: service names, ``depends_on``
    references and cycles, overrides of unknown services, and per environment the fields its
    backend needs (an image on Kubernetes, a command on the local backend)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for name in services:
        if not _SERVICE_KEY.match(name) or len(name) > MAX_SERVICE_NAME:
            found.append(
                (
                    ("services", name),
                    f'service name "{name}" must be lower-case letters, digits, "_" or "-", '
                    f"start with a letter and have at most {MAX_SERVICE_NAME} characters "
                    "(it becomes a Kubernetes name)",
                )
            )
    seen: dict[str, str] = {}
    for name in services:
        if kube_name(name) in seen:
            found.append(
                (
                    ("services", name),
                    f'"{name}" and "{seen[kube_name(name)]}" have the same Kubernetes name '
                    f'"{kube_name(name)}"',
                )
            )
        seen.setdefault(kube_name(name), name)
    for name, service in services.items():
        for index, dep in enumerate(service.depends_on):
            if dep not in services:
                found.append((("services", name, "depends_on", index), f'unknown service "{dep}"'))
    cycle = find_cycle({n: [d for d in s.depends_on if d in services] for n, s in services.items()})
    if cycle:
        found.append(
            (("services", cycle[0], "depends_on"), "dependency cycle: " + " → ".join(cycle))
        )
    for env_name, env in environments.items():
        for name in env.services:
            if name not in services:
                found.append(
                    (("environments", env_name, "services", name), f'unknown service "{name}"')
                )
        for name, service in services.items():
            override = env.services.get(name)
            where: tuple[str | int, ...] = (
                ("environments", env_name, "services", name) if override else ("services", name)
            )
            if env.backend == "kubernetes":
                image = getattr(override, "image", None) or service.image
                if not image:
                    found.append(
                        (where, f'service "{name}" needs an image in environment "{env_name}"')
                    )
                autoscaling = getattr(override, "autoscaling", None) or service.autoscaling
                resources = getattr(override, "resources", None) or service.resources
                cpu = (resources.cpu if resources else None) or env.resources.cpu
                if autoscaling is not None and cpu is None:
                    # the HPA's target is a percentage of the CPU request (Kubernetes docs,
                    # "Horizontal Pod Autoscaling": undefined without a request)
                    found.append(
                        (
                            where,
                            f'service "{name}" autoscales on CPU in environment "{env_name}" '
                            "but has no CPU request (resources.cpu)",
                        )
                    )
            else:
                command = getattr(override, "command", None) or service.command
                if not command:
                    found.append(
                        (
                            where,
                            f'service "{name}" needs a command in local environment "{env_name}"',
                        )
                    )
    return found


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """A cycle of ``graph`` (node → nodes it depends on) as ``[a, b, …, a]``, or ``[]``.

    Depth-first search with three colours (Cormen et al., *Introduction to Algorithms*, 22.3).
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []
