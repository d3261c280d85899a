"""The PromQL subset opscope evaluates over its store (see :mod:`.nodes` for the subset)."""

from __future__ import annotations

from opscope.monitor.promql.engine import Evaluator, Labels, Sample, Scalar, Value, Vector
from opscope.monitor.promql.nodes import Node, compile_expr

__all__ = ["Evaluator", "Labels", "Node", "Sample", "Scalar", "Value", "Vector", "compile_expr"]
