"""Configuration of opscope: the typed model of ``opscope.yaml`` and its loader."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from opscope.config.loading import (
    LoadedConfig,
    LoadedRule,
    LoadedRuleGroup,
    load_config,
    load_data_dir,
    parse_config,
    read_rule_file,
)
from opscope.config.models import (
    RESERVED_SECTIONS,
    MonitorConfig,
    OpscopeConfig,
    ProbeConfig,
    ScrapeConfig,
    ServerConfig,
    SystemConfig,
)
from opscope.config.types import Duration
from opscope.config.yamlfile import format_loc
from opscope.durations import format_duration

__all__ = [
    "RESERVED_SECTIONS",
    "Duration",
    "LoadedConfig",
    "LoadedRule",
    "LoadedRuleGroup",
    "MonitorConfig",
    "OpscopeConfig",
    "ProbeConfig",
    "ScrapeConfig",
    "ServerConfig",
    "SystemConfig",
    "format_loc",
    "load_config",
    "load_data_dir",
    "parse_config",
    "read_rule_file",
]


class _Schema(GenerateJsonSchema):
    """Writes duration defaults as ``10s`` (the notation users write), not ISO 8601."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def json_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of ``opscope.yaml``, for editor completion."""
    schema = OpscopeConfig.model_json_schema(mode="validation", schema_generator=_Schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "opscope.yaml"
    return schema
