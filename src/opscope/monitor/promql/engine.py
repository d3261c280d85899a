"""Evaluating the PromQL subset over opscope's store, with Prometheus's semantics.

An evaluation at time ``t`` returns a :data:`Vector` (a list of :class:`Sample`) or a
:class:`Scalar`. Data is fetched once per selector for the whole span of an evaluation (one
instant, or every step of a range), then each step reads it with binary searches.

Semantics follow Prometheus (``promql/engine.go``, ``promql/functions.go``):

* an instant selector takes each series' newest sample in ``(t − offset − lookback,
  t − offset]`` unless it is a staleness marker; a range selector takes the samples in
  ``(t − offset − range, t − offset]``, staleness markers left out (Prometheus 3 windows);
* arithmetic, negation, ``bool`` comparisons, aggregations and every function but
  ``time()`` drop the metric name; comparisons without ``bool`` filter and keep the left value
  (the vector's value when the scalar is on the left);
* vector/vector operations match one-to-one on all labels but the name, or on the ``on`` labels,
  or on all but the ``ignoring`` ones; duplicates on either side are errors, as in Prometheus;
* ``and``/``or``/``unless`` match on the same signatures and keep the left sample's labels;
* x/0 = ±Inf, 0/0 = NaN; NaN compares false except with ``!=``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from opscope.errors import QueryError, QueryTooLarge
from opscope.monitor.promql import functions as fn
from opscope.monitor.promql.nodes import (
    ARITHMETIC,
    COMPARISON,
    AggregateNode,
    BinaryNode,
    CallNode,
    MatrixNode,
    NegateNode,
    Node,
    NumberNode,
    VectorNode,
    selectors_of,
)
from opscope.store import Store, is_stale, step_times
from opscope.store.database import FloatArray, IntArray, SeriesSamples
from opscope.store.labels import NAME_LABEL, Selector
from opscope.store.series import SeriesRef

#: A label set including ``__name__`` when the sample has a metric name; sorted, hashable.
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Labels
    value: float

    def metric(self) -> dict[str, str]:
        """The labels as a dict (Prometheus's JSON ``metric``)."""
        return dict(self.labels)


@dataclass(frozen=True)
class Scalar:
    """A scalar result."""

    value: float


Vector = list[Sample]
Value = Vector | Scalar


def drop_name(labels: Labels) -> Labels:
    """``labels`` without ``__name__``."""
    return tuple(pair for pair in labels if pair[0] != NAME_LABEL)


def labels_of(ref: SeriesRef) -> Labels:
    """The full label set of a stored series, ``__name__`` included."""
    return tuple(sorted(((NAME_LABEL, ref.name), *ref.labels)))


@dataclass
class _Series:
    labels: Labels
    timestamps: IntArray
    values: FloatArray
    stale: np.ndarray = field(repr=False)


class _Data:
    """The samples every selector of an expression needs over ``[start, end]``, fetched once."""

    def __init__(
        self,
        store: Store,
        node: Node,
        start_ms: int,
        end_ms: int,
        lookback_ms: int,
        max_samples: int,
    ) -> None:
        self.series: dict[tuple[Selector, int, int], list[_Series]] = {}
        loaded = 0
        for sel in selectors_of(node):
            width = sel.range_ms if isinstance(sel, MatrixNode) else lookback_ms
            key = (sel.selector, sel.offset_ms, width)
            if key in self.series:
                continue
            fetched = store.select(
                sel.selector, start_ms - sel.offset_ms - width + 1, end_ms - sel.offset_ms
            )
            loaded += sum(len(s.values) for s in fetched)
            _check_budget(loaded, max_samples)
            self.series[key] = [_wrap(s) for s in fetched]


def _check_budget(samples: int, max_samples: int) -> None:
    if samples > max_samples:
        raise QueryTooLarge(
            "query processing would load too many samples into memory in query execution "
            f"({samples} > {max_samples})"
        )


def _wrap(series: SeriesSamples) -> _Series:
    return _Series(labels_of(series.ref), series.timestamps, series.values, is_stale(series.values))


class Evaluator:
    """Evaluates compiled expressions (see :func:`compile_expr`) over a store.

    ``lookback_ms`` is the instant-selector lookback (Prometheus's 5 minutes by default).
    Raises :class:`QueryError` for evaluation errors Prometheus also reports (duplicate series in
    one-to-one matching, duplicate label sets after dropping the metric name, …) and
    :class:`QueryTooLarge` when more than ``max_samples`` samples would be loaded or returned
    (Prometheus's ``--query.max-samples``).
    """

    def __init__(
        self, store: Store, *, lookback_ms: int = 300_000, max_samples: int = 50_000_000
    ) -> None:
        self.store = store
        self.lookback_ms = lookback_ms
        self.max_samples = max_samples

    def instant(self, node: Node, t_ms: int) -> Value:
        """The value of ``node`` at ``t_ms``."""
        data = _Data(self.store, node, t_ms, t_ms, self.lookback_ms, self.max_samples)
        return _Run(data, self.lookback_ms).eval(node, t_ms)

    def samples(self, node: MatrixNode, t_ms: int) -> list[tuple[Labels, IntArray, FloatArray]]:
        """The raw samples a range selector holds at ``t_ms`` (an instant query of ``x[5m]``)."""
        data = _Data(self.store, node, t_ms, t_ms, self.lookback_ms, self.max_samples)
        return _Run(data, self.lookback_ms)._matrix(node, t_ms)

    def range(
        self, node: Node, start_ms: int, end_ms: int, step_ms: int
    ) -> dict[Labels, tuple[list[int], list[float]]]:
        """``node`` at every step: per label set, the steps with a value and the values."""
        if isinstance(node, MatrixNode):
            raise QueryError(
                'invalid expression type "range vector" for range query, must be '
                "Scalar or instant Vector"
            )
        steps = step_times(start_ms, end_ms, step_ms)
        data = _Data(self.store, node, start_ms, end_ms, self.lookback_ms, self.max_samples)
        run = _Run(data, self.lookback_ms)
        out: dict[Labels, tuple[list[int], list[float]]] = {}
        points = 0
        for t in steps.tolist():
            value = run.eval(node, t)
            samples = [Sample((), value.value)] if isinstance(value, Scalar) else value
            points += len(samples)
            _check_budget(points, self.max_samples)
            for sample in samples:
                times, values = out.setdefault(sample.labels, ([], []))
                times.append(t)
                values.append(sample.value)
        return out


class _Run:
    def __init__(self, data: _Data, lookback_ms: int) -> None:
        self.data = data
        self.lookback_ms = lookback_ms

    def eval(self, node: Node, t: int) -> Value:
        if isinstance(node, NumberNode):
            return Scalar(node.value)
        if isinstance(node, VectorNode):
            return self._vector(node, t)
        if isinstance(node, NegateNode):
            inner = self.eval(node.expr, t)
            if isinstance(inner, Scalar):
                return Scalar(-inner.value)
            return _unique([Sample(drop_name(s.labels), -s.value) for s in inner])
        if isinstance(node, BinaryNode):
            return self._binary(node, t)
        if isinstance(node, AggregateNode):
            return self._aggregate(node, t)
        if isinstance(node, CallNode):
            return self._call(node, t)
        raise QueryError(f"a range vector cannot be used here: {node}")

    # ------------------------------------------------------------------------------ selectors
    def _vector(self, node: VectorNode, t: int) -> Vector:
        at = t - node.offset_ms
        out = []
        for s in self.data.series[(node.selector, node.offset_ms, self.lookback_ms)]:
            i = int(np.searchsorted(s.timestamps, at, side="right")) - 1
            if i < 0 or s.timestamps[i] <= at - self.lookback_ms or s.stale[i]:
                continue
            out.append(Sample(s.labels, float(s.values[i])))
        return out

    def _matrix(self, node: MatrixNode, t: int) -> list[tuple[Labels, IntArray, FloatArray]]:
        end = t - node.offset_ms
        start = end - node.range_ms
        out = []
        for s in self.data.series[(node.selector, node.offset_ms, node.range_ms)]:
            lo = int(np.searchsorted(s.timestamps, start, side="right"))
            hi = int(np.searchsorted(s.timestamps, end, side="right"))
            if hi <= lo:
                continue
            keep = ~s.stale[lo:hi]
            if keep.any():
                out.append((s.labels, s.timestamps[lo:hi][keep], s.values[lo:hi][keep]))
        return out

    # ---------------------------------------------------------------------------- operations
    def _binary(self, node: BinaryNode, t: int) -> Value:
        lhs = self.eval(node.lhs, t)
        rhs = self.eval(node.rhs, t)
        op = node.op
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            if op in COMPARISON:
                if not node.return_bool:
                    raise QueryError("comparisons between scalars must use BOOL modifier")
                kept = bool(fn.comparison(op, np.array([lhs.value]), rhs.value)[0])
                return Scalar(1.0 if kept else 0.0)
            return Scalar(float(fn.arithmetic(op, np.array([lhs.value]), rhs.value)[0]))
        if isinstance(lhs, list) and isinstance(rhs, list):
            if op in ("and", "or", "unless"):
                return _set_operation(node, lhs, rhs)
            return _vector_vector(node, lhs, rhs)
        if isinstance(lhs, list) and isinstance(rhs, Scalar):
            return _vector_scalar(node, lhs, rhs.value, scalar_left=False)
        assert isinstance(lhs, Scalar) and isinstance(rhs, list)
        return _vector_scalar(node, rhs, lhs.value, scalar_left=True)

    def _aggregate(self, node: AggregateNode, t: int) -> Vector:
        inner = self.eval(node.expr, t)
        if isinstance(inner, Scalar):
            raise QueryError(f"expected an instant vector in {node.op}()")
        grouping = set(node.grouping)
        groups: dict[Labels, list[float]] = {}
        for s in inner:
            if node.without:
                key = tuple(p for p in s.labels if p[0] not in grouping and p[0] != NAME_LABEL)
            else:
                key = tuple(p for p in s.labels if p[0] in grouping)
            groups.setdefault(key, []).append(s.value)
        reduce: dict[str, Callable[[list[float]], float]] = {
            "sum": fn.kahan_sum,
            "avg": fn.mean,
            "min": fn.minimum,
            "max": fn.maximum,
            "count": fn.count,
        }
        return [Sample(key, reduce[node.op](values)) for key, values in groups.items()]

    def _call(self, node: CallNode, t: int) -> Value:
        name = node.func
        if name == "time":
            return Scalar(t / 1000.0)
        if name == "absent":
            arg = self.eval(node.args[0], t)
            return [] if arg else [Sample(_absent_labels(node.args[0]), 1.0)]
        if name == "absent_over_time":
            assert isinstance(node.args[0], MatrixNode)
            found = self._matrix(node.args[0], t)
            return [] if found else [Sample(_absent_labels(node.args[0]), 1.0)]
        if isinstance(node.args[0], MatrixNode):
            return self._range_function(name, node.args[0], t)
        arg = self.eval(node.args[0], t)
        assert isinstance(arg, list)
        if name == "abs":
            return _unique([Sample(drop_name(s.labels), abs(s.value)) for s in arg])
        bound = self.eval(node.args[1], t)
        assert isinstance(bound, Scalar)
        limit = bound.value
        if name == "clamp_min":
            return _unique([Sample(drop_name(s.labels), _go_max(s.value, limit)) for s in arg])
        if name == "clamp_max":
            return _unique([Sample(drop_name(s.labels), _go_min(s.value, limit)) for s in arg])
        raise QueryError(f"unknown function {name}()")

    def _range_function(self, name: str, node: MatrixNode, t: int) -> Vector:
        end = t - node.offset_ms
        out = []
        for labels, ts, values in self._matrix(node, t):
            value: float | None
            if name in ("rate", "increase", "delta"):
                value = fn.extrapolated_rate(
                    ts,
                    values,
                    range_start_ms=end - node.range_ms,
                    range_end_ms=end,
                    is_counter=name != "delta",
                    is_rate=name == "rate",
                )
            elif name == "irate":
                value = fn.instant_rate(ts, values)
            else:
                items = values.tolist()
                value = {
                    "avg_over_time": fn.mean,
                    "min_over_time": fn.minimum,
                    "max_over_time": fn.maximum,
                    "sum_over_time": fn.kahan_sum,
                    "count_over_time": fn.count,
                }[name](items)
            if value is not None:
                out.append(Sample(drop_name(labels), value))
        return _unique(out)


def _go_max(a: float, b: float) -> float:
    """Go's math.Max: NaN if either is NaN."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _go_min(a: float, b: float) -> float:
    """Go's math.Min: NaN if either is NaN."""
    return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)


