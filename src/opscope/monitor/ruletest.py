"""``opscope rules test``: unit tests of rules in Prometheus's ``promtool test rules`` format.

A test file lists ``rule_files``, an ``evaluation_interval`` (default 1m), optionally a
``group_eval_order``, and ``tests``: each with ``input_series`` (series in PromQL notation and
values in promtool's expanding notation), ``alert_rule_test`` (the *firing* alerts expected at an
``eval_time``, by ``alertname``, with ``exp_labels`` and ``exp_annotations``) and
``promql_expr_test`` (``exp_samples`` of an expression at an ``eval_time``).

Verdicts follow promtool's (``cmd/promtool/unittest.go``): input samples are placed at
0, interval, 2·interval, …; every group is evaluated at 0, evaluation_interval, … up to the
largest ``eval_time``; an alert test with ``ts ≤ eval_time < ts + evaluation_interval`` is
checked against the evaluation at ``ts``; expected labels get ``alertname`` added; alerts and
samples are compared as sorted sets. A rule that fails to evaluate fails the test, which stops
at that evaluation (``rule: NAME, time: 1m0s, err: …``).

Expanding notation: ``a+bxn`` → ``a, a+b, (a+b)+b, …`` (n+1 values, the step added again and
again as promtool does, so the floats are promtool's; also ``a-bxn``), ``axn`` → n+1
times ``a``, ``_`` → no sample, ``_xn`` → n missing samples, ``stale`` → a staleness marker.
"""

from __future__ import annotations

import glob
import json
import math
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import promql_parser
from pydantic import Field, ValidationError

from opscope.config.loading import LoadedRuleGroup, read_rule_file
from opscope.config.types import Duration, Model
from opscope.config.yamlfile import problems_from, read_yaml, untemplate
from opscope.durations import format_duration
from opscope.errors import ConfigError, ConfigFileError, ConfigProblem, QueryError
from opscope.monitor.promql import Evaluator, Scalar, compile_expr
from opscope.monitor.rules import RuleEngine, RuleGroup, compile_groups
from opscope.monitor.templates import go_exponent
from opscope.store import STALE_NAN, Batch, Store, label_set
from opscope.store.labels import NAME_LABEL
from opscope.store.parsing import parse_promql

_TOKEN = re.compile(
    r"^(?P<start>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN|_|stale)"
    r"(?:(?P<sign>[-+])(?P<step>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?))?"
    r"(?:x(?P<times>\d+))?$"
)


class ExpectedAlert(Model):
    """An alert expected to be firing."""

    exp_labels: dict[str, str] = Field(default_factory=dict)
    exp_annotations: dict[str, str] = Field(default_factory=dict)


class AlertTest(Model):
    """The firing alerts named ``alertname`` expected at ``eval_time``."""

    eval_time: Duration
    alertname: str
    exp_alerts: list[ExpectedAlert] = Field(default_factory=list)


class ExpectedSample(Model):
    """A sample expected in a PromQL result: its labels in series notation (none: ``{}``) and
    its value."""

    labels: str = ""
    value: float


class PromQLTest(Model):
    """The samples ``expr`` is expected to return at ``eval_time``."""

    expr: str
    eval_time: Duration
    exp_samples: list[ExpectedSample] = Field(default_factory=list)


class InputSeries(Model):
    """One input series."""

    series: str
    values: str


class TestGroup(Model):
    """One test: input series and the tests run on them."""

    name: str | None = None
    interval: Duration | None = None
    input_series: list[InputSeries] = Field(default_factory=list)
    alert_rule_test: list[AlertTest] = Field(default_factory=list)
    promql_expr_test: list[PromQLTest] = Field(default_factory=list)
    external_labels: dict[str, str] = Field(default_factory=dict)
    external_url: str | None = None


class TestFile(Model):
    """A ``promtool test rules`` file."""

    rule_files: list[str] = Field(default_factory=list)
    evaluation_interval: Duration = timedelta(minutes=1)
    group_eval_order: list[str] = Field(default_factory=list)
    fuzzy_compare: bool = False
    tests: list[TestGroup] = Field(default_factory=list)


@dataclass
class TestOutcome:
    """The verdict on one test file: failure descriptions (empty when it passed)."""

    file: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every test of the file passed."""
        return not self.failures

    def report(self) -> str:
        """promtool's report: ``Unit Testing:  FILE`` then ``SUCCESS`` or the failures."""
        if self.passed:
            return f"Unit Testing:  {self.file}\n  SUCCESS\n"
        return f"Unit Testing:  {self.file}\n  FAILED:\n" + "\n".join(self.failures) + "\n"


