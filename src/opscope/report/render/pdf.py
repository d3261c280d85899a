"""PDF: the print layout of the HTML page, printed by headless Chromium.

Chromium (Debian package ``chromium``; ``OPSCOPE_CHROMIUM`` names another executable) opens the
self-contained page from a temporary directory (``file://``, no network: every host name
resolves to nothing) and prints it to A4 with ``--print-to-pdf``. The page's print CSS keeps
every chart, KPI card and table row whole on one page and repeats table headers on each page
(``break-inside: avoid``, ``thead {display: table-header-group}``); charts are drawn at the
A4 column width (:data:`~opscope.report.render.html.PRINT_CHART_WIDTH`) as static SVG, which
Chromium prints as vectors with selectable text.

``--virtual-time-budget`` lets the page finish its scripts (plotly draws every chart while the
page loads) before Chromium prints; the run is bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from opscope.errors import RenderError
from opscope.report.document import ReportDocument
from opscope.report.render.html import write_html

#: Executables tried in order when ``OPSCOPE_CHROMIUM`` is not set.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEFAULT_TIMEOUT = 120.0
_VIRTUAL_TIME_BUDGET_MS = 30_000


def find_chromium() -> str:
    """The Chromium executable to print with: ``$OPSCOPE_CHROMIUM`` or the first of
    :data:`CHROMIUM_NAMES` on ``PATH``.

    Raises :class:`~opscope.errors.RenderError` naming what to install when there is none.
    """
    configured = os.environ.get("OPSCOPE_CHROMIUM")
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise RenderError(f"OPSCOPE_CHROMIUM={configured!r} is not an executable")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise RenderError(
        "PDF needs Chromium: install it (Debian: apt-get install chromium) "
        "or set OPSCOPE_CHROMIUM to its executable"
    )


def chromium_argv(chromium: str, *, page: Path, output: Path, profile: Path) -> list[str]:
    """The Chromium command line that prints ``page`` to ``output`` (PDF) with a throw-away
    ``profile`` directory, headless, without network, sandbox, GPU or page headers."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--run-all-compositor-stages-before-draw",
        f"--virtual-time-budget={_VIRTUAL_TIME_BUDGET_MS}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={output}",
        page.as_uri(),
    ]


def write_pdf(doc: ReportDocument, path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Print ``doc`` to the PDF file ``path`` and return ``path``.

    Raises :class:`~opscope.errors.RenderError` when Chromium is missing, fails, times out
    (after ``timeout`` seconds) or writes no PDF; its last output lines are in the message.
    """
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="opscope-pdf-") as tmp:
        work = Path(tmp)
        page = write_html(doc, work / "report.html", print_layout=True)
        output = work / "report.pdf"
        argv = chromium_argv(chromium, page=page, output=output, profile=work / "profile")
        try:
            result = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RenderError(f"Chromium did not print the PDF within {timeout:g} s") from exc
        except OSError as exc:
            raise RenderError(f"cannot run Chromium ({chromium}): {exc}") from exc
        if result.returncode != 0 or not output.is_file() or output.stat().st_size == 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise RenderError(
                f"Chromium exited with status {result.returncode} without a PDF: "
                + (" | ".join(tail) or "no output")
            )
        with output.open("rb") as check:
            if check.read(5) != b"%PDF-":
                raise RenderError("Chromium wrote something that is not a PDF")
        shutil.move(output, path)
    return path
