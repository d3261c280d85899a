"""Alerting and recording rules in Prometheus's rule-file format, plus the seed's short form.

A rule file (``monitor.rule_files``) is exactly Prometheus's::

    groups:
      - name: node
        interval: 30s            # optional; default monitor.evaluation_interval
        rules:
          - alert: HighCPU
            expr: cpu_usage > 80
            for: 5m
            keep_firing_for: 0s
            labels: {severity: warning}
            annotations: {summary: "CPU at {{ $value }}% on {{ $labels.instance }}"}
          - record: job:up:sum
            expr: sum by (job) (up)

A group may set ``limit``, Prometheus's bound on the alerts an alerting rule (series a recording
rule) may produce: an evaluation producing more fails. ``query_offset`` is refused (not
supported). An unquoted number is a valid ``expr`` (``expr: 1``), as in Prometheus.

Inline, ``monitor.rules`` is a list whose items are groups (with ``rules``) or single rules
(gathered into the group ``opscope``). A single rule may use the seed's short form —
``metric``, ``op``, ``threshold`` (and ``severity``) — which compiles to ``expr``
(``metric op threshold``) and ``labels.severity``; rule files, read by Prometheus too, may not.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from opscope.config.types import LABEL_NAME, Duration, Interval, Model

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
#: The group inline rules without a group are gathered into.
DEFAULT_GROUP = "opscope"
#: Fields of the seed's short form, allowed inline only (not in Prometheus's rule format).
SHORT_FORM_FIELDS = ("metric", "op", "threshold", "severity")


def _number_as_text(value: Any) -> Any:
    """``expr: 1`` (a YAML number) is the expression ``1``, as Prometheus reads it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


#: An expression: a string, or a number written without quotes.
Expression = Annotated[str, BeforeValidator(_number_as_text)]


class RuleConfig(Model):
    """One alerting rule (``alert``) or recording rule (``record``)."""

    alert: str | None = None
    """Name of the alert (the ``alertname`` label)."""
    record: str | None = None
    """Name of the series a recording rule writes."""
    expr: Expression | None = None
    """PromQL expression; every result element is an alert (or a recorded sample)."""
    metric: str | None = None
    """Short form: the metric compared with ``threshold`` (instead of ``expr``)."""
    op: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    """Short form: the comparison (default ``>``)."""
    threshold: StrictFloat | StrictInt | None = None
    """Short form: the value ``metric`` is compared with."""
    for_: Duration = Field(default=timedelta(0), alias="for")
    """How long a result must persist before the alert fires (pending until then)."""
    keep_firing_for: Duration = timedelta(0)
    """How long a firing alert keeps firing after its result disappeared."""
    severity: str | None = None
    """Short form for ``labels.severity``."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to the alert (templates allowed) or to the recorded series."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the alert (templates with ``{{ $labels.x }}`` and ``{{ $value }}``)."""

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for name in labels:
            if not LABEL_NAME.match(name) or name.startswith("__"):
                raise PydanticCustomError("label_name", 'invalid label name "{n}"', {"n": name})
        if "severity" in labels and info.data.get("severity") is not None:
            raise PydanticCustomError(
                "rule", "severity is given twice: as severity and as labels.severity", {}
            )
        return labels

    @model_validator(mode="after")
    def _shape(self) -> RuleConfig:
        if (self.alert is None) == (self.record is None):
            raise PydanticCustomError("rule", "a rule needs exactly one of alert or record", {})
        if self.record is not None:
            if not _METRIC_NAME.match(self.record):
                raise PydanticCustomError(
                    "rule", 'invalid metric name "{n}" in record', {"n": self.record}
                )
            if self.for_ or self.keep_firing_for or self.annotations or self.severity:
                raise PydanticCustomError(
                    "rule",
                    "a recording rule cannot have for, keep_firing_for, annotations or severity",
                    {},
                )
        short = self.metric is not None or self.threshold is not None or self.op is not None
        if short and self.expr is not None:
            raise PydanticCustomError("rule", "give either expr or metric/op/threshold", {})
        if short and (self.metric is None or self.threshold is None):
            raise PydanticCustomError("rule", "the short form needs metric and threshold", {})
        if not short and self.expr is None:
            raise PydanticCustomError("rule", "expr is required", {})
        if self.metric is not None and not _METRIC_NAME.match(self.metric):
            raise PydanticCustomError("rule", 'invalid metric name "{n}"', {"n": self.metric})
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise PydanticCustomError("rule", "threshold must be a finite number", {})
        return self

    @property
    def name(self) -> str:
        """The alert or record name."""
        return self.alert or self.record or ""

    def expression(self) -> str:
        """``expr``, or the short form compiled to ``metric op threshold``."""
        if self.expr is not None:
            return self.expr
        return f"{self.metric} {self.op or '>'} {self.threshold:g}"

    def all_labels(self) -> dict[str, str]:
        """``labels`` with ``severity`` folded in."""
        if self.severity is None:
            return dict(self.labels)
        return {**self.labels, "severity": self.severity}


class RuleGroupConfig(Model):
    """A group of rules evaluated together at one interval, in order."""

    name: str = Field(min_length=1)
    """Name of the group (unique)."""
    interval: Interval | None = None
    """Evaluation interval; defaults to ``monitor.evaluation_interval``."""
    limit: StrictInt = 0
    """Most alerts an alerting rule, or series a recording rule, may produce in one evaluation;
    more fails the evaluation (Prometheus's ``limit``). 0 (or less): no limit."""
    rules: list[RuleConfig] = Field(default_factory=list)
    """The rules, evaluated in order."""


class RuleFileConfig(Model):
    """A Prometheus rule file."""

    groups: list[RuleGroupConfig] = Field(default_factory=list)
    """Rule groups."""


def _rule_or_group(value: Any) -> str:
    if isinstance(value, dict):
        return "group" if "rules" in value else "rule"
    return "group" if isinstance(value, RuleGroupConfig) else "rule"


#: An item of ``monitor.rules``: a group (it has ``rules``) or a single rule.
InlineRule = Annotated[
    Annotated[RuleConfig, Tag("rule")] | Annotated[RuleGroupConfig, Tag("group")],
    Discriminator(_rule_or_group),
]
#: Union tags that appear in validation error locations and are not in the file.
UNION_TAGS = frozenset({"rule", "group"})
