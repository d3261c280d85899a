"""Fixtures of the report tests: the real CRM dataset (never copied into the repository), and a
headless Chromium (Debian package) with every network request refused and recorded: a report
page must work from file:// alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ON_CI, require_tool

#: A fixed "now", long after the CRM data: every period of 2017 is over.
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def crm_path() -> Path:
    """``../shared/data/crm`` next to the repository (or ``OPSCOPE_CRM_DATA``)."""
    env = os.environ.get("OPSCOPE_CRM_DATA")
    return (
        Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crm"
    )


@pytest.fixture(scope="session")
def crm_dir() -> Path:
    """The CRM Sales Opportunities dataset; skips when absent (fails under CI)."""
    path = crm_path()
    if not (path / "sales_pipeline.csv").is_file():
        message = f"the CRM dataset is not at {path} (set OPSCOPE_CRM_DATA)"
        if ON_CI:
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Browser:
    """Opens pages in one offline browser context; ``requests`` lists every non-file URL asked,
    ``errors`` every console error and page error."""

    context: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        page = self.context.new_page()
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.goto(url)
        return page


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = require_tool("chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_offline(True)
            result = Browser(context)

            def refuse(route: Any) -> None:
                if not route.request.url.startswith("file://"):
                    result.requests.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            context.route("**/*", refuse)
            yield result
        finally:
            browser.close()
