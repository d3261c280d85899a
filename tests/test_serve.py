"""`opscope serve` end to end: a real process, real targets, the API, the WebSocket, signals."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import (
    LocalHTTPServer,
    Route,
    ServeProcess,
    SMTPServer,
    free_port,
    wait_until,
)


def targets(serve: ServeProcess) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{serve.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return {t["scrapePool"]: t for t in data}


def query(serve: ServeProcess, selector: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{serve.url}/api/v1/query", params={"query": selector}, timeout=5).json()
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.node_exporter
def test_serve_collects_real_targets_and_survives_bad_ones(
    serve_process: Callable[..., ServeProcess], node_exporter: str, http_server: LocalHTTPServer
) -> None:
    http_server.routes["/metrics"] = Route(body=b'# TYPE broken gauge\nbroken{x="1"} one\n')
    closed = f"127.0.0.1:{free_port()}"
    serve = serve_process(
        "server: {port: {port}}\n"
        "monitor:\n"
        "  interval: 1s\n"
        "  system: {interval: 1s}\n"
        "  scrape:\n"
        f"    - {{job: node, targets: ['{node_exporter}'], timeout: 1s}}\n"
        f"    - {{job: closed, targets: ['{closed}'], timeout: 1s}}\n"
        f"    - {{job: malformed, targets: ['127.0.0.1:{http_server.port}'], timeout: 1s}}\n"
        "  probes:\n"
        "    - {job: self, targets: ['http://127.0.0.1:{port}/healthz'], timeout: 1s}\n"
    )
    wait_until(
        lambda: all(t["health"] != "unknown" for t in targets(serve).values()),
        what="every target to be collected once",
    )
    found = targets(serve)
    assert found["node"]["health"] == "up"
    assert found["closed"]["health"] == "down"
    assert found["closed"]["lastError"] == f'Get "http://{closed}/metrics": connection refused'
    assert found["malformed"]["health"] == "down"
    assert found["malformed"]["lastError"] == 'line 2: invalid value "one"'
    assert found["self"]["health"] == "up"
    cpu = query(serve, f'node_cpu_seconds_total{{job="node", instance="{node_exporter}"}}')
    assert cpu and all(float(s["value"][1]) >= 0 for s in cpu)
    ups = {s["metric"]["job"]: s["value"][1] for s in query(serve, "up")}
    assert ups == {"node": "1", "closed": "0", "malformed": "0"}
    wait_until(lambda: bool(query(serve, "cpu_usage")), what="a second system cycle")
    probe = query(serve, 'probe_success{job="self"}')
    assert probe[0]["value"][1] == "1"
    assert serve.process.poll() is None  # still running after all the failures


def test_websocket_updates_follow_collection_cycles(
    serve_process: Callable[..., ServeProcess],
) -> None:
    serve = serve_process("server: {port: {port}}\nmonitor: {interval: 1s}\n")

    async def two_updates() -> list[dict[str, Any]]:
        url = serve.url.replace("http://", "ws://") + "/ws"
        async with connect(url, proxy=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "metrics": ["memory_usage"]}))
            assert json.loads(await ws.recv())["type"] == "subscription_confirmed"
            return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]

    first, second = asyncio.run(two_updates())
    assert first["type"] == second["type"] == "metrics_update"
    assert 0.9 <= second["timestamp"] - first["timestamp"] <= 1.5  # the 1 s cycle
    assert [m["metric"]["__name__"] for m in first["metrics"]] == ["memory_usage"]
    assert 0 < first["metrics"][0]["value"] <= 100
    assert "memory_usage" in first["system_status"]


def test_sigterm_stops_gracefully_and_history_survives_a_restart(
    serve_process: Callable[..., ServeProcess],
) -> None:
    config = "server: {port: {port}}\nmonitor: {interval: 1s}\n"
    serve = serve_process(config)
    wait_until(lambda: bool(query(serve, "load1")), what="a first system cycle")
    started = time.time()
    # a second server on the same data dir is refused: it would corrupt the store
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "opscope",
            "serve",
            "-c",
            str(serve.data_dir.parent / "opscope-0.yaml"),
            "--data-dir",
            str(serve.data_dir),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert "is in use by opscope serve (pid" in second.stderr
    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(timeout=15) == 0
    assert "SIGTERM received: stopping" in serve.output()
    assert "Traceback" not in serve.output()
    # The CLI reads the store directly; the last load1 sample is still there.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "opscope",
            "query",
            "load1",
            "--data-dir",
            str(serve.data_dir),
            "--time",
            str(started),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows and rows[0]["metric"]["__name__"] == "load1"
    assert rows[0]["timestamp"] <= started


def test_sigint_stops_too(serve_process: Callable[..., ServeProcess]) -> None:
    serve = serve_process("server: {port: {port}}\n")
    serve.process.send_signal(signal.SIGINT)
    assert serve.process.wait(timeout=15) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{serve.url}/healthz", timeout=2)


def test_alert_rules_fire_and_are_pushed_live(serve_process: Callable[..., ServeProcess]) -> None:
    closed = f"127.0.0.1:{free_port()}"
    serve = serve_process(
        "server: {port: {port}}\n"
        "monitor:\n"
        "  interval: 1s\n"
        "  system: {enabled: false}\n"
        f"  scrape: [{{job: gone, targets: ['{closed}'], timeout: 500ms}}]\n"
        "  rules:\n"
        "    - alert: TargetDown\n"
        "      expr: up == 0\n"
        "      severity: critical\n"
        "      annotations: {summary: '{{ $labels.job }} on {{ $labels.instance }} is down'}\n"
    )

    async def first_alert_event() -> dict[str, Any]:
        url = serve.url.replace("http://", "ws://") + "/ws"
        async with connect(url, proxy=None) as ws:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if message["type"] == "alert" and message["event"] == "firing":
                    return message

    event = asyncio.run(first_alert_event())
    assert event["alert"]["labels"] == {
        "alertname": "TargetDown",
        "instance": closed,
        "job": "gone",
        "severity": "critical",
    }
    assert event["alert"]["annotations"] == {"summary": f"gone on {closed} is down"}
    alerts = httpx.get(f"{serve.url}/api/v1/alerts", timeout=5).json()["data"]
    assert alerts["firing_alerts"] == 1 and alerts["alert_rules"] == 1
    assert alerts["alerts"][0]["state"] == "firing"
    rules = httpx.get(f"{serve.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    (rule,) = rules[0]["rules"]
    assert (rule["name"], rule["health"], rule["state"], rule["query"]) == (
        "TargetDown",
        "ok",
        "firing",
        "up == 0",
    )
    firing = query(serve, 'ALERTS{alertname="TargetDown"}')
    assert firing[0]["metric"]["alertstate"] == "firing"


NOTIFYING = (
    "server: {port: {port}}\n"
    "monitor:\n"
    "  interval: 1s\n"
    "  system: {enabled: false}\n"
    "  scrape: [{job: gone, targets: ['%(closed)s'], timeout: 500ms}]\n"
    "  rules:\n"
    "    - {alert: TargetDown, expr: 'up == 0', severity: critical,\n"
    "       annotations: {summary: '{{ $labels.instance }} is down'}}\n"
    "notify:\n"
    "  group_wait: 0s\n"
    "  group_interval: 1s\n"
    "  channels:\n"
    "    email: '%(smtp)s'\n"
    "    hook: {webhook: '%(hook)s', secret: s3cret}\n"
    "  channels_default: [email, hook]\n"
)


def test_alerts_are_emailed_and_posted_and_can_be_silenced(
    serve_process: Callable[..., ServeProcess],
    http_server: LocalHTTPServer,
    smtp_server: SMTPServer,
) -> None:
    http_server.routes["/hook"] = Route(status=200)
    closed = f"127.0.0.1:{free_port()}"
    serve = serve_process(
        NOTIFYING % {"closed": closed, "smtp": smtp_server.url, "hook": f"{http_server.url}/hook"}
    )
    wait_until(
        lambda: len(smtp_server.messages) == 1 and http_server.hits.get("/hook") == 1,
        timeout=20,
        what="the email and the webhook",
    )
    email = smtp_server.messages[0].decode(errors="replace")
    # Alertmanager's subject: group labels, then the other common labels by label name
    assert f"Subject: [FIRING:1] TargetDown ({closed} gone critical)" in email
    assert f"{closed} is down" in email
    _, _, headers, body = next(r for r in http_server.requests if r[1] == "/hook")
    payload = json.loads(body)
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["alerts"][0]["labels"]["instance"] == closed
    assert headers["Idempotency-Key"] == payload["idempotencyKey"]
    log = httpx.get(f"{serve.url}/api/v1/notifications", timeout=5).json()["data"]
    assert sorted((n["channel"], n["state"]) for n in log) == [
        ("email", "delivered"),
        ("hook", "delivered"),
    ]
    # silence it through the CLI; the API lists it as active
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "opscope",
            "silence",
            "add",
            'alertname="TargetDown"',
            "--duration",
            "1h",
            "--author",
            "tester",
            "--comment",
            "maintenance",
            "--url",
            serve.url,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    silence_id = json.loads(added.stdout)["silenceID"]
    listed = httpx.get(f"{serve.url}/api/v1/silences", timeout=5).json()["data"]
    assert [(s["id"], s["status"]["state"], s["createdBy"]) for s in listed] == [
        (silence_id, "active", "tester")
    ]
    bad = httpx.post(
        f"{serve.url}/api/v1/silences",
        timeout=5,
        json={"matchers": ['x=~".*"'], "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t"},
    )
    assert bad.status_code == 400 and "must not match the empty string" in bad.json()["error"]
    missing = httpx.delete(f"{serve.url}/api/v1/silences/nope", timeout=5)
    assert missing.status_code == 404
    numeric = httpx.post(
        f"{serve.url}/api/v1/silences",
        timeout=5,
        json={"matchers": ['job="gone"'], "endsAt": time.time() + 60, "createdBy": "t"},
    )
    assert numeric.status_code == 200, numeric.text  # Unix seconds as a number work too
    assert httpx.get(f"{serve.url}/healthz", timeout=5).json()["notifications"] is True


def test_a_delivery_interrupted_by_kill_9_is_delivered_after_restart(
    serve_process: Callable[..., ServeProcess],
    http_server: LocalHTTPServer,
    smtp_server: SMTPServer,
) -> None:
    # the webhook answers its first request only after 5 s: the server is killed meanwhile
    http_server.routes["/hook"] = Route(status=200, delay=5.0)
    closed = f"127.0.0.1:{free_port()}"
    config = NOTIFYING % {
        "closed": closed,
        "smtp": smtp_server.url,
        "hook": f"{http_server.url}/hook",
    }
    first = serve_process(config)

    def email_delivered_and_hook_in_flight() -> bool:
        log = httpx.get(f"{first.url}/api/v1/notifications", timeout=5).json()["data"]
        email_done = any(n["channel"] == "email" and n["state"] == "delivered" for n in log)
        return email_done and http_server.hits.get("/hook", 0) >= 1

    wait_until(
        email_delivered_and_hook_in_flight,
        timeout=20,
        what="the email to be delivered and the webhook request to start",
    )
    first.process.kill()
    first.process.wait(timeout=10)
    http_server.routes["/hook"] = Route(status=200)
    second = serve_process(config, port=int(first.url.rsplit(":", 1)[1]), data_dir=first.data_dir)
    wait_until(
        lambda: any(
            n["channel"] == "hook" and n["state"] == "delivered"
            for n in httpx.get(f"{second.url}/api/v1/notifications", timeout=5).json()["data"]
        ),
        timeout=30,
        what="the interrupted delivery",
    )
    keys = [
        headers["Idempotency-Key"]
        for _, path, headers, _ in http_server.requests
        if path == "/hook"
    ]
    assert len(keys) == 2 and keys[0] == keys[1]  # a recognisable duplicate, not a new alert
    assert len(smtp_server.messages) == 1  # the email had been delivered before the kill


def test_the_query_sample_limit_is_configurable(serve_process: Callable[..., ServeProcess]) -> None:
    serve = serve_process("server: {port: {port}, query_max_samples: 2}\nmonitor: {interval: 1s}\n")
    wait_until(
        lambda: (
            httpx.get(f"{serve.url}/api/v1/series", params={"match[]": "load1"}, timeout=5).json()[
                "data"
            ]
            != []
        ),
        what="a system cycle",
    )
    response = httpx.get(f"{serve.url}/api/v1/query", params={"query": '{job="system"}'}, timeout=5)
    assert response.status_code == 422
    assert "query processing would load too many samples" in response.json()["error"]


def test_restarts_do_not_notify_again(
    serve_process: Callable[..., ServeProcess],
    http_server: LocalHTTPServer,
    smtp_server: SMTPServer,
) -> None:
    # The webhook answers its first request after 2 s: SIGTERM arrives while it is in flight.
    http_server.routes["/hook"] = Route(status=200, delay=2.0)
    closed = f"127.0.0.1:{free_port()}"
    config = NOTIFYING % {
        "closed": closed,
        "smtp": smtp_server.url,
        "hook": f"{http_server.url}/hook",
    }
    first = serve_process(config)
    wait_until(
        lambda: len(smtp_server.messages) == 1 and http_server.hits.get("/hook") == 1,
        timeout=20,
        what="the email and the webhook request",
    )
    first.process.send_signal(signal.SIGTERM)  # the webhook delivery is still being sent
    assert first.process.wait(timeout=20) == 0
    http_server.routes["/hook"] = Route(status=200)
    port = int(first.url.rsplit(":", 1)[1])
    for stop in ("SIGTERM", "kill -9"):
        again = serve_process(config, port=port, data_dir=first.data_dir)
        restarted = time.time()

        def evaluated_twice_since_restart(
            serve: ServeProcess = again, since: float = restarted
        ) -> bool:
            groups = httpx.get(f"{serve.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            last = groups[0]["lastEvaluation"]
            return last is not None and _unix(last) >= since + 2.5

        # the alert is handed to the notifier at every evaluation (1 s), groups flush every 1 s
        wait_until(evaluated_twice_since_restart, timeout=20, what="evaluations after restart")
        if stop == "SIGTERM":
            again.process.send_signal(signal.SIGTERM)
            assert again.process.wait(timeout=20) == 0
        else:
            again.process.kill()
            again.process.wait(timeout=10)
    # Alertmanager's notification log: nothing again before repeat_interval (4 h)
    assert len(smtp_server.messages) == 1
    assert http_server.hits["/hook"] == 1


def _unix(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_silence_commands_for_scripts(
    serve_process: Callable[..., ServeProcess], http_server: LocalHTTPServer
) -> None:
    serve = serve_process(
        "server: {port: {port}}\n"
        "monitor: {system: {enabled: false}}\n"
        f"notify: {{channels: {{hook: {{webhook: '{http_server.url}/hook'}}}}}}\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "opscope", "silence", *args, "--url", serve.url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    # amtool's notation: a value without quotes
    added = cli("add", "alertname=FooWarn", "--comment", "a long comment " * 8, "--json")
    assert added.returncode == 0, added.stderr
    silence_id = json.loads(added.stdout)["silenceID"]
    assert json.loads(added.stdout)["matchers"] == ['alertname="FooWarn"']
    listed = cli("list")  # piped: whole ids, one silence per line
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split("\t")[:3] == [silence_id, "active", 'alertname="FooWarn"']
    expired = cli("expire", silence_id[:8])  # a unique start of the id is enough
    assert expired.returncode == 0, expired.stderr
    assert expired.stdout == f"silence {silence_id} expired\n"
    missing = cli("expire", "zzzz")
    assert missing.returncode == 2 and "no silence zzzz" in missing.stderr


EXAMPLE_DIR = Path(__file__).parent.parent / "examples" / "blatam"


def test_the_bundled_example_serves_its_sql_metric_out_of_the_box(tmp_path: Path) -> None:
    """The README's first command: `opscope serve -c examples/blatam/opscope.yaml`, from
    another folder, with no CRM_DB set — the example's SQL target is up with its figures."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CRM_DB"}
    env["OPSCOPE_PORT"] = str(port)
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "opscope", "serve", "-c", str(EXAMPLE_DIR / "opscope.yaml")],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    serve = ServeProcess(process, f"http://127.0.0.1:{port}", tmp_path / ".opscope", log)

    def sql_target() -> dict[str, Any]:
        data = httpx.get(f"{serve.url}/api/v1/targets", timeout=5).json()["data"]
        return next(t for t in data["activeTargets"] if t["labels"]["instance"] == "revenue_rate")

    def sql_collected() -> bool:
        if process.poll() is not None:
            pytest.fail(f"opscope serve exited with {process.returncode}:\n{serve.output()}")
        try:
            return sql_target()["health"] != "unknown"
        except httpx.HTTPError:
            return False

    try:
        wait_until(sql_collected, timeout=30, what="the example's SQL query to run once")
        target = sql_target()
        assert (target["health"], target["lastError"]) == ("up", "")
        got = {r["metric"]["region"]: float(r["value"][1]) for r in query(serve, "revenue_rate")}
        # By hand from data/deals.csv: the latest closed deal is at 10:00:00, so the hour is
        # [09:00:00, 10:00:00]; won deals in it — East 8500 + 1999.99, West 15250.50 + 6200,
        # North 7300, South 5400 (South's 3100 at 08:59:59 and East's 12000 at 08:15 are out,
        # lost and open deals never count).
        assert got == {"East": 10499.99, "West": 21450.5, "North": 7300.0, "South": 5400.0}
        assert not (tmp_path / "crm.db").exists() and not (tmp_path / "data").exists()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_example_database_holds_exactly_the_csv_rows() -> None:
    data = EXAMPLE_DIR / "data"
    with (data / "deals.csv").open(newline="") as handle:
        expected = [
            (int(r["id"]), r["region"], float(r["amount"]), r["status"], r["closed_at"] or None)
            for r in csv.DictReader(handle)
        ]
    connection = sqlite3.connect(f"file:{data / 'crm.db'}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT * FROM deals ORDER BY id").fetchall()
    finally:
        connection.close()
    assert rows == expected