def expand_values(text: str) -> list[float | None]:
    """promtool's expanding notation → values (``None`` = no sample, StaleNaN = ``stale``).

    Raises ``ValueError`` naming the token that is not valid notation.
    """
    out: list[float | None] = []
    for token in text.split():
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError(f"invalid value {token!r} in {text!r}")
        start, sign, step, times = match.group("start", "sign", "step", "times")
        if start in ("_", "stale"):
            if sign is not None:
                raise ValueError(f"invalid value {token!r} in {text!r}")
            value = None if start == "_" else STALE_NAN
            out += [value] * (int(times) if times is not None else 1)
            continue
        first = float(start)
        if times is None:
            if sign is not None:
                raise ValueError(f"invalid value {token!r}: {sign}{step} needs x<count>")
            out.append(first)
            continue
        increment = float(step) if step is not None else 0.0
        if sign == "-":
            increment = -increment
        value = first
        for _ in range(int(times) + 1):  # added again and again, as promtool does (not a + i·b)
            out.append(value)
            value += increment
    return out


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """``name{a="b"}`` → (name, labels); raises ``ValueError`` when it is not series notation."""
    try:
        node = parse_promql(text)
    except (ValueError, QueryError) as exc:
        raise ValueError(f"invalid series {text!r}: {exc}") from exc
    if not isinstance(node, promql_parser.VectorSelector):
        raise ValueError(f'invalid series {text!r}: expected name{{label="value", …}}')
    labels = {}
    for matcher in node.matchers.matchers:
        if str(matcher.op) != "MatchOp.Equal":
            raise ValueError(f"invalid series {text!r}: only = is allowed")
        labels[matcher.name] = matcher.value
    name = node.name or labels.pop(NAME_LABEL, "")
    return name, labels


def _load(store: Store, group: TestGroup, interval_ms: int) -> None:
    rows: dict[int, dict[int, float]] = {}
    for item in group.input_series:
        name, labels = parse_series(item.series)
        series_id = store.series_id(name, label_set(labels))
        for index, value in enumerate(expand_values(item.values)):
            if value is not None:
                rows.setdefault(index * interval_ms, {})[series_id] = value
    for t_ms in sorted(rows):
        row = rows[t_ms]
        store.append(
            [
                Batch(
                    "input",
                    t_ms,
                    np.array(list(row), dtype=np.int64),
                    np.array(list(row.values()), dtype=np.float64),
                )
            ]
        )


def _alerts_text(alerts: list[tuple[dict[str, str], dict[str, str]]]) -> str:
    if not alerts:
        return "[]"
    lines = []
    for i, (labels, notes) in enumerate(alerts):
        lines.append(
            f"            {i}:\n              Labels:{_braces(labels)}\n"
            f"              Annotations:{_braces(notes)}"
        )
    return "[\n" + ",\n".join(lines) + "\n            ]"


