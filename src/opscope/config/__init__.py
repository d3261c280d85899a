"""Configuration of opscope: the typed model of ``opscope.yaml`` and its loader."""

from __future__ import annotations

from opscope.config.loading import LoadedConfig, format_loc, load_config, parse_config
from opscope.config.models import (
    RESERVED_SECTIONS,
    Duration,
    MonitorConfig,
    OpscopeConfig,
    ProbeConfig,
    ScrapeConfig,
    ServerConfig,
    SystemConfig,
)

__all__ = [
    "RESERVED_SECTIONS",
    "Duration",
    "LoadedConfig",
    "MonitorConfig",
    "OpscopeConfig",
    "ProbeConfig",
    "ScrapeConfig",
    "ServerConfig",
    "SystemConfig",
    "format_loc",
    "load_config",
    "parse_config",
]


def json_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of ``opscope.yaml``, for editor completion."""
    schema = OpscopeConfig.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "opscope.yaml"
    return schema
