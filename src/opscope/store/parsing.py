"""PromQL text handed to ``promql-parser``, guarded against nesting deep enough to crash it.

``promql-parser`` is Rust: an expression nested deeply enough — thousands of operators or
parentheses — overflows its stack and kills the whole process, where Prometheus (Go, growable
stacks) accepts it. Every PromQL text is therefore measured first, without parsing: the depth
of its parse tree is at most the depth of its brackets plus the number of its operators
(outside strings and comments). Texts within :data:`MAX_DEPTH` — far beyond what anyone writes,
far below what crashes the parser — are parsed; deeper ones are refused with a
:class:`QueryError` saying so.
"""

from __future__ import annotations

import re

import promql_parser

from opscope.errors import QueryError

#: The most brackets plus operators an expression may have (its parse tree is no deeper).
MAX_DEPTH = 2000

_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")
_OPERATORS = frozenset("+-*/%^=!<>")
_KEYWORDS = re.compile(r"\b(?:and|or|unless|atan2)\b", re.IGNORECASE)


def depth_bound(text: str) -> int:
    """An upper bound of the parse-tree depth of ``text``: the deepest bracket nesting plus
    every operator character and set-operator keyword outside strings and comments."""
    depth = deepest = operators = 0
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in "\"'`":  # a string: skip to its closing quote (backslash escapes but in `…`)
            i += 1
            while i < n and text[i] != char:
                i += 2 if text[i] == "\\" and char != "`" else 1
        elif char == "#":  # a comment, to the end of the line
            while i < n and text[i] != "\n":
                i += 1
        elif char in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSING:
            depth -= 1
        elif char in _OPERATORS:
            operators += 1
        else:
            words.append(char)
            i += 1
            continue
        words.append(" ")
        i += 1
    operators += len(_KEYWORDS.findall("".join(words)))
    return deepest + operators


def parse_promql(text: str) -> object:
    """``promql_parser.parse(text)``, refusing (:class:`QueryError`) texts nested deeper than
    :data:`MAX_DEPTH`; a ``ValueError`` of the parser passes through."""
    if len(text) > MAX_DEPTH and depth_bound(text) > MAX_DEPTH:
        raise QueryError(
            f"the expression is nested too deeply: more than {MAX_DEPTH} operators and "
            "brackets in one expression"
        )
    return promql_parser.parse(text)