def _unique(vector: Vector) -> Vector:
    seen: set[Labels] = set()
    for sample in vector:
        if sample.labels in seen:
            raise QueryError("vector cannot contain metrics with the same labelset")
        seen.add(sample.labels)
    return vector


def _absent_labels(node: Node) -> Labels:
    """Labels of ``absent``'s result: the equality matchers of a selector argument, except a
    label matched more than once or by another operator (Prometheus's
    ``createLabelsForAbsentFunction``); no labels for any other argument."""
    if not isinstance(node, VectorNode | MatrixNode):
        return ()
    labels: dict[str, str] = {}
    has: set[str] = set()
    for matcher in node.selector.matchers:
        if matcher.name == NAME_LABEL:
            continue
        if matcher.op == "=" and matcher.name not in has:
            labels[matcher.name] = matcher.value
            has.add(matcher.name)
        else:
            labels.pop(matcher.name, None)
    return tuple(sorted(labels.items()))


def _signature(labels: Labels, node: BinaryNode) -> Labels:
    if node.matching is None:
        return drop_name(labels)
    wanted = set(node.matching)
    if node.on_labels:
        return tuple(p for p in labels if p[0] in wanted)
    return tuple(p for p in labels if p[0] not in wanted and p[0] != NAME_LABEL)


