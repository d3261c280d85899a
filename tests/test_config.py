"""Configuration: schema, durations, ${VAR} interpolation and line-numbered errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from opscope.config import json_schema, load_config, parse_config
from opscope.durations import format_duration, parse_duration
from opscope.errors import ConfigFileError

EXAMPLE = Path(__file__).parent.parent / "examples" / "blatam" / "opscope.yaml"


def problems(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, filename="opscope.yaml", environ=env)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15s", timedelta(seconds=15)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("15d", timedelta(days=15)),
        ("1w", timedelta(days=7)),
        ("1y", timedelta(days=365)),
        ("500ms", timedelta(milliseconds=500)),
        ("0", timedelta(0)),
    ],
)
def test_durations_follow_prometheus_notation(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["fast", "10", "5m1h", "1.5s", "", "-1s", "5 m"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 15s"):
        parse_duration(text)


def test_duration_formatting_is_prometheus_notation() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=15)) == "2w1d"
    assert format_duration(timedelta(milliseconds=1500)) == "1s500ms"


def test_the_bundled_example_is_valid() -> None:
    loaded = load_config(EXAMPLE)
    monitor = loaded.config.monitor
    assert [j.job for j in monitor.scrape] == ["node", "opscope", "blatam"]
    assert monitor.scrape[0].targets == ["127.0.0.1:9100"]
    # The relative file is resolved against the configuration file's folder.
    crm = EXAMPLE.parent.resolve() / "data" / "crm.db"
    assert [(q.name, q.url) for q in monitor.sql] == [("revenue_rate", f"sqlite:///{crm}")]
    assert monitor.probes[0].targets == ["http://127.0.0.1:8765/healthz"]
    assert monitor.retention == timedelta(days=15)
    assert loaded.config.server.host == "127.0.0.1"


def test_defaults_of_an_empty_file() -> None:
    config = parse_config("", environ={}).config
    assert config.monitor.interval == timedelta(seconds=10)
    assert config.monitor.retention == timedelta(days=15)
    assert config.monitor.lookback_delta == timedelta(minutes=5)
    assert config.data_dir == Path(".opscope")
    assert config.monitor.system.enabled


def test_bad_duration_names_file_line_column_and_field() -> None:
    text = (
        "project: x\n"
        "monitor:\n"
        "  scrape:\n"
        "    - job: node\n"
        "      targets: ['127.0.0.1:9100']\n"
        "      interval: fast\n"
    )
    assert problems(text) == [
        'opscope.yaml:6:17 monitor.scrape[0].interval: expected a duration like 15s, got "fast"'
    ]


def test_a_bare_number_is_not_a_duration() -> None:
    assert problems("monitor:\n  interval: 10\n") == [
        "opscope.yaml:2:13 monitor.interval: expected a duration like 15s, got 10"
    ]


def test_unknown_field_points_at_the_key_and_lists_the_valid_ones() -> None:
    found = problems(
        "monitor:\n  scrape:\n    - job: a\n      targets: ['h:1']\n      tagets: []\n"
    )
    assert len(found) == 1
    assert found[0].startswith("opscope.yaml:5:7 monitor.scrape[0].tagets: unknown field")
    assert "targets" in found[0] and "metrics_path" in found[0]


def test_unknown_top_level_section_is_an_error_and_reports_are_read() -> None:
    assert problems("monitr: {}\n")[0].startswith("opscope.yaml:1:1 monitr: unknown field")
    loaded = parse_config("services:\n  api: {image: x}\nreports: {}\n", environ={})
    assert loaded.warnings == []


def test_every_problem_is_reported_once_with_its_own_line() -> None:
    text = (
        "monitor:\n"
        "  scrape:\n"
        "    - job: a\n"
        "      targets: ['http://h:1/metrics']\n"
        "  probes:\n"
        "    - job: p\n"
        "      targets: ['http://ok', 'ftp://nope']\n"
    )
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith("opscope.yaml:4:17 monitor.scrape[0].targets[0]: expected host:port")
    assert found[1] == (
        "opscope.yaml:7:30 monitor.probes[0].targets[1]: expected an http:// or https:// URL, "
        'got "ftp://nope"'
    )


def test_missing_required_field() -> None:
    assert problems("monitor:\n  scrape:\n    - targets: ['h:1']\n") == [
        "opscope.yaml:3:7 monitor.scrape[0].job: required field is missing"
    ]


def test_timeout_longer_than_interval_is_refused() -> None:
    text = "monitor:\n  scrape:\n    - {job: a, targets: ['h:1'], interval: 5s, timeout: 10s}\n"
    assert "scrape[0].timeout: 10s is longer than the interval 5s" in problems(text)[0]


def test_duplicate_job_and_duplicate_key() -> None:
    text = (
        "monitor:\n  scrape:\n    - {job: a, targets: ['h:1']}\n    - {job: a, targets: ['h:2']}\n"
    )
    assert 'job "a" is defined twice' in problems(text)[0]
    assert problems("project: a\nproject: b\n") == [
        "opscope.yaml:2:1 project: key given twice in the same mapping"
    ]


def test_yaml_syntax_error_has_a_position() -> None:
    found = problems("monitor:\n  interval: [10s\n")
    assert found[0].startswith("opscope.yaml:3:1: not valid YAML")


def test_environment_interpolation() -> None:
    text = (
        "project: ${PROJECT}\n"
        "monitor:\n"
        "  probes:\n"
        "    - job: api\n"
        "      targets: ['${API_URL:-http://127.0.0.1:8000/health}']\n"
        "      headers: {Authorization: 'Bearer ${TOKEN}', X-Cost: '$$5'}\n"
    )
    loaded = parse_config(text, environ={"PROJECT": "blatam", "TOKEN": "s3cret"})
    config = loaded.config
    assert config.project == "blatam"
    assert config.monitor.probes[0].targets == ["http://127.0.0.1:8000/health"]
    assert config.monitor.probes[0].headers == {"Authorization": "Bearer s3cret", "X-Cost": "$5"}
    # TOKEN is named like a secret; the project name is not one.
    assert loaded.secrets == frozenset({"s3cret"})


def test_unset_variable_without_default_is_named() -> None:
    found = problems("monitor:\n  probes:\n    - {job: a, targets: ['${HEALTH_URL}']}\n")
    assert found == [
        "opscope.yaml:3:26 monitor.probes[0].targets[0]: environment variable HEALTH_URL is not "
        "set (set it, or write ${HEALTH_URL:-default} to give a default)"
    ]


def test_interpolation_cannot_change_the_structure() -> None:
    # A value that looks like YAML stays a plain string.
    loaded = parse_config("project: ${P}\n", environ={"P": "{monitor: {interval: 1s}}"})
    assert loaded.config.project == "{monitor: {interval: 1s}}"


def test_json_schema_describes_durations_and_fields() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    text = json.dumps(schema)
    assert '"pattern"' in text and "metrics_path" in text and "lookback_delta" in text
    scrape = schema["$defs"]["ScrapeConfig"]  # type: ignore[index]
    assert scrape["additionalProperties"] is False
    assert scrape["properties"]["interval"]["anyOf"][0]["pattern"].startswith("^(0|")
    assert "monitor.interval" in scrape["properties"]["interval"]["description"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscope", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_cli_validate_reports_error_with_exit_code_2_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  interval: fast\n")
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f'error: {config}:2:13 monitor.interval: expected a duration like 15s, got "fast"\n'
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_validate_json_and_success(tmp_path: Path) -> None:
    result = run_cli("validate", "-c", str(EXAMPLE), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "valid": True,
        "file": str(EXAMPLE),
        "scrape_targets": 5,  # node, opscope and the three services
        "probe_targets": 1,
        "rules": 13,  # rules/blatam.yml 6 + rules/business.yml 7
        "warnings": [],
    }
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  port: 70000\n")
    result = run_cli("validate", "-c", str(config), "--json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["problems"][0]["line"] == 2
    assert report["problems"][0]["path"] == "server.port"


def test_cli_schema_prints_json_schema() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "opscope.yaml"


def test_cli_serve_with_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read file" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_defaults_use_duration_notation() -> None:
    monitor = json_schema()["$defs"]["MonitorConfig"]["properties"]  # type: ignore[index]
    assert monitor["interval"]["default"] == "10s"
    assert monitor["retention"]["default"] == "2w1d"
    assert parse_duration(monitor["retention"]["default"]) == timedelta(days=15)


def test_configuration_reference_in_docs_is_generated_and_current() -> None:
    docs = Path(__file__).parent.parent / "docs" / "configuration.md"
    result = run_cli("schema", "--markdown")
    assert result.returncode == 0
    assert docs.read_text() == result.stdout, (
        "run: opscope schema --markdown -o docs/configuration.md"
    )
    assert "| `monitor.scrape[].interval` | duration |" in result.stdout


def test_default_timeout_is_capped_at_a_short_interval() -> None:
    text = (
        "monitor:\n"
        "  scrape: [{job: a, targets: ['h:1'], interval: 5s}]\n"
        "  probes: [{job: p, targets: ['http://h'], interval: 2s}]\n"
    )
    monitor = parse_config(text, environ={}).config.monitor
    assert monitor.timeout_of(monitor.scrape[0]) == timedelta(seconds=5)
    assert monitor.timeout_of(monitor.probes[0]) == timedelta(seconds=2)
    long = "monitor:\n  scrape:\n    - job: a\n      targets: ['h:1']\n      interval: 5s\n      timeout: 6s\n"
    assert problems(long) == [
        f"opscope.yaml:{at(long, '6s')} monitor.scrape[0].timeout: 6s is longer than the "
        "interval 5s"
    ]


def test_an_empty_section_means_its_defaults() -> None:
    config = parse_config("server:\nmonitor:\n  scrape:\n  system:\n", environ={}).config
    assert config.server.port == 8765
    assert config.monitor.scrape == []
    assert config.monitor.system.enabled


def at(text: str, needle: str) -> str:
    """``line:column`` (1-based) of the first ``needle`` in ``text``, found by plain search."""
    index = text.index(needle)
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


STRICT_CASES = [
    ("server:\n  port: true\n", "true", "server.port: expected a whole number, got True"),
    ("server:\n  port: 8765.5\n", "8765.5", "server.port: expected a whole number, got 8765.5"),
    (
        "monitor:\n  system:\n    enabled: 'no'\n",
        "'no'",
        'monitor.system.enabled: expected true or false, got "no"',
    ),
    (
        "server:\n  host: not a host!\n",
        "not a host!",
        'server.host: expected an IP address or a host name, got "not a host!"',
    ),
    (
        "monitor:\n  scrape: [{job: a, targets: ['h:99999']}]\n",
        "'h:99999'",
        "monitor.scrape[0].targets[0]: expected host:port with a port from 1 to 65535, "
        'got "h:99999"',
    ),
    (
        "monitor:\n  lookback_delta: 0s\n",
        "0s",
        "monitor.lookback_delta: expected a duration greater than 0",
    ),
    (
        "monitor:\n  interval: 1ms\n",
        "1ms",
        "monitor.interval: expected an interval of at least 100ms",
    ),
    (
        "monitor:\n  retention: 99999999999999999y\n",
        "999",
        'monitor.retention: expected a duration like 15s, got "99999999999999999y"',
    ),
    (
        "monitor:\n  probes: [{job: a, targets: ['http://h'], headers: {X: \"a\\r\\nEvil: 1\"}}]\n",
        '"a',
        "monitor.probes[0].headers.X: HTTP header names and values cannot contain line breaks",
    ),
    (
        "monitor:\n  scrape: [{job: a, targets: []}]\n",
        "[]",
        "monitor.scrape[0].targets: expected at least 1 item(s)",
    ),
    ("monitor: 5\n", "5", "monitor: expected a mapping of fields, got 5"),
    (
        "monitor:\n  scrape: [{job: a, targets: ['h:1'], tls: {cert_file: c.pem}}]\n",
        "{cert",
        "monitor.scrape[0].tls: cert_file and key_file must be given together",
    ),
]


@pytest.mark.parametrize(("text", "where", "expected"), STRICT_CASES)
def test_values_are_checked_strictly_with_plain_messages(
    text: str, where: str, expected: str
) -> None:
    assert problems(text) == [f"opscope.yaml:{at(text, where)} {expected}"]


def test_yaml_that_is_not_plain_data_is_refused_with_a_position() -> None:
    assert problems("project: !custom x\n") == [
        "opscope.yaml:1:10 project: not a plain YAML value: could not determine a constructor "
        "for the tag '!custom'"
    ]
    deep = "a: " + "[" * 3000 + "]" * 3000 + "\n"
    assert problems(deep) == ["opscope.yaml: values are nested too deeply"]


def test_alias_bombs_stop_early() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 1 and "expands to more than 100000 values" in found[0]


def test_a_whole_value_variable_takes_the_type_it_spells() -> None:
    text = "server:\n  port: ${PORT:-8765}\nproject: '${PORT:-8765}'\n"
    assert parse_config(text, environ={}).config.server.port == 8765
    loaded = parse_config(text, environ={"PORT": "18765"})
    assert loaded.config.server.port == 18765
    assert loaded.config.project == "18765"  # quoted: stays a string
    found = problems("server:\n  port: ${PORT}\n", PORT="[1, 2]")
    assert found == ['opscope.yaml:2:9 server.port: expected a whole number, got "[1, 2]"']


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (["serve", "--log-level", "verbose"], ["serve", "--port", "80000"]):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
    result = run_cli("query", "up", "--data-dir", str(tmp_path), "--time", "nan")
    assert result.returncode == 2
    assert (
        result.stderr
        == 'error: invalid parameter "--time": cannot parse "nan" to a valid timestamp\n'
    )


def test_cli_runtime_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text(f"data_dir: {tmp_path / 'file'}\n")
    (tmp_path / "file").write_text("not a directory")
    result = run_cli("serve", "-c", str(config), "--port", "0")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot use data directory {tmp_path / 'file'}: File exists\n"
    result = run_cli("schema", "-o", str(tmp_path / "missing" / "schema.json"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot write")


def test_cli_validate_reports_rule_errors_with_positions(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    config.write_text("monitor:\n  rules:\n    - {alert: X, expr: 'rate(up[5m:1m]) > 1'}\n")
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f'error: {config}:3:24 monitor.rules[0].expr: rule "X": subqueries are not supported\n'
    )  # at the expression itself: line 3, column 24


def test_cli_validate_takes_deep_rule_expressions(tmp_path: Path) -> None:
    config = tmp_path / "opscope.yaml"
    terms = " + ".join(["up"] * 500)  # Prometheus accepts it; so does opscope
    config.write_text(f"monitor:\n  rules:\n    - {{alert: Many, expr: '{terms} > 1000'}}\n")
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "1 rule(s)" in result.stdout
    deep = "(" * 5000 + "up" + ")" * 5000  # deeper than the parser can take safely
    config.write_text(f"monitor:\n  rules:\n    - {{alert: Deep, expr: '{deep}'}}\n")
    result = run_cli("validate", "-c", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith(f'error: {config}:3:27 monitor.rules[0].expr: rule "Deep": ')
    assert "nested too deeply" in result.stderr


@pytest.mark.parametrize(
    "sql",
    [
        '{name: "revenue\\n", url: "sqlite:///crm.db", query: "SELECT 1 AS value"}',
        '{name: revenue, url: "sqlite:///crm.db", query: "SELECT 1 AS value", labels: {"l\\n": x}}',
    ],
)
def test_names_ending_in_a_newline_are_refused(sql: str) -> None:
    # Python's "$" matches before a final newline; names are [a-zA-Z_:][a-zA-Z0-9_:]* only.
    with pytest.raises(ConfigFileError, match=r"invalid (metric|label) name"):
        parse_config(f"monitor:\n  sql:\n    - {sql}\n", environ={})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///crm.db", "sqlite:////etc/opscope/crm.db"),
        ("duckdb:///data/crm.duckdb", "duckdb:////etc/opscope/data/crm.duckdb"),
        ("sqlite:///../crm.db", "sqlite:////etc/opscope/../crm.db"),
        (
            "sqlite:///file:crm.db?mode=ro&uri=true",
            "sqlite:///file:/etc/opscope/crm.db?mode=ro&uri=true",
        ),
        ("sqlite:////var/lib/crm.db", "sqlite:////var/lib/crm.db"),
        ("duckdb:///:memory:", "duckdb:///:memory:"),
        ("sqlite://", "sqlite://"),
        ("postgresql+psycopg://u:pw@db/crm", "postgresql+psycopg://u:pw@db/crm"),
    ],
)
def test_database_files_are_relative_to_the_configuration_file(
    tmp_path: Path, url: str, expected: str
) -> None:
    base = tmp_path / "etc" / "opscope"
    base.mkdir(parents=True)
    config = base / "opscope.yaml"
    config.write_text(f'monitor:\n  sql:\n    - {{name: m, url: "{url}", query: "SELECT 1"}}\n')
    loaded = load_config(config)
    assert loaded.config.monitor.sql[0].url == expected.replace("/etc/opscope", str(base))
