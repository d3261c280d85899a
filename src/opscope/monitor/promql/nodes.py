"""The PromQL subset opscope evaluates, as a small typed tree compiled from ``promql-parser``.

``compile_expr(text)`` parses with ``promql-parser`` (the PromQL grammar and type checks of
Prometheus) and converts the tree, refusing with :class:`UnsupportedQuery` — naming the construct
— anything outside the subset, so nothing is ever mis-evaluated. The subset:

* vector selectors with ``=``, ``!=``, ``=~``, ``!~``; range selectors; ``offset``;
* number literals; unary minus;
* ``+ - * / % ^`` and ``== != > < >= <=`` (with ``bool``) between scalars and vectors;
  ``and``, ``or``, ``unless``; one-to-one vector matching with ``on``/``ignoring``;
* ``sum``, ``avg``, ``min``, ``max``, ``count`` with ``by``/``without``;
* ``rate``, ``irate``, ``increase``, ``delta``, ``avg_over_time``, ``min_over_time``,
  ``max_over_time``, ``sum_over_time``, ``count_over_time``, ``absent``,
  ``absent_over_time``, ``abs``, ``clamp_min``, ``clamp_max``, ``time()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import promql_parser

from opscope.errors import QueryError, UnsupportedQuery
from opscope.store.labels import Selector, selector_from_ast

ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPERATORS = frozenset({"and", "or", "unless"})
AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count"})
RANGE_FUNCTIONS = frozenset(
    {
        "rate",
        "irate",
        "increase",
        "delta",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "absent_over_time",
    }
)
VECTOR_FUNCTIONS = frozenset({"abs", "clamp_min", "clamp_max", "absent"})
FUNCTIONS = RANGE_FUNCTIONS | VECTOR_FUNCTIONS | {"time"}


@dataclass(frozen=True)
class NumberNode:
    """A number literal."""

    value: float


@dataclass(frozen=True)
class VectorNode:
    """An instant vector selector; ``offset_ms`` shifts the evaluation time back."""

    selector: Selector
    offset_ms: int


@dataclass(frozen=True)
class MatrixNode:
    """A range vector selector ``selector[range] offset …``."""

    selector: Selector
    range_ms: int
    offset_ms: int


@dataclass(frozen=True)
class NegateNode:
    """Unary minus."""

    expr: Node


@dataclass(frozen=True)
class BinaryNode:
    """A binary operation; ``matching`` lists the ``on``/``ignoring`` labels (``on`` when
    ``on_labels``), ``None`` for the default (all labels but the metric name)."""

    op: str
    lhs: Node
    rhs: Node
    return_bool: bool
    matching: tuple[str, ...] | None
    on_labels: bool


@dataclass(frozen=True)
class AggregateNode:
    """``op by (…)`` or ``op without (…)`` over ``expr``."""

    op: Literal["sum", "avg", "min", "max", "count"]
    expr: Node
    grouping: tuple[str, ...]
    without: bool


@dataclass(frozen=True)
class CallNode:
    """A function call."""

    func: str
    args: tuple[Node, ...]


Node = NumberNode | VectorNode | MatrixNode | NegateNode | BinaryNode | AggregateNode | CallNode


def compile_expr(text: str) -> Node:
    """Parse ``text`` and return its tree; raises :class:`QueryError` for invalid PromQL and
    :class:`UnsupportedQuery` for valid PromQL outside the subset (naming the construct)."""
    try:
        tree = promql_parser.parse(text)
    except ValueError as exc:
        raise QueryError(f"cannot parse {text!r}: {exc}") from exc
    return _convert(tree)


def _ms(delta: object) -> int:
    return 0 if delta is None else round(delta.total_seconds() * 1000)  # type: ignore[attr-defined]


def _convert(node: object) -> Node:
    if isinstance(node, promql_parser.ParenExpr):
        return _convert(node.expr)
    if isinstance(node, promql_parser.NumberLiteral):
        return NumberNode(float(node.val))
    if isinstance(node, promql_parser.VectorSelector):
        if node.at is not None:
            raise UnsupportedQuery("the @ modifier is not supported")
        return VectorNode(selector_from_ast(node), _ms(node.offset))
    if isinstance(node, promql_parser.MatrixSelector):
        inner = node.vector_selector
        if inner.at is not None:
            raise UnsupportedQuery("the @ modifier is not supported")
        return MatrixNode(selector_from_ast(inner), _ms(node.range), _ms(inner.offset))
    if isinstance(node, promql_parser.UnaryExpr):
        return NegateNode(_convert(node.expr))
    if isinstance(node, promql_parser.BinaryExpr):
        return _binary(node)
    if isinstance(node, promql_parser.AggregateExpr):
        op = str(node.op)
        if op not in AGGREGATIONS:
            raise UnsupportedQuery(f"the aggregation {op}() is not supported")
        modifier = node.modifier
        without = modifier is not None and str(modifier.type).endswith("Without")
        grouping = tuple(modifier.labels) if modifier is not None else ()
        return AggregateNode(op, _convert(node.expr), grouping, without)  # type: ignore[arg-type]
    if isinstance(node, promql_parser.Call):
        name = node.func.name
        if name not in FUNCTIONS:
            raise UnsupportedQuery(f"the function {name}() is not supported")
        return CallNode(name, tuple(_convert(arg) for arg in node.args))
    if isinstance(node, promql_parser.SubqueryExpr):
        raise UnsupportedQuery("subqueries are not supported")
    if isinstance(node, promql_parser.StringLiteral):
        raise UnsupportedQuery("string expressions are not supported")
    raise UnsupportedQuery(f"{type(node).__name__} is not supported")


def _binary(node: promql_parser.BinaryExpr) -> BinaryNode:
    op = str(node.op)
    if op not in ARITHMETIC | COMPARISON | SET_OPERATORS:
        raise UnsupportedQuery(f"the operator {op} is not supported")
    modifier = node.modifier
    matching: tuple[str, ...] | None = None
    on_labels = False
    return_bool = False
    if modifier is not None:
        card = str(modifier.card)
        if card.endswith(("ManyToOne", "OneToMany")):
            raise UnsupportedQuery("group_left/group_right (many-to-one matching) is not supported")
        if modifier.matching is not None:
            matching = tuple(modifier.matching.labels)
            on_labels = str(modifier.matching.type).endswith("Include")
        return_bool = bool(modifier.return_bool)
    return BinaryNode(op, _convert(node.lhs), _convert(node.rhs), return_bool, matching, on_labels)


def selectors_of(node: Node) -> list[VectorNode | MatrixNode]:
    """Every selector in ``node``, depth first."""
    if isinstance(node, VectorNode | MatrixNode):
        return [node]
    if isinstance(node, NegateNode | AggregateNode):
        return selectors_of(node.expr)
    if isinstance(node, BinaryNode):
        return selectors_of(node.lhs) + selectors_of(node.rhs)
    if isinstance(node, CallNode):
        return [s for arg in node.args for s in selectors_of(arg)]
    return []