def _result_labels(labels: Labels, node: BinaryNode) -> Labels:
    """Prometheus's ``resultMetric`` for one-to-one matching."""
    drop = node.op in ARITHMETIC or node.return_bool
    if node.matching is not None and node.on_labels:
        wanted = set(node.matching)
        out = tuple(p for p in labels if p[0] in wanted)
    elif node.matching is not None:
        unwanted = set(node.matching)
        out = tuple(p for p in labels if p[0] not in unwanted)
    else:
        out = labels
    return drop_name(out) if drop else out


def _vector_scalar(node: BinaryNode, vector: Vector, scalar: float, *, scalar_left: bool) -> Vector:
    if not vector:
        return []
    values = np.array([s.value for s in vector])
    lhs, rhs = (np.full(len(values), scalar), values) if scalar_left else (values, scalar)
    if node.op in COMPARISON:
        kept = fn.comparison(node.op, lhs, rhs)
        if node.return_bool:
            return _unique(
                [
                    Sample(drop_name(s.labels), 1.0 if k else 0.0)
                    for s, k in zip(vector, kept.tolist(), strict=True)
                ]
            )
        return [s for s, k in zip(vector, kept.tolist(), strict=True) if k]
    result = fn.arithmetic(node.op, lhs, rhs)
    return _unique(
        [
            Sample(drop_name(s.labels), float(v))
            for s, v in zip(vector, result.tolist(), strict=True)
        ]
    )


