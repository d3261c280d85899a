"""Exported rules and routing are accepted by the real promtool and amtool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import require_tool

EXAMPLE = Path(__file__).parents[2] / "examples" / "blatam" / "opscope.yaml"

CONFIG = """
monitor:
  rule_files: ['{example_rules}']
  rules:
    - {{alert: HighCPU, metric: cpu_usage, threshold: 80, for: 5m, severity: warning}}
    - {{record: 'job:up:sum', expr: 'sum by (job) (up)'}}
    - name: business
      interval: 1m
      rules:
        - alert: RevenueDrop
          expr: revenue_rate < 0.8 * avg_over_time(revenue_rate[1h] offset 5m)
          for: 1h
          keep_firing_for: 10m
          labels: {{severity: critical}}
          annotations: {{summary: 'Revenue {{{{ $value | humanize }}}} below its average'}}
notify:
  channels:
    ops-email: "mailtos://ops:${{SMTP_PASSWORD:-pw}}@smtp.example.com:587?to=ops@example.com&from=opscope@example.com"
    slack: "slack://T000/B000/XXXX/#alerts"
    sms: "twilio://AC123:token@15551234567/15557654321"
    hook: {{webhook: "https://hooks.example.com/alerts", secret: abc, send_resolved: false}}
  group_by: [alertname, service]
  routes:
    - matchers: ['severity="critical"']
      channels: [ops-email, slack, sms]
      continue: true
      repeat_interval: 1h
    - match: {{team: data}}
      channels: [hook]
      group_wait: 10s
  channels_default: [ops-email]
  inhibit:
    - source_matchers: ['severity="critical"']
      target_matchers: ['severity="warning"']
      equal: [service]
"""


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "opscope.yaml"
    rules = EXAMPLE.parent / "rules" / "blatam.yml"
    config.write_text(CONFIG.format(example_rules=rules))
    return config


def opscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opscope", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_exported_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    config = write_config(tmp_path)
    out = tmp_path / "export"
    result = opscope("export", "prometheus-rules", "-c", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["blatam.yml", "opscope.rules.yml"]
    inline = yaml.safe_load((out / "opscope.rules.yml").read_text())
    high_cpu = inline["groups"][0]["rules"][0]
    assert high_cpu == {
        "alert": "HighCPU",
        "expr": "cpu_usage > 80",
        "for": "5m",
        "labels": {"severity": "warning"},
    }
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, out.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 3 rules found" in check.stdout  # HighCPU, job:up:sum, RevenueDrop
    assert "SUCCESS: 6 rules found" in check.stdout  # the example's rule file


def test_exported_routing_passes_amtool(tmp_path: Path) -> None:
    amtool = require_tool("amtool")
    config = write_config(tmp_path)
    target = tmp_path / "alertmanager.yml"
    result = opscope("export", "alertmanager", "-c", str(config), "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert "twilio:// — not exported" in result.stderr
    assert "webhooks are not signed" in result.stderr
    check = subprocess.run(
        [amtool, "check-config", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    document = yaml.safe_load(target.read_text())
    route = document["route"]
    assert route["group_by"] == ["alertname", "service"]
    assert route["routes"][0]["matchers"] == ['severity="critical"']
    assert route["routes"][0]["continue"] is True
    email = document["receivers"][1]["email_configs"][0]
    assert email["smarthost"] == "smtp.example.com:587" and email["require_tls"] is True
    # amtool's own routing test agrees with opscope's routes
    test = subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            "--config.file",
            str(target),
            "severity=critical",
            "service=db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert test.stdout.strip() == "route-0-ops-email-slack-sms"


def test_rule_files_of_the_same_name_stay_apart(tmp_path: Path) -> None:
    """Two rule files named rules.yml (in two directories) with a group of the same name each:
    Prometheus refuses a file that holds a group name twice, so each keeps a file of its own."""
    promtool = require_tool("promtool")
    for team, threshold in (("web", 80), ("db", 90)):
        (tmp_path / team).mkdir()
        (tmp_path / team / "rules.yml").write_text(
            "groups:\n"
            "  - name: node\n"
            "    rules:\n"
            f"      - {{alert: HighCPU, expr: 'cpu_usage{{team=\"{team}\"}} > {threshold}'}}\n"
        )
    config = tmp_path / "opscope.yaml"
    config.write_text(
        "monitor:\n"
        "  rule_files: ['*/rules.yml']\n"
        "  rules:\n"
        "    - {name: node, rules: [{alert: Inline, expr: 'up == 0'}]}\n"
    )
    out = tmp_path / "export"
    result = opscope("export", "prometheus-rules", "-c", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["opscope.rules.yml", "rules-2.yml", "rules.yml"]
    exprs = sorted(
        rule["expr"]
        for name in written
        for group in yaml.safe_load((out / name).read_text())["groups"]
        for rule in group["rules"]
    )
    assert exprs == ['cpu_usage{team="db"} > 90', 'cpu_usage{team="web"} > 80', "up == 0"]
    check = subprocess.run(
        [promtool, "check", "rules", *(str(out / name) for name in written)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
