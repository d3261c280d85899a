"""Renderers: a :class:`~opscope.report.document.ReportDocument` to a file in one format.

One entry point, :func:`render`; each format lives in its own module and is imported only when
asked for (Chromium, XlsxWriter and python-pptx are not loaded to write JSON):

* ``json`` — :meth:`ReportDocument.to_dict`, indented, strict JSON (no NaN/Infinity);
* ``html`` — one self-contained page, plotly charts, works offline (:mod:`.html`);
* ``pdf`` — that page printed by headless Chromium on A4 (:mod:`.pdf`);
* ``xlsx`` — one sheet per section with native Excel charts (:mod:`.xlsx`);
* ``pptx`` — a title slide and slides per section with native charts (:mod:`.pptx`).

Values are shown per :mod:`.locales` (``n/a`` for missing values, percentages for ratios,
``12.3 d`` for days, money in the document's currency and locale).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args

from opscope.errors import RenderError
from opscope.report.document import ReportDocument

Format = Literal["html", "pdf", "xlsx", "pptx", "json"]

#: Every output format :func:`render` writes.
FORMATS: tuple[Format, ...] = get_args(Format)


def render(doc: ReportDocument, fmt: str, path: Path) -> Path:
    """Write ``doc`` as ``fmt`` (one of :data:`FORMATS`) to ``path`` and return ``path``.

    The file appears complete or not at all: it is written next to ``path`` under a temporary
    name and renamed over it. Missing parent directories are created.

    Raises :class:`~opscope.errors.RenderError` for an unknown format, locale or currency, an
    unwritable path, or (PDF) a missing or failing Chromium.
    """
    if fmt not in FORMATS:
        raise RenderError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    # A fresh name next to the target: the writer creates it with the usual permissions.
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(doc, fmt, partial)
        os.replace(partial, path)
    except OSError as exc:
        raise RenderError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return path


def drawn(doc: ReportDocument) -> ReportDocument:
    """``doc`` without its ``data_quality`` section: every drawn format shows
    ``doc.data_quality`` once, in its own place (the section repeats the same lines)."""
    sections = [s for s in doc.sections if s.id != "data_quality"]
    return doc if len(sections) == len(doc.sections) else replace(doc, sections=sections)


def _write(doc: ReportDocument, fmt: str, path: Path) -> None:
    if fmt == "json":
        text = json.dumps(doc.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        return
    doc = drawn(doc)
    if fmt == "html":
        from opscope.report.render.html import write_html

        write_html(doc, path)
    elif fmt == "pdf":
        from opscope.report.render.pdf import write_pdf

        write_pdf(doc, path)
    elif fmt == "xlsx":
        from opscope.report.render.xlsx import write_xlsx

        write_xlsx(doc, path)
    else:
        from opscope.report.render.pptx import write_pptx

        write_pptx(doc, path)
