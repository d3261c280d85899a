"""The effective settings of one service in one environment (:class:`ServiceSpec`).

Resolution order, strongest first: ``environments.<env>.services.<service>``, the service's own
fields, the environment's ``replicas``/``resources``/``limits``, opscope's defaults. ``env`` and
``secrets`` are merged key by key (the environment's value wins). Limits not given anywhere are
twice the requests (the seed's rule).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from opscope.config.deploy import (
    Autoscaling,
    EnvironmentConfig,
    HttpProbe,
    KubernetesTarget,
    MonitoringWiring,
    Probes,
    Resources,
    SecretRef,
    ServiceConfig,
    kube_name,
)
from opscope.config.models import OpscopeConfig
from opscope.errors import ConfigError

DEFAULT_HEALTH_CHECK = "/health"
DEFAULT_METRICS_PATH = "/metrics"
#: Kubernetes' default probe timings are replaced by the seed's: readiness after 5s every 5s,
#: liveness after 30s every 10s (a slow start is not killed).
READINESS_DEFAULTS = {"initial_delay": 5.0, "period": 5.0, "timeout": 1.0, "failure_threshold": 3}
LIVENESS_DEFAULTS = {"initial_delay": 30.0, "period": 10.0, "timeout": 1.0, "failure_threshold": 3}


@dataclass(frozen=True)
class ProbeSpec:
    """One effective HTTP probe; times in seconds."""

    path: str
    port: int
    initial_delay: float
    period: float
    timeout: float
    failure_threshold: int


@dataclass(frozen=True)
class ServiceSpec:
    """Everything needed to deploy ``service`` to ``environment``, with every default applied.

    ``name`` is the Kubernetes name (``ai_system`` → ``ai-system``); ``release`` identifies the
    release (one per service and environment) in history and locks.
    """

    service: str
    environment: str
    backend: Literal["kubernetes", "local"]
    namespace: str
    name: str
    image: str | None
    version: str
    port: int
    health_check: str
    metrics_path: str | None
    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]
    secrets: dict[str, SecretRef]
    replicas: int
    requests: Resources
    limits: Resources
    readiness: ProbeSpec | None
    liveness: ProbeSpec | None
    autoscaling: Autoscaling | None
    workdir: Path
    depends_on: list[str]
    kubernetes: KubernetesTarget
    monitoring: MonitoringWiring
    progress_deadline_seconds: int

    @property
    def release(self) -> str:
        """Name of the release: the service's Kubernetes name (one release per namespace)."""
        return self.name

    def digest(self) -> str:
        """SHA-256 (hex, first 12 characters) of the settings that define what runs, so that two
        deploys of equal settings are recognised as the same version."""
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        text = json.dumps(data, sort_keys=True, default=_jsonable)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def _probe(
    setting: HttpProbe | Literal[False], defaults: dict[str, float], path: str, port: int
) -> ProbeSpec | None:
    if setting is False:
        return None

    def seconds(value: Any, key: str) -> float:
        return defaults[key] if value is None else value.total_seconds()

    return ProbeSpec(
        path=setting.path or path,
        port=setting.port or port,
        initial_delay=seconds(setting.initial_delay, "initial_delay"),
        period=seconds(setting.period, "period"),
        timeout=seconds(setting.timeout, "timeout"),
        failure_threshold=setting.failure_threshold or int(defaults["failure_threshold"]),
    )


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``blatam/ai:1.4.2`` → ``1.4.2``), or ``None`` when it has
    none or is pinned by digest only. A ``:`` inside the registry host (``host:5000/x``) is not
    a tag."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.rsplit(":", 1)[1] or None


def service_spec(config: OpscopeConfig, environment: str, service: str, base: Path) -> ServiceSpec:
    """The effective settings of ``service`` in ``environment``; ``base`` is the directory of the
    configuration file (for ``workdir``).

    Raises :class:`ConfigError` naming the unknown environment or service.
    """
    env = environment_config(config, environment)
    if service not in config.services:
        known = ", ".join(config.services) or "none"
        raise ConfigError(f'unknown service "{service}" (known: {known})')
    own: ServiceConfig = config.services[service]
    override = env.services.get(service)
    merged: dict[str, Any] = {
        name: getattr(own, name) for name in type(own).model_fields if name != "depends_on"
    }
    if override is not None:
        for name in type(override).model_fields:
            value = getattr(override, name)
            if value is None:
                continue
            if name in ("env", "secrets"):
                merged[name] = {**(merged[name] or {}), **value}
            else:
                merged[name] = value
    requests: Resources = merged["resources"] or env.resources
    limits: Resources = merged["limits"] or env.limits or requests.doubled()
    port: int = merged["port"] or 8000
    health: str = merged["health_check"] or DEFAULT_HEALTH_CHECK
    probes: Probes = merged["probes"] or Probes()
    metrics = merged["metrics_path"]
    image: str | None = merged["image"]
    name = kube_name(service)
    workdir = merged["workdir"] or Path(".")
    spec = ServiceSpec(
        service=service,
        environment=environment,
        backend=env.backend,
        namespace=env.namespace or environment,
        name=name,
        image=image,
        version="",
        port=port,
        health_check=health,
        metrics_path=None if metrics is False else (metrics or DEFAULT_METRICS_PATH),
        command=merged["command"],
        args=merged["args"],
        env=dict(merged["env"] or {}),
        secrets=dict(merged["secrets"] or {}),
        replicas=env.replicas if merged["replicas"] is None else merged["replicas"],
        requests=requests,
        limits=limits,
        readiness=_probe(probes.readiness, READINESS_DEFAULTS, health, port),
        liveness=_probe(probes.liveness, LIVENESS_DEFAULTS, health, port),
        autoscaling=merged["autoscaling"],
        workdir=workdir if workdir.is_absolute() else (base / workdir),
        depends_on=list(own.depends_on),
        kubernetes=env.kubernetes,
        monitoring=env.monitoring,
        progress_deadline_seconds=int(config.deploy.progress_deadline.total_seconds()),
    )
    # An image tag names the version on Kubernetes; a local process has no image, so its version
    # is the digest of what runs unless the configuration names one.
    tag = image_tag(image) if image and env.backend == "kubernetes" else None
    version = merged["version"] or tag or spec.digest()
    return replace(spec, version=version)


def environment_config(config: OpscopeConfig, environment: str) -> EnvironmentConfig:
    """The environment named ``environment``; raises :class:`ConfigError` naming the known ones."""
    if environment not in config.environments:
        known = ", ".join(config.environments) or "none (add an environments section)"
        raise ConfigError(f'unknown environment "{environment}" (known: {known})')
    return config.environments[environment]


def stack_specs(config: OpscopeConfig, environment: str, base: Path) -> list[ServiceSpec]:
    """Every service of the configuration in ``environment``, in configuration order."""
    return [service_spec(config, environment, name, base) for name in config.services]
