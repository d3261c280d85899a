"""The dashboard in headless Chromium against a real `opscope serve` (1 s collection cycles)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from opscope.server.tokens import TokenFile
from tests.conftest import ServeProcess, free_port, require_tool

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page, Request

pytestmark = pytest.mark.browser

PROJECT = "dashboard-check"
CONFIG = f"""
project: {PROJECT}
server:
  port: {{port}}
monitor:
  interval: 1s
  system:
    interval: 1s
  probes:
    - job: self
      targets: ["http://127.0.0.1:{{port}}/healthz"]
      interval: 1s
      timeout: 1s
"""
# A scrape target and a webhook on ports where nothing listens: `up == 0` fires at once.
ALERTS_CONFIG = """
project: alerts-check
server:
  port: {port}
monitor:
  interval: 1s
  evaluation_interval: 1s
  system:
    interval: 1s
  scrape:
    - job: gone
      targets: ["127.0.0.1:{closed}"]
      timeout: 500ms
  rules:
    - alert: TargetDown
      expr: up == 0
      severity: critical
      annotations:
        summary: gone is down
notify:
  channels:
    hook:
      webhook: "http://127.0.0.1:{hook}/hook"
  channels_default: [hook]
"""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 30_000
POINTS = "Number(document.querySelector('[data-metric=\"cpu_usage\"]').dataset.points)"
NOT_CONFIGURED = "notifications are not configured (no notify.channels)"


@dataclass
class BrowserLog:
    """What the page reported: console errors (text and resource URL) and other hosts asked."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@contextmanager
def dashboard_page(serve: ServeProcess, sync_api: Any) -> Iterator[tuple[Page, BrowserLog]]:
    """A Chromium page watching console errors and requests to other hosts (not yet loaded)."""
    chromium = require_tool("chromium")
    log = BrowserLog()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            log.errors.append((f"console: {message.text}", message.location.get("url", "")))

    def on_request(request: Request) -> None:
        if urlsplit(request.url).netloc != urlsplit(serve.url).netloc:
            log.foreign.append(request.url)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: log.errors.append((f"page error: {exc}", "")))
            page.on("request", on_request)
            yield page, log
        finally:
            browser.close()


def bad_request_of(url: str) -> Callable[[tuple[str, str]], bool]:
    """Whether a console error is Chromium's log line for a 400 answer of ``url``.

    Browsers log every failed HTTP answer to the console and a page cannot stop them; where the
    API answers 400 on purpose, the page shows the message itself.
    """

    def expected(error: tuple[str, str]) -> bool:
        text, location = error
        return location == url and "the server responded with a status of 400" in text

    return expected


