"""The push API in-process: Pushgateway semantics, all-or-nothing requests, limits."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from opscope.clock import ManualClock
from opscope.monitor import Monitor
from opscope.monitor.pushing import PushRegistry, PushRejected
from opscope.store import Store

from .inprocess import NOW, in_process


@dataclass
class Push:
    client: httpx.AsyncClient
    store: Store
    monitor: Monitor
    clock: ManualClock

    async def query(self, expr: str, at: float | None = None) -> dict[str, str]:
        """``{series as text: value}`` of an instant query (without ``__name__`` sorting)."""
        params = {"query": expr, "time": str(at if at is not None else self.clock.time())}
        response = await self.client.get("/api/v1/query", params=params)
        assert response.status_code == 200, response.text
        out = {}
        for item in response.json()["data"]["result"]:
            metric = dict(item["metric"])
            name = metric.pop("__name__", "")
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
            out[f"{name}{{{labels}}}"] = item["value"][1]
        return out


@contextlib.asynccontextmanager
async def running(tmp_path: Path, monitor_yaml: str = "") -> AsyncIterator[Push]:
    config = "monitor:\n  system: {enabled: false}\n  retention: 1d\n" + monitor_yaml
    async with in_process(tmp_path, config) as app:
        yield Push(app.client, app.store, app.monitor, app.clock)


@pytest.fixture
async def push(tmp_path: Path) -> AsyncIterator[Push]:
    async with running(tmp_path) as p:
        yield p


EXPOSITION = """\
# HELP batch_rows_processed_total Rows the nightly export processed.
# TYPE batch_rows_processed_total counter
batch_rows_processed_total{table="deals"} 8800
batch_rows_processed_total{table="accounts"} 85
# TYPE batch_duration_seconds gauge
batch_duration_seconds 12.5
batch_note{text="quote \\" and \\\\ and \\n"} 1
"""


async def test_exposition_text_round_trips_through_query(push: Push) -> None:
    response = await push.client.put("/api/v1/push/nightly/instance/etl-1", content=EXPOSITION)
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "data": {"samples": 4, "series": 4, "newSeries": 4},
    }
    assert await push.query('{job="nightly"}') == {
        'batch_rows_processed_total{instance="etl-1",job="nightly",table="deals"}': "8800",
        'batch_rows_processed_total{instance="etl-1",job="nightly",table="accounts"}': "85",
        'batch_duration_seconds{instance="etl-1",job="nightly"}': "12.5",
        'batch_note{instance="etl-1",job="nightly",text="quote " and \\ and \n"}': "1",
        'push_time_seconds{instance="etl-1",job="nightly"}': "1800000000",
        'push_failure_time_seconds{instance="etl-1",job="nightly"}': "0",
    }


async def test_json_round_trips_with_and_without_timestamps(push: Push) -> None:
    body = [
        {"metric": "deals_won", "labels": {"region": "East"}, "value": 12},
        {"metric": "deals_won", "labels": {"region": "West"}, "value": "4.5"},
        {"metric": "revenue_won", "value": 3090594, "timestamp": NOW - 120},
    ]
    response = await push.client.post("/api/v1/push/crm", json=body)
    assert response.status_code == 200, response.text
    assert await push.query("deals_won") == {
        'deals_won{job="crm",region="East"}': "12",
        'deals_won{job="crm",region="West"}': "4.5",
    }
    # The stamped sample is stored at its own time, not at the push's.
    assert await push.query("revenue_won", at=NOW - 120) == {'revenue_won{job="crm"}': "3090594"}
    assert await push.query("revenue_won", at=NOW - 121) == {}


async def test_grouping_labels_replace_labels_of_the_body(push: Push) -> None:
    response = await push.client.put(
        "/api/v1/push/nightly/instance/etl-1",
        content='rows{job="other",instance="x",table="deals"} 1\n',
    )
    assert response.status_code == 200
    assert await push.query("rows") == {'rows{instance="etl-1",job="nightly",table="deals"}': "1"}


async def test_base64_values_in_the_grouping_key(push: Push) -> None:
    # The Pushgateway README's examples: "/var/tmp" and an empty value.
    response = await push.client.put(
        "/api/v1/push/cleaner/path@base64/L3Zhci90bXA/first@base64/=", content="files 3\n"
    )
    assert response.status_code == 200
    assert await push.query("files") == {'files{job="cleaner",path="/var/tmp"}': "3"}


async def test_put_replaces_the_group_post_only_the_pushed_names(push: Push) -> None:
    base = "/api/v1/push/nightly"
    await push.client.put(base, content='x{a="1"} 1\nx{a="2"} 2\ny 3\n')
    await push.client.put("/api/v1/push/other", content="x 100\n")
    # POST: every x of the group is replaced by the pushed x's; y stays.
    response = await push.client.post(base, content='x{a="3"} 30\n')
    assert response.json()["data"] == {"samples": 1, "series": 2, "newSeries": 1}
    assert await push.query('{job="nightly",__name__=~"x|y"}') == {
        'x{a="3",job="nightly"}': "30",
        'y{job="nightly"}': "3",
    }
    # PUT: only what is pushed remains.
    await push.client.put(base, content="z 9\n")
    assert await push.query('{job="nightly",__name__=~"x|y|z"}') == {'z{job="nightly"}': "9"}
    # An empty POST changes nothing but the push time; an empty PUT empties the group.
    await push.clock.advance(30)
    await push.client.post(base, content="")
    assert await push.query('{job="nightly"}') == {
        'z{job="nightly"}': "9",
        'push_time_seconds{job="nightly"}': "1800000030",
        'push_failure_time_seconds{job="nightly"}': "0",
    }
    await push.client.put(base, content="")
    assert await push.query('{job="nightly",__name__="z"}') == {}
    # Other groups are untouched throughout.
    assert await push.query('x{job="other"}') == {'x{job="other"}': "100"}


async def test_delete_removes_the_group(push: Push) -> None:
    await push.client.put("/api/v1/push/nightly/instance/a", content="x 1\n")
    await push.client.put("/api/v1/push/nightly/instance/b", content="x 2\n")
    response = await push.client.delete("/api/v1/push/nightly/instance/a")
    assert (response.status_code, response.json()["data"]) == (202, {"deleted": True})
    assert await push.query("x") == {'x{instance="b",job="nightly"}': "2"}
    assert await push.query('push_time_seconds{instance="a"}') == {}
    listed = (await push.client.get("/api/v1/push")).json()["data"]
    assert [g["labels"] for g in listed] == [{"job": "nightly", "instance": "b"}]
    # Deleting a group that does not exist is a no-op, as in the Pushgateway.
    response = await push.client.delete("/api/v1/push/nightly/instance/zzz")
    assert (response.status_code, response.json()["data"]) == (202, {"deleted": False})


async def test_one_bad_line_stores_nothing(push: Push) -> None:
    await push.client.put("/api/v1/push/nightly", content="kept 1\n")
    body = "fresh_a 1\nfresh_b 2\nfresh_c{broken 3\n"
    response = await push.client.post("/api/v1/push/nightly", content=body)
    assert response.status_code == 400
    assert response.json()["errorType"] == "bad_data"
    assert response.json()["error"].startswith("line 3: ")
    assert await push.query('{__name__=~"fresh_.*"}') == {}
    # Not even a series name was created.
    assert [r.name for r in push.store.index if r.name.startswith("fresh")] == []
    series = await push.client.get("/api/v1/label/__name__/values")
    assert "fresh_a" not in series.json()["data"]
    # The group records the failure, and what it had stays.
    assert await push.query('{job="nightly"}') == {
        'kept{job="nightly"}': "1",
        'push_time_seconds{job="nightly"}': "1800000000",
        'push_failure_time_seconds{job="nightly"}': "1800000000",
    }
    # A good push after it is decoded from scratch and works.
    response = await push.client.post("/api/v1/push/nightly", content="fresh_a 5\n")
    assert response.status_code == 200
    assert await push.query("fresh_a") == {'fresh_a{job="nightly"}': "5"}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("a 1\na 2\n", 'line 2: a{job="job1"} is pushed twice'),
        # An empty label value is an absent label: the same series, on line 3.
        ('# TYPE el gauge\nel{x=""} 1\nel 2\n', 'line 3: el{job="job1"} is pushed twice'),
        # The grouping key's job replaces the body's: the same series too.
        ('a{job="other"} 1\n\na 2\n', 'line 3: a{job="job1"} is pushed twice'),
        ("a 1\nb not-a-number\n", "line 2: "),
        ('a{x="1",x="2"} 1\n', "line 1: "),
        ("a 1 " + str(int((NOW + 3600) * 1000)) + "\n", "line 1: a sample is stamped 3600s"),
        (
            "# HELP b B.\na 1\n\nb 1 " + str(int((NOW - 2 * 86400) * 1000)) + "\n",
            "line 4: a sample is older",
        ),
        # Microseconds where the text format has milliseconds: named, with the hint.
        (
            "a 1 " + str(int(NOW * 1e6)) + "\n",
            f"line 1: a sample is stamped {NOW * 1e3 - NOW:.0f}s in the future (more than 600s "
            f"ahead of the server's clock); {int(NOW * 1e6)} looks like microseconds: the text "
            "format's timestamps are milliseconds",
        ),
        # Seconds where the text format has milliseconds: named, with the hint.
        (
            "a 1\nb 1 " + str(int(NOW)) + "\n",
            f"line 2: a sample is older than the retention (86400s); {int(NOW)} looks like "
            "seconds: the text format's timestamps are milliseconds",
        ),
    ],
)
async def test_bad_text_bodies_name_the_line(push: Push, body: str, where: str) -> None:
    response = await push.client.put("/api/v1/push/job1", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(where)
    assert await push.query('{job="job1"}') == {}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"metric": "a", "value": 1}, "expected a JSON array"),
        ([{"metric": "a", "value": 1}, {"metric": "1a", "value": 1}], "[1].metric: invalid"),
        ([{"metric": "a", "labels": {"r": 5}, "value": 1}], "[0].labels.r: label values"),
        ([{"metric": "a", "value": True}], "[0].value: expected a number"),
        ([{"metric": "a"}], "[0].value: missing"),
        ([{"metric": "a", "value": 1, "extra": 1}], '[0]: unknown field "extra"'),
        ([{"metric": "a", "value": 1}, {"metric": "a", "value": 2}], "[1]: the same series"),
        ([{"metric": "a", "value": 1, "timestamp": NOW + 3600}], "[0].timestamp: a sample is"),
        # Milliseconds where JSON has seconds: named, with the hint.
        (
            [{"metric": "a", "value": 1}, {"metric": "b", "value": 1, "timestamp": NOW * 1000}],
            f"[1].timestamp: a sample is stamped {NOW * 1000 - NOW:.0f}s in the future (more "
            f"than 600s ahead of the server's clock); {NOW * 1000:.0f} looks like milliseconds: "
            "JSON timestamps are Unix seconds",
        ),
    ],
)
async def test_bad_json_bodies_name_the_field(push: Push, body: Any, where: str) -> None:
    response = await push.client.put("/api/v1/push/job1", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(where)
    assert await push.query('{job="job1"}') == {}


async def test_bodies_over_the_limit_get_413(tmp_path: Path) -> None:
    async with running(tmp_path, "  push: {body_size_limit: 1000}\n") as push:
        big = "".join(f'm{{i="{i}"}} {i}\n' for i in range(200))  # ~2.5 kB
        response = await push.client.put("/api/v1/push/j", content=big)
        assert response.status_code == 413
        assert response.json()["status"] == "error"
        # Small on the wire, too large once inflated.
        bomb = gzip.compress(b"m 1\n" + b"#" * 100_000 + b"\n")
        assert len(bomb) < 1000
        response = await push.client.put(
            "/api/v1/push/j", content=bomb, headers={"Content-Encoding": "gzip"}
        )
        assert response.status_code == 413
        assert "after gzip" in response.json()["error"]
        # A body within the limit is fine, gzipped too.
        response = await push.client.put(
            "/api/v1/push/j",
            content=gzip.compress(b"m 7\n"),
            headers={"Content-Encoding": "gzip"},
        )
        assert response.status_code == 200
        assert await push.query("m") == {'m{job="j"}': "7"}


async def test_push_time_feeds_a_dead_man_rule(push: Push) -> None:
    await push.client.put("/api/v1/push/nightly", content="rows 10\n")
    assert push.monitor.push is not None
    # Two hours pass without a push; the registry keeps writing the group's values.
    for _ in range(12):
        await push.clock.advance(600)
        push.monitor.push.collect(push.clock.time())
    assert await push.query('time() - push_time_seconds{job="nightly"} > 3600') == {
        '{job="nightly"}': "7200"
    }
    # The pushed value is still current, as a Pushgateway keeps serving it.
    assert await push.query("rows") == {'rows{job="nightly"}': "10"}


async def test_groups_survive_a_restart(push: Push) -> None:
    await push.client.put("/api/v1/push/nightly/instance/a", content='x{k="v"} 42\n')
    await push.client.put("/api/v1/push/nightly/instance/b", content="x 1\n")
    await push.client.delete("/api/v1/push/nightly/instance/b")
    assert push.monitor.push is not None
    config = push.monitor.config
    again = PushRegistry(push.store, config.push, retention_s=86400, now=push.clock.time)
    assert [g.labels for g in again.groups()] == [{"job": "nightly", "instance": "a"}]
    await push.clock.advance(3600)
    again.collect(push.clock.time())
    assert await push.query("x") == {'x{instance="a",job="nightly",k="v"}': "42"}


async def test_pushed_metrics_named_like_push_times_are_overridden(push: Push) -> None:
    response = await push.client.put("/api/v1/push/j", content="push_time_seconds 5\nother 1\n")
    assert response.status_code == 200
    assert await push.query("push_time_seconds") == {'push_time_seconds{job="j"}': "1800000000"}
    # With other labels too: a dead-man rule on push_time_seconds{job="j"} sees only ours.
    body = 'push_time_seconds{x="1"} 5\npush_failure_time_seconds{x="2"} 6\nother 2\n'
    response = await push.client.put("/api/v1/push/j", content=body)
    assert response.json()["data"]["samples"] == 1
    assert await push.query('{__name__=~"push_.*"}') == {
        'push_time_seconds{job="j"}': "1800000000",
        'push_failure_time_seconds{job="j"}': "0",
    }
    response = await push.client.post(
        "/api/v1/push/k", json=[{"metric": "push_time_seconds", "labels": {"y": "1"}, "value": 1}]
    )
    assert response.status_code == 200 and response.json()["data"]["samples"] == 0
    assert 'push_time_seconds{job="k",y="1"}' not in await push.query("push_time_seconds")


async def test_a_failed_push_leaves_no_trace_in_later_pushes(push: Push) -> None:
    """A push that fails after its new series were decoded (an int64-overflowing timestamp)
    is a 400; the next push of the same lines stores every series."""
    url = "/api/v1/push/poison"
    assert (await push.client.put(url, content="a 1\n")).status_code == 200
    bad = await push.client.put(url, content="a 1\nfresh 2\nother 3 9223372036854775808\n")
    assert bad.status_code == 400 and "line 3" in bad.json()["error"]
    assert "integer milliseconds" in bad.json()["error"]
    good = await push.client.put(url, content="a 5\nfresh 6\n")
    assert good.status_code == 200
    assert await push.query('{job="poison",__name__=~"a|fresh"}') == {
        'a{job="poison"}': "5",
        'fresh{job="poison"}': "6",
    }
    again = await push.client.post(url, content="a 7\nfresh 8\n")  # the layout path
    assert again.status_code == 200
    assert await push.query('{job="poison",__name__=~"a|fresh"}') == {
        'a{job="poison"}': "7",
        'fresh{job="poison"}': "8",
    }


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("m 1 1.5e308\n", "line 1"),  # timestamps are integer milliseconds
        ("m 1 1795969101.388\n", "line 1"),
        ("m 1 1_795_969_101_388\n", "line 1"),
    ],
)
async def test_timestamps_must_be_integer_milliseconds(push: Push, body: str, where: str) -> None:
    response = await push.client.put("/api/v1/push/ts", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(where)


async def test_a_huge_json_number_is_a_400(push: Push) -> None:
    response = await push.client.put(
        "/api/v1/push/big",
        content='[{"metric": "m", "value": 1' + "0" * 400 + "}]",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "[0].value" in response.json()["error"]


@pytest.mark.parametrize(
    "later",
    [
        "# TYPE m bogus\nm 1",  # one comment line and no final newline
        "# TYPE 9m counter\nm 2",
        "# HELP\nm 3",
        "m \u0663\n",  # ARABIC-INDIC DIGIT THREE
        "m \uff15\n",  # FULLWIDTH DIGIT FIVE
    ],
)
async def test_what_is_refused_does_not_depend_on_earlier_pushes(push: Push, later: str) -> None:
    fresh = await push.client.put("/api/v1/push/fresh", content=later)
    assert (await push.client.put("/api/v1/push/seen", content="m 1\n")).status_code == 200
    seen = await push.client.put("/api/v1/push/seen", content=later)
    assert fresh.status_code == seen.status_code == 400
    assert await push.query('m{job="seen"}') == {'m{job="seen"}': "1"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/push/j/instance", "needs a value for every label"),
        ("/api/v1/push/j/__x/1", 'invalid label name "__x"'),
        ("/api/v1/push/j/job/2", 'label "job" appears twice'),
        ("/api/v1/push/j/a@base64/no+pe", 'invalid base64 value for "a@base64"'),
    ],
)
async def test_bad_grouping_keys(push: Push, path: str, message: str) -> None:
    response = await push.client.put(path, content="m 1\n")
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_protobuf_bodies_are_refused(push: Push) -> None:
    response = await push.client.put(
        "/api/v1/push/j",
        content=b"\x00",
        headers={"Content-Type": "application/vnd.google.protobuf; encoding=delimited"},
    )
    assert response.status_code == 415
    assert response.json()["errorType"] == "bad_data"


async def test_push_can_be_disabled(tmp_path: Path) -> None:
    async with running(tmp_path, "  push: {enabled: false}\n") as push:
        response = await push.client.put("/api/v1/push/j", content="m 1\n")
        assert response.status_code == 404
        assert "disabled" in response.json()["error"]


async def test_a_truncated_gzip_body_is_refused_and_every_member_is_read(push: Push) -> None:
    whole = gzip.compress(b"trunc_a 1\ntrunc_b 123456\n")
    # Cut inside the member: zlib would hand back "trunc_b 123" without complaint.
    response = await push.client.put(
        "/api/v1/push/t1", content=whole[:-12], headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert "truncated gzip body" in response.json()["error"]
    assert await push.query('{__name__=~"trunc_.*"}') == {}
    # Two members concatenated are one body (RFC 1952 §2.2), as Go's reader reads them.
    body = gzip.compress(b"member_a 1\n") + gzip.compress(b"member_b 2\n")
    response = await push.client.put(
        "/api/v1/push/t1", content=body, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert await push.query('{__name__=~"member_.*"}') == {
        'member_a{job="t1"}': "1",
        'member_b{job="t1"}': "2",
    }


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([{"metric": "evil\n", "value": 1}], "[0].metric: invalid metric name"),
        (
            [{"metric": "a", "labels": {"l\n": "x"}, "value": 1}],
            '[0].labels: invalid label name "l',
        ),
    ],
)
async def test_names_ending_in_a_newline_are_refused(push: Push, body: Any, where: str) -> None:
    # Python's "$" matches before a final newline; a name is only [a-zA-Z_:][a-zA-Z0-9_:]*.
    response = await push.client.put("/api/v1/push/nl", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(where)
    assert await push.query('{job="nl"}') == {}


async def test_deeply_nested_json_is_a_400(push: Push) -> None:
    response = await push.client.put(
        "/api/v1/push/deep",
        content="[" * 100_000 + "]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "the body is not valid JSON: nested too deeply"


async def test_two_groups_cannot_own_the_same_series(push: Push) -> None:
    # An empty grouping label is an absent label: {job="dm",shard=""} is {job="dm"}.
    response = await push.client.put("/api/v1/push/dm/shard@base64/=", content="backup_ok 1\n")
    assert response.status_code == 200
    response = await push.client.put("/api/v1/push/dm", content="backup_ok 0\n")
    assert response.status_code == 400
    assert response.json()["error"] == (
        'push_time_seconds{job="dm"} was pushed before with the same name and label values by '
        'the group {job="dm",shard=""}; push it there, or delete that group first'
    )
    # A body label equal to another group's grouping label (the Pushgateway answers 400 too).
    await push.client.put("/api/v1/push/ov/instance/a", content="temp 10\n")
    response = await push.client.put("/api/v1/push/ov", content='temp{instance="a"} 99\n')
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        'temp{instance="a",job="ov"} was pushed before with the same name and label values by '
        'the group {instance="a",job="ov"}'
    )
    assert await push.query('{job=~"dm|ov",__name__=~"backup_ok|temp"}') == {
        'backup_ok{job="dm"}': "1",
        'temp{instance="a",job="ov"}': "10",
    }
    # Once the owner is deleted, the series is free for the other group.
    await push.client.delete("/api/v1/push/ov/instance/a")
    response = await push.client.put("/api/v1/push/ov", content='temp{instance="a"} 99\n')
    assert response.status_code == 200
    assert await push.query("temp") == {'temp{instance="a",job="ov"}': "99"}
    # A plain empty value (a trailing slash) is not an empty label: base64 "=" is.
    response = await push.client.put("/api/v1/push/t2e/first/", content="m 1\n")
    assert response.status_code == 400
    assert 'empty value for label "first"' in response.json()["error"]


async def test_pushes_cannot_replace_a_collectors_series(tmp_path: Path) -> None:
    sql = (
        '  sql: [{name: revenue_by_office, url: "sqlite:///crm.db", query: "SELECT 1 AS value"}]\n'
    )
    async with running(tmp_path, sql) as push:
        body = 'revenue_by_office{region="East"} 0\nup{instance="revenue_by_office"} 0\n'
        response = await push.client.put("/api/v1/push/sql", content=body)
        assert response.status_code == 400
        assert response.json()["error"].startswith(
            'job "sql" belongs to a collector (monitor.sql (revenue_by_office))'
        )
        assert await push.query('{job="sql"}') == {}


async def test_a_push_over_the_series_limit_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path, "  push: {series_limit: 3}\n") as push:
        body = "# HELP m help\n# TYPE m gauge\n" + "".join(f'm{{i="{i}"}} {i}\n' for i in range(3))
        assert (await push.client.put("/api/v1/push/lim", content=body)).status_code == 200
        response = await push.client.put("/api/v1/push/lim", content=body + "n 1\n")
        assert response.status_code == 400
        assert "more than 3 samples in one push" in response.json()["error"]
        items = [{"metric": "j", "labels": {"i": str(i)}, "value": i} for i in range(4)]
        response = await push.client.put("/api/v1/push/lim", json=items)
        assert response.status_code == 400
        # An escaped key is the same key once parsed: counted all the same.
        escaped = "[" + ",".join(f'{{"\\u006detric": "j", "value": {i}}}' for i in range(4)) + "]"
        response = await push.client.put(
            "/api/v1/push/lim", content=escaped, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert "more than 3 samples in one push" in response.json()["error"]
        assert await push.query('{job="lim",__name__=~"m|n|j"}') == {
            'm{i="0",job="lim"}': "0",
            'm{i="1",job="lim"}': "1",
            'm{i="2",job="lim"}': "2",
        }


async def test_one_metric_name_has_one_type_across_groups(push: Push) -> None:
    """The Pushgateway's consistency check: a # TYPE differing from another group's is 400."""
    counter = "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 1\n"
    assert (await push.client.put("/api/v1/push/a", content=counter)).status_code == 200
    gauge = '# TYPE jobs_total gauge\njobs_total{queue="x"} 2\n'
    response = await push.client.put("/api/v1/push/b", content=gauge)
    assert response.status_code == 400
    assert response.json()["error"] == (
        'line 1: metric jobs_total is pushed as gauge, but the group {job="a"} pushed it as '
        "counter: one metric name has one type"
    )
    assert await push.query("jobs_total") == {'jobs_total{job="a"}': "1"}
    # The same type, or none declared, is fine.
    same = '# TYPE jobs_total counter\njobs_total{queue="x"} 2\n'
    assert (await push.client.put("/api/v1/push/b", content=same)).status_code == 200
    assert (await push.client.put("/api/v1/push/c", content="jobs_total 3\n")).status_code == 200
    # A group may change its own type only when no other group declares the old one.
    assert (await push.client.put("/api/v1/push/a", content=gauge)).status_code == 400
    assert (await push.client.delete("/api/v1/push/b")).status_code == 202
    assert (await push.client.put("/api/v1/push/a", content=gauge)).status_code == 200
    # Declared types survive a restart.
    assert push.monitor.push is not None
    again = PushRegistry(
        push.store, push.monitor.config.push, retention_s=86400, now=push.clock.time
    )
    with pytest.raises(PushRejected, match="pushed it as gauge"):
        again.push("PUT", {"job": "d"}, same.encode(), json_body=False)


async def test_a_second_type_line_for_one_name_is_refused(push: Push) -> None:
    body = "# TYPE m gauge\nm 1\n# TYPE m counter\n"
    response = await push.client.put("/api/v1/push/j", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "line 3: a second TYPE line for metric name m (the first is on line 1)"
    )
    assert await push.query('{job="j"}') == {}


async def test_a_retried_backfill_stores_each_stamped_sample_once(push: Push) -> None:
    stamp = int((NOW - 60) * 1000)
    for _ in range(3):
        response = await push.client.post("/api/v1/push/retry", content=f"jobs_done 5 {stamp}\n")
        assert response.status_code == 200
    for _ in range(2):
        response = await push.client.post(
            "/api/v1/push/retry",
            json=[{"metric": "rows_done", "value": 7, "timestamp": NOW - 60}],
        )
        assert response.status_code == 200
    assert await push.query("count_over_time(jobs_done[2m])") == {'{job="retry"}': "1"}
    assert await push.query("sum_over_time(jobs_done[2m])") == {'{job="retry"}': "5"}
    assert await push.query("count_over_time(rows_done[2m])") == {'{job="retry"}': "1"}
    # Another value at the same time is refused, as Prometheus refuses a duplicate sample.
    other = await push.client.post("/api/v1/push/retry", content=f"a 1\njobs_done 6 {stamp}\n")
    assert other.status_code == 400
    assert other.json()["error"].startswith("line 2: jobs_done already has the value 5")
    # Lines dropped before (push_time_seconds is the registry's) do not shift the line named.
    body = f"push_time_seconds 1\na 1\njobs_done 6 {stamp}\n"
    other = await push.client.post("/api/v1/push/retry", content=body)
    assert other.json()["error"].startswith("line 3: jobs_done already has the value 5")
    assert await push.query("sum_over_time(jobs_done[2m])") == {'{job="retry"}': "5"}


async def test_json_edge_cases_are_400s_not_500s(tmp_path: Path) -> None:
    async with running(tmp_path, "  push: {series_limit: 3}\n") as push:
        huge_stamp = '[{"metric": "m", "value": 1, "timestamp": 1' + "0" * 400 + "}]"
        surrogate = '[{"metric": "m", "labels": {"b": "\\ud800"}, "value": 1}]'
        for body, where in ((huge_stamp, "[0].timestamp"), (surrogate, "[0].labels.b")):
            response = await push.client.put(
                "/api/v1/push/edge", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400, response.text
            assert response.json()["error"].startswith(where)
        # Two samples whose label value is the word "metric" are two samples, under the limit.
        items = [{"metric": n, "labels": {"kind": "metric"}, "value": 1} for n in ("a", "b")]
        assert (await push.client.put("/api/v1/push/edge", json=items)).status_code == 200