def test_healthz_stays_responsive_during_a_push_just_under_the_series_limit(
    serve_process: Callable[..., ServeProcess],
) -> None:
    """A push of 99,999 new series (the default monitor.push.series_limit is 100,000) is
    decoded and stored off the event loop: /healthz keeps answering within a second."""
    serve = serve_process(
        "server: {port: {port}}\nmonitor: {interval: 1s, system: {interval: 1s}}\n"
    )
    count = 99_999
    body = "".join(f'batch_rows{{shard="{i}"}} {i}\n' for i in range(count)).encode()
    result: dict[str, Any] = {}

    def push() -> None:
        started = time.monotonic()
        response = httpx.put(f"{serve.url}/api/v1/push/bulk", content=body, timeout=120)
        result["status"], result["body"] = response.status_code, response.json()
        result["seconds"] = time.monotonic() - started

    pusher = threading.Thread(target=push)
    latencies: list[float] = []
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        pusher.start()
        while pusher.is_alive():
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            pusher.join(0.05)  # the next probe in 50 ms, or none once the push has ended
    pusher.join()
    assert result["status"] == 200, result
    assert result["body"]["data"] == {"samples": count, "series": count, "newSeries": count}
    assert len(latencies) >= 3, f"the push took only {result['seconds']:.2f}s"
    assert max(latencies) < 1.0, f"slowest /healthz: {max(latencies):.2f}s of {len(latencies)}"
    # Every series is queryable, with its value.
    total = query(serve, "count(batch_rows)")
    assert total[0]["value"][1] == str(count)
    assert query(serve, 'batch_rows{shard="4242"}')[0]["value"][1] == "4242"
