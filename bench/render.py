"""Report rendering: seconds to write a full-size sales performance report as HTML and XLSX.

The document has the size of a full sales performance report: six KPI cards, a leaderboard of
35 sales agents (seven columns), a 20-row product table and 20 charts of 60 points each (line
charts with a forecast and its prediction interval, grouped and stacked bars, a pie, a funnel,
a gauge), notes and data-quality lines. Values come from a fixed seed.

Measured, each as the median of ``--rounds`` after one cold run:

- **(a) HTML**: ``render(doc, "html", path)`` — figures, Jinja2 template, plotly.js inlined;
- **(b) XLSX**: ``render(doc, "xlsx", path)`` — sheets, number formats, native charts;
- **(c) baseline**: the same 20 figures through plotly's own Python API, each
  ``plotly.graph_objects.Figure(spec).write_html(path)`` (a standalone page per chart, plotly.js
  inlined in each: what a script that calls ``fig.write_html`` per chart does), and
  ``fig.to_html(include_plotlyjs=False, full_html=False)`` (a div per chart, no bundle);
- PPTX and (when Chromium is installed) PDF once each, for information.

The target is (a) + (b) ≤ 5 s. Run: ``.venv/bin/python bench/render.py [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from opscope.report.document import (
    Chart,
    Column,
    Kpi,
    KpiCards,
    Notes,
    Period,
    ReportDocument,
    Section,
    Series,
    Table,
)
from opscope.report.render import render
from opscope.report.render.figures import figure
from opscope.report.render.locales import NumberStyle

POINTS = 60
CHARTS = 20
AGENTS = 35
TARGET_S = 5.0


def build_document(seed: int) -> ReportDocument:
    """A sales performance document of full size (see the module docstring)."""
    rng = random.Random(seed)
    periods = [f"{2003 + i // 4}-Q{i % 4 + 1}" for i in range(POINTS)]
    charts: list[Chart] = []
    kinds = ["line", "line", "line", "bar", "stacked_bar"]
    for c in range(CHARTS - 3):
        kind = kinds[c % len(kinds)]
        base = rng.uniform(50_000, 150_000)
        values: list[float | None] = [
            base * (1 + 0.01 * i) + rng.gauss(0, base * 0.05) for i in range(POINTS)
        ]
        values[rng.randrange(POINTS)] = None
        series = [Series("Revenue", values)]
        if kind == "line":
            history = POINTS - 8
            forecast: list[float | None] = [None] * history + [
                base * (1 + 0.01 * i) for i in range(history, POINTS)
            ]
            series[0].values = values[:history] + [None] * 8
            series.append(
                Series(
                    "Forecast",
                    forecast,
                    lower=[None if v is None else v * 0.9 for v in forecast],
                    upper=[None if v is None else v * 1.1 for v in forecast],
                    role="forecast",
                )
            )
        elif kind == "stacked_bar":
            series.append(Series("Lost", [rng.uniform(10_000, 50_000) for _ in range(POINTS)]))
        charts.append(
            Chart(f"Chart {c + 1}", kind, periods, series, value_kind="money", target=base * 1.3)  # type: ignore[arg-type]
        )
    stages = ["Prospecting", "Engaging", "Won"]
    charts.append(Chart("Funnel", "funnel", stages, [Series("Deals", [8800.0, 6200.0, 4238.0])]))
    sectors = [f"sector {i}" for i in range(10)]
    charts.append(
        Chart("Sectors", "pie", sectors, [Series("Revenue", [rng.uniform(1, 9) for _ in sectors])])
    )
    charts.append(Chart("Quota", "gauge", ["q"], [Series("Attainment", [0.82])], "ratio", 1.0, 1.5))
    agents = [
        {
            "agent": f"Agent {i:02d} Ñúñez-Øster",
            "won": rng.randint(40, 200),
            "revenue": rng.uniform(50_000, 500_000),
            "win_rate": rng.uniform(0.4, 0.8),
            "deal_size": rng.uniform(1_000, 4_000),
            "cycle": rng.uniform(20, 90),
            "quota": rng.uniform(0.5, 1.4),
        }
        for i in range(AGENTS)
    ]
    leaderboard = Table(
        "Leaderboard",
        [
            Column("agent", "Sales agent"),
            Column("won", "Won deals", "count"),
            Column("revenue", "Revenue", "money"),
            Column("win_rate", "Win rate", "ratio"),
            Column("deal_size", "Average deal size", "money"),
            Column("cycle", "Sales cycle", "days"),
            Column("quota", "Quota attainment", "ratio"),
        ],
        agents,
    )
    products = Table(
        "Products",
        [Column("product", "Product"), Column("revenue", "Revenue", "money")],
        [{"product": f"Product {i}", "revenue": rng.uniform(1e4, 1e6)} for i in range(20)],
    )
    kpis = KpiCards(
        [
            Kpi(f"KPI {i}", "money", rng.uniform(1e5, 1e6), previous=rng.uniform(1e5, 1e6))
            for i in range(6)
        ]
    )
    return ReportDocument(
        report="sales_performance",
        title="Sales performance",
        period=Period("2017-Q4", "2017-10-01", "2018-01-01", "UTC"),
        generated_at="2018-01-02T08:00:00+00:00",
        sections=[
            Section("kpis", "KPIs", [kpis]),
            Section("charts", "Trends", list(charts)),
            Section("team", "Team", [leaderboard]),
            Section("products", "Products", [products]),
            Section("notes", "Recommendations", [Notes("Recommendations", ["One", "Two"])]),
        ],
        data_quality=[f"{n} rows dropped" for n in range(5)],
    )


def timed(work: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    """(cold wall s, median wall s, median CPU s) of ``work`` run once cold and ``rounds`` times."""
    t0 = time.perf_counter()
    work()
    cold = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return cold, statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    log = sys.stderr if args.json else sys.stdout
    doc = build_document(args.seed)
    style = NumberStyle(doc.locale, doc.currency)
    specs = [
        spec
        for section in doc.sections
        for block in section.blocks
        if isinstance(block, Chart) and (spec := figure(block, style)) is not None
    ]
    assert len(specs) == CHARTS and all(math.isfinite(len(s["data"])) for s in specs)
    results: dict[str, Any] = {"charts": CHARTS, "points": POINTS, "agents": AGENTS}
    with tempfile.TemporaryDirectory(prefix="opscope-bench-render-") as tmp:
        out = Path(tmp)
        html = timed(lambda: render(doc, "html", out / "r.html"), args.rounds)
        xlsx = timed(lambda: render(doc, "xlsx", out / "r.xlsx"), args.rounds)

        def baseline_pages() -> None:
            for i, spec in enumerate(specs):
                go.Figure(spec).write_html(out / f"chart-{i}.html")

        def baseline_divs() -> None:
            for spec in specs:
                go.Figure(spec).to_html(include_plotlyjs=False, full_html=False)

        pages = timed(baseline_pages, args.rounds)
        divs = timed(baseline_divs, args.rounds)
        t0 = time.perf_counter()
        render(doc, "pptx", out / "r.pptx")
        pptx_s = time.perf_counter() - t0
        pdf_s: float | None = None
        if shutil.which("chromium"):
            t0 = time.perf_counter()
            render(doc, "pdf", out / "r.pdf")
            pdf_s = time.perf_counter() - t0
        sizes = {f: (out / f"r.{f}").stat().st_size for f in ("html", "xlsx", "pptx")}
        baseline_bytes = sum((out / f"chart-{i}.html").stat().st_size for i in range(CHARTS))

    total = html[1] + xlsx[1]
    met = "met" if total <= TARGET_S else "MISSED"
    print(
        f"render: (a) HTML cold {html[0]:.2f} s, median {html[1]:.3f} s (CPU {html[2]:.3f} s), "
        f"{sizes['html'] / 1e6:.1f} MB",
        file=log,
    )
    print(
        f"render: (b) XLSX cold {xlsx[0]:.2f} s, median {xlsx[1]:.3f} s (CPU {xlsx[2]:.3f} s), "
        f"{sizes['xlsx'] / 1e3:.0f} kB",
        file=log,
    )
    print(
        f"render: (c) plotly write_html per chart: median {pages[1]:.3f} s, "
        f"{baseline_bytes / 1e6:.0f} MB in {CHARTS} files; to_html div per chart: "
        f"median {divs[1]:.3f} s",
        file=log,
    )
    pdf_text = f"{pdf_s:.1f} s" if pdf_s is not None else "skipped (no chromium)"
    print(f"render: PPTX {pptx_s:.2f} s ({sizes['pptx'] / 1e3:.0f} kB), PDF {pdf_text}", file=log)
    summary = (
        f"render: {CHARTS} charts × {POINTS} points + {AGENTS}-row leaderboard: HTML + XLSX "
        f"{total:.2f} s (HTML {html[1]:.2f} s = {html[1] / pages[1]:.2f}× plotly write_html "
        f"per chart); target <= {TARGET_S:g} s: {met}"
    )
    if args.json:
        results.update(
            html_s=html[1],
            xlsx_s=xlsx[1],
            baseline_write_html_s=pages[1],
            baseline_to_html_s=divs[1],
            pptx_s=pptx_s,
            pdf_s=pdf_s,
            total_s=total,
            target_met=met == "met",
        )
        print(json.dumps(results))
    else:
        print(summary)


if __name__ == "__main__":
    main()
