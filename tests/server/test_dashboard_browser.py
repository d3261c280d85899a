"""The dashboard in headless Chromium against a real `opscope serve` (1 s collection cycles)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.conftest import ServeProcess, require_tool

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Request

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


def test_dashboard_loads_history_and_live_points(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    chromium = require_tool("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    serve = serve_process(CONFIG)

    errors: list[str] = []
    foreign: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    def on_request(request: Request) -> None:
        if urlsplit(request.url).netloc != urlsplit(serve.url).netloc:
            foreign.append(request.url)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("request", on_request)
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
            assert page.evaluate("document.body.dataset.ws") == "open"
        finally:
            browser.close()

    assert errors == [], f"console errors: {errors}\nserver log:\n{serve.output()}"
    assert foreign == [], f"the dashboard requested other hosts: {foreign}"
