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
from typing import Any, Literal

import promql_parser

from opscope.errors import QueryError, UnsupportedQuery
from opscope.store.labels import Selector, selector_from_ast
from opscope.store.parsing import parse_promql

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
    """Parse ``text`` and return its tree; raises :class:`QueryError` for invalid PromQL (or
    PromQL nested too deeply to parse safely) and :class:`UnsupportedQuery` for valid PromQL
    outside the subset (naming the construct)."""
    try:
        tree = parse_promql(text)
    except ValueError as exc:
        raise QueryError(f"cannot parse {text!r}: {exc}") from exc
    return _convert(tree)


def _ms(delta: object) -> int:
    return 0 if delta is None else round(delta.total_seconds() * 1000)  # type: ignore[attr-defined]


def _convert(root: object) -> Node:
    """The tree of ``root`` (a ``promql_parser`` expression), built bottom-up with an explicit
    stack: an expression thousands of operators deep needs no deep recursion."""
    built: dict[int, Node] = {}
    # (parser node, its children in the parser tree, or None before they were pushed)
    stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        if children is None:
            children = _children(node)  # also refuses what is outside the subset
            stack.append((node, children))
            stack.extend((child, None) for child in reversed(children))
            continue
        built[id(node)] = _build(node, [built[id(child)] for child in children])
    return built[id(root)]


def _children(node: Any) -> list[Any]:
    """The sub-expressions of ``node`` to convert; raises :class:`UnsupportedQuery` for a
    construct outside the subset."""
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.NumberLiteral):
        return []
    if isinstance(node, promql_parser.VectorSelector):
        if node.at is not None:
            raise UnsupportedQuery("the @ modifier is not supported")
        return []
    if isinstance(node, promql_parser.MatrixSelector):
        if node.vector_selector.at is not None:
            raise UnsupportedQuery("the @ modifier is not supported")
        return []
    if isinstance(node, promql_parser.BinaryExpr):
        op = str(node.op)
        if op not in ARITHMETIC | COMPARISON | SET_OPERATORS:
            raise UnsupportedQuery(f"the operator {op} is not supported")
        modifier = node.modifier
        if modifier is not None and str(modifier.card).endswith(("ManyToOne", "OneToMany")):
            raise UnsupportedQuery("group_left/group_right (many-to-one matching) is not supported")
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        op = str(node.op)
        if op not in AGGREGATIONS:
            raise UnsupportedQuery(f"the aggregation {op}() is not supported")
        return [node.expr]
    if isinstance(node, promql_parser.Call):
        name = node.func.name
        if name not in FUNCTIONS:
            raise UnsupportedQuery(f"the function {name}() is not supported")
        return list(node.args)
    if isinstance(node, promql_parser.SubqueryExpr):
        raise UnsupportedQuery("subqueries are not supported")
    if isinstance(node, promql_parser.StringLiteral):
        raise UnsupportedQuery("string expressions are not supported")
    raise UnsupportedQuery(f"{type(node).__name__} is not supported")


def _build(node: Any, children: list[Node]) -> Node:
    """The node for ``node`` (checked by :func:`_children`) over its converted children."""
    if isinstance(node, promql_parser.ParenExpr):
        return children[0]
    if isinstance(node, promql_parser.NumberLiteral):
        return NumberNode(float(node.val))
    if isinstance(node, promql_parser.VectorSelector):
        return VectorNode(selector_from_ast(node), _ms(node.offset))
    if isinstance(node, promql_parser.MatrixSelector):
        inner = node.vector_selector
        return MatrixNode(selector_from_ast(inner), _ms(node.range), _ms(inner.offset))
    if isinstance(node, promql_parser.UnaryExpr):
        return NegateNode(children[0])
    if isinstance(node, promql_parser.BinaryExpr):
        modifier = node.modifier
        matching: tuple[str, ...] | None = None
        on_labels = False
        return_bool = False
        if modifier is not None:
            if modifier.matching is not None:
                matching = tuple(modifier.matching.labels)
                on_labels = str(modifier.matching.type).endswith("Include")
            return_bool = bool(modifier.return_bool)
        return BinaryNode(str(node.op), children[0], children[1], return_bool, matching, on_labels)
    if isinstance(node, promql_parser.AggregateExpr):
        by = node.modifier
        without = by is not None and str(by.type).endswith("Without")
        grouping = tuple(by.labels) if by is not None else ()
        return AggregateNode(str(node.op), children[0], grouping, without)  # type: ignore[arg-type]
    assert isinstance(node, promql_parser.Call)
    return CallNode(node.func.name, tuple(children))


def selectors_of(node: Node) -> list[VectorNode | MatrixNode]:
    """Every selector in ``node``, depth first, left to right (without recursion)."""
    found: list[VectorNode | MatrixNode] = []
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, VectorNode | MatrixNode):
            found.append(current)
        elif isinstance(current, NegateNode | AggregateNode):
            stack.append(current.expr)
        elif isinstance(current, BinaryNode):
            stack += [current.rhs, current.lhs]
        elif isinstance(current, CallNode):
            stack += reversed(current.args)
    return found