def _vector_vector(node: BinaryNode, lhs: Vector, rhs: Vector) -> Vector:
    right: dict[Labels, Sample] = {}
    for sample in rhs:
        sig = _signature(sample.labels, node)
        if sig in right:
            raise QueryError(
                f"found duplicate series for the match group {dict(sig)} on the right hand-side "
                "of the operation; many-to-many matching not allowed: matching labels must be "
                "unique on one side"
            )
        right[sig] = sample
    matched: set[Labels] = set()
    pairs: list[tuple[Sample, Sample]] = []
    for sample in lhs:
        sig = _signature(sample.labels, node)
        other = right.get(sig)
        if other is None:
            continue
        if sig in matched:
            raise QueryError(
                f"multiple matches for labels {dict(sig)}: many-to-one matching must be explicit "
                "(group_left/group_right)"
            )
        matched.add(sig)
        pairs.append((sample, other))
    if not pairs:
        return []
    lv = np.array([a.value for a, _ in pairs])
    rv = np.array([b.value for _, b in pairs])
    out: Vector = []
    if node.op in COMPARISON:
        kept = fn.comparison(node.op, lv, rv).tolist()
        for (a, _), k in zip(pairs, kept, strict=True):
            if node.return_bool:
                out.append(Sample(_result_labels(a.labels, node), 1.0 if k else 0.0))
            elif k:
                out.append(Sample(_result_labels(a.labels, node), a.value))
    else:
        result = fn.arithmetic(node.op, lv, rv).tolist()
        out = [
            Sample(_result_labels(a.labels, node), v)
            for (a, _), v in zip(pairs, result, strict=True)
        ]
    seen: set[Labels] = set()
    for sample in out:
        if sample.labels in seen:
            raise QueryError(
                "multiple matches for labels: grouping labels must ensure unique matches"
            )
        seen.add(sample.labels)
    return out


def _set_operation(node: BinaryNode, lhs: Vector, rhs: Vector) -> Vector:
    right = {_signature(s.labels, node) for s in rhs}
    if node.op == "and":
        return [s for s in lhs if _signature(s.labels, node) in right]
    if node.op == "unless":
        return [s for s in lhs if _signature(s.labels, node) not in right]
    left = {_signature(s.labels, node) for s in lhs}
    return lhs + [s for s in rhs if _signature(s.labels, node) not in left]
