"""HTML: one self-contained file per report (styles, plotly.js and chart data inline).

The page needs no network: the plotly.js bundle that ships with the ``plotly`` Python package
(``plotly/package_data/plotly.min.js``, about 4.6 MB) is inlined once per file, and each chart's
figure is a JSON island (``<script type="application/json" data-chart=…>``) drawn by one loop
at the end of the page. When every chart is drawn the page sets
``document.body.dataset.chartsRendered`` to the number of charts (the PDF printer and the tests
wait for it).

The Jinja2 template (``templates/report.html.j2``) autoescapes everything; only the CSS, the
plotly.js bundle and the JSON islands (escaped for HTML by :func:`jinja2.utils.htmlsafe_json_dumps`:
``<``, ``>``, ``&`` and ``'`` as ``\\u`` escapes) are marked safe.

``print_layout`` (used by :mod:`.pdf`) fixes chart widths to the A4 column and draws static
charts; the screen layout lets charts follow their container.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from opscope.errors import RenderError
from opscope.report.document import Block, Chart, ReportDocument, Section
from opscope.report.render.figures import figure
from opscope.report.render.locales import MISSING, NumberStyle, finite

#: Width in CSS pixels of a chart in the A4 print layout (186 mm column less the chart frame).
PRINT_CHART_WIDTH = 680


@dataclass(slots=True)
class _ChartItem:
    chart: Chart
    dom_id: str
    spec: Markup | None


@dataclass(slots=True)
class _Group:
    """Consecutive charts share one grid; every other block is a group of one."""

    kind: str
    items: list[Any] = field(default_factory=list)


@cache
def plotly_js() -> str:
    """The plotly.js bundle shipped with the ``plotly`` package (read once per process).

    Raises :class:`~opscope.errors.RenderError` when the package or its bundle is missing.
    """
    try:
        bundle = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
        return bundle.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RenderError("the plotly package with its plotly.min.js bundle is missing") from exc


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("opscope.report.render", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _css() -> str:
    return (
        importlib.resources.files("opscope.report.render") / "templates" / "report.css"
    ).read_text(encoding="utf-8")


def render_html(doc: ReportDocument, *, print_layout: bool = False) -> str:
    """The report as one HTML page (a string of about 4.7 MB, mostly plotly.js).

    Raises :class:`~opscope.errors.RenderError` for an unknown locale or currency.
    """
    style = NumberStyle(doc.locale, doc.currency)
    dumps = partial(json.dumps, allow_nan=False, separators=(",", ":"))
    counter = 0
    groups: list[list[_Group]] = []
    for section in doc.sections:
        section_groups: list[_Group] = []
        for block in _blocks(section):
            if isinstance(block, Chart):
                counter += 1
                spec = figure(block, style, width=PRINT_CHART_WIDTH if print_layout else None)
                item = _ChartItem(
                    block, f"chart-{counter}", htmlsafe_json_dumps(spec, dumps) if spec else None
                )
                if section_groups and section_groups[-1].kind == "charts":
                    section_groups[-1].items.append(item)
                else:
                    section_groups.append(_Group("charts", [item]))
            else:
                section_groups.append(_Group(block.type, [block]))
        groups.append(section_groups)
    metrics = [
        (name, style.format(value, "number") if finite(value) is not None else _text(value))
        for name, value in doc.metrics.items()
    ]
    template = _environment().get_template("report.html.j2")
    return template.render(
        doc=doc,
        style=style,
        fmt=style.format,
        missing=MISSING,
        lang=doc.locale.replace("_", "-"),
        section_ids=_section_ids(doc.sections),
        groups=groups,
        metrics=metrics,
        css=Markup(_css()),
        plotly_js=Markup(plotly_js()),
        responsive=Markup("false" if print_layout else "true"),
        static_plot=Markup("true" if print_layout else "false"),
    )


def write_html(doc: ReportDocument, path: Path, *, print_layout: bool = False) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8) and return ``path``."""
    path.write_text(render_html(doc, print_layout=print_layout), encoding="utf-8")
    return path


def _blocks(section: Section) -> list[Block]:
    # An omitted section shows its reason only, whatever blocks it may still carry.
    return [] if section.omitted else list(section.blocks)


def _text(value: Any) -> str:
    return MISSING if value is None or isinstance(value, float) else str(value)


def _section_ids(sections: list[Section]) -> list[str]:
    ids: list[str] = []
    for index, section in enumerate(sections, start=1):
        slug = re.sub(r"[^a-z0-9]+", "-", section.id.lower()).strip("-") or "section"
        ids.append(f"s{index}-{slug}")
    return ids
