"""Evaluating the PromQL subset over opscope's store, with Prometheus's semantics.

An evaluation at time ``t`` returns a :class:`Vector` (labels and a value array) or a
:class:`Scalar`. Data is fetched once per selector for the whole span of an evaluation (one
instant, or every step of a range) as matrices — one per collection source, a row per
collection — and evaluated column-wise with numpy; only series with gaps or staleness markers in
a window take the per-series path. Thousands of series cost about as much as a few.

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

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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
from opscope.store import SampleBlock, Store, is_stale, step_times
from opscope.store.database import BoolArray, FloatArray, IntArray
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


@dataclass
class Vector:
    """An instant vector: ``labels[i]`` has the value ``values[i]``. Iterating gives samples."""

    labels: list[Labels]
    values: FloatArray

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Sample]:
        return (Sample(lbl, v) for lbl, v in zip(self.labels, self.values.tolist(), strict=True))

    def mask(self, keep: BoolArray) -> Vector:
        """The elements where ``keep`` is true."""
        return Vector(
            [lbl for lbl, k in zip(self.labels, keep.tolist(), strict=True) if k], self.values[keep]
        )


Value = Vector | Scalar
_EMPTY = np.zeros(0, dtype=np.float64)


def _vector(labels: list[Labels], values: list[float] | FloatArray) -> Vector:
    return Vector(labels, np.asarray(values, dtype=np.float64))


@functools.lru_cache(maxsize=262_144)
def drop_name(labels: Labels) -> Labels:
    """``labels`` without ``__name__``."""
    return tuple(pair for pair in labels if pair[0] != NAME_LABEL)


def labels_of(ref: SeriesRef) -> Labels:
    """The full label set of a stored series, ``__name__`` included."""
    return ref.full_labels


@dataclass
class _Block:
    """A :class:`SampleBlock` with what evaluation derives from it, computed once."""

    labels: list[Labels]
    ts: IntArray
    values: FloatArray
    present: BoolArray
    valid: BoolArray  # present and not a staleness marker
    stale: BoolArray
    _last: npt.NDArray[np.int64] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, block: SampleBlock) -> _Block:
        stale = block.present & is_stale(block.values)
        return cls(
            [labels_of(r) for r in block.refs],
            block.timestamps,
            block.values,
            block.present,
            block.present & ~stale,
            stale,
        )

    def last_present(self) -> npt.NDArray[np.int64]:
        """``[i, j]``: the newest row ≤ i where series j has a sample (−1: none)."""
        if self._last is None:
            rows = np.arange(len(self.ts), dtype=np.int64)[:, None]
            self._last = np.maximum.accumulate(np.where(self.present, rows, -1), axis=0)
        return self._last


#: Samples written at one instant and not in the store yet, by metric name:
#: name → series id → (series, value).
Pending = Mapping[str, Mapping[int, tuple[SeriesRef, float]]]


class _Data:
    """The samples every selector of an expression needs over ``[start, end]``, fetched once;
    ``pending`` samples at ``pending_ms`` are added as if they were stored."""

    def __init__(
        self,
        store: Store,
        node: Node,
        start_ms: int,
        end_ms: int,
        lookback_ms: int,
        max_samples: int,
        *,
        pending: Pending | None = None,
        pending_ms: int = 0,
    ) -> None:
        self.blocks: dict[tuple[Selector, int, int], list[_Block]] = {}
        loaded = 0
        for sel in selectors_of(node):
            width = sel.range_ms if isinstance(sel, MatrixNode) else lookback_ms
            key = (sel.selector, sel.offset_ms, width)
            if key in self.blocks:
                continue
            fetched = store.select_blocks(
                sel.selector, start_ms - sel.offset_ms - width + 1, end_ms - sel.offset_ms
            )
            if pending:
                fetched = _with_pending(fetched, sel.selector, pending, pending_ms)
            loaded += sum(int(b.present.sum()) for b in fetched)
            _check_budget(loaded, max_samples)
            self.blocks[key] = [_Block.of(b) for b in fetched]


def _with_pending(
    blocks: list[SampleBlock], selector: Selector, pending: Pending, t_ms: int
) -> list[SampleBlock]:
    """``blocks`` with the ``pending`` samples ``selector`` selects added at ``t_ms``: a row in
    the block that holds the series (after any stored row at the same time), or a block of
    their own for series with nothing stored in the window."""
    name = selector.metric_name
    candidates = (
        pending.get(name, {}).items()
        if name is not None
        else (item for by_id in pending.values() for item in by_id.items())
    )
    chosen = {
        sid: (ref, value)
        for sid, (ref, value) in candidates
        if selector.matches(ref.name, ref.labels)
    }
    if not chosen:
        return blocks
    out = []
    for block in blocks:
        columns = [j for j, ref in enumerate(block.refs) if ref.id in chosen]
        if not columns:
            out.append(block)
            continue
        row = np.zeros(len(block.refs), dtype=np.float64)
        present = np.zeros(len(block.refs), dtype=bool)
        for j in columns:
            row[j] = chosen.pop(block.refs[j].id)[1]
            present[j] = True
        at = int(np.searchsorted(block.timestamps, t_ms, side="right"))
        out.append(
            SampleBlock(
                block.refs,
                np.insert(block.timestamps, at, t_ms),
                np.insert(block.values, at, row, axis=0),
                np.insert(block.present, at, present, axis=0),
            )
        )
    if chosen:
        refs = [ref for ref, _ in chosen.values()]
        out.append(
            SampleBlock(
                refs,
                np.array([t_ms], dtype=np.int64),
                np.array([[value for _, value in chosen.values()]], dtype=np.float64),
                np.ones((1, len(refs)), dtype=bool),
            )
        )
    return out


def _check_budget(samples: int, max_samples: int) -> None:
    if samples > max_samples:
        raise QueryTooLarge(
            "query processing would load too many samples into memory in query execution "
            f"({samples} > {max_samples})"
        )


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

    def instant(self, node: Node, t_ms: int, *, pending: Pending | None = None) -> Value:
        """The value of ``node`` at ``t_ms``; ``pending`` samples (stamped ``t_ms``, staleness
        markers allowed) are seen as if they were stored: what earlier rules of a rule group
        wrote in the same evaluation."""
        data = _Data(
            self.store,
            node,
            t_ms,
            t_ms,
            self.lookback_ms,
            self.max_samples,
            pending=pending,
            pending_ms=t_ms,
        )
        return _Run(data, self.lookback_ms).eval(node, t_ms)

    def samples(self, node: MatrixNode, t_ms: int) -> list[tuple[Labels, IntArray, FloatArray]]:
        """The raw samples a range selector holds at ``t_ms`` (an instant query of ``x[5m]``)."""
        data = _Data(self.store, node, t_ms, t_ms, self.lookback_ms, self.max_samples)
        return list(_Run(data, self.lookback_ms).series_in_range(node, t_ms))

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
            vector = _vector([()], [value.value]) if isinstance(value, Scalar) else value
            points += len(vector)
            _check_budget(points, self.max_samples)
            for labels, v in zip(vector.labels, vector.values.tolist(), strict=True):
                times, values = out.setdefault(labels, ([], []))
                times.append(t)
                values.append(v)
        return out


_REDUCE: dict[str, Callable[[list[float]], float]] = {
    "avg_over_time": fn.mean,
    "min_over_time": fn.minimum,
    "max_over_time": fn.maximum,
    "sum_over_time": fn.kahan_sum,
    "count_over_time": fn.count,
}


class _Run:
    def __init__(self, data: _Data, lookback_ms: int) -> None:
        self.data = data
        self.lookback_ms = lookback_ms

    def eval(self, node: Node, t: int) -> Value:
        """The value of ``node`` at ``t``: operands first, left to right, with an explicit
        stack, so that an expression thousands of operators deep needs no deep recursion."""
        values: dict[int, Value] = {}
        stack: list[tuple[Node, bool]] = [(node, False)]
        while stack:
            current, ready = stack.pop()
            operands = _operands(current)
            if operands and not ready:
                stack.append((current, True))
                stack.extend((operand, False) for operand in reversed(operands))
                continue
            values[id(current)] = self._apply(
                current, [values.pop(id(operand)) for operand in operands], t
            )
        return values[id(node)]

    def _apply(self, node: Node, operands: list[Value], t: int) -> Value:
        """``node``'s operation on the values of its operands (see :func:`_operands`)."""
        if isinstance(node, NumberNode):
            return Scalar(node.value)
        if isinstance(node, VectorNode):
            return self._select(node, t)
        if isinstance(node, NegateNode):
            (inner,) = operands
            if isinstance(inner, Scalar):
                return Scalar(-inner.value)
            return _unique(Vector([drop_name(lbl) for lbl in inner.labels], -inner.values))
        if isinstance(node, BinaryNode):
            return self._binary(node, *operands)
        if isinstance(node, AggregateNode):
            return self._aggregate(node, operands[0])
        if isinstance(node, CallNode):
            return self._call(node, operands, t)
        raise QueryError("a range vector cannot be used here")

    # ------------------------------------------------------------------------------ selectors
    def _select(self, node: VectorNode, t: int) -> Vector:
        at = t - node.offset_ms
        labels: list[Labels] = []
        parts: list[FloatArray] = []
        for block in self.data.blocks[(node.selector, node.offset_ms, self.lookback_ms)]:
            i = int(np.searchsorted(block.ts, at, side="right")) - 1
            if i < 0:
                continue
            rows = block.last_present()[i]
            found = rows >= 0
            rows = np.where(found, rows, 0)
            columns = np.arange(len(block.labels))
            ok = found & (block.ts[rows] > at - self.lookback_ms) & ~block.stale[rows, columns]
            if not ok.any():
                continue
            labels += [lbl for lbl, k in zip(block.labels, ok.tolist(), strict=True) if k]
            parts.append(block.values[rows[ok], columns[ok]])
        return Vector(labels, np.concatenate(parts) if parts else _EMPTY)

    def _windows(
        self, node: MatrixNode, t: int
    ) -> Iterator[tuple[_Block, IntArray, FloatArray, BoolArray]]:
        end = t - node.offset_ms
        start = end - node.range_ms
        for block in self.data.blocks[(node.selector, node.offset_ms, node.range_ms)]:
            lo = int(np.searchsorted(block.ts, start, side="right"))
            hi = int(np.searchsorted(block.ts, end, side="right"))
            if hi > lo:
                yield block, block.ts[lo:hi], block.values[lo:hi], block.valid[lo:hi]

    def series_in_range(
        self, node: MatrixNode, t: int
    ) -> Iterator[tuple[Labels, IntArray, FloatArray]]:
        """Per series: its samples in the range window (what a range vector holds)."""
        for block, ts, values, valid in self._windows(node, t):
            for j in np.flatnonzero(valid.any(axis=0)).tolist():
                mask = valid[:, j]
                yield block.labels[j], ts[mask], values[mask, j]

    # ---------------------------------------------------------------------------- operations
    def _binary(self, node: BinaryNode, lhs: Value, rhs: Value) -> Value:
        op = node.op
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            if op in COMPARISON:
                if not node.return_bool:
                    raise QueryError("comparisons between scalars must use BOOL modifier")
                kept = bool(fn.comparison(op, np.array([lhs.value]), rhs.value)[0])
                return Scalar(1.0 if kept else 0.0)
            return Scalar(float(fn.arithmetic(op, np.array([lhs.value]), rhs.value)[0]))
        if isinstance(lhs, Vector) and isinstance(rhs, Vector):
            if op in ("and", "or", "unless"):
                return _set_operation(node, lhs, rhs)
            return _vector_vector(node, lhs, rhs)
        if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
            return _vector_scalar(node, lhs, rhs.value, scalar_left=False)
        assert isinstance(lhs, Scalar) and isinstance(rhs, Vector)
        return _vector_scalar(node, rhs, lhs.value, scalar_left=True)

    def _aggregate(self, node: AggregateNode, inner: Value) -> Vector:
        if isinstance(inner, Scalar):
            raise QueryError(f"expected an instant vector in {node.op}()")
        key_of = _grouping(node.grouping, node.without)
        index: dict[Labels, int] = {}
        positions = np.array(
            [index.setdefault(key_of(lbl), len(index)) for lbl in inner.labels], dtype=np.int64
        )
        keys = list(index)
        if not keys:
            return Vector([], _EMPTY)
        counts = np.bincount(positions, minlength=len(keys)).astype(np.float64)
        if node.op == "count":
            return Vector(keys, counts)
        if node.op in ("sum", "avg"):
            sums: FloatArray = np.zeros(len(keys))
            np.add.at(sums, positions, inner.values)  # inf and NaN propagate as adding does
            return Vector(keys, sums if node.op == "sum" else sums / counts)
        out = np.full(len(keys), np.nan)
        (np.fmin if node.op == "min" else np.fmax).at(out, positions, inner.values)
        return Vector(keys, out)

    def _call(self, node: CallNode, operands: list[Value], t: int) -> Value:
        """A function call; ``operands`` are the values of the arguments that are not range
        vectors (range functions read their range vector themselves)."""
        name = node.func
        if name == "time":
            return Scalar(t / 1000.0)
        if name == "absent":
            arg = operands[0]
            assert isinstance(arg, Vector)
            return _vector([], []) if len(arg) else _vector([_absent_labels(node.args[0])], [1.0])
        if name == "absent_over_time":
            assert isinstance(node.args[0], MatrixNode)
            found = any(valid.any() for _, _, _, valid in self._windows(node.args[0], t))
            return _vector([], []) if found else _vector([_absent_labels(node.args[0])], [1.0])
        if isinstance(node.args[0], MatrixNode):
            return self._range_function(name, node.args[0], t)
        arg = operands[0]
        assert isinstance(arg, Vector)
        labels = [drop_name(lbl) for lbl in arg.labels]
        if name == "abs":
            return _unique(Vector(labels, np.abs(arg.values)))
        bound = operands[1]
        assert isinstance(bound, Scalar)
        limit = np.float64(bound.value)
        if name == "clamp_min":
            return _unique(Vector(labels, np.maximum(arg.values, limit)))  # NaN stays NaN
        if name == "clamp_max":
            return _unique(Vector(labels, np.minimum(arg.values, limit)))
        raise QueryError(f"unknown function {name}()")

    def _range_function(self, name: str, node: MatrixNode, t: int) -> Vector:
        end = t - node.offset_ms
        labels: list[Labels] = []
        values: list[FloatArray] = []
        for block, ts, matrix, valid in self._windows(node, t):
            regular = valid.all(axis=0)
            columns = np.flatnonzero(regular)
            if len(columns):
                result = _regular(name, ts, matrix[:, columns], end - node.range_ms, end)
                if result is not None:
                    keep, computed = result
                    labels += [drop_name(block.labels[j]) for j in columns[keep].tolist()]
                    values.append(computed[keep])
            for j in np.flatnonzero(~regular & valid.any(axis=0)).tolist():
                mask = valid[:, j]
                value = _one_series(name, ts[mask], matrix[mask, j], end - node.range_ms, end)
                if value is not None:
                    labels.append(drop_name(block.labels[j]))
                    values.append(np.array([value]))
        return _unique(Vector(labels, np.concatenate(values) if values else _EMPTY))


