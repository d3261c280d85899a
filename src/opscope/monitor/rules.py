"""Rule groups: compiling rules, evaluating them in order, recording results, alert state.

A group is evaluated at its interval; each rule in order, at the group's scheduled time:

* a recording rule's result is written as series named by ``record`` (labels: the result's
  without ``__name__`` plus the rule's labels);
* an alerting rule's result drives the alert lifecycle of :mod:`opscope.monitor.alerts`, and the
  ``ALERTS``/``ALERTS_FOR_STATE`` series are written as Prometheus writes them.

As in Prometheus, each rule sees what the rules before it in the group wrote in the same
evaluation (a recording rule feeding an alert acts at once, not one interval later), staleness
markers of series a rule wrote last time and not this time included. Everything one group
evaluation writes goes into the store in one transaction, with those staleness markers (Prometheus's
rule-group staleness), together with the state of every alert, so that pending progress survives a
restart
(restored unless the server was down longer than :data:`OUTAGE_TOLERANCE`, as Prometheus's
``--rules.alert.for-outage-tolerance``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from opscope.config.loading import LoadedRule, LoadedRuleGroup
from opscope.errors import ConfigFileError, ConfigProblem, QueryError
from opscope.monitor.alerts import Alert, Candidate, Change, Labels, active_series, step
from opscope.monitor.promql import Evaluator, Node, Scalar, compile_expr
from opscope.monitor.promql.engine import drop_name
from opscope.monitor.templates import Template, TemplateError
from opscope.store import STALE_NAN, Batch, Store, is_stale, label_set
from opscope.store.series import SeriesRef

log = logging.getLogger(__name__)

#: A server down longer than this does not restore pending/firing alerts (seconds).
OUTAGE_TOLERANCE = 3600.0
Health = Literal["unknown", "ok", "err"]


@dataclass
class Rule:
    """A compiled rule and its evaluation state."""

    loaded: LoadedRule
    key: str
    node: Node
    labels: dict[str, Template]
    annotations: dict[str, Template]
    alerts: dict[Labels, Alert] = field(default_factory=dict)
    health: Health = "unknown"
    last_error: str = ""
    last_evaluation: float | None = None
    evaluation_duration: float = 0.0
    saved_signature: tuple[tuple[object, ...], ...] = ()
    #: Series ids this rule wrote at its last evaluation (to mark them stale when they go).
    written: set[int] = field(default_factory=set)
    #: Result labels → (labels without the name, alert labels), when no label uses $value.
    label_cache: dict[Labels, tuple[dict[str, str], Labels]] = field(default_factory=dict)

    @property
    def labels_use_value(self) -> bool:
        """Whether a label template depends on the alert's value."""
        return any(t.uses_value for t in self.labels.values())

    @property
    def name(self) -> str:
        """The alert or record name."""
        return self.loaded.config.name

    @property
    def is_alerting(self) -> bool:
        """Alerting (``alert``) rather than recording (``record``)."""
        return self.loaded.config.alert is not None


@dataclass
class RuleGroup:
    """A compiled rule group."""

    name: str
    file: str
    interval: float
    rules: list[Rule]
    last_evaluation: float | None = None
    evaluation_duration: float = 0.0
    written: set[int] = field(default_factory=set)
    #: Most alerts (series) one rule may produce per evaluation; 0: no limit.
    limit: int = 0

    @property
    def store_group(self) -> str:
        """The store group the group's output series are written under."""
        return f"rules/{self.file}/{self.name}"


def compile_groups(groups: Iterable[LoadedRuleGroup]) -> list[RuleGroup]:
    """Compile every rule's PromQL and templates.

    Raises :class:`ConfigFileError` listing every rule that does not compile, each with the
    rule's file, line, field path, name and the construct at fault.
    """
    problems: list[ConfigProblem] = []
    compiled = []
    for group in groups:
        rules = []
        for index, loaded in enumerate(group.rules):
            try:
                node = compile_expr(loaded.config.expression())
            except QueryError as exc:
                problems.append(loaded.problem(str(exc)))
                continue
            templates: dict[str, dict[str, Template]] = {"labels": {}, "annotations": {}}
            for kind, texts in (
                ("labels", loaded.config.all_labels()),
                ("annotations", loaded.config.annotations),
            ):
                for name, text in texts.items():
                    try:
                        templates[kind][name] = Template.compile(text)
                    except TemplateError as exc:
                        problems.append(loaded.problem(str(exc), field=f"{kind}.{name}"))
            key = f"{group.file}:{group.name}:{index}:{loaded.config.name}"
            rules.append(Rule(loaded, key, node, templates["labels"], templates["annotations"]))
        compiled.append(
            RuleGroup(
                group.name, group.file, group.interval.total_seconds(), rules, limit=group.limit
            )
        )
    if problems:
        raise ConfigFileError(problems)
    return compiled


