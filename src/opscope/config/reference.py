"""The configuration reference in Markdown, generated from the models (never written by hand).

``opscope schema --markdown`` prints it; ``docs/configuration.md`` is its output, and a test
checks that the file is up to date.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from opscope.config.deploy import (
    Autoscaling,
    DeploySettings,
    EnvironmentConfig,
    HttpProbe,
    KubernetesTarget,
    MonitoringWiring,
    Probes,
    Resources,
    SecretRef,
    ServiceConfig,
)
from opscope.config.models import (
    MonitorConfig,
    OpscopeConfig,
    ProbeConfig,
    ScrapeConfig,
    ServerConfig,
    SystemConfig,
    TLSConfig,
)
from opscope.config.notify import (
    ChannelConfig,
    InhibitRule,
    NotifyConfig,
    RetryConfig,
    RouteConfig,
)
from opscope.config.reports import (
    DealsMapping,
    ForecastConfig,
    MappingConfig,
    ReportConfig,
    SourceConfig,
    TableMapping,
)
from opscope.config.rules import RuleConfig, RuleGroupConfig
from opscope.durations import format_duration

_REQUIRED = object()
_SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("", OpscopeConfig, "top level"),
    ("server", ServerConfig, "server"),
    ("monitor", MonitorConfig, "monitor"),
    ("monitor.system", SystemConfig, "monitor.system"),
    ("monitor.scrape[]", ScrapeConfig, "monitor.scrape[] (one entry per job)"),
    ("monitor.probes[]", ProbeConfig, "monitor.probes[] (one entry per job)"),
    ("….tls", TLSConfig, "monitor.scrape[].tls and monitor.probes[].tls"),
    ("monitor.rules[]", RuleGroupConfig, "rule groups (monitor.rules or a rule file's groups)"),
    ("….rules[]", RuleConfig, "rules (alerting or recording)"),
    ("notify", NotifyConfig, "notify"),
    ("notify.channels.NAME", ChannelConfig, "notify.channels (a string is the apprise url)"),
    ("notify.routes[]", RouteConfig, "notify.routes[]"),
    ("notify.inhibit[]", InhibitRule, "notify.inhibit[]"),
    ("notify.retry", RetryConfig, "notify.retry"),
    ("environments.ENV", EnvironmentConfig, "environments (one entry per environment)"),
    ("environments.ENV.resources", Resources, "resources and limits (CPU and memory)"),
    ("environments.ENV.kubernetes", KubernetesTarget, "environments.ENV.kubernetes"),
    ("environments.ENV.monitoring", MonitoringWiring, "environments.ENV.monitoring"),
    ("services.NAME", ServiceConfig, "services (one entry per service)"),
    ("services.NAME.secrets.VAR", SecretRef, "services.NAME.secrets (one entry per variable)"),
    ("services.NAME.probes", Probes, "services.NAME.probes"),
    ("….readiness / ….liveness", HttpProbe, "one probe"),
    ("services.NAME.autoscaling", Autoscaling, "services.NAME.autoscaling"),
    ("deploy", DeploySettings, "deploy"),
    ("sources.NAME", SourceConfig, "sources (one entry per data source)"),
    ("sources.NAME.mapping", MappingConfig, "sources.NAME.mapping (or a preset name)"),
    ("….deals", DealsMapping, "mapping.deals"),
    ("….TABLE", TableMapping, "mapping.owners, products, accounts, leads, targets, …"),
    ("reports.NAME", ReportConfig, "reports (one entry per report)"),
    ("reports.NAME.forecast", ForecastConfig, "reports.NAME.forecast"),
]


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return "section"
    if "anyOf" in spec:
        kinds = [_type(s) for s in spec["anyOf"] if s.get("type") != "null"]
        return " or ".join(kinds) if kinds else "any"
    if "pattern" in spec and spec.get("type") == "string" and "ms" in spec["pattern"]:
        return "duration"
    kind = spec.get("type")
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    if kind == "object":
        return "mapping"
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    return {"string": "string", "integer": "integer", "boolean": "boolean", "number": "number"}.get(
        str(kind), "any"
    )


def _default_value(model: type[BaseModel], field: str) -> Any:
    by_alias = {(info.alias or name): info for name, info in model.model_fields.items()}
    info = by_alias[field]
    if info.is_required():
        return _REQUIRED
    return info.get_default(call_default_factory=True)


def _default(value: Any) -> str:
    if value is _REQUIRED:
        return "*required*"
    if value is None or isinstance(value, BaseModel):
        return ""
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if isinstance(value, list) and len(json.dumps(value)) > 40:
        return "see below"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return f"`{text}`".replace("|", "\\|")


def markdown_reference() -> str:
    """The reference of every section and field of ``opscope.yaml`` as Markdown."""
    schema = OpscopeConfig.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    lines = [
        "# opscope.yaml reference",
        "",
        "Generated by `opscope schema --markdown` from the configuration models; do not edit.",
        "Durations are Prometheus durations (`500ms`, `15s`, `5m`, `1h30m`, `15d`). String values",
        "may use `${VAR}` or `${VAR:-default}` (environment variables); `$$` is a literal `$`.",
        "Unknown fields are errors.",
        "",
    ]
    for prefix, cls, title in _SECTIONS:
        model = schema if cls is OpscopeConfig else defs[cls.__name__]
        lines += [f"## {title}", ""]
        if model.get("description"):
            lines += [" ".join(model["description"].split()), ""]
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        defaults = {field: _default_value(cls, field) for field in model.get("properties", {})}
        for field, spec in model.get("properties", {}).items():
            path = f"{prefix}.{field}" if prefix else field
            meaning = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
            lines.append(f"| `{path}` | {_type(spec)} | {_default(defaults[field])} | {meaning} |")
        long_defaults = [
            (field, value)
            for field, value in defaults.items()
            if isinstance(value, list) and len(json.dumps(value)) > 40
        ]
        for field, value in long_defaults:
            lines += ["", f"Default of `{field}`: " + ", ".join(f"`{v}`" for v in value) + "."]
        lines.append("")
    return "\n".join(lines)
