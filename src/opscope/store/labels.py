"""Label sets and series selectors (PromQL's ``name{label="value", …}``).

A series is identified by its metric name and its label set. Label sets are held as tuples of
``(name, value)`` pairs sorted by name — hashable, comparable and cheap — and never include the
metric name; ``__name__`` appears only at the API boundary, as in Prometheus's JSON.

Selectors are parsed with the ``promql-parser`` package (the PromQL grammar of Prometheus itself)
and matched here with Prometheus's rules: a missing label has the value ``""``, regular
expressions are RE2 (as in Prometheus: linear-time matching, so no pattern can hang the server),
fully anchored, with ``.`` matching newlines (Prometheus compiles ``^(?s:…)$``), and a selector
must contain at least one matcher that does not match the empty string (``{job=~".*"}`` alone is
refused, as Prometheus refuses it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import promql_parser
import re2

from opscope.errors import QueryError, UnsupportedQuery
from opscope.store.parsing import parse_promql

LabelSet = tuple[tuple[str, str], ...]
MatchOp = Literal["=", "!=", "=~", "!~"]
NAME_LABEL = "__name__"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.dot_nl = True  # Prometheus: ^(?s:pattern)$
_RE2_OPTIONS.log_errors = False  # a bad pattern is the user's error, reported as a QueryError
_RE2_OPTIONS.never_capture = True

_OPS: dict[str, MatchOp] = {
    "MatchOp.Equal": "=",
    "MatchOp.NotEqual": "!=",
    "MatchOp.Re": "=~",
    "MatchOp.NotRe": "!~",
}


def label_set(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> LabelSet:
    """The canonical (sorted, empty values dropped) form of ``labels``.

    An empty label value is the same as an absent label in Prometheus, so it is dropped.
    """
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple(sorted((k, v) for k, v in items if v != ""))


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``name op value`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``."""

    name: str
    op: MatchOp
    value: str
    _regex: re2._Regexp | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, name: str, op: MatchOp, value: str) -> Matcher:
        """Build a matcher; raises :class:`QueryError` for an invalid regular expression."""
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re2.compile(value, options=_RE2_OPTIONS)
            except re2.error as exc:
                reason = exc.args[0] if exc.args else exc
                if isinstance(reason, bytes):
                    reason = reason.decode(errors="replace")
                raise QueryError(f"invalid regular expression {value!r}: {reason}") from exc
        return cls(name, op, value, regex)

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` when the label is absent) satisfies this matcher."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


@dataclass(frozen=True)
class Selector:
    """A series selector: a conjunction of label matchers (the metric name is ``__name__``)."""

    matchers: tuple[Matcher, ...]

    @property
    def metric_name(self) -> str | None:
        """The metric name when the selector fixes it with ``__name__="…"``, else ``None``."""
        for m in self.matchers:
            if m.name == NAME_LABEL and m.op == "=":
                return m.value
        return None

    def matches(self, name: str, labels: LabelSet) -> bool:
        """Whether the series ``name{labels}`` is selected."""
        values = dict(labels)
        values[NAME_LABEL] = name
        return all(m.matches(values.get(m.name, "")) for m in self.matchers)

    def __str__(self) -> str:
        name = self.metric_name
        rest = [m for m in self.matchers if not (m.name == NAME_LABEL and m.op == "=")]
        inner = ", ".join(str(m) for m in rest)
        if name is None:
            return "{" + inner + "}"
        return f"{name}{{{inner}}}" if inner else name


def selector_from_ast(node: promql_parser.VectorSelector) -> Selector:
    """Convert a ``promql_parser.VectorSelector`` to a :class:`Selector` (offset/@ not handled)."""
    matchers: list[Matcher] = []
    if node.name:
        matchers.append(Matcher.of(NAME_LABEL, "=", node.name))
    if node.matchers.or_matchers:
        raise UnsupportedQuery("'or' inside a selector's braces is not supported")
    for m in node.matchers.matchers:
        matchers.append(Matcher.of(m.name, _OPS[str(m.op)], m.value))
    if not matchers or all(m.matches("") for m in matchers):
        raise QueryError(f"vector selector must contain at least one non-empty matcher: {node}")
    return Selector(tuple(matchers))


def parse_selector(text: str) -> Selector:
    """Parse a series selector such as ``node_cpu_seconds_total{mode!="idle"}``.

    Raises :class:`QueryError` when ``text`` is not PromQL, and :class:`UnsupportedQuery` when it
    is PromQL but not a plain series selector.
    """
    try:
        node = parse_promql(text)
    except ValueError as exc:
        raise QueryError(f"cannot parse selector {text!r}: {exc}") from exc
    if not isinstance(node, promql_parser.VectorSelector):
        raise UnsupportedQuery(f'expected a series selector like up{{job="node"}}, got {text!r}')
    if node.offset is not None or node.at is not None:
        raise UnsupportedQuery(f"offset and @ are not allowed in a series selector: {text!r}")
    return selector_from_ast(node)


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Parse Alertmanager-style matchers: ``severity="critical"``, ``job=~"api|web"``, or several
    separated by commas (braces optional); as in Alertmanager, a value may be written without
    quotes (``alertname=HighCPU``). Unlike a selector, they may all match the empty string.
    Raises :class:`QueryError` naming the text when it does not parse."""
    inner = text.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    inner = ", ".join(_quoted(part) for part in _split_matchers(inner))
    # PromQL refuses selectors whose matchers all match "": a placeholder keeps the parser happy.
    placeholder = "__opscope_matchers__"
    try:
        node = parse_promql(f'{{{placeholder}="x", {inner}}}')
    except ValueError as exc:
        raise QueryError(f"cannot parse matchers {text!r}: {exc}") from exc
    if not isinstance(node, promql_parser.VectorSelector) or not inner.strip():
        raise QueryError(f'cannot parse matchers {text!r}: expected name="value"')
    return tuple(
        Matcher.of(m.name, _OPS[str(m.op)], m.value)
        for m in node.matchers.matchers
        if m.name != placeholder
    )


_UNQUOTED = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*(.*?)\s*$", re.DOTALL)


def _split_matchers(text: str) -> list[str]:
    """``text`` cut at the commas outside quotes."""
    parts, current, quote, escaped = [], "", "", False
    for char in text:
        if quote:
            escaped = char == "\\" and not escaped
            if char == quote and not escaped:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts if any(p.strip() for p in parts) else []


def _quoted(matcher: str) -> str:
    """``name=value`` with the value quoted when it was written bare (Alertmanager's form)."""
    match = _UNQUOTED.match(matcher)
    if match is None:
        return matcher
    name, op, value = match.groups()
    if value[:1] in ('"', "'", "`"):
        return matcher
    return f"{name}{op}{json.dumps(value)}"


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every matcher (a missing label is ``""``)."""
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def selector_for(metric: str, labels: str | None = None) -> Selector:
    """Build a selector from a metric name and an optional matcher list ``job="node",x=~"a.*"``.

    This is the ``metric=…&labels=…`` form of the query API. Raises :class:`QueryError`.
    """
    labels = (labels or "").strip()
    if labels.startswith("{") and labels.endswith("}"):
        labels = labels[1:-1]
    return parse_selector(f"{metric}{{{labels}}}" if labels else metric)