def _alert_to_json(alert: Alert) -> dict[str, object]:
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": alert.state,
        "active_at": alert.active_at,
        "value": alert.value,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "keep_firing_since": alert.keep_firing_since,
        "last_notified": alert.last_notified,
    }


def _signature(alerts: dict[Labels, Alert]) -> tuple[tuple[object, ...], ...]:
    """What restoring needs of a rule's alerts (values and annotations may lag behind)."""
    return tuple(
        sorted(
            (a.labels, a.state, a.active_at, a.fired_at, a.resolved_at, a.keep_firing_since)
            for a in alerts.values()
        )
    )


def _alert_from_json(data: dict[str, Any]) -> Alert:
    return Alert(
        labels=tuple(sorted(data["labels"].items())),
        annotations=tuple(sorted(data["annotations"].items())),
        state=data["state"],
        active_at=float(data["active_at"]),
        value=float(data["value"]),
        fired_at=data.get("fired_at"),
        resolved_at=data.get("resolved_at"),
        keep_firing_since=data.get("keep_firing_since"),
        last_notified=data.get("last_notified"),
    )


@dataclass(frozen=True)
class GroupResult:
    """What one evaluation of a group changed."""

    group: RuleGroup
    changes: list[Change]


class RuleEngine:
    """Evaluates compiled groups over a store and keeps their alert state there.

    ``evaluate(group, t)`` is synchronous (run it in a worker thread from async code).
    """

    def __init__(
        self,
        store: Store,
        groups: list[RuleGroup],
        *,
        lookback_ms: int = 300_000,
        external_labels: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.groups = groups
        self.evaluator = Evaluator(store, lookback_ms=lookback_ms)
        self.external_labels = external_labels or {}
        self._ids: dict[tuple[str, Labels], int] = {}
        self._ids_version = -1

    @property
    def rules(self) -> list[Rule]:
        """Every rule of every group, in order."""
        return [rule for group in self.groups for rule in group.rules]

    def restore(self, now: float) -> int:
        """Load saved alert state; returns the number of alerts restored.

        Nothing is restored when the state was saved more than :data:`OUTAGE_TOLERANCE` ago.
        """
        saved = self.store.load_state("alerts/")
        heartbeats = self.store.load_state("alerts-group/")
        restored = 0
        for group in self.groups:
            beat = heartbeats.get(f"alerts-group/{group.store_group}")
            if beat is None or now - json.loads(beat[0])["at"] > OUTAGE_TOLERANCE:
                continue
            for rule in group.rules:
                entry = saved.get(f"alerts/{rule.key}")
                if entry is None:
                    continue
                alerts = [_alert_from_json(a) for a in json.loads(entry[0])]
                rule.alerts = {a.labels: a for a in alerts}
                rule.saved_signature = _signature(rule.alerts)
                restored += len(alerts)
        return restored

    def evaluate(self, group: RuleGroup, t: float) -> GroupResult:
        """Evaluate every rule of ``group`` at ``t`` (Unix seconds) and store the outcome."""
        started = time.perf_counter()
        t_ms = int(t * 1000)
        if self._ids_version != self.store.index.version:  # a series came or went
            self._ids.clear()
            self._ids_version = self.store.index.version
        # What this evaluation writes so far, by metric name, visible to the rules that follow.
        written: dict[str, dict[int, tuple[SeriesRef, float]]] = {}
        values: dict[int, float] = {}
        changes: list[Change] = []
        for rule in group.rules:
            rule_started = time.perf_counter()
            try:
                produced, changed = self._evaluate_rule(rule, t, t_ms, written, group.limit)
            except (QueryError, ValueError) as exc:
                rule.health, rule.last_error = "err", str(exc)
                log.warning("rule %s in group %s failed: %s", rule.name, group.name, exc)
            else:
                rule.health, rule.last_error = "ok", ""
                ids = {self._series(name, labels): value for name, labels, value in produced}
                stopped = {series_id: STALE_NAN for series_id in rule.written - ids.keys()}
                for series_id, value in (*ids.items(), *stopped.items()):
                    ref = self.store.index.ref(series_id)
                    written.setdefault(ref.name, {})[series_id] = (ref, value)
                    values[series_id] = value
                rule.written = set(ids)
                changes += changed
            rule.last_evaluation = t
            rule.evaluation_duration = time.perf_counter() - rule_started
        self._write(group, t_ms, values, t)
        group.last_evaluation = t
        group.evaluation_duration = time.perf_counter() - started
        return GroupResult(group, changes)

    def _series(self, name: str, labels: Labels) -> int:
        key = (name, labels)
        series_id = self._ids.get(key)
        if series_id is None:
            series_id = self._ids[key] = self.store.series_id(name, labels)
            self._ids_version = self.store.index.version
        return series_id

    def _evaluate_rule(
        self,
        rule: Rule,
        t: float,
        t_ms: int,
        written: dict[str, dict[int, tuple[SeriesRef, float]]],
        limit: int,
    ) -> tuple[list[tuple[str, Labels, float]], list[Change]]:
        """One rule's samples and alert transitions; raises ``ValueError`` (as Prometheus
        fails the rule) for duplicate label sets and results over the group's ``limit``."""
        value = self.evaluator.instant(rule.node, t_ms, pending=written)
        vector = (
            [(tuple[tuple[str, str], ...](), value.value)]
            if isinstance(value, Scalar)
            else [(s.labels, s.value) for s in value]
        )
        if not rule.is_alerting:
            if 0 < limit < len(vector):
                raise ValueError(f"exceeded limit of {limit} with {len(vector)} series")
            out: list[tuple[str, Labels, float]] = []
            seen: set[Labels] = set()
            extra = {k: t.source for k, t in rule.labels.items()}
            for labels, v in vector:
                merged = label_set({**dict(drop_name(labels)), **extra})
                if merged in seen:
                    raise ValueError(
                        "vector contains metrics with the same labelset after applying rule labels"
                    )
                seen.add(merged)
                out.append((rule.name, merged, v))
            return out, []
        candidates = []
        for labels, v in vector:
            cached = rule.label_cache.get(labels)
            if cached is None:  # alert labels depend on $value only if a label template uses it
                plain = dict(drop_name(labels))
                expanded = {
                    k: tmpl.expand(plain, v, self.external_labels)
                    for k, tmpl in rule.labels.items()
                }
                cached = (plain, label_set({**plain, **expanded, "alertname": rule.name}))
                if not rule.labels_use_value and len(rule.label_cache) < 100_000:
                    rule.label_cache[labels] = cached
            plain, alert_labels = cached
            annotations = tuple(
                sorted(
                    (k, tmpl.expand(plain, v, self.external_labels))
                    for k, tmpl in rule.annotations.items()
                )
            )
            candidates.append(Candidate(alert_labels, annotations, v))
        config = rule.loaded.config
        rule.alerts, changes = step(
            rule.alerts,
            candidates,
            now=t,
            hold=config.for_.total_seconds(),
            keep_firing_for=config.keep_firing_for.total_seconds(),
        )
        if 0 < limit < len(candidates):
            # Prometheus forgets every alert of the rule and fails the evaluation
            rule.alerts = {}
            raise ValueError(f"exceeded limit of {limit} with {len(candidates)} alerts")
        return active_series(rule.alerts), changes

    def _write(self, group: RuleGroup, t_ms: int, values: dict[int, float], t: float) -> None:
        """Store what the evaluation wrote (``values``: staleness markers of series rules
        stopped writing included) with the series the group wrote last time and no rule
        wrote now marked stale, and the alert state, in one transaction."""
        stale = group.written - values.keys()
        series = np.array([*values, *stale], dtype=np.int64)
        data = np.array([*values.values(), *[STALE_NAN] * len(stale)], dtype=np.float64)
        # The group's heartbeat says when its state was last current; a rule's alerts are
        # rewritten only when what restoring needs of them changed.
        state = {f"alerts-group/{group.store_group}": json.dumps({"at": t})}
        for rule in group.rules:
            if not rule.is_alerting:
                continue
            signature = _signature(rule.alerts)
            if signature != rule.saved_signature:
                state[f"alerts/{rule.key}"] = json.dumps(
                    [_alert_to_json(a) for a in rule.alerts.values()]
                )
                rule.saved_signature = signature
        batches = [Batch(group.store_group, t_ms, series, data)] if len(series) else []
        self.store.append(batches, state=state, state_time=t)
        live = ~is_stale(data[: len(values)])
        group.written = set(series[: len(values)][live].tolist())


def group_offset(group: RuleGroup) -> float:
    """A stable offset within the interval, so that groups do not all evaluate at once."""
    return (zlib.crc32(f"{group.file}:{group.name}".encode()) / 2**32) * group.interval


def next_evaluation(group: RuleGroup, now: float) -> float:
    """The first scheduled evaluation time at or after ``now``."""
    offset = group_offset(group)
    return math.ceil((now - offset) / group.interval) * group.interval + offset
