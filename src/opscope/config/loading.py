"""Reading ``opscope.yaml`` and its rule files: ``${VAR}`` interpolation, validation, rule groups.

Files are read with positions (:mod:`opscope.config.yamlfile`) and validated by the pydantic
models (:mod:`opscope.config.models`); every problem is reported with file, line and column,
e.g. ``opscope.yaml:14:5 monitor.scrape[0].interval: expected a duration like 15s, got "fast"``.
Rules come from ``monitor.rules`` and from the Prometheus rule files of ``monitor.rule_files``
(globs relative to the configuration file) and are returned as :class:`LoadedRuleGroup` with the
position of every rule, so that later checks (PromQL, templates) can point at it too.

Interpolation (as in Docker Compose): ``${VAR}`` is replaced by the environment variable ``VAR``
— an unset ``VAR`` is an error naming it —, ``${VAR:-default}`` falls back to ``default`` when
``VAR`` is unset or empty, and ``$$`` is a literal ``$``. Only string *values* are interpolated,
after YAML parsing, so a variable can never change the structure of the file. The values of
variables that are secrets — named like one (``DB_PASSWORD``, ``API_TOKEN``) or used in a
notification channel — are remembered so that later stages can redact them; an error message
never quotes them, nor a password written in a URL.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from opscope.config.business import resolve_database_file
from opscope.config.deploy import deploy_problems
from opscope.config.models import RESERVED_SECTIONS, OpscopeConfig
from opscope.config.reports import report_problems
from opscope.config.rules import (
    DEFAULT_GROUP,
    SHORT_FORM_FIELDS,
    RuleConfig,
    RuleFileConfig,
    RuleGroupConfig,
)
from opscope.config.yamlfile import (
    Loc,
    Positions,
    Template,
    format_loc,
    problems_from,
    read_yaml,
    untemplate,
)
from opscope.errors import ConfigFileError, ConfigProblem
from opscope.redaction import (
    Redactor,
    is_secret_variable,
    url_password,
    url_secret_parameters,
)

log = logging.getLogger(__name__)

_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
_SINGLE_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}\Z")
_SCALAR_TYPES = (bool, int, float)


@dataclass(frozen=True)
class LoadedRule:
    """A rule and where it was written (for error messages that name file, line and field).

    ``fields`` holds the position of the rule's own values — ``expr`` (the short form's
    ``metric`` for a rule without one), ``labels.NAME``, ``annotations.NAME`` — as far as the
    file gives them.
    """

    config: RuleConfig
    file: str
    line: int | None
    column: int | None
    path: str
    fields: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)

    def problem(self, message: str, *, field: str = "expr") -> ConfigProblem:
        """A problem of this rule's ``field``, positioned at that field's value (else the
        rule)."""
        line, column = self.fields.get(field, (self.line, self.column))
        return ConfigProblem(
            self.file,
            line,
            column,
            f"{self.path}.{field}",
            f'rule "{self.config.name}": {message}',
        )


@dataclass(frozen=True)
class LoadedRuleGroup:
    """A rule group with its effective evaluation interval and the file it came from."""

    name: str
    file: str
    interval: timedelta
    rules: list[LoadedRule]
    #: Written in the configuration file (``monitor.rules``), not in a rule file.
    inline: bool = False
    #: Most alerts (series) one rule may produce per evaluation; 0: no limit.
    limit: int = 0
    #: Where the group was written: its name (the first rule for the implicit group).
    line: int | None = None
    column: int | None = None


@dataclass
class LoadedConfig:
    """A validated configuration and what was learned while reading it.

    ``secrets`` holds the values of environment variables that are secrets (see
    :func:`opscope.redaction.is_secret_variable`), for redaction;
    ``warnings`` holds non-fatal problems (reserved sections present but not used yet).
    """

    config: OpscopeConfig
    path: Path
    secrets: frozenset[str] = frozenset()
    warnings: list[ConfigProblem] = field(default_factory=list)
    rule_groups: list[LoadedRuleGroup] = field(default_factory=list)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, interpolate and validate the configuration file at ``path``.

    Raises :class:`ConfigFileError` listing every problem with file, line and column when the
    file cannot be read, is not YAML, uses an unset variable, or does not fit the schema.
    """
    path = Path(path)
    return parse_config(_read_text(path), filename=str(path), environ=environ, path=path)


