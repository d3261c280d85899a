"""Fuzzing the exposition parser, the push endpoint (hypothesis) and the whole API (schemathesis,
from the OpenAPI document): any input gets an answer below 500, and never a crash."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opscope.clock import ManualClock
from opscope.config import parse_config
from opscope.errors import ExpositionError, ScrapeError
from opscope.monitor import Monitor
from opscope.monitor.exposition import ScrapeDecoder
from opscope.server.app import ServerState, create_app
from opscope.server.live import LiveHub
from opscope.store import Store, label_set
from opscope.telemetry import Telemetry

NOW = 1_800_000_000.0
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Text built from the pieces of the format, so that most inputs get deep into the parser.
piece = st.sampled_from(
    ["m", "metric_a", "{", "}", "=", '"', "\\", ",", " ", "\t", "\n", "#", "# TYPE m gauge\n",
     "# HELP m x\n", 'l="v"', "1", "-1.5e3", "NaN", "+Inf", "1_0", "0x1", "1700000000000", "é", "\x00"]
)  # fmt: skip
exposition_text = st.lists(piece, max_size=40).map("".join) | st.text(max_size=200)


@FUZZ
@given(exposition_text)
def test_the_decoder_accepts_or_names_the_line(text: str) -> None:
    ids: dict[tuple[str, object], int] = {}

    def resolve(name: str, labels: object) -> int:
        return ids.setdefault((name, labels), len(ids) + 1)

    decoder = ScrapeDecoder(resolve, {"job": "j"}, override=True)
    for _ in range(2):  # the second decode may take the cached fast path
        try:
            decoded = decoder.decode(text)
        except ExpositionError as exc:
            assert exc.line >= 1
            return
        except ScrapeError:
            return
        assert len(decoded.series_ids) == len(decoded.values)


@pytest.fixture(scope="module")
def app_and_store() -> object:
    directory = tempfile.TemporaryDirectory()
    config = parse_config(
        "monitor:\n  system: {enabled: false}\n  push: {body_size_limit: 4096}\n", environ={}
    ).config
    clock = ManualClock(start=NOW)
    telemetry = Telemetry()
    store = Store.open(Path(directory.name))
    monitor = Monitor(config.monitor, store, telemetry=telemetry, clock=clock)
    hub = LiveHub(store, status=monitor.system_status, telemetry=telemetry, now=clock.time)
    state = ServerState("p", store, monitor, hub, telemetry, clock.time, lookback_ms=300_000)
    app = create_app(state)
    yield app, store
    asyncio.run(monitor.aclose())
    store.close()
    directory.cleanup()


segment = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#%"),
    min_size=1,
    max_size=12,
)
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@FUZZ
@given(
    method=st.sampled_from(["PUT", "POST", "DELETE"]),
    path=st.lists(segment, min_size=1, max_size=5),
    body=exposition_text.map(str.encode) | st.binary(max_size=300),
    json_body=st.lists(
        st.fixed_dictionaries(
            {"metric": st.sampled_from(["m", "m2", "1x", ""]) | st.text(max_size=5)},
            optional={
                "labels": st.dictionaries(st.text(max_size=5), json_value, max_size=3),
                "value": json_value,
                "timestamp": json_value | st.floats(NOW - 1e6, NOW + 1e6),
            },
        ),
        max_size=5,
    )
    | json_value,
    as_json=st.booleans(),
)
def test_the_push_endpoint_never_fails_with_500(
    app_and_store: tuple[object, Store],
    method: str,
    path: list[str],
    body: bytes,
    json_body: object,
    as_json: bool,
) -> None:
    app, store = app_and_store

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
            url = "/api/v1/push/" + "/".join(quote(p, safe="@=") for p in path)
            if as_json:
                return await client.request(method, url, json=json_body)
            return await client.request(method, url, content=body)

    response = asyncio.run(call())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["status"] == "error"
    # Whatever was pushed, each stored series carries its group's job label.
    for ref in store.written():
        if ref.name not in ("push_time_seconds", "push_failure_time_seconds"):
            assert dict(ref.labels).get("job") or label_set(ref.labels) == ()


def test_the_api_never_fails_with_500(app_and_store: tuple[object, Store]) -> None:
    app, _ = app_and_store
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # every documented endpoint, push included
    for operation in operations:

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)

        check()
