"""Typed model of ``opscope.yaml`` (pydantic v2).

Every model forbids unknown fields, so a typo is reported with its line instead of being ignored.
Durations are Prometheus duration strings (``15s``, ``5m``, ``1h30m``) parsed once into
:class:`datetime.timedelta`; bare numbers are rejected because their unit would be a guess.

Top-level sections: ``project``, ``data_dir``, ``server`` and ``monitor`` are modelled here.
The names of the sections the deployment, alerting and reporting parts of opscope define
(``environments``, ``services``, ``notify``, ``reports``, ``sources``) are *reserved*: a file may
already carry them, they are ignored with a warning until the part that reads them exists. Any
other top-level name is an error (it is almost always a typo such as ``monitr``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opscope.durations import DURATION_PATTERN, format_duration, parse_duration

#: Top-level sections that other parts of opscope define; accepted and ignored with a warning.
RESERVED_SECTIONS = ("environments", "services", "notify", "reports", "sources")

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")


def _to_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "duration", "expected a duration like 15s, got {got}", {"got": repr(value)}
        )
    try:
        return parse_duration(value.strip())
    except ValueError:
        raise PydanticCustomError(
            "duration", 'expected a duration like 15s, got "{got}"', {"got": value}
        ) from None


#: A Prometheus duration string (``15s``, ``5m``, ``1h30m``) held as a :class:`timedelta`.
Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["15s", "5m"]}),
]


def _host_port(target: str) -> str:
    if "://" in target:
        raise PydanticCustomError(
            "target",
            'expected host:port, got "{t}" (put the scheme in `scheme` and the path in '
            "`metrics_path`)",
            {"t": target},
        )
    if not _HOST_PORT.match(target):
        raise PydanticCustomError("target", 'expected host:port, got "{t}"', {"t": target})
    return target


def _http_url(target: str) -> str:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError(
            "url", 'expected an http:// or https:// URL, got "{t}"', {"t": target}
        )
    return target


def _distinct(targets: list[str]) -> list[str]:
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            raise PydanticCustomError("target", 'target "{t}" is listed twice', {"t": target})
        seen.add(target)
    return targets


#: A scrape target, ``host:port``.
HostPort = Annotated[str, AfterValidator(_host_port)]
#: An absolute http(s) URL.
HttpURL = Annotated[str, AfterValidator(_http_url)]


class Model(BaseModel):
    """Base of every config model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ServerConfig(Model):
    """The HTTP/WebSocket server of ``opscope serve``."""

    host: str = "127.0.0.1"
    """Address to bind. Loopback by default: the API has no authentication yet."""
    port: int = Field(default=8765, ge=0, le=65535)
    """TCP port of the REST API, the WebSocket ``/ws`` and the dashboard ``/``."""
    websocket_queue: int = Field(default=64, ge=1, le=100_000)
    """Messages buffered per WebSocket client; a client that falls this far behind is dropped."""


class SystemConfig(Model):
    """Metrics of the machine opscope runs on, read with psutil."""

    enabled: bool = True
    """Collect ``cpu_usage``, ``memory_usage``, ``disk_usage``, network rates, connections, load."""
    interval: Duration | None = None
    """Collection interval; defaults to ``monitor.interval``."""
    exclude_fs_types: list[str] = Field(
        default_factory=lambda: [
            "autofs",
            "binfmt_misc",
            "bpf",
            "cgroup",
            "cgroup2",
            "configfs",
            "debugfs",
            "devpts",
            "devtmpfs",
            "erofs",
            "fusectl",
            "hugetlbfs",
            "iso9660",
            "mqueue",
            "nsfs",
            "overlay",
            "proc",
            "procfs",
            "pstore",
            "ramfs",
            "rpc_pipefs",
            "securityfs",
            "selinuxfs",
            "squashfs",
            "sysfs",
            "tmpfs",
            "tracefs",
        ]
    )
    """Filesystem types left out of ``disk_usage`` (pseudo and memory filesystems, after
    node_exporter's default list plus ``tmpfs``/``ramfs``). An ``overlay`` root (``/`` in a
    container) is kept."""
    exclude_mount_points: str = r"^/(dev|proc|run|sys|var/lib/docker/.+|var/lib/containers/.+)($|/)"
    """Regular expression of mount points left out of ``disk_usage`` (node_exporter's default)."""
    exclude_network_devices: str = r"^lo$"
    """Regular expression of network devices left out of the network rates (loopback)."""

    @field_validator("exclude_mount_points", "exclude_network_devices")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise PydanticCustomError(
                "regex", "not a valid regular expression: {err}", {"err": str(exc)}
            ) from None
        return value


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise PydanticCustomError("label_name", 'invalid label name "{name}"', {"name": name})
    return labels


