"""The alerting routes: rules, alerts, silences and the notification log.

``/api/v1/rules`` and ``/api/v1/alerts`` have Prometheus's shapes; silences follow
Alertmanager's model (matchers, start, end, author, comment); ``/api/v1/notifications`` lists the
durable outbox — every notification, its channel, state, attempts and last error.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from opscope.errors import QueryError
from opscope.monitor.alerts import alert_json
from opscope.monitor.rules import Rule
from opscope.notify import Notifier
from opscope.notify.outbox import DELIVERY_STATES
from opscope.server.api import JSONBody, QueryContext, iso, success
from opscope.server.params import check_time, parse_time

#: A time in a request body: RFC 3339 text or Unix seconds (never true/false).
TimeValue = StrictStr | StrictInt | StrictFloat


class Matcher(BaseModel):
    """A matcher as Alertmanager's API v2 writes it."""

    name: StrictStr = Field(min_length=1, description="Label name")
    value: StrictStr = Field(description="Value, or regular expression when isRegex")
    isRegex: bool = Field(False, description="=~ (or !~) instead of = (or !=)")
    isEqual: bool = Field(True, description="= or =~ (false: != or !~)")

    def text(self) -> str:
        """The matcher in text form: ``name="value"``, ``name!~"regex"``."""
        op = ("=~" if self.isRegex else "=") if self.isEqual else ("!~" if self.isRegex else "!=")
        return f"{self.name}{op}{json.dumps(self.value)}"


class SilenceRequest(BaseModel):
    """A silence: matchers and when it ends; with ``id``, a change of that silence."""

    id: StrictStr | None = Field(None, description="The silence to change (Alertmanager's POST)")
    matchers: list[StrictStr | Matcher] = Field(
        min_length=1,
        description='Matchers: text like alertname="HighCPU", or Alertmanager\'s objects',
    )
    startsAt: TimeValue | None = Field(None, description="RFC 3339 or Unix seconds; default now")
    endsAt: TimeValue = Field(description="RFC 3339 or Unix seconds")
    createdBy: StrictStr = Field(min_length=1, description="Author")
    comment: StrictStr = Field("", description="Why")

    def matcher_texts(self) -> list[str]:
        """Every matcher in text form."""
        return [m if isinstance(m, str) else m.text() for m in self.matchers]


def _silence_json(silence: Any, now: float) -> dict[str, Any]:
    return {
        "id": silence.id,
        "matchers": silence.matchers,
        "startsAt": iso(silence.starts_at),
        "endsAt": iso(silence.ends_at),
        "createdBy": silence.created_by,
        "comment": silence.comment,
        "status": {"state": silence.state(now)},
        "updatedAt": iso(silence.updated_at),
    }