def _operands(node: Node) -> tuple[Node, ...]:
    """The sub-expressions evaluated before ``node`` (range vectors are read by the function
    that takes them)."""
    if isinstance(node, NegateNode | AggregateNode):
        return (node.expr,)
    if isinstance(node, BinaryNode):
        return (node.lhs, node.rhs)
    if isinstance(node, CallNode):
        return tuple(arg for arg in node.args if not isinstance(arg, MatrixNode))
    return ()


def _regular(
    name: str, ts: IntArray, matrix: FloatArray, start_ms: int, end_ms: int
) -> tuple[BoolArray, FloatArray] | None:
    """A range function over columns that all have a sample at every row of the window."""
    n, m = matrix.shape
    everything = np.ones(m, dtype=bool)
    if name == "count_over_time":
        return everything, np.full(m, float(n))
    if name == "sum_over_time":
        return everything, matrix.sum(axis=0)
    if name == "avg_over_time":
        return everything, matrix.sum(axis=0) / n
    if name == "min_over_time":
        return everything, np.fmin.reduce(matrix, axis=0)
    if name == "max_over_time":
        return everything, np.fmax.reduce(matrix, axis=0)
    if n < 2:
        return None
    if name == "irate":
        last, previous = matrix[-1], matrix[-2]
        interval = (int(ts[-1]) - int(ts[-2])) / 1000.0
        return everything, np.where(last < previous, last, last - previous) / interval
    counter = name != "delta"
    result = matrix[-1] - matrix[0]
    if counter:
        previous = matrix[:-1]
        result = result + np.where(matrix[1:] < previous, previous, 0.0).sum(axis=0)
    first_t, last_t = int(ts[0]), int(ts[-1])
    sampled = (last_t - first_t) / 1000.0
    average = sampled / (n - 1)
    to_start = (first_t - start_ms) / 1000.0
    to_end = (end_ms - last_t) / 1000.0
    if to_start >= average * 1.1:
        to_start = average / 2
    if to_end >= average * 1.1:
        to_end = average / 2
    starts = np.full(m, to_start)
    if counter:
        with np.errstate(divide="ignore", invalid="ignore"):
            to_zero = sampled * (matrix[0] / result)
        limit = (result > 0) & (matrix[0] >= 0)
        starts = np.where(limit, np.minimum(starts, to_zero), starts)
    factor = (sampled + starts + to_end) / sampled
    if name == "rate":
        factor = factor / ((end_ms - start_ms) / 1000.0)
    return everything, result * factor