def _braces(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _same(a: float, b: float, fuzzy: bool) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if fuzzy:
        return math.isclose(a, b, rel_tol=4 * 2.0**-52, abs_tol=0.0) or a == b
    return a == b


def _ordered(groups: list[RuleGroup], order: list[str]) -> list[RuleGroup]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(groups, key=lambda g: rank.get(g.name, len(rank)))


def run_test_group(
    test: TestGroup, groups: list[LoadedRuleGroup], spec: TestFile, workdir: Path
) -> list[str]:
    """Run one test group; returns failure descriptions (promtool's wording)."""
    interval = (test.interval or spec.evaluation_interval).total_seconds()
    evaluation_interval = spec.evaluation_interval.total_seconds()
    failures: list[str] = []
    with Store.open(workdir) as store:
        _load(store, test, round(interval * 1000))
        compiled = _ordered(compile_groups(groups), spec.group_eval_order)
        engine = RuleEngine(store, compiled, external_labels=test.external_labels)
        times = [t.eval_time.total_seconds() for t in test.alert_rule_test]
        times += [t.eval_time.total_seconds() for t in test.promql_expr_test]
        last = max(times, default=0.0)
        pending_tests = sorted(test.alert_rule_test, key=lambda t: t.eval_time)
        ts = 0.0
        while ts <= last + 1e-9:
            errors = []
            for group in compiled:
                engine.evaluate(group, ts)
                errors += [
                    f"    rule: {rule.name}, time: {_go_duration(ts)}, err: {rule.last_error}"
                    for rule in group.rules
                    if rule.health == "err"
                ]
            if errors:  # promtool stops the test at the first evaluation that failed
                return failures + errors
            while (
                pending_tests
                and ts <= pending_tests[0].eval_time.total_seconds() < ts + evaluation_interval
            ):
                failures += _check_alerts(pending_tests.pop(0), engine)
            ts += evaluation_interval
        evaluator = Evaluator(store)
        for case in test.promql_expr_test:
            failures += _check_expr(case, evaluator, spec.fuzzy_compare)
    return failures


def _go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration`` prints it (promtool's evaluation times): ``0s``,
    ``1m30s``, ``2h0m0s``, ``500ms``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)

    def number(value: int, unit: int) -> str:
        whole, fraction = divmod(value, unit)
        digits = f"{fraction:0{len(str(unit)) - 1}d}".rstrip("0") if fraction else ""
        return f"{whole}.{digits}" if digits else str(whole)

    if ns < 1_000_000_000:
        for suffix, unit in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= unit:
                return f"{sign}{number(ns, unit)}{suffix}"
    hours, ns = divmod(ns, 3_600_000_000_000)
    minutes, ns = divmod(ns, 60_000_000_000)
    text = f"{hours}h{minutes}m" if hours else (f"{minutes}m" if minutes else "")
    return f"{sign}{text}{number(ns, 1_000_000_000)}s"


def _check_alerts(case: AlertTest, engine: RuleEngine) -> list[str]:
    got = _sorted_alerts(
        (dict(a.labels), dict(a.annotations))
        for rule in engine.rules
        if rule.is_alerting and rule.name == case.alertname
        for a in rule.alerts.values()
        if a.state == "firing"
    )
    expected = _sorted_alerts(
        ({**e.exp_labels, "alertname": case.alertname}, e.exp_annotations) for e in case.exp_alerts
    )
    if got == expected:
        return []
    return [
        f"    alertname: {case.alertname}, time: {format_duration(case.eval_time)}, \n"
        f"        exp:{_alerts_text(expected)}, \n        got:{_alerts_text(got)}"
    ]


def _sorted_alerts(
    alerts: Iterable[tuple[dict[str, str], dict[str, str]]],
) -> list[tuple[dict[str, str], dict[str, str]]]:
    """Alerts in promtool's order: by labels, then annotations (each compared name by name)."""
    return sorted(alerts, key=lambda a: (sorted(a[0].items()), sorted(a[1].items())))


def _check_expr(case: PromQLTest, evaluator: Evaluator, fuzzy: bool) -> list[str]:
    where = f"    expr: {json.dumps(case.expr)}, time: {format_duration(case.eval_time)},"
    try:
        value = evaluator.instant(
            compile_expr(case.expr), round(case.eval_time.total_seconds() * 1000)
        )
    except QueryError as exc:
        return [f"{where} err: {exc}"]
    got = (
        [({}, value.value)] if isinstance(value, Scalar) else [(s.metric(), s.value) for s in value]
    )
    expected = []
    for sample in case.exp_samples:
        try:
            series = sample.labels.strip()
            name, labels = parse_series(series) if series not in ("", "{}") else ("", {})
        except ValueError as exc:
            return [f"{where} {exc}"]
        expected.append(({**labels, **({NAME_LABEL: name} if name else {})}, sample.value))
    got.sort(key=lambda s: sorted(s[0].items()))
    expected.sort(key=lambda s: sorted(s[0].items()))
    same = len(got) == len(expected) and all(
        g[0] == e[0] and _same(g[1], e[1], fuzzy) for g, e in zip(got, expected, strict=True)
    )
    if same:
        return []

    def text(samples: list[tuple[dict[str, str], float]]) -> str:
        shown = [f"{_braces(labels)} {go_exponent(value, upper=True)}" for labels, value in samples]
        return ", ".join(shown) or "nil"

    return [f"{where}\n        exp: {text(expected)}\n        got: {text(got)}"]


def run_test_file(path: Path) -> TestOutcome:
    """Run every test of the file at ``path``.

    Raises :class:`ConfigError` (with file and line) when the file or a rule file it names is
    invalid, as promtool stops on those too.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(
            [ConfigProblem(str(path), None, None, "", f"cannot read file: {exc.strerror}")]
        ) from exc
    data, positions = read_yaml(text, str(path))
    data = untemplate(data) if data is not None else {}
    try:
        spec = TestFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(problems_from(exc, TestFile, positions, str(path), data)) from None
    groups: list[LoadedRuleGroup] = []
    for pattern in spec.rule_files:
        full = pattern if Path(pattern).is_absolute() else str(path.parent / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(pattern) else [full]
        for rule_file in matches:
            try:
                rule_text = Path(rule_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"{path}: cannot read rule file {rule_file}: {exc.strerror}"
                ) from exc
            groups += read_rule_file(rule_text, rule_file, spec.evaluation_interval)
    outcome = TestOutcome(str(path))
    for index, test in enumerate(spec.tests):
        with tempfile.TemporaryDirectory(prefix="opscope-rules-test-") as workdir:
            try:
                outcome.failures += run_test_group(test, groups, spec, Path(workdir))
            except ValueError as exc:
                outcome.failures.append(f"    tests[{index}]: {exc}")
    return outcome