def alerting_router(ctx: QueryContext, notifier: Notifier | None) -> APIRouter:
    """Routes over the rule engine (``ctx.monitor.rules``) and the notifier."""
    router = APIRouter(prefix="/api/v1")

    def need_notifier() -> Notifier:
        if notifier is None:
            raise QueryError("notifications are not configured (no notify.channels)")
        return notifier

    @router.get("/rules", summary="Rule groups, their rules, health and alerts")
    async def rules(
        type: Annotated[str | None, Query(description="alert or record")] = None,
    ) -> JSONBody:
        if type not in (None, "", "alert", "record"):
            raise QueryError('invalid parameter "type": expected "alert" or "record"')
        return success({"groups": _rule_groups(ctx, type or None)})

    @router.get("/alerts", summary="Pending and firing alerts")
    async def alerts() -> JSONBody:
        return success(_alerts(ctx))

    @router.get("/silences", summary="Silences")
    async def silences() -> JSONBody:
        now = ctx.now()
        return success([_silence_json(s, now) for s in need_notifier().dispatcher.silences.all()])

    @router.post("/silences", summary="Create a silence, or change one (with its id)")
    async def create_silence(request: SilenceRequest) -> JSONBody:
        now = ctx.now()
        silences = need_notifier().dispatcher.silences
        fields: dict[str, Any] = {
            "matchers": request.matcher_texts(),
            "starts_at": _time(request.startsAt, "startsAt", now),
            "ends_at": _time(request.endsAt, "endsAt", now),
            "created_by": request.createdBy,
            "comment": request.comment,
            "now": now,
        }
        if request.id is None:
            silence = silences.add(**fields)
        else:
            try:
                silence = silences.update(request.id, **fields)
            except KeyError:
                raise NotFound(f"no silence {request.id}") from None
        return success({"silenceID": silence.id, **_silence_json(silence, now)})

    @router.delete("/silences/{silence_id}", summary="Expire a silence")
    async def expire_silence(silence_id: str) -> JSONBody:
        now = ctx.now()
        try:
            silence = need_notifier().dispatcher.silences.expire(silence_id, now)
        except KeyError:
            raise NotFound(f"no silence {silence_id}") from None
        return success(_silence_json(silence, now))

    @router.get("/notifications", summary="Notifications: queued, delivered, failed")
    async def notifications(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
        state: Annotated[
            str | None, Query(description="pending, delivered, failed, expired, superseded")
        ] = None,
    ) -> JSONBody:
        if state and state not in DELIVERY_STATES:
            raise QueryError(
                f'invalid parameter "state": expected one of {", ".join(DELIVERY_STATES)}, '
                f'got "{state}"'
            )
        items = need_notifier().outbox.all()
        if state:
            items = [d for d in items if d.state == state]
        return success(
            [
                {
                    "id": d.id,
                    "idempotencyKey": d.key,
                    "channel": d.channel,
                    "groupKey": d.group_key,
                    "status": d.status,
                    "title": d.title,
                    "state": d.state,
                    "attempts": d.attempts,
                    "createdAt": iso(d.created_at),
                    "nextAttempt": iso(d.next_attempt) if d.state == "pending" else None,
                    "deliveredAt": iso(d.delivered_at),
                    "lastError": ctx.redact(d.last_error),
                    "history": [
                        {
                            **h,
                            "at": iso(h["at"]),
                            **({"error": ctx.redact(h["error"])} if "error" in h else {}),
                        }
                        for h in d.history
                    ],
                }
                for d in items[:limit]
            ]
        )

    return router


def _time(value: str | float | None, name: str, default: float) -> float:
    if isinstance(value, int | float):
        return check_time(float(value), name=name, text=value)
    return parse_time(value, name=name, default=default)


class NotFound(QueryError):
    """No such object (HTTP 404)."""


def _rule_groups(ctx: QueryContext, kind: str | None) -> list[dict[str, Any]]:
    out = []
    for group in ctx.monitor.rules.groups:
        rules = []
        for rule in group.rules:
            if (kind == "alert" and not rule.is_alerting) or (
                kind == "record" and rule.is_alerting
            ):
                continue
            config = rule.loaded.config
            entry: dict[str, Any] = {
                "name": rule.name,
                "query": config.expression(),
                "labels": config.all_labels(),
                "health": rule.health,
                "lastError": rule.last_error,
                "lastEvaluation": iso(rule.last_evaluation),
                "evaluationTime": rule.evaluation_duration,
                "type": "alerting" if rule.is_alerting else "recording",
            }
            if rule.is_alerting:
                entry.update(
                    {
                        "duration": config.for_.total_seconds(),
                        "keepFiringFor": config.keep_firing_for.total_seconds(),
                        "annotations": config.annotations,
                        "state": _rule_state(rule),
                        "alerts": [
                            alert_json(a) for a in rule.alerts.values() if a.state != "inactive"
                        ],
                    }
                )
            rules.append(entry)
        out.append(
            {
                "name": group.name,
                "file": group.file,
                "interval": group.interval,
                "rules": rules,
                "lastEvaluation": iso(group.last_evaluation),
                "evaluationTime": group.evaluation_duration,
            }
        )
    return out


def _rule_state(rule: Rule) -> str:
    states = {a.state for a in rule.alerts.values()}
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


def _alerts(ctx: QueryContext) -> dict[str, Any]:
    active = [
        a
        for rule in ctx.monitor.rules.rules
        if rule.is_alerting
        for a in rule.alerts.values()
        if a.state != "inactive"
    ]
    active.sort(key=lambda a: (a.state != "firing", -a.active_at))
    last = max(active, key=lambda a: a.active_at, default=None)
    return {
        "alerts": [alert_json(a) for a in active],
        # the seed's status fields
        "active_alerts": len(active),
        "firing_alerts": sum(1 for a in active if a.state == "firing"),
        "alert_rules": sum(1 for r in ctx.monitor.rules.rules if r.is_alerting),
        "last_alert": alert_json(last) if last is not None else None,
    }
