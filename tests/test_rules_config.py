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
