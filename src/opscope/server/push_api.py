"""The push routes: ``/api/v1/push/{job}/{label}/{value}…`` with the Pushgateway's methods.

``PUT`` replaces the group's series, ``POST`` the pushed metric names only, ``DELETE`` removes
the group (see :mod:`opscope.monitor.pushing`). Bodies are Prometheus text exposition (0.0.4)
or, with ``Content-Type: application/json``, a JSON array of samples; ``Content-Encoding:
gzip`` is accepted. A body over ``monitor.push.body_size_limit`` bytes (before or after gzip)
gets 413; a rejected body 400 naming the line or field at fault, storing nothing.
``GET /api/v1/push`` lists the groups with their last push times.
"""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from opscope.config.business import PushConfig
from opscope.monitor.pushing import (
    PushMethod,
    PushRegistry,
    PushRejected,
    decode_path_value,
    grouping_key,
)
from opscope.server.api import JSONBody, iso, success

_PROTOBUF = "application/vnd.google.protobuf"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped when ``Content-Encoding: gzip``; raises 413 past ``limit``
    bytes (checked on ``Content-Length`` first, then while reading and while inflating)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise HTTPException(415, f'unsupported Content-Encoding "{encoding}" (use gzip)')
    return _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 §2.2: a file is a series of members; Go's reader,
    which the Pushgateway uses, reads them all), at most ``limit`` bytes in all.

    Raises :class:`PushRejected` for bytes that are not gzip and for a body that ends inside a
    member (a truncated upload must not store a cut-off value), 413 past ``limit``.
    """
    out: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            data = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise PushRejected(f"the body is not valid gzip: {exc}") from None
        size += len(data)
        if size > limit or inflater.unconsumed_tail:
            raise HTTPException(413, f"request body larger than {limit} bytes after gzip decoding")
        out.append(data)
        if not inflater.eof:
            raise PushRejected("truncated gzip body: it ends inside a gzip member")
        rest = inflater.unused_data
        if not rest:
            return b"".join(out)


def _grouping(job: str, path: str) -> dict[str, str]:
    parts = path.split("/") if path else []
    if len(parts) % 2:
        raise PushRejected("the grouping key needs a value for every label: /label/value/…")
    pairs = [decode_path_value(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
    return grouping_key(job, pairs)


def push_router(registry: PushRegistry | None, config: PushConfig) -> APIRouter:
    """The push routes over ``registry`` (``None``: push is disabled, every push gets 404)."""
    router = APIRouter(prefix="/api/v1")

    def need_registry() -> PushRegistry:
        if registry is None:
            raise HTTPException(404, "the push API is disabled (monitor.push.enabled: false)")
        return registry

    async def push(request: Request, job: str, path: str) -> JSONBody:
        target = need_registry()
        labels = _grouping(job, path)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media == _PROTOBUF:
            raise HTTPException(415, "protocol buffers are not accepted; push the text format")
        body = await read_body(request, config.body_size_limit)
        method: PushMethod = "PUT" if request.method == "PUT" else "POST"
        is_json = media == "application/json"
        result = await run_in_threadpool(target.push, method, labels, body, json_body=is_json)
        return success(
            {
                "samples": result.samples,
                "series": result.series,
                "newSeries": result.new_series,
            }
        )

    async def delete(job: str, path: str) -> JSONResponse:
        target = need_registry()
        deleted = await run_in_threadpool(target.delete, _grouping(job, path))
        return JSONResponse({"status": "success", "data": {"deleted": deleted}}, status_code=202)

    body_doc: dict[str, Any] = {
        "requestBody": {
            "required": False,
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "metric": {"type": "string"},
                                "labels": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "value": {"type": ["number", "string"]},
                                "timestamp": {"type": "number"},
                            },
                            "required": ["metric", "value"],
                        },
                    }
                },
            },
        },
        "responses": {"400": {"description": "Rejected; nothing stored"}},
    }

    @router.put(
        "/push/{job}", summary="Push samples: replace the group's series", openapi_extra=body_doc
    )
    async def put_job(request: Request, job: str) -> JSONBody:
        return await push(request, job, "")

    @router.post(
        "/push/{job}",
        summary="Push samples: replace the pushed metrics only",
        openapi_extra=body_doc,
    )
    async def post_job(request: Request, job: str) -> JSONBody:
        return await push(request, job, "")

    @router.delete("/push/{job}", summary="Delete a push group", status_code=202)
    async def delete_job(job: str) -> JSONResponse:
        return await delete(job, "")

    @router.put(
        "/push/{job}/{grouping:path}",
        summary="Push to a group with more labels",
        openapi_extra=body_doc,
    )
    async def put_group(request: Request, job: str, grouping: str) -> JSONBody:
        return await push(request, job, grouping)

    @router.post(
        "/push/{job}/{grouping:path}",
        summary="Push (merge) to a group with labels",
        openapi_extra=body_doc,
    )
    async def post_group(request: Request, job: str, grouping: str) -> JSONBody:
        return await push(request, job, grouping)

    @router.delete(
        "/push/{job}/{grouping:path}", summary="Delete a push group with labels", status_code=202
    )
    async def delete_group(job: str, grouping: str) -> JSONResponse:
        return await delete(job, grouping)

    @router.get("/push", summary="Push groups and the times of their last pushes")
    async def groups() -> JSONBody:
        target = need_registry()
        data: list[dict[str, Any]] = [
            {
                "labels": g.labels,
                "series": len(g.ids),
                "lastPush": iso(g.push_time) if g.push_time else None,
                "lastFailure": iso(g.failure_time) if g.failure_time else None,
                "push_time_seconds": g.push_time,
                "push_failure_time_seconds": g.failure_time,
            }
            for g in target.groups()
        ]
        return success(data)

    return router
