"""YAML files read with positions, and validation errors reported at them.

A file is parsed once into a YAML node tree, which gives every value and key its line and column;
the plain values built from it are validated by pydantic models, and each validation error is
mapped back to the position of the value (or key) it concerns::

    opscope.yaml:14:5 monitor.scrape[0].interval: expected a duration like 15s, got "fast"

Guards: aliases that expand past :data:`MAX_VALUES` values ("billion laughs") and nesting deep
enough to exhaust the parser are reported as problems, not crashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from opscope.errors import ConfigFileError, ConfigProblem

Loc = tuple[str | int, ...]
#: Union tags pydantic puts in error locations; they are not in the file.
UNION_TAGS = frozenset({"rule", "group"})


def format_loc(loc: Loc) -> str:
    """``("monitor", "scrape", 0, "interval")`` → ``"monitor.scrape[0].interval"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Positions:
    """1-based (line, column) of each value and each mapping key, by location path."""

    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def of(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        table = self.keys if key and loc in self.keys else self.values
        while loc and loc not in table:
            loc = loc[:-1]
            table = self.values
        return table.get(loc, (None, None))


@dataclass(frozen=True)
class Template:
    """A string scalar holding ``${…}``; ``plain`` when it was written without quotes."""

    text: str
    plain: bool


def read_yaml(text: str, filename: str) -> tuple[Any, Positions]:
    """Parse ``text`` into plain values (``None`` for an empty file) and their positions.

    Strings holding ``${…}`` come back as :class:`Template` (for interpolation by the caller).
    Raises :class:`ConfigFileError` for invalid YAML, values that are not plain data, duplicate
    keys, and alias or nesting bombs.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigFileError(
            [ConfigProblem(filename, None, None, "", "values are nested too deeply")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ConfigFileError(
            [ConfigProblem(filename, line, col, "", f"not valid YAML: {problem}")]
        ) from exc
    positions = Positions()
    problems: list[ConfigProblem] = []
    try:
        data = _Builder(filename, positions, problems).build(node, ()) if node is not None else None
    except _TooBig as exc:
        raise ConfigFileError(
            [ConfigProblem(filename, exc.line, exc.column, "", str(exc))]
        ) from None
    except RecursionError:
        raise ConfigFileError(
            [ConfigProblem(filename, None, None, "", "values are nested too deeply")]
        ) from None
    if problems:
        raise ConfigFileError(problems)
    return data, positions


def untemplate(value: Any) -> Any:
    """``value`` with every :class:`Template` turned back into its text (no interpolation)."""
    if isinstance(value, dict):
        return {k: untemplate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untemplate(v) for v in value]
    return value.text if isinstance(value, Template) else value


MAX_VALUES = 100_000


def _mark(node: yaml.Node) -> tuple[int, int]:
    """1-based (line, column) where ``node`` starts."""
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.line, self.column = _mark(node)
        super().__init__(
            f"the file expands to more than {MAX_VALUES} values (YAML aliases used recursively?)"
        )


@dataclass
class _Builder:
    """Turns a composed YAML node tree into plain values, recording the position of every value
    and key, duplicate keys and values that are not plain YAML, and counting values built so
    that aliases of aliases ("billion laughs") stop early."""

    filename: str
    positions: Positions
    problems: list[ConfigProblem]
    values: int = 0

    def problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(ConfigProblem(self.filename, *_mark(node), format_loc(loc), message))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooBig(node)
        self.positions.values[loc] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag == "tag:yaml.org,2002:str"
            and ("${" in node.value)
        ):
            return Template(node.value, plain=node.style is None)
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # e.g. an unknown tag such as !custom
            self.problem(node, loc, f"not a plain YAML value: {_reason(exc)}")
            return None
        finally:
            loader.dispose()

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        loader = yaml.SafeLoader("")
        try:
            loader.flatten_mapping(node)  # resolves `<<` merge keys like yaml.safe_load does
        except yaml.YAMLError as exc:
            self.problem(node, loc, f"invalid merge key: {_reason(exc)}")
            return result
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, loc, "a mapping key must be a plain value")
                continue
            key = loader.construct_object(key_node, deep=True)
            child = (*loc, key if isinstance(key, str | int) else str(key))
            if key in result:
                self.problem(key_node, child, "key given twice in the same mapping")
            self.positions.keys[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        loader.dispose()
        return result


def _reason(exc: yaml.YAMLError) -> str:
    return str(getattr(exc, "problem", None) or exc)


def problems_from(
    exc: ValidationError,
    model: type[BaseModel],
    positions: Positions,
    filename: str,
    data: dict[str, Any],
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        raw = tuple(error["loc"])
        loc: Loc = tuple(
            part
            for i, part in enumerate(raw)
            if not (part in UNION_TAGS and i > 0 and isinstance(raw[i - 1], int))
        )
        kind = error["type"]
        line, col = positions.of(loc, key=kind == "extra_forbidden")
        message = _message(error, model, loc, data)
        problems.append(ConfigProblem(filename, line, col, format_loc(loc), message))
    return problems


def _message(error: Any, model: type[BaseModel], loc: Loc, data: dict[str, Any]) -> str:
    kind = error["type"]
    got = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        if parent is not None:
            names = ", ".join(_fields_by_alias(parent))
            return f"unknown field (expected one of: {names})"
        return "unknown field"
    message: str = error["msg"]
    if kind in _OWN_MESSAGES:
        return message
    plain = _PLAIN_MESSAGES.get(kind)
    if plain is not None:
        message = plain.format(**(error.get("ctx") or {}))
    else:
        message = message[0].lower() + message[1:]
        message = message.replace("input should be", "expected")
    if isinstance(got, dict | list):
        return message
    return f'{message}, got "{got}"' if isinstance(got, str) else f"{message}, got {got!r}"


#: Error types whose message opscope writes itself (complete, with what was found).
_OWN_MESSAGES = frozenset(
    {"channel", "matcher", "rule"}
    | {"duration", "target", "url", "label_name", "path", "regex", "host", "header", "tls"}
    | {"quantity", "namespace", "autoscaling", "env"}
    | {"cron", "timezone", "fraction", "source"}
)
#: Plain wording for pydantic's common error types (its own wording names Python classes).
_PLAIN_MESSAGES = {
    "model_type": "expected a mapping of fields",
    "model_attributes_type": "expected a mapping of fields",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string (quote it)",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "path_type": "expected a file or directory path",
    "too_short": "expected at least {min_length} item(s)",
    "string_too_short": "expected at least {min_length} character(s)",
    "greater_than_equal": "expected a number ≥ {ge}",
    "less_than_equal": "expected a number ≤ {le}",
    "greater_than": "expected a number > {gt}",
    "less_than": "expected a number < {lt}",
    "literal_error": "expected {expected}",
}


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that validates the value at ``loc``, if it is a model."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = _fields_by_alias(current).get(part)
        if info is None:
            return None
        current = _model_in(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_by_alias(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` by the name written in files (``for``, not ``for_``)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