def _one_series(
    name: str, ts: IntArray, values: FloatArray, start_ms: int, end_ms: int
) -> float | None:
    if name in ("rate", "increase", "delta"):
        return fn.extrapolated_rate(
            ts,
            values,
            range_start_ms=start_ms,
            range_end_ms=end_ms,
            is_counter=name != "delta",
            is_rate=name == "rate",
        )
    if name == "irate":
        return fn.instant_rate(ts, values)
    return _REDUCE[name](values.tolist())


def _unique(vector: Vector) -> Vector:
    if len(set(vector.labels)) != len(vector.labels):
        raise QueryError("vector cannot contain metrics with the same labelset")
    return vector


@functools.lru_cache(maxsize=1024)
def _grouping(names: tuple[str, ...], without: bool) -> Callable[[Labels], Labels]:
    chosen = frozenset(names)

    @functools.lru_cache(maxsize=65_536)
    def key(labels: Labels) -> Labels:
        if without:
            return tuple(p for p in labels if p[0] not in chosen and p[0] != NAME_LABEL)
        return tuple(p for p in labels if p[0] in chosen)

    return key


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


@functools.lru_cache(maxsize=262_144)
def _signature(labels: Labels, matching: tuple[str, ...] | None, on_labels: bool) -> Labels:
    if matching is None:
        return drop_name(labels)
    if on_labels:
        return tuple(p for p in labels if p[0] in matching)
    return tuple(p for p in labels if p[0] not in matching and p[0] != NAME_LABEL)


