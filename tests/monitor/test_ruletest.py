"""`opscope rules test` against the real promtool: the same files must get the same verdicts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opscope.monitor.ruletest import expand_values, parse_series, run_test_file
from opscope.store import STALE_NAN
from tests.conftest import require_tool

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).parents[2] / "examples" / "blatam" / "rules"
FILES = [
    DATA / "promtool_docs" / "test.yml",
    DATA / "promtool_scenarios" / "scenarios_test.yml",
    EXAMPLE.parent / "tests" / "rules_test.yml",
    EXAMPLE.parent / "tests" / "business_test.yml",
]


def verdict(*argv: str) -> int:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False).returncode


def test_the_example_rules_pass_promtool_check() -> None:
    promtool = require_tool("promtool")
    assert verdict(promtool, "check", "rules", str(EXAMPLE / "blatam.yml")) == 0
    assert verdict(promtool, "check", "rules", str(EXAMPLE / "business.yml")) == 0


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_same_verdict_as_promtool(path: Path) -> None:
    promtool = require_tool("promtool")
    expected = verdict(promtool, "test", "rules", str(path))
    assert expected == 0, "these files pass in the real promtool"
    assert verdict(sys.executable, "-m", "opscope", "rules", "test", str(path)) == expected


CASES = DATA / "promtool_cases"


@pytest.mark.parametrize(
    ("name", "verdict_of_promtool"),
    [
        ("same_evaluation_test.yml", 0),
        ("two_alerts_test.yml", 0),
        ("evaluation_error_test.yml", 1),
        ("values_test.yml", 0),
        ("values_failing_test.yml", 1),
        ("limit_test.yml", 0),
        ("limit_exceeded_test.yml", 1),
    ],
)
def test_cases_get_promtools_verdict(name: str, verdict_of_promtool: int) -> None:
    promtool = require_tool("promtool")
    path = CASES / name
    expected = verdict(promtool, "test", "rules", str(path))
    assert expected == verdict_of_promtool, "promtool's verdict on this case changed"
    assert verdict(sys.executable, "-m", "opscope", "rules", "test", str(path)) == expected


def mutated(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    for item in source.parent.iterdir():
        shutil.copy(item, tmp_path / item.name)
    target = tmp_path / source.name
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    return target


@pytest.mark.parametrize(
    ("source", "old", "new"),
    [
        (FILES[0], "- eval_time: 10m", "- eval_time: 4m"),  # not firing yet at 4m
        (FILES[0], "value: 50", "value: 51"),
        (FILES[0], 'summary: "Instance localhost:9090 down"', 'summary: "down"'),
        (
            FILES[1],
            "{eval_time: 5m, alertname: DiskFull, exp_alerts: []}",
            "{eval_time: 5m, alertname: DiskFull, exp_alerts: [{exp_labels: {instance: db1, "
            "severity: critical}}]}",
        ),
        (
            FILES[1],
            "{eval_time: 9m, alertname: Hovering, exp_alerts: []}",
            "{eval_time: 9m, alertname: Hovering, exp_alerts: [{exp_labels: {room: a}}]}",
        ),
    ],
)
def test_failing_files_fail_in_both(tmp_path: Path, source: Path, old: str, new: str) -> None:
    promtool = require_tool("promtool")
    path = mutated(tmp_path, source, old, new)
    assert verdict(promtool, "test", "rules", str(path)) == 1
    result = subprocess.run(
        [sys.executable, "-m", "opscope", "rules", "test", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "FAILED" in result.stdout


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        # several alerts, sorted and listed as promtool does
        ("two_alerts_test.yml", 'summary: "c of api is down"', 'summary: "c is down"'),
        # a rule that fails to evaluate, at the first evaluation it fails
        ("evaluation_error_test.yml", "", ""),
        # values as Go's FormatFloat(v, 'E', -1, 64): 6.25E-02, +Inf, NaN; {} without labels
        ("values_failing_test.yml", "", ""),
        # a group's limit exceeded by an alerting and a recording rule
        ("limit_exceeded_test.yml", "", ""),
    ],
)
def test_failures_read_as_promtools(tmp_path: Path, name: str, old: str, new: str) -> None:
    promtool = require_tool("promtool")
    path = mutated(tmp_path, CASES / name, old, new)
    theirs = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert theirs.returncode == 1
    outcome = run_test_file(path)
    assert not outcome.passed
    # promtool writes "  FAILED:" and the failures to stderr; the failures must read the same
    assert outcome.report().split("  FAILED:\n", 1)[1] == theirs.stderr.split("  FAILED:\n", 1)[1]


def test_failure_report_shows_expected_and_got(tmp_path: Path) -> None:
    path = mutated(tmp_path, FILES[0], "- eval_time: 10m", "- eval_time: 4m")
    outcome = run_test_file(path)
    assert not outcome.passed
    report = outcome.report()
    assert "alertname: InstanceDown, time: 4m" in report
    assert 'exp:[\n            0:\n              Labels:{alertname="InstanceDown"' in report
    assert "got:[]" in report


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # counts and values confirmed with the real promtool (count_over_time over the input)
        ("1 _x3 5", [1.0, None, None, None, 5.0]),
        ("7x2", [7.0, 7.0, 7.0]),
        ("-2+4x3", [-2.0, 2.0, 6.0, 10.0]),
        ("1-2x4", [1.0, -1.0, -3.0, -5.0, -7.0]),
        ("10+10x2 30+20x5", [10.0, 20.0, 30.0, 30.0, 50.0, 70.0, 90.0, 110.0, 130.0]),
        ("_ 3", [None, 3.0]),
        # the step is added again and again: 0.1 + 0.2 = 0.30000000000000004 in binary floating
        # point, + 0.2 = 0.5, + 0.2 = 0.7 (where 0.1 + 3 × 0.2 = 0.7000000000000001)
        ("0.1+0.2x3", [0.1, 0.30000000000000004, 0.5, 0.7]),
    ],
)
def test_expanding_notation(text: str, expected: list[float | None]) -> None:
    assert expand_values(text) == expected


def test_stale_token_is_a_staleness_marker() -> None:
    values = expand_values("1 stale 2")
    assert values[0] == 1.0 and values[2] == 2.0
    marker = values[1]
    assert marker is not None and str(marker) == str(STALE_NAN)
    import numpy as np

    assert np.array([marker]).view(np.uint64)[0] == 0x7FF0000000000002


@pytest.mark.parametrize("bad", ["1+", "x", "1+2", "stale+1x2", "1x"])
def test_bad_notation_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid value"):
        expand_values(bad)


def test_series_notation() -> None:
    assert parse_series('up{job="a", instance="h:1"}') == ("up", {"job": "a", "instance": "h:1"})
    assert parse_series('{__name__="up"}') == ("up", {})
    with pytest.raises(ValueError, match="only = is allowed"):
        parse_series('up{job=~"a"}')
