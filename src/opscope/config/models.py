"""Typed model of ``opscope.yaml`` (pydantic v2).

Every model forbids unknown fields, so a typo is reported with its line instead of being ignored.
Durations are Prometheus duration strings (``15s``, ``5m``, ``1h30m``) parsed once into
:class:`datetime.timedelta`; bare numbers are rejected because their unit would be a guess.

Top-level sections: ``project``, ``data_dir``, ``server``, ``monitor`` and ``notify`` are
modelled here; ``environments``, ``services`` and ``deploy`` in :mod:`opscope.config.deploy`.
``sources`` and ``reports`` in :mod:`opscope.config.reports`. Any other top-level name is an
error (it is almost always a typo such as ``monitr``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator
from pydantic_core import PydanticCustomError

from opscope.config.business import PushConfig, SqlQueryConfig
from opscope.config.deploy import DeploySettings, EnvironmentConfig, ServiceConfig
from opscope.config.notify import NotifyConfig
from opscope.config.reports import ReportConfig, SourceConfig
from opscope.config.rules import InlineRule
from opscope.config.types import (
    LABEL_NAME,
    HeaderText,
    Host,
    HostPort,
    HttpURL,
    Interval,
    Model,
    PositiveDuration,
    distinct,
)
from opscope.durations import format_duration

#: Top-level sections that other parts of opscope define; accepted and ignored with a warning.
RESERVED_SECTIONS: tuple[str, ...] = ()


class TLSConfig(Model):
    """TLS settings for HTTPS targets (Prometheus's ``tls_config``)."""

    ca_file: Path | None = None
    """CA certificate(s) to verify the server with, instead of the system's."""
    cert_file: Path | None = None
    """Client certificate, for servers that require one (with ``key_file``)."""
    key_file: Path | None = None
    """Private key of ``cert_file``."""
    insecure_skip_verify: StrictBool = False
    """Do not verify the server's certificate (only for test setups)."""

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise PydanticCustomError("tls", "cert_file and key_file must be given together", {})
        return self


class ServerConfig(Model):
    """The HTTP/WebSocket server of ``opscope serve``."""

    host: Host = "127.0.0.1"
    """Address to bind. Loopback by default; any other address needs API tokens
    (``opscope token create``), or the server refuses to start."""
    auth: Literal["auto", "required"] = "auto"
    """``auto``: tokens are required when binding a non-loopback address; ``required``: always
    (e.g. behind a reverse proxy on loopback)."""
    port: StrictInt = Field(default=8765, ge=0, le=65535)
    """TCP port of the REST API, the WebSocket ``/ws`` and the dashboard ``/`` (0: any free)."""
    websocket_queue: StrictInt = Field(default=64, ge=1, le=100_000)
    """Messages buffered per WebSocket client; a client that falls this far behind is dropped."""
    query_max_samples: StrictInt = Field(default=2_000_000, ge=1)
    """Most samples one query may load or return; larger queries get HTTP 422 (Prometheus's
    ``--query.max-samples``)."""
    external_url: HttpURL | None = None
    """URL people reach this server at (``https://opscope.example.com``), used in the links of
    delivered reports; default: the address it listens on."""


class SystemConfig(Model):
    """Metrics of the machine opscope runs on, read with psutil."""

    enabled: StrictBool = True
    """Collect ``cpu_usage``, ``memory_usage``, ``disk_usage``, network rates, connections, load."""
    interval: Interval | None = None
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
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise PydanticCustomError("label_name", 'invalid label name "{name}"', {"name": name})
    return labels


class JobConfig(Model):
    """What scrape and probe jobs share: the job name, timing, TLS, redirects, extra labels."""

    job: str = Field(min_length=1)
    """Value of the ``job`` label of every series of this job."""
    interval: Interval | None = None
    """Collection interval; defaults to ``monitor.interval``."""
    timeout: PositiveDuration | None = None
    """Give up after this long (a failed collection). Default 10s for scrapes and 5s for probes,
    capped at the interval; a longer explicit value is an error."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """TLS settings for https targets."""
    follow_redirects: StrictBool = True
    """Follow 3xx redirects (the default of Prometheus and of blackbox_exporter)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels attached to every series of this job (like Prometheus ``static_configs``)."""

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_labels(labels)


class ScrapeConfig(JobConfig):
    """One Prometheus scrape job: targets serving the text exposition format."""

    targets: list[HostPort] = Field(min_length=1)
    """``host:port`` of each target; becomes the ``instance`` label."""
    metrics_path: str = "/metrics"
    """HTTP path of the exposition endpoint."""
    scheme: Literal["http", "https"] = "http"
    """URL scheme used to reach the targets."""
    sample_limit: StrictInt = Field(default=100_000, ge=0)
    """A scrape with more samples fails (``up`` 0), protecting the store from a runaway target
    (Prometheus's ``sample_limit``; 0 = no limit)."""
    body_size_limit: StrictInt = Field(default=64 * 2**20, ge=0)
    """A response body larger than this many bytes fails the scrape (Prometheus's
    ``body_size_limit``; 0 = no limit)."""

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[str]) -> list[str]:
        return distinct(targets)

    @field_validator("metrics_path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise PydanticCustomError(
                "path", 'expected a path starting with "/", got "{p}"', {"p": path}
            )
        return path


class ProbeConfig(JobConfig):
    """HTTP checks of URLs, reported with blackbox_exporter's metric names."""

    targets: list[HttpURL] = Field(min_length=1)
    """URLs to request; each becomes the ``instance`` label."""
    method: Literal["GET", "HEAD", "POST"] = "GET"
    """HTTP method."""
    valid_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)
    """Status codes counted as success; empty means any 2xx (blackbox_exporter's default)."""
    headers: dict[HeaderText, HeaderText] = Field(default_factory=dict)
    """Extra request headers."""

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[str]) -> list[str]:
        return distinct(targets)