def test_dashboard_loads_history_and_live_points(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    serve = serve_process(CONFIG)

    with dashboard_page(serve, sync_api) as (page, log):
        page.goto(serve.url + "/")

        sync_api.expect(page.locator("#project")).to_have_text(PROJECT, timeout=WAIT_MS)
        sync_api.expect(page).to_have_title(f"{PROJECT} · opscope")
        page.wait_for_function("document.body.dataset.ws === 'open'", timeout=WAIT_MS)

        chart = page.locator('[data-metric="cpu_usage"]')
        sync_api.expect(chart).to_have_count(1)
        page.wait_for_function(f"{POINTS} > 0", timeout=WAIT_MS)
        first = int(chart.get_attribute("data-points") or "0")
        page.wait_for_function(f"{POINTS} > {first}", timeout=WAIT_MS)
        assert chart.locator("canvas").count() > 0

        # the other hooks exist and the status cards and targets table are filled in
        for metric in ("memory_usage", "disk_usage", "probe_duration_seconds", "up"):
            sync_api.expect(page.locator(f'[data-metric="{metric}"]')).to_have_count(1)
        sync_api.expect(page.locator('[data-card="cpu"] .card-value')).to_have_text(
            re.compile(r"^\d+\.\d%$"), timeout=WAIT_MS
        )
        sync_api.expect(page.locator("#targets-body .health-up").first).to_be_visible(
            timeout=WAIT_MS
        )

        # no rules: an empty alerts panel; no notify.channels: the Silences section is disabled
        # and says why
        alerts = page.locator("#alerts-list")
        sync_api.expect(page.locator("#alerts-empty")).to_have_text(
            re.compile("No active alerts.*No alerting rules"), timeout=WAIT_MS
        )
        sync_api.expect(alerts).to_have_attribute("data-alerts", "0")
        sync_api.expect(page.locator('[data-card="alerts"] .card-value')).to_have_text("0")
        silences = page.locator("#silences")
        sync_api.expect(silences).to_have_attribute("data-available", "no", timeout=WAIT_MS)
        page.get_by_role("button", name="Silences", exact=True).click()
        sync_api.expect(page.locator("#silences-unavailable")).to_contain_text(NOT_CONFIGURED)
        sync_api.expect(page.get_by_role("button", name="Create silence")).to_be_disabled()
        sync_api.expect(page.get_by_label("Matchers", exact=True)).to_be_disabled()
        sync_api.expect(page.locator("#silences-error")).to_be_hidden()
        assert page.evaluate("document.body.dataset.ws") == "open"

    # /healthz says notifications are off: the page never asks for silences, so nothing fails
    assert log.errors == [], f"console errors: {log.errors}\nserver log:\n{serve.output()}"
    assert log.foreign == [], f"the dashboard requested other hosts: {log.foreign}"


def test_dashboard_alerts_and_silences(serve_process: Callable[[str], ServeProcess]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    closed = free_port()
    serve = serve_process(
        ALERTS_CONFIG.replace("{closed}", str(closed)).replace("{hook}", str(free_port()))
    )
    instance = f"127.0.0.1:{closed}"

    with dashboard_page(serve, sync_api) as (page, log):
        page.goto(serve.url + "/")
        page.wait_for_function("document.body.dataset.ws === 'open'", timeout=WAIT_MS)

        # the rule fires: one firing row, firing first, with its summary and key labels
        alerts = page.locator("#alerts-list")
        row = alerts.locator('.alert-row[data-alertname="TargetDown"]')
        expect(row).to_have_attribute("data-state", "firing", timeout=WAIT_MS)
        expect(alerts).to_have_attribute("data-alerts", "1")
        expect(row.locator(".badge")).to_have_text("firing")
        expect(row).to_contain_text("gone is down")
        expect(row).to_contain_text(instance)
        expect(row).to_contain_text("critical")
        expect(row.locator("time")).to_have_text(re.compile(r"^for \d+ (s|min)$"))
        expect(page.locator("#alerts-empty")).to_be_hidden()
        expect(page.locator('[data-card="alerts"] .card-value')).to_have_text("1")
        expect(page.locator('[data-card="alerts"]')).to_have_attribute("data-level", "crit")
        expect(page.locator("#silences")).to_have_attribute(
            "data-available", "yes", timeout=WAIT_MS
        )

        # "Silence" opens the form with the alert's labels as matchers
        silence_button = row.get_by_role("button", name=f"Silence TargetDown on {instance}")
        silence_button.click()
        matchers = page.get_by_label("Matchers", exact=True)
        expect(matchers).to_be_visible()
        expect(matchers).to_have_value(re.compile(r'^alertname="TargetDown"$', re.MULTILINE))
        expect(matchers).to_have_value(
            re.compile(rf'^instance="{re.escape(instance)}"$', re.MULTILINE)
        )

        # the API's error is shown inline
        matchers.fill("nonsense")
        page.get_by_label("Created by").fill("dashboard test")
        page.get_by_role("button", name="Create silence").click()
        form_error = page.locator("#silence-form-error")
        expect(form_error).to_contain_text("cannot parse matchers", timeout=WAIT_MS)
        expect(page.locator("#silences-list")).to_have_attribute("data-silences", "0")

        # a 4-hour silence from the alert's matchers appears as active and mutes the alert
        silence_button.click()
        expect(form_error).to_be_hidden()
        page.get_by_label("Duration").select_option(label="4 hours")
        page.get_by_label("Comment").fill("planned maintenance")
        page.get_by_role("button", name="Create silence").click()
        silence = page.locator("#silences-list .silence-row").filter(has_text="planned maintenance")
        expect(silence).to_have_attribute("data-state", "active", timeout=WAIT_MS)
        expect(silence.locator(".badge")).to_have_text("active")
        expect(silence).to_contain_text('alertname="TargetDown"')
        expect(silence).to_contain_text("by dashboard test")
        expect(silence.locator("time")).to_have_text(re.compile(r"^ends in (3 h \d+ min|4 h)$"))
        expect(row.locator(".chip-silenced")).to_be_visible(timeout=WAIT_MS)

        stored = httpx.get(f"{serve.url}/api/v1/silences", timeout=5).json()["data"]
        assert len(stored) == 1, stored
        created = stored[0]
        assert created["status"]["state"] == "active"
        assert created["createdBy"] == "dashboard test"
        assert created["comment"] == "planned maintenance"
        assert 'alertname="TargetDown"' in created["matchers"]
        length = _seconds(created["endsAt"]) - _seconds(created["startsAt"])
        assert abs(length - 4 * 3600) < 60, created

        # "Expire" ends it: the row turns expired, without its button, and the alert is unmuted
        silence.get_by_role("button", name=re.compile("^Expire")).click()
        expect(silence).to_have_attribute("data-state", "expired", timeout=WAIT_MS)
        expect(silence.locator(".badge")).to_have_text("expired")
        expect(silence.get_by_role("button")).to_have_count(0)
        expect(row.locator(".chip-silenced")).to_have_count(0)
        expect(page.locator("#silences-error")).to_be_hidden()
        stored = httpx.get(f"{serve.url}/api/v1/silences", timeout=5).json()["data"]
        assert [s["status"]["state"] for s in stored] == ["expired"]
        expect(row).to_have_attribute("data-state", "firing")

    # the one console error is Chromium's line for the refused "nonsense" silence
    expected = bad_request_of(f"{serve.url}/api/v1/silences")
    errors = [text for text, url in log.errors if not expected((text, url))]
    assert errors == [], f"console errors: {errors}\nserver log:\n{serve.output()}"
    assert len(log.errors) == 1, log.errors
    assert log.foreign == [], f"the dashboard requested other hosts: {log.foreign}"


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_the_dashboard_sends_its_token_in_the_first_message(
    serve_process: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """With tokens, the page opened as /?token=… authenticates its WebSocket with its first
    message — the token never travels in a URL after that first page load."""
    sync_api = pytest.importorskip("playwright.sync_api")
    data = tmp_path / "data-tokens"
    token = TokenFile(data).create("dashboard", "read")
    config = CONFIG.replace(
        "server:\n  port: {port}\n", "server:\n  port: {port}\n  auth: required\n"
    )
    assert "auth: required" in config
    serve = serve_process(config, data_dir=data)
    with dashboard_page(serve, sync_api) as (page, log):
        sockets: list[str] = []
        sent: list[str] = []

        def on_websocket(ws: Any) -> None:
            sockets.append(ws.url)
            ws.on("framesent", lambda payload: sent.append(str(payload)))

        page.on("websocket", on_websocket)
        page.goto(serve.url + f"/?token={token}")
        page.wait_for_function("document.body.dataset.ws === 'open'", timeout=WAIT_MS)
        page.wait_for_function(f"{POINTS} > 0", timeout=WAIT_MS)
        assert token not in page.url
        assert sockets == [serve.url.replace("http://", "ws://") + "/ws"]
        assert json.loads(sent[0]) == {"type": "auth", "token": token}
        assert all(token not in frame for frame in sent[1:])
    assert log.errors == [], f"console errors: {log.errors}\nserver log:\n{serve.output()}"