class ScrapeConfig(Model):
    """One Prometheus scrape job: targets serving the text exposition format."""

    job: str = Field(min_length=1)
    """Value of the ``job`` label of every series scraped from these targets."""
    targets: list[HostPort] = Field(min_length=1)
    """``host:port`` of each target; becomes the ``instance`` label."""
    interval: Duration | None = None
    """Scrape interval; defaults to ``monitor.interval``."""
    timeout: Duration = timedelta(seconds=10)
    """Give up on a scrape after this long (recorded as a failed scrape); capped at the interval."""
    metrics_path: str = "/metrics"
    """HTTP path of the exposition endpoint."""
    scheme: Literal["http", "https"] = "http"
    """URL scheme used to reach the targets."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels attached to every series of this job (like Prometheus ``static_configs``)."""

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[str]) -> list[str]:
        return _distinct(targets)

    @field_validator("metrics_path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise PydanticCustomError(
                "path", 'expected a path starting with "/", got "{p}"', {"p": path}
            )
        return path

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels)


class ProbeConfig(Model):
    """HTTP checks of URLs, reported with blackbox_exporter's metric names."""

    job: str = Field(min_length=1)
    """Value of the ``job`` label of the probe series."""
    targets: list[HttpURL] = Field(min_length=1)
    """URLs to request; each becomes the ``instance`` label."""
    interval: Duration | None = None
    """Probe interval; defaults to ``monitor.interval``."""
    timeout: Duration = timedelta(seconds=5)
    """A probe that takes longer fails (``probe_success`` 0)."""
    method: Literal["GET", "HEAD", "POST"] = "GET"
    """HTTP method."""
    valid_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)
    """Status codes counted as success; empty means any 2xx (blackbox_exporter's default)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers."""
    follow_redirects: bool = True
    """Follow 3xx redirects (blackbox_exporter's default)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels attached to the probe series."""

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[str]) -> list[str]:
        return _distinct(targets)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels)


class MonitorConfig(Model):
    """What ``opscope serve`` collects, how often, and how long it keeps it."""

    interval: Duration = timedelta(seconds=10)
    """Default collection interval of every collector that does not set its own."""
    retention: Duration = timedelta(days=15)
    """Samples older than this are deleted by a periodic task (Prometheus's default, 15d)."""
    lookback_delta: Duration = timedelta(minutes=5)
    """How far back an instant query looks for a series' newest sample (Prometheus's 5m)."""
    system: SystemConfig = Field(default_factory=SystemConfig)
    """Metrics of this machine."""
    scrape: list[ScrapeConfig] = Field(default_factory=list)
    """Prometheus scrape jobs."""
    probes: list[ProbeConfig] = Field(default_factory=list)
    """HTTP probe jobs."""

    @model_validator(mode="after")
    def _check_jobs(self) -> MonitorConfig:
        named: list[tuple[str, list[ScrapeConfig | ProbeConfig]]] = [
            ("scrape", list(self.scrape)),
            ("probes", list(self.probes)),
        ]
        for kind, jobs in named:
            seen: set[str] = set()
            for index, job in enumerate(jobs):
                if job.job in seen:
                    raise PydanticCustomError(
                        "job",
                        '{kind}[{index}].job: job "{job}" is defined twice',
                        {"kind": kind, "index": index, "job": job.job},
                    )
                seen.add(job.job)
                interval = job.interval or self.interval
                if job.timeout > interval:
                    raise PydanticCustomError(
                        "timeout",
                        "{kind}[{index}].timeout: {timeout} is longer than the interval {interval}",
                        {
                            "kind": kind,
                            "index": index,
                            "timeout": format_duration(job.timeout),
                            "interval": format_duration(interval),
                        },
                    )
        if self.interval <= timedelta(0):
            raise PydanticCustomError("interval", "interval: must be greater than 0", {})
        return self

    def interval_of(self, job: ScrapeConfig | ProbeConfig | SystemConfig) -> timedelta:
        """The effective interval of ``job``: its own, else ``monitor.interval``."""
        return job.interval or self.interval


class OpscopeConfig(Model):
    """The whole ``opscope.yaml``."""

    project: str = "opscope"
    """Name of the project; shown in the dashboard title."""
    data_dir: Path = Path(".opscope")
    """Directory of the embedded store (SQLite), relative to the working directory."""
    server: ServerConfig = Field(default_factory=ServerConfig)
    """The HTTP/WebSocket server."""
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    """Collection of metrics."""
    environments: Any = None
    """Reserved for deployment environments; ignored with a warning by this version."""
    services: Any = None
    """Reserved for deployable services; ignored with a warning by this version."""
    notify: Any = None
    """Reserved for notification channels and routes; ignored with a warning by this version."""
    reports: Any = None
    """Reserved for scheduled reports; ignored with a warning by this version."""
    sources: Any = None
    """Reserved for report data sources; ignored with a warning by this version."""