def _result_labels(labels: Labels, node: BinaryNode) -> Labels:
    """Prometheus's ``resultMetric`` for one-to-one matching."""
    drop = node.op in ARITHMETIC or node.return_bool
    if node.matching is not None and node.on_labels:
        out = tuple(p for p in labels if p[0] in node.matching)
    elif node.matching is not None:
        out = tuple(p for p in labels if p[0] not in node.matching)
    else:
        out = labels
    return drop_name(out) if drop else out


def _vector_scalar(node: BinaryNode, vector: Vector, scalar: float, *, scalar_left: bool) -> Vector:
    if not len(vector):
        return vector
    values = vector.values
    lhs, rhs = (np.full(len(values), scalar), values) if scalar_left else (values, scalar)
    if node.op in COMPARISON:
        kept = fn.comparison(node.op, lhs, rhs)
        if node.return_bool:
            return _unique(
                Vector([drop_name(lbl) for lbl in vector.labels], kept.astype(np.float64))
            )
        return vector.mask(kept)
    return _unique(
        Vector([drop_name(lbl) for lbl in vector.labels], fn.arithmetic(node.op, lhs, rhs))
    )


def _vector_vector(node: BinaryNode, lhs: Vector, rhs: Vector) -> Vector:
    right: dict[Labels, int] = {}
    for index, labels in enumerate(rhs.labels):
        sig = _signature(labels, node.matching, node.on_labels)
        if sig in right:
            raise QueryError(
                f"found duplicate series for the match group {dict(sig)} on the right hand-side "
                "of the operation; many-to-many matching not allowed: matching labels must be "
                "unique on one side"
            )
        right[sig] = index
    matched: set[Labels] = set()
    left_rows, right_rows = [], []
    for index, labels in enumerate(lhs.labels):
        sig = _signature(labels, node.matching, node.on_labels)
        other = right.get(sig)
        if other is None:
            continue
        if sig in matched:
            raise QueryError(
                f"multiple matches for labels {dict(sig)}: many-to-one matching must be explicit "
                "(group_left/group_right)"
            )
        matched.add(sig)
        left_rows.append(index)
        right_rows.append(other)
    if not left_rows:
        return Vector([], _EMPTY)
    lv, rv = lhs.values[left_rows], rhs.values[right_rows]
    result_labels = [_result_labels(lhs.labels[i], node) for i in left_rows]
    if node.op in COMPARISON:
        kept = fn.comparison(node.op, lv, rv)
        out = (
            Vector(result_labels, kept.astype(np.float64))
            if node.return_bool
            else Vector(result_labels, lv).mask(kept)
        )
    else:
        out = Vector(result_labels, fn.arithmetic(node.op, lv, rv))
    if len(set(out.labels)) != len(out.labels):
        raise QueryError("multiple matches for labels: grouping labels must ensure unique matches")
    return out


def _set_operation(node: BinaryNode, lhs: Vector, rhs: Vector) -> Vector:
    def sig(labels: Labels) -> Labels:
        return _signature(labels, node.matching, node.on_labels)

    right = {sig(lbl) for lbl in rhs.labels}
    if node.op == "and":
        return lhs.mask(np.array([sig(lbl) in right for lbl in lhs.labels], dtype=bool))
    if node.op == "unless":
        return lhs.mask(np.array([sig(lbl) not in right for lbl in lhs.labels], dtype=bool))
    left = {sig(lbl) for lbl in lhs.labels}
    extra = rhs.mask(np.array([sig(lbl) not in left for lbl in rhs.labels], dtype=bool))
    return Vector(lhs.labels + extra.labels, np.concatenate([lhs.values, extra.values]))


__all__ = ["Evaluator", "Labels", "Sample", "Scalar", "Value", "Vector", "drop_name", "labels_of"]