class MonitorConfig(Model):
    """What ``opscope serve`` collects, how often, and how long it keeps it."""

    interval: Interval = timedelta(seconds=10)
    """Default collection interval of every collector that does not set its own."""
    retention: PositiveDuration = timedelta(days=15)
    """Samples older than this are deleted by a periodic task (Prometheus's default, 15d)."""
    lookback_delta: PositiveDuration = timedelta(minutes=5)
    """How far back an instant query looks for a series' newest sample (Prometheus's 5m)."""
    system: SystemConfig = Field(default_factory=SystemConfig)
    """Metrics of this machine."""
    scrape: list[ScrapeConfig] = Field(default_factory=list)
    """Prometheus scrape jobs."""
    probes: list[ProbeConfig] = Field(default_factory=list)
    """HTTP probe jobs."""
    sql: list[SqlQueryConfig] = Field(default_factory=list)
    """SQL queries whose rows become samples (business metrics from databases)."""
    push: PushConfig = Field(default_factory=PushConfig)
    """The push API."""
    evaluation_interval: Interval | None = None
    """How often rule groups are evaluated unless they set ``interval``; defaults to
    ``monitor.interval``."""
    rules: list[InlineRule] = Field(default_factory=list)
    """Alerting and recording rules: groups in Prometheus's format (``name``, ``interval``,
    ``rules``) and single rules (gathered into the group ``opscope``); see the rules section."""
    rule_files: list[str] = Field(default_factory=list)
    """Prometheus rule files (glob patterns, relative to this configuration file)."""

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks across fields, as ``(location under monitor, message)`` pairs: job names are
        unique per kind, and an explicit timeout is not longer than its interval."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        named: list[tuple[str, list[JobConfig]]] = [
            ("scrape", list(self.scrape)),
            ("probes", list(self.probes)),
        ]
        for kind, jobs in named:
            seen: set[str] = set()
            for index, job in enumerate(jobs):
                if job.job in seen:
                    found.append(((kind, index, "job"), f'job "{job.job}" is defined twice'))
                seen.add(job.job)
                found += _timeout_problem(kind, index, job.timeout, self.interval_of(job))
        names: set[str] = set()
        for index, query in enumerate(self.sql):
            if query.name in names:
                found.append((("sql", index, "name"), f'query "{query.name}" is defined twice'))
            names.add(query.name)
            found += _timeout_problem("sql", index, query.timeout, self.interval_of(query))
        return found

    def timeout_of(self, job: JobConfig | SqlQueryConfig) -> timedelta:
        """The effective timeout of ``job``: its own, else the default (10s for scrapes and SQL
        queries, 5s for probes) capped at the job's interval, as Prometheus caps
        ``scrape_timeout``."""
        if job.timeout is not None:
            return job.timeout
        default = timedelta(seconds=5 if isinstance(job, ProbeConfig) else 10)
        return min(default, self.interval_of(job))

    def interval_of(self, job: JobConfig | SystemConfig | SqlQueryConfig) -> timedelta:
        """The effective interval of ``job``: its own, else ``monitor.interval``."""
        return job.interval or self.interval


def _timeout_problem(
    kind: str, index: int, timeout: timedelta | None, interval: timedelta
) -> list[tuple[tuple[str | int, ...], str]]:
    if timeout is not None and timeout > interval:
        return [
            (
                (kind, index, "timeout"),
                f"{format_duration(timeout)} is longer than the interval "
                f"{format_duration(interval)}",
            )
        ]
    return []


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
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)
    """Where services are deployed: namespace, backend, replicas, resources, overrides."""
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    """Deployable services: image, port, health check, env, secrets, probes, dependencies."""
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    """How deploys wait, verify, roll back and keep history."""
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    """Alert notifications: channels, routes, grouping, inhibition, retries."""
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    """Business data for reports: files (CSV, Parquet, Excel) or databases, with a mapping."""
    reports: dict[str, ReportConfig] = Field(default_factory=dict)
    """Reports: which data, period, formats, schedule, timezone and recipients."""