def load_data_dir(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Path:
    """The ``data_dir`` of the configuration file at ``path`` — reading that field only, so a
    command that needs no more (``opscope token …``) does not need the variables of the rest
    of the file (a database password, a webhook URL) set.

    Raises :class:`ConfigFileError` (file, line, field) when the file cannot be read, is not
    YAML, or ``data_dir`` uses an unset variable or is not a path.
    """
    path = Path(path)
    filename = str(path)
    data, positions = read_yaml(_read_text(path), filename)
    default: Path = OpscopeConfig.model_fields["data_dir"].default
    if data is None:
        return default
    if not isinstance(data, dict):
        line, col = positions.of(())
        raise ConfigFileError(
            [ConfigProblem(filename, line, col, "", "expected a mapping of sections at the top")]
        )
    if data.get("data_dir") is None:
        return default
    problems: list[ConfigProblem] = []
    environ = os.environ if environ is None else environ
    loc = ("data_dir",)
    value = _interpolate(data["data_dir"], loc, environ, positions, problems, set(), filename)
    if not problems and (not isinstance(value, str) or not value):
        problems.append(
            ConfigProblem(filename, *positions.of(loc), "data_dir", "expected a directory path")
        )
    if problems:
        raise ConfigFileError(problems)
    return Path(value)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(
            [ConfigProblem(str(path), None, None, "", f"cannot read file: {exc.strerror}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            [ConfigProblem(str(path), None, None, "", "not a UTF-8 text file")]
        ) from exc


def parse_config(
    text: str,
    *,
    filename: str = "opscope.yaml",
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> LoadedConfig:
    """Validate configuration ``text``; ``filename`` is used in error messages.

    Raises :class:`ConfigFileError` (see :func:`load_config`).
    """
    environ = os.environ if environ is None else environ
    data, positions = read_yaml(text, filename)
    if data is None:
        data = {}
    problems: list[ConfigProblem] = []
    secrets: set[str] = set()
    if not isinstance(data, dict):
        line, col = positions.of(())
        raise ConfigFileError(
            [ConfigProblem(filename, line, col, "", "expected a mapping of sections at the top")]
        )
    data = _interpolate(data, (), environ, positions, problems, secrets, filename)
    if problems:
        raise ConfigFileError(problems)
    try:
        return _validated(data, positions, filename, path, frozenset(s for s in secrets if s))
    except ConfigFileError as exc:
        # A message may quote a value ("got …"): no secret of the file in it, from ${VAR} or
        # written in a URL.
        redact = Redactor(secrets | _url_secrets(data))
        masked = [replace(p, message=redact(p.message)) for p in exc.problems]
        raise ConfigFileError(masked) from None


def _url_secrets(value: Any) -> set[str]:
    """Passwords and credential query parameters of every URL among the strings of ``value``."""
    if isinstance(value, dict):
        return set().union(*(_url_secrets(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_url_secrets(v) for v in value))
    if not isinstance(value, str) or "://" not in value:
        return set()
    found = set(url_secret_parameters(value))
    password = url_password(value)
    return found | {password} if password else found


def _validated(
    data: dict[str, Any],
    positions: Positions,
    filename: str,
    path: Path | None,
    secrets: frozenset[str],
) -> LoadedConfig:
    warnings = [
        ConfigProblem(
            filename,
            *positions.of((name,), key=True),
            name,
            "section not used by this version of opscope (ignored)",
        )
        for name in RESERVED_SECTIONS
        if name in data
    ]
    monitor = data.get("monitor")
    inline = monitor.get("rules") if isinstance(monitor, dict) else None
    unsupported = _unsupported_fields(
        inline, ("monitor", "rules"), positions, filename, rule_file=False
    )
    try:
        config = OpscopeConfig.model_validate(data)
    except ValidationError as exc:
        found = problems_from(exc, OpscopeConfig, positions, filename, data)
        raise ConfigFileError(_merged(unsupported, found)) from None
    if unsupported:
        raise ConfigFileError(unsupported)
    semantic = [(("monitor", *loc), message) for loc, message in config.monitor.problems()]
    semantic += [(("notify", *loc), message) for loc, message in config.notify.problems()]
    semantic += deploy_problems(config.environments, config.services)
    semantic += report_problems(config.sources, config.reports, set(config.notify.channels))
    if semantic:
        raise ConfigFileError(
            [
                ConfigProblem(filename, *positions.of(loc), format_loc(loc), message)
                for loc, message in semantic
            ]
        )
    config_path = path or Path(filename)
    if path is not None:
        config = _with_database_files_resolved(config, path.parent)
    groups = _inline_groups(config, positions, filename)
    groups += _file_groups(config, positions, filename, config_path.parent)
    _check_unique_groups(groups)
    return LoadedConfig(
        config=config,
        path=config_path,
        secrets=secrets,
        warnings=warnings,
        rule_groups=groups,
    )


def _with_database_files_resolved(config: OpscopeConfig, base: Path) -> OpscopeConfig:
    """``config`` with the relative SQLite/DuckDB files of ``monitor.sql`` made absolute
    against ``base`` (the configuration file's folder)."""
    queries = [
        q.model_copy(update={"url": resolve_database_file(q.url, base)}) for q in config.monitor.sql
    ]
    if all(new.url == old.url for new, old in zip(queries, config.monitor.sql, strict=True)):
        return config
    monitor = config.monitor.model_copy(update={"sql": queries})
    return config.model_copy(update={"monitor": monitor})


def _loaded_rule(rule: RuleConfig, filename: str, positions: Positions, loc: Loc) -> LoadedRule:
    fields: dict[str, tuple[int, int]] = {}
    expr = positions.values.get((*loc, "expr")) or positions.values.get((*loc, "metric"))
    if expr is not None:
        fields["expr"] = expr
    for kind, names in (("labels", rule.labels), ("annotations", rule.annotations)):
        for name in names:
            where = positions.values.get((*loc, kind, name))
            if where is not None:
                fields[f"{kind}.{name}"] = where
    severity = positions.values.get((*loc, "severity"))
    if severity is not None:  # the short form's severity is the label
        fields["labels.severity"] = severity
    return LoadedRule(rule, filename, *positions.of(loc), format_loc(loc), fields)


def _inline_groups(
    config: OpscopeConfig, positions: Positions, filename: str
) -> list[LoadedRuleGroup]:
    monitor = config.monitor
    default_interval = monitor.evaluation_interval or monitor.interval
    groups: list[LoadedRuleGroup] = []
    loose: list[LoadedRule] = []
    for index, item in enumerate(monitor.rules):
        loc: Loc = ("monitor", "rules", index)
        if isinstance(item, RuleGroupConfig):
            groups.append(
                LoadedRuleGroup(
                    item.name,
                    filename,
                    item.interval or default_interval,
                    [
                        _loaded_rule(r, filename, positions, (*loc, "rules", j))
                        for j, r in enumerate(item.rules)
                    ],
                    inline=True,
                    limit=item.limit,
                    line=positions.of((*loc, "name"))[0],
                    column=positions.of((*loc, "name"))[1],
                )
            )
        else:
            loose.append(_loaded_rule(item, filename, positions, loc))
    if loose:
        groups.insert(
            0,
            LoadedRuleGroup(
                DEFAULT_GROUP,
                filename,
                default_interval,
                loose,
                inline=True,
                line=loose[0].line,
                column=loose[0].column,
            ),
        )
    return groups


def _file_groups(
    config: OpscopeConfig, positions: Positions, filename: str, base: Path
) -> list[LoadedRuleGroup]:
    monitor = config.monitor
    default_interval = monitor.evaluation_interval or monitor.interval
    problems: list[ConfigProblem] = []
    groups: list[LoadedRuleGroup] = []
    for index, pattern in enumerate(monitor.rule_files):
        where = positions.of(("monitor", "rule_files", index))
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        paths = sorted(glob.glob(full)) if glob.has_magic(pattern) else [full]
        for rule_file in paths:
            try:
                text = Path(rule_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not a UTF-8 text file"
                problems.append(
                    ConfigProblem(
                        filename,
                        *where,
                        f"monitor.rule_files[{index}]",
                        f"cannot read rule file {rule_file}: {reason}",
                    )
                )
                continue
            try:
                groups += read_rule_file(text, rule_file, default_interval)
            except ConfigFileError as exc:
                problems += exc.problems
    if problems:
        raise ConfigFileError(problems)
    return groups


def read_rule_file(text: str, filename: str, default_interval: timedelta) -> list[LoadedRuleGroup]:
    """The groups of one Prometheus rule file (no ``${VAR}`` interpolation, as in Prometheus).

    Raises :class:`ConfigFileError` with the file's line and column for every problem.
    """
    data, positions = read_yaml(text, filename)
    data = untemplate(data) if data is not None else {}
    groups = data.get("groups") if isinstance(data, dict) else None
    unsupported = _unsupported_fields(groups, ("groups",), positions, filename, rule_file=True)
    try:
        parsed = RuleFileConfig.model_validate(data)
    except ValidationError as exc:
        found = problems_from(exc, RuleFileConfig, positions, filename, data)
        raise ConfigFileError(_merged(unsupported, found)) from None
    if unsupported:
        raise ConfigFileError(unsupported)
    return [
        LoadedRuleGroup(
            group.name,
            filename,
            group.interval or default_interval,
            [
                _loaded_rule(r, filename, positions, ("groups", g, "rules", j))
                for j, r in enumerate(group.rules)
            ],
            limit=group.limit,
            line=positions.of(("groups", g, "name"))[0],
            column=positions.of(("groups", g, "name"))[1],
        )
        for g, group in enumerate(parsed.groups)
    ]


def _merged(first: list[ConfigProblem], then: list[ConfigProblem]) -> list[ConfigProblem]:
    """``first``, then the problems of ``then`` about other fields."""
    shown = {p.path for p in first}
    return first + [p for p in then if p.path not in shown]


def _unsupported_fields(
    items: Any, loc: Loc, positions: Positions, filename: str, *, rule_file: bool
) -> list[ConfigProblem]:
    """Fields Prometheus knows and opscope does not support (a group's ``query_offset``), and
    in a rule file — read by Prometheus too — the seed's short form and ``severity``, which
    only ``monitor.rules`` accepts. Each is reported at its key."""
    problems: list[ConfigProblem] = []
    if not isinstance(items, list):
        return problems

    def report(where: Loc, message: str) -> None:
        line, column = positions.of(where, key=True)
        problems.append(ConfigProblem(filename, line, column, format_loc(where), message))

    for g, group in enumerate(items):
        if not isinstance(group, dict):
            continue
        if "query_offset" in group:
            report(
                (*loc, g, "query_offset"),
                "query_offset is not supported: opscope evaluates a group's rules at the "
                "group's scheduled time (remove it, or offset the selectors in expr)",
            )
        rules = group.get("rules")
        if not rule_file or not isinstance(rules, list):
            continue
        for r, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            for name in SHORT_FORM_FIELDS:
                if name in rule:
                    hint = (
                        "write labels: {severity: …}"
                        if name == "severity"
                        else "write expr: METRIC OP THRESHOLD"
                    )
                    report(
                        (*loc, g, "rules", r, name),
                        f"unknown field: {name} is not in Prometheus's rule format ({hint}; "
                        "the short form is for monitor.rules only)",
                    )
    return problems


def _check_unique_groups(groups: list[LoadedRuleGroup]) -> None:
    seen: set[tuple[str, str]] = set()
    problems = []
    for group in groups:
        key = (group.file, group.name)
        if key in seen:
            problems.append(
                ConfigProblem(
                    group.file,
                    group.line,
                    group.column,
                    "",
                    f'rule group "{group.name}" is defined twice',
                )
            )
        seen.add(key)
    if problems:
        raise ConfigFileError(problems)


def _interpolate(
    value: Any,
    loc: Loc,
    environ: Mapping[str, str],
    positions: Positions,
    problems: list[ConfigProblem],
    secrets: set[str],
    filename: str,
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, (*loc, k), environ, positions, problems, secrets, filename)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, (*loc, i), environ, positions, problems, secrets, filename)
            for i, v in enumerate(value)
        ]
    template = value if isinstance(value, Template) else None
    if template is not None:
        value = template.text
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name is None:
            return "$"
        found = environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                problems.append(
                    ConfigProblem(
                        filename,
                        *positions.of(loc),
                        format_loc(loc),
                        f"environment variable {name} is not set "
                        f"(set it, or write ${{{name}:-default}} to give a default)",
                    )
                )
                return ""
            return default
        if is_secret_variable(name, loc):
            secrets.add(found)
        return found

    result = _VARIABLE.sub(replace, value)
    if template is not None and template.plain and _SINGLE_VARIABLE.match(template.text):
        # An unquoted `port: ${PORT:-8765}` is typed like the YAML it stands for (a number
        # here); only plain scalars qualify, never lists or mappings.
        try:
            typed = yaml.safe_load(result) if result else None
        except yaml.YAMLError:
            typed = None
        if isinstance(typed, _SCALAR_TYPES):
            return typed
    return result
