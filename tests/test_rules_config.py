"""Rules in configuration: inline groups and rules, the seed's short form, rule files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from opscope.config import load_config, parse_config
from opscope.errors import ConfigFileError


def groups(text: str, path: Path | None = None) -> list[tuple[str, str, list[str]]]:
    loaded = parse_config(text, environ={}, path=path)
    return [
        (g.name, f"{g.interval}", [r.config.expression() for r in g.rules])
        for g in loaded.rule_groups
    ]


def test_inline_rules_short_form_and_groups() -> None:
    text = (
        "monitor:\n"
        "  interval: 15s\n"
        "  rules:\n"
        "    - {alert: HighCPU, metric: cpu_usage, threshold: 80, for: 5m, severity: warning}\n"
        "    - name: business\n"
        "      interval: 1m\n"
        "      rules:\n"
        "        - alert: RevenueDrop\n"
        "          expr: revenue_rate < 0.8 * avg_over_time(revenue_rate[1h] offset 5m)\n"
        "          for: 1h\n"
        "    - {alert: DiskFull, metric: disk_usage, op: '>=', threshold: 90.5}\n"
    )
    assert groups(text) == [
        ("opscope", "0:00:15", ["cpu_usage > 80", "disk_usage >= 90.5"]),
        ("business", "0:01:00", ["revenue_rate < 0.8 * avg_over_time(revenue_rate[1h] offset 5m)"]),
    ]
    loaded = parse_config(text, environ={})
    cpu = loaded.rule_groups[0].rules[0]
    assert cpu.config.for_ == timedelta(minutes=5)
    assert cpu.config.all_labels() == {"severity": "warning"}
    assert (cpu.file, cpu.line, cpu.path) == ("opscope.yaml", 4, "monitor.rules[0]")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{alert: A}", "monitor.rules[0]: expr is required"),
        (
            "{alert: A, record: b, expr: x}",
            "monitor.rules[0]: a rule needs exactly one of alert or record",
        ),
        ("{record: b, expr: x, for: 5m}", "a recording rule cannot have for"),
        ("{alert: A, expr: x, metric: y, threshold: 1}", "give either expr or metric/op/threshold"),
        ("{alert: A, metric: y}", "the short form needs metric and threshold"),
        ("{alert: A, expr: x, fro: 5m}", "monitor.rules[0].fro: unknown field"),
        (
            "{alert: A, expr: x, for: soon}",
            'monitor.rules[0].for: expected a duration like 15s, got "soon"',
        ),
    ],
)
def test_rule_shape_errors_point_at_the_rule(rule: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(f"monitor:\n  rules:\n    - {rule}\n", environ={})
    (problem,) = info.value.problems
    assert problem.line == 3
    assert message in str(problem)


def test_rule_files_are_prometheus_format_with_their_own_positions(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "node.yml").write_text(
        "groups:\n"
        "  - name: node\n"
        "    rules:\n"
        "      - alert: InstanceDown\n"
        "        expr: up == 0\n"
        "        for: 5m\n"
        "        labels: {severity: page}\n"
        "        annotations: {summary: 'Instance {{ $labels.instance }} down'}\n"
    )
    (tmp_path / "rules" / "bad.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up\n        fro: 1m\n"
    )
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rule_files: ['rules/*.yml']\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(config)
    (problem,) = info.value.problems
    assert str(problem).startswith(
        f"{tmp_path / 'rules' / 'bad.yml'}:6:9 groups[0].rules[0].fro: unknown field"
    )
    (tmp_path / "rules" / "bad.yml").unlink()
    loaded = load_config(config)
    (group,) = loaded.rule_groups
    assert group.name == "node" and group.interval == timedelta(seconds=10)
    rule = group.rules[0]
    assert rule.config.annotations == {"summary": "Instance {{ $labels.instance }} down"}
    assert (rule.line, rule.path) == (4, "groups[0].rules[0]")


def test_a_missing_rule_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rule_files: [nope.yml]\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(config)
    assert str(info.value.problems[0]) == (
        f"{config}:2:16 monitor.rule_files[0]: cannot read rule file {tmp_path / 'nope.yml'}: "
        "No such file or directory"
    )


RULE_FILES = {
    # a group's limit is Prometheus's (an int)
    "limit": "groups:\n  - name: g\n    limit: 2\n    rules:\n      - {alert: A, expr: up == 0}\n",
    "limit not a number": "groups:\n  - name: g\n    limit: x\n    rules: []\n",
    # an unquoted number is an expression
    "numeric expr": "groups:\n  - name: g\n    rules:\n      - record: one\n        expr: 1\n",
    # opscope's short form and severity are not Prometheus's rule format
    "severity": (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"
        "        severity: page\n"
    ),
    "short form": (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        metric: up\n"
        "        threshold: 1\n"
    ),
    # not in this Prometheus's format, and not supported by opscope
    "query_offset": (
        "groups:\n  - name: g\n    query_offset: 1m\n    rules:\n      - {alert: A, expr: up}\n"
    ),
}


@pytest.mark.parametrize("case", RULE_FILES)
def test_rule_files_are_accepted_where_promtool_accepts_them(tmp_path: Path, case: str) -> None:
    import subprocess

    from tests.conftest import require_tool

    promtool = require_tool("promtool")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULE_FILES[case])
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rule_files: [rules.yml]\n")
    try:
        load_config(config)
    except ConfigFileError as exc:
        assert checked.returncode == 1, f"promtool accepts it; opscope said {exc}"
        assert all(p.file == str(rules) and p.line is not None for p in exc.problems)
    else:
        assert checked.returncode == 0, f"promtool refuses it: {checked.stdout}"


def test_rule_file_refusals_name_the_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rule_files: [rules.yml]\n")
    rules.write_text(RULE_FILES["severity"])
    with pytest.raises(ConfigFileError) as info:
        load_config(config)
    assert [str(p) for p in info.value.problems] == [
        f"{rules}:6:9 groups[0].rules[0].severity: unknown field: severity is not in "
        "Prometheus's rule format (write labels: {severity: …}; the short form is for "
        "monitor.rules only)"
    ]
    rules.write_text(RULE_FILES["query_offset"])
    with pytest.raises(ConfigFileError) as info:
        load_config(config)
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (3, "groups[0].query_offset")
    assert problem.message.startswith("query_offset is not supported")
    rules.write_text(RULE_FILES["numeric expr"])
    (group,) = load_config(config).rule_groups
    assert group.rules[0].config.expression() == "1"


def test_severity_twice_is_an_error() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(
            "monitor:\n  rules:\n    - {alert: A, expr: up, severity: page, labels: {severity: x}}\n",
            environ={},
        )
    (problem,) = info.value.problems
    assert problem.line == 3
    assert problem.message == "severity is given twice: as severity and as labels.severity"


def test_rule_problems_point_at_the_field_at_fault(tmp_path: Path) -> None:
    from opscope.monitor.rules import compile_groups

    (tmp_path / "rules.yml").write_text(
        "groups:\n"
        "  - name: node\n"
        "    rules:\n"
        "      - alert: Bad\n"
        "        for: 5m\n"
        "        expr: topk(3, up)\n"
        "      - alert: Worse\n"
        "        expr: up == 0\n"
        "        annotations:\n"
        "          summary: ok\n"
        "          detail: '{{ range $x }}{{ end }}'\n"
    )
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rule_files: [rules.yml]\n")
    with pytest.raises(ConfigFileError) as info:
        compile_groups(load_config(config).rule_groups)
    rules = tmp_path / "rules.yml"
    # expr on line 6 from column 15, the detail annotation's value on line 11 from column 19
    assert [str(p) for p in info.value.problems] == [
        f'{rules}:6:15 groups[0].rules[0].expr: rule "Bad": the aggregation topk() is not '
        "supported",
        f'{rules}:11:19 groups[0].rules[1].annotations.detail: rule "Worse": the template '
        "action 'range' is not supported",
    ]


def test_a_group_defined_twice_is_reported_at_its_name(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n"
        "  - name: node\n"
        "    rules: [{alert: A, expr: up == 0}]\n"
        "  - name: node\n"
        "    rules: [{alert: B, expr: up == 0}]\n"
    )
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rule_files: [rules.yml]\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(config)
    assert [str(p) for p in info.value.problems] == [
        f'{rules}:4:11: rule group "node" is defined twice'
    ]


def test_messages_name_fields_as_written() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config("monitor:\n  rules:\n    - {alert: A, expr: up, fro: 1m}\n", environ={})
    (problem,) = info.value.problems
    assert "for, keep_firing_for" in problem.message and "for_" not in problem.message
