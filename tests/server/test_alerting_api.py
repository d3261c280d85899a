"""The alerting routes in-process: alerts and rules in Prometheus's shapes, silences in
Alertmanager's, the notification list, and the one JSON error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from opscope.clock import ManualClock
from opscope.monitor import Monitor
from opscope.store import Batch, Store, label_set

from .inprocess import NOW, in_process

CONFIG = """
monitor:
  system: {enabled: false}
  rules:
    - {alert: Hot, expr: temperature > 40, labels: {severity: warning}}
notify:
  channels:
    hook: {webhook: 'http://127.0.0.1:9/hook'}
  channels_default: [hook]
"""


@dataclass
class Api:
    client: httpx.AsyncClient
    store: Store
    monitor: Monitor
    clock: ManualClock


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with in_process(tmp_path, CONFIG) as app:
        yield Api(app.client, app.store, app.monitor, app.clock)


def fire(api: Api, value: float) -> None:
    sid = api.store.series_id("temperature", label_set({"room": "a"}))
    api.store.append([Batch("in", int(NOW * 1000), np.array([sid]), np.array([value]))])
    api.monitor.rules.evaluate(api.monitor.rules.groups[0], NOW)


@pytest.mark.parametrize(
    ("value", "shown"),
    [  # Go's strconv.FormatFloat(v, 'e', -1, 64), as Prometheus's API writes alert values
        (45.0, "4.5e+01"),
        (1234.5678, "1.2345678e+03"),
        (41.0, "4.1e+01"),
        (float("inf"), "+Inf"),
    ],
)
async def test_alert_values_are_strings_as_prometheus_writes_them(
    api: Api, value: float, shown: str
) -> None:
    fire(api, value)
    alerts = (await api.client.get("/api/v1/alerts")).json()["data"]["alerts"]
    assert [a["value"] for a in alerts] == [shown]
    groups = (await api.client.get("/api/v1/rules")).json()["data"]["groups"]
    assert [a["value"] for a in groups[0]["rules"][0]["alerts"]] == [shown]


async def test_notifications_state_filter_is_checked(api: Api) -> None:
    ok = await api.client.get("/api/v1/notifications", params={"state": "superseded"})
    assert ok.status_code == 200 and ok.json()["data"] == []
    bad = await api.client.get("/api/v1/notifications", params={"state": "bogus"})
    assert bad.status_code == 400
    assert bad.json() == {
        "status": "error",
        "errorType": "bad_data",
        "error": 'invalid parameter "state": expected one of pending, delivered, failed, '
        'expired, superseded, got "bogus"',
    }


async def test_silences_take_alertmanagers_matcher_objects(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/silences",
        json={
            "matchers": [
                {"name": "alertname", "value": "Hot", "isRegex": False, "isEqual": True},
                {"name": "room", "value": "a|b", "isRegex": True, "isEqual": True},
                {"name": "severity", "value": "page", "isRegex": False, "isEqual": False},
                'team!~"db.*"',
            ],
            "endsAt": NOW + 3600,
            "createdBy": "ops",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["matchers"] == [
        'alertname="Hot"',
        'room=~"a|b"',
        'severity!="page"',
        'team!~"db.*"',
    ]


async def test_a_silence_with_an_id_is_changed_as_alertmanager_changes_it(api: Api) -> None:
    created = await api.client.post(
        "/api/v1/silences",
        json={"matchers": ['alertname="Hot"'], "endsAt": NOW + 3600, "createdBy": "ops"},
    )
    original = created.json()["data"]
    silence_id = original["silenceID"]
    # active, same matchers and start, a later end: changed in place, same id
    extended = await api.client.post(
        "/api/v1/silences",
        json={
            "id": silence_id,
            "matchers": ['alertname="Hot"'],
            "startsAt": original["startsAt"],
            "endsAt": NOW + 7200,
            "createdBy": "ops",
            "comment": "longer",
        },
    )
    assert extended.status_code == 200, extended.text
    assert extended.json()["data"]["silenceID"] == silence_id
    listed = (await api.client.get("/api/v1/silences")).json()["data"]
    assert [(s["id"], s["comment"], s["status"]["state"]) for s in listed] == [
        (silence_id, "longer", "active")
    ]
    # other matchers: the old silence expires and a new one replaces it
    replaced = await api.client.post(
        "/api/v1/silences",
        json={
            "id": silence_id,
            "matchers": ['alertname="Cold"'],
            "endsAt": NOW + 7200,
            "createdBy": "ops",
        },
    )
    new_id = replaced.json()["data"]["silenceID"]
    assert new_id != silence_id
    states = {
        s["id"]: s["status"]["state"]
        for s in (await api.client.get("/api/v1/silences")).json()["data"]
    }
    assert states == {silence_id: "expired", new_id: "active"}
    unknown = await api.client.post(
        "/api/v1/silences",
        json={"id": "nope", "matchers": ['a="b"'], "endsAt": NOW + 60, "createdBy": "ops"},
    )
    assert unknown.status_code == 404
    assert unknown.json()["errorType"] == "not_found"


@pytest.mark.parametrize("ends", [True, "soon", None, [1], {"at": 1}, "", "nan"])
async def test_a_bad_silence_end_is_400(api: Api, ends: object) -> None:
    response = await api.client.post(
        "/api/v1/silences",
        json={"matchers": ['alertname="Hot"'], "endsAt": ends, "createdBy": "ops"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["errorType"] == "bad_data"
