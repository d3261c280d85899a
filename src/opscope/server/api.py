"""The ``/api/v1`` routes: Prometheus-shaped queries, series discovery, targets and trends.

Paths, parameters and JSON shapes are those of Prometheus's HTTP API (GET, and form-encoded POST
as Grafana sends them). The work of each request runs in a worker thread and renders its JSON
there, so a large query never stalls collection, the WebSocket or ``/healthz``. Limits:
``server.query_max_samples`` samples loaded or returned per query (Prometheus's
``--query.max-samples``) — beyond it the answer is 422 with Prometheus's message. Queries are
PromQL (the subset of :mod:`opscope.monitor.promql`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from opscope.errors import QueryError
from opscope.monitor import Monitor
from opscope.monitor.promql import Evaluator, Node, Scalar, compile_expr
from opscope.monitor.promql.nodes import MatrixNode
from opscope.monitor.trends import trend
from opscope.server.params import format_value, parse_step, parse_time
from opscope.store import SeriesRef, Store, is_stale, parse_selector, selector_for

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: Metrics summarised by ``/api/v1/summary`` when no ``match[]`` is given.
DEFAULT_SUMMARY = (
    "cpu_usage",
    "memory_usage",
    "disk_usage",
    "load1",
    "active_connections",
    "network_receive_bytes_per_second",
    "network_transmit_bytes_per_second",
    "probe_duration_seconds",
    "probe_success",
    "up",
)
Params = dict[str, list[str]]
Endpoint = Callable[..., Any]


@dataclass
class QueryContext:
    """What the query routes need from the running server."""

    store: Store
    monitor: Monitor
    now: Callable[[], float]
    lookback_ms: int
    max_samples: int
    #: Masks the configuration's secrets in texts the API returns (errors, target URLs).
    redact: Callable[[str], str] = str


class JSONBody(Response):
    """A JSON response already rendered (in the worker thread that computed it)."""

    media_type = "application/json"


def success(data: Any) -> JSONBody:
    """Prometheus's success envelope, rendered."""
    return JSONBody(json.dumps({"status": "success", "data": data}, allow_nan=False))


async def _params(request: Request) -> Params:
    """Query-string parameters plus, for a form POST, the body's."""
    params: Params = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        for key, values in parse_qs(body, keep_blank_values=True).items():
            params.setdefault(key, []).extend(values)
    return params


