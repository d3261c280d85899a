"""`opscope report runs`: run records with their delivery states, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from opscope.config import parse_config
from opscope.notify.outbox import Outbox
from opscope.store import Store
from opscope.store.runs import Owner, RunRecords
from tests.report.test_cli_report import run_cli

AT = 1_774_850_400  # 2026-03-30T06:00:00Z


def populate(data_dir: Path) -> None:
    retry = parse_config("notify: {channels: {hook: 'json://127.0.0.1:9/'}}", environ={})
    with Store.open(data_dir) as store, RunRecords(store.path) as runs:
        outbox = Outbox(store, retry.config.notify.retry)
        record = runs.claim("weekly-sales", AT, trigger="schedule", owner=Owner.current(), now=AT)
        assert record is not None
        sent = outbox.new_message(
            key="report:weekly-sales:20260330T060000Z",
            channel="hook",
            title="t",
            body="b",
            payload={},
            attachments=[],
            now=AT + 3,
        )
        sent.state, sent.attempts, sent.delivered_at = "delivered", 2, AT + 65.0
        store.put_state(Outbox.documents([sent]), at=AT + 65)
        record.state, record.period, record.finished_at = "succeeded", "2026-W13", AT + 3.5
        record.files = ["reports/weekly-sales/20260330T060000Z/sales_performance-2026-W13.json"]
        record.deliveries = [{"channel": "hook", "id": sent.id}]
        runs.save(record)
        failed = runs.claim("daily", AT, trigger="catch-up", owner=Owner.current(), now=AT + 1)
        assert failed is not None
        failed.state, failed.error, failed.finished_at = "failed", "no deals table", AT + 2.0
        runs.save(failed)


def test_runs_as_json_carry_times_outcome_files_and_delivery_state(tmp_path: Path) -> None:
    populate(tmp_path)
    result = run_cli("report", "runs", "--data-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["report"], r["state"]) for r in rows] == [
        ("daily", "failed"),  # same scheduled time: by name
        ("weekly-sales", "succeeded"),
    ]
    weekly = rows[1]
    assert weekly["scheduled_at"] == "2026-03-30T06:00:00Z"
    assert weekly["started_at"] == "2026-03-30T06:00:00Z"
    assert weekly["finished_at"] == "2026-03-30T06:00:03Z"
    assert weekly["period"] == "2026-W13"
    assert weekly["files"] == [
        "reports/weekly-sales/20260330T060000Z/sales_performance-2026-W13.json"
    ]
    (delivery,) = weekly["deliveries"]
    assert (delivery["channel"], delivery["state"], delivery["attempts"]) == (
        "hook",
        "delivered",
        2,
    )
    assert delivery["delivered_at"] == "2026-03-30T06:01:05Z"
    assert rows[0]["error"] == "no deals table" and rows[0]["trigger"] == "catch-up"

    one = json.loads(
        run_cli("report", "runs", "daily", "--data-dir", str(tmp_path), "--json").stdout
    )
    assert [r["report"] for r in one] == ["daily"]


def test_runs_table_and_errors(tmp_path: Path) -> None:
    populate(tmp_path / "state")
    config = tmp_path / "opscope.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'state'}\n"
        "sources:\n  crm: {path: data}\n"
        "reports:\n  weekly-sales: {report: sales_performance, schedule: '0 8 * * MON'}\n"
    )
    table = run_cli("report", "runs", "weekly-sales", "-c", str(config))
    assert table.returncode == 0, table.stderr
    # piped: one run per line, tab-separated
    assert table.stdout.splitlines() == [
        "\t".join(
            [
                "weekly-sales",
                "2026-03-30T06:00:00Z",
                "2026-W13",
                "succeeded",
                "2026-03-30T06:00:00Z",
                "2026-03-30T06:00:03Z",
                "sales_performance-2026-W13.json",
                "hook: delivered",
            ]
        )
    ]
    unknown = run_cli("report", "runs", "monthly", "-c", str(config))
    assert unknown.returncode == 2
    assert 'unknown report "monthly"' in unknown.stderr
    missing = run_cli("report", "runs", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no store" in missing.stderr