def _one(params: Params, name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def api_router(ctx: QueryContext) -> APIRouter:
    """The ``/api/v1`` routes over ``ctx``."""
    router = APIRouter(prefix="/api/v1")

    async def run(request: Request, work: Callable[[Params], JSONBody]) -> JSONBody:
        params = await _params(request)
        return await run_in_threadpool(work, params)

    def get_and_post(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
        """Register an endpoint for GET (documented) and form POST (as Grafana sends)."""

        def register(endpoint: Endpoint) -> Endpoint:
            router.get(path, summary=summary)(endpoint)
            router.post(path, include_in_schema=False)(endpoint)
            return endpoint

        return register

    @get_and_post("/query", "Instant query")
    async def query(
        request: Request,
        query: Annotated[str | None, Query(description="Series selector")] = None,
        metric: Annotated[str | None, Query(description="Metric name (with labels)")] = None,
        labels: Annotated[
            str | None, Query(description='Matchers: job="node",mode!="idle"')
        ] = None,
        time: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
    ) -> JSONBody:
        return await run(request, lambda p: _instant(ctx, p))

    @get_and_post("/query_range", "Range query")
    async def query_range(
        request: Request,
        query: Annotated[str | None, Query(description="Series selector")] = None,
        metric: Annotated[str | None, Query(description="Metric name (with labels)")] = None,
        labels: Annotated[str | None, Query(description="Matchers")] = None,
        start: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
        end: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
        step: Annotated[str | None, Query(description="Seconds or a duration like 15s")] = None,
    ) -> JSONBody:
        return await run(request, lambda p: _range(ctx, p))

    @get_and_post("/series", "Series matching selectors")
    async def series(
        request: Request,
        match: Annotated[list[str] | None, Query(alias="match[]")] = None,
        start: Annotated[str | None, Query()] = None,
        end: Annotated[str | None, Query()] = None,
    ) -> JSONBody:
        return await run(
            request, lambda p: success([r.metric() for r in _series(ctx, p, required=True)])
        )

    @get_and_post("/labels", "Label names")
    async def label_names(
        request: Request,
        match: Annotated[list[str] | None, Query(alias="match[]")] = None,
        start: Annotated[str | None, Query()] = None,
        end: Annotated[str | None, Query()] = None,
    ) -> JSONBody:
        def work(p: Params) -> JSONBody:
            names = {"__name__"}
            for ref in _series(ctx, p, required=False):
                names.update(k for k, _ in ref.labels)
            return success(sorted(names))

        return await run(request, work)

    @get_and_post("/label/{name}/values", "Values of one label")
    async def label_values(
        request: Request,
        name: str,
        match: Annotated[list[str] | None, Query(alias="match[]")] = None,
        start: Annotated[str | None, Query()] = None,
        end: Annotated[str | None, Query()] = None,
    ) -> JSONBody:
        if not _LABEL_NAME.match(name):
            raise QueryError(f'invalid label name: "{name}"')

        def work(p: Params) -> JSONBody:
            refs = _series(ctx, p, required=False)
            if name == "__name__":
                return success(sorted({r.name for r in refs}))
            return success(sorted({v for r in refs for k, v in r.labels if k == name}))

        return await run(request, work)

    @router.get("/targets", summary="Health of every collection target")
    async def targets() -> JSONBody:
        return success({"activeTargets": _targets(ctx), "droppedTargets": []})

    @router.get("/summary", summary="Current value and trend of each series")
    async def summary(
        request: Request,
        match: Annotated[list[str] | None, Query(alias="match[]")] = None,
        window: Annotated[str, Query(description="Window of the trend")] = "5m",
        time: Annotated[str | None, Query(description="Unix seconds or RFC 3339")] = None,
    ) -> JSONBody:
        return await run(request, lambda p: _summary(ctx, p))

    return router


def _expression(params: Params) -> Node:
    text = _one(params, "query")
    if not text:
        metric = _one(params, "metric")
        if not metric:
            raise QueryError(
                'invalid parameter "query": an expression is required '
                '(or "metric", optionally with "labels")'
            )
        text = str(selector_for(metric, _one(params, "labels")))
    return compile_expr(text)


def _evaluator(ctx: QueryContext) -> Evaluator:
    return Evaluator(ctx.store, lookback_ms=ctx.lookback_ms, max_samples=ctx.max_samples)


def _instant(ctx: QueryContext, params: Params) -> JSONBody:
    node = _expression(params)
    t_ms = _ms(parse_time(_one(params, "time"), name="time", default=ctx.now()))
    if isinstance(node, MatrixNode):
        raw = _evaluator(ctx).samples(node, t_ms)
        return success(
            {
                "resultType": "matrix",
                "result": [
                    {
                        "metric": dict(labels),
                        "values": [
                            [t / 1000.0, format_value(v)]
                            for t, v in zip(ts.tolist(), vals.tolist(), strict=True)
                        ],
                    }
                    for labels, ts, vals in raw
                ],
            }
        )
    value = _evaluator(ctx).instant(node, t_ms)
    if isinstance(value, Scalar):
        return success(
            {"resultType": "scalar", "result": [t_ms / 1000.0, format_value(value.value)]}
        )
    result = [
        {"metric": s.metric(), "value": [t_ms / 1000.0, format_value(s.value)]} for s in value
    ]
    return success({"resultType": "vector", "result": result})


def _range(ctx: QueryContext, params: Params) -> JSONBody:
    node = _expression(params)
    if _one(params, "start") is None or _one(params, "end") is None:
        raise QueryError('invalid parameter "start"/"end": both are required')
    start = _ms(parse_time(_one(params, "start"), name="start", default=0.0))
    end = _ms(parse_time(_one(params, "end"), name="end", default=0.0))
    step = max(1, _ms(parse_step(_one(params, "step"), name="step")))
    series = _evaluator(ctx).range(node, start, end, step)
    return success(
        {
            "resultType": "matrix",
            "result": [
                {
                    "metric": dict(labels),
                    "values": [
                        [t / 1000.0, format_value(v)] for t, v in zip(times, values, strict=True)
                    ],
                }
                for labels, (times, values) in series.items()
            ],
        }
    )


def _series(ctx: QueryContext, params: Params, *, required: bool) -> list[SeriesRef]:
    """Series matching ``match[]`` (all written series when absent and allowed) that have
    samples in ``[start, end]`` when either is given."""
    texts = params.get("match[]", []) + params.get("match", [])
    if required and not texts:
        raise QueryError("no match[] parameter provided")
    selectors = [parse_selector(t) for t in texts]
    found: dict[int, SeriesRef] = {}
    if selectors:
        for selector in selectors:
            for ref in ctx.store.select_refs(selector):
                if ctx.store.has_samples(ref.id):
                    found[ref.id] = ref
    else:
        found = {r.id: r for r in ctx.store.written()}
    start, end = _one(params, "start"), _one(params, "end")
    if start or end:
        mint = _ms(parse_time(start, name="start", default=-9e15 / 1000))
        maxt = _ms(parse_time(end, name="end", default=9e15 / 1000))
        if maxt < mint:
            raise QueryError('invalid parameter "end": end timestamp must not be before start')
        active = ctx.store.active_series(mint, maxt)
        found = {i: r for i, r in found.items() if i in active}
    return [found[i] for i in sorted(found)]


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _targets(ctx: QueryContext) -> list[dict[str, Any]]:
    return [
        {
            "kind": t.kind,
            "scrapePool": t.job,
            "scrapeUrl": ctx.redact(t.url),
            "labels": {k: ctx.redact(v) for k, v in t.labels.items()},
            "health": t.health,
            "lastError": ctx.redact(t.last_error),
            "lastScrape": iso(t.last_collection),
            "lastScrapeDuration": t.last_duration,
            "lastSamples": t.last_samples,
            "scrapeInterval": f"{t.interval:g}s",
        }
        for t in ctx.monitor.targets
    ]


def _summary(ctx: QueryContext, params: Params) -> JSONBody:
    window = _one(params, "window") or "5m"
    window_ms = _ms(parse_step(window, name="window"))
    t_ms = _ms(parse_time(_one(params, "time"), name="time", default=ctx.now()))
    texts = params.get("match[]") or list(DEFAULT_SUMMARY)
    selectors = [parse_selector(t) for t in texts]
    items = []
    seen: set[int] = set()
    for selector in selectors:
        for s in ctx.store.select(selector, t_ms - window_ms + 1, t_ms):
            if s.ref.id in seen:
                continue
            seen.add(s.ref.id)
            stale = is_stale(s.values)
            if stale[-1]:  # the series ended: it has no current value (as in an instant query)
                continue
            after = int(np.flatnonzero(stale)[-1]) + 1 if stale.any() else 0
            found = trend(s.timestamps[after:], s.values[after:])
            if found is None:
                continue
            items.append(
                {
                    "metric": s.ref.metric(),
                    "current": format_value(found.current),
                    "samples": found.samples,
                    "slope_per_second": found.slope,
                    "direction": found.direction or "n/a",
                    "change_percent": found.change_percent,
                    "change": "n/a"
                    if found.change_percent is None
                    else f"{found.change_percent:+.2f}%",
                }
            )
    return success(
        {
            "window": window,
            "time": t_ms / 1000.0,
            "series": items,
            "system_status": ctx.monitor.system_status(),
        }
    )
