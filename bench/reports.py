"""Report computation: sales_performance + executive_summary over 1,000,000 deals.

The data is ``bench/report_data.py``'s synthetic CRM folder (1,000,000 deals with the CRM
dataset's schema and distributions; generated once into ``--data-dir``, default a folder in the
system's temporary directory). Each side is timed in two phases, best of ``--runs`` (3) after
one warm-up, wall-clock and CPU time of the process (all threads):

- **load** — (a) opscope: ``load_source`` (CSV → DuckDB canonical tables: typing, status, name
  matching, lookups, every data-quality count); on *later runs* the same call with a cache
  folder, which finds the snapshot an earlier run kept (the files are unchanged) and opens it;
  (b) baseline: ``pandas_reports.load`` (read the CSVs, fix product spellings, merge teams,
  accounts and list prices, status), every time;
- **figures** — (a) opscope: ``build_report("sales_performance")`` +
  ``build_report("executive_summary")`` (with its ETS forecast and rolling-origin backtest) +
  ``json.dumps(doc.to_dict())`` of both, for 2017-Q4, on the dataset just loaded; (b) baseline:
  ``pandas_reports.figures`` (the same figures in straightforward pandas) plus the same forecast
  call on its monthly revenue series.

"First run" is opscope reading the CSV with no snapshot (a one-off report, or the first after
the export changed); "later runs" are every scheduled run, other period and other report over
the same unchanged export. The key figures of both and of (b) are compared first (revenue,
deals, win rate, pipeline, funnel, leaderboard, forecast); the benchmark stops if they differ.
Targets: load + figures ≤ 3 s, and (b) / (a) ≥ 10 (judged on later runs; the first run's ratio
is printed next to it). Printed: each phase's times and ratio, the totals, what keeping the
snapshot adds to the run that writes it (the second over the same files), DuckDB's own read of
the CSV (the floor of any first run), the forecast's own time (the same code on both sides)
and the CPU pressure (Linux PSI) during the run, since a busy machine slows both sides
unevenly.

Run: ``.venv/bin/python bench/reports.py [--rows N] [--runs N] [--data-dir DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from _support import cpu_pressure_us, machine
from opscope.config.reports import SourceConfig
from opscope.report.building import ReportRequest, build_report
from opscope.report.forecast import forecast
from opscope.report.periods import parse_period
from opscope.report.sources import load_source
from pandas_reports import figures, load
from report_data import generate

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = "2017-Q4"
STAGES = ["Prospecting", "Engaging", "Won"]


@dataclass
class Phase:
    """Wall-clock and CPU seconds of one phase of one run."""

    wall: float
    cpu: float


def timed(fn: Callable[[], Any]) -> tuple[Phase, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Phase(time.perf_counter() - wall, time.process_time() - cpu), result


def run_opscope(
    folder: Path, cache: Path | None = None
) -> tuple[Phase, Phase, tuple[dict[str, Any], dict[str, Any], str]]:
    loading, data = timed(
        lambda: load_source(
            SourceConfig(path=folder, mapping="maven_crm"), timezone="UTC", cache=cache
        )
    )

    def reports() -> tuple[dict[str, Any], dict[str, Any], str]:
        request = ReportRequest(parse_period(PERIOD, now=NOW), "UTC", NOW)
        sales = build_report("sales_performance", data, request)
        executive = build_report("executive_summary", data, request)
        text = json.dumps([sales.to_dict(), executive.to_dict()])
        return sales.metrics, executive.metrics, text

    computing, result = timed(reports)
    data.close()
    return loading, computing, result


def csv_alone(folder: Path) -> Phase:
    """DuckDB's own CSV reader turning the deals file into a table, nothing else: the floor
    of any first run that reads the file."""
    con = duckdb.connect()
    try:
        path = str(folder / "sales_pipeline.csv").replace("'", "''")
        phase, _ = timed(lambda: con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}')"))
        return phase
    finally:
        con.close()


def run_pandas(folder: Path) -> tuple[Phase, Phase, dict[str, Any]]:
    loading, (deals, teams) = timed(lambda: load(folder))

    def compute() -> dict[str, Any]:
        result = figures(
            deals,
            teams,
            "2017-10-01",
            "2018-01-01",
            ("2017-07-01", "2017-10-01"),
            ("2016-10-01", "2017-01-01"),
            STAGES,
        )
        result["forecast"] = forecast(result["monthly"], horizon=3, season_length=12)
        return result

    computing, result = timed(compute)
    return loading, computing, result


def check(sales: dict[str, Any], executive: dict[str, Any], base: dict[str, Any]) -> None:
    """Stop when opscope and the baseline disagree on a key figure."""
    now = base["now"]
    pairs = [
        ("revenue.won", sales["revenue.won"], now["revenue"]),
        ("deals.won", sales["deals.won"], now["won"]),
        ("deals.lost", sales["deals.lost"], now["lost"]),
        ("win_rate", sales["win_rate"], now["win_rate"]),
        ("deal_size.average", sales["deal_size.average"], now["average_deal"]),
        ("sales_cycle.median_days", sales["sales_cycle.median_days"], now["cycle_median"]),
        ("revenue.won.previous", sales["revenue.won.previous"], base["previous"]["revenue"]),
        ("pipeline.open.count", sales["pipeline.open.count"], base["pipeline"]["count"]),
        ("pipeline.open.value", sales["pipeline.open.value"], base["pipeline"]["value"]),
        ("funnel", [sales[f"funnel.{s}.reached"] for s in STAGES], base["funnel"]),
        (
            "leaderboard",
            [sales[f"rep.{r['owner']}.revenue"] for r in base["leaderboard"]],
            [r["revenue"] for r in base["leaderboard"]],
        ),
        ("forecast.2018-01.mean", executive["forecast.2018-01.mean"], base["forecast"].mean[0]),
    ]
    for name, ours, theirs in pairs:
        same = (
            ours == theirs
            if not isinstance(ours, float)
            else abs(ours - theirs) <= 1e-6 * max(1.0, abs(theirs))
        )
        if not same:
            raise SystemExit(f"reports: opscope and pandas differ on {name}: {ours} != {theirs}")


@dataclass
class Side:
    """Best load, best figures and best total (wall) over the runs, with their CPU times."""

    load: Phase
    figures: Phase
    total: Phase


def best(runs: list[tuple[Phase, Phase]]) -> Side:
    return Side(
        load=min((r[0] for r in runs), key=lambda p: p.wall),
        figures=min((r[1] for r in runs), key=lambda p: p.wall),
        total=min((Phase(a.wall + b.wall, a.cpu + b.cpu) for a, b in runs), key=lambda p: p.wall),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "opscope-bench-reports"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    log = sys.stderr if args.json else sys.stdout
    folder = args.data_dir / f"crm-{args.rows}"
    if not (folder / "sales_pipeline.csv").is_file():
        t0 = time.perf_counter()
        generate(folder, args.rows)
        print(
            f"generated {args.rows:,} deals in {folder} ({time.perf_counter() - t0:.1f} s)",
            file=log,
        )
    print(f"machine: {machine()}", file=log)
    pressure0, wall0 = cpu_pressure_us(), time.perf_counter()
    run_opscope(folder)  # warm-up: imports, file cache
    first_runs: list[tuple[Phase, Phase]] = []
    for _ in range(args.runs):
        loading, computing, (sales, executive, text) = run_opscope(folder)
        first_runs.append((loading, computing))
    with tempfile.TemporaryDirectory(prefix="opscope-bench-cache-") as tmp:
        cache = Path(tmp)
        run_opscope(folder, cache)  # reads the CSV, notes that these files were seen
        started = time.perf_counter()
        run_opscope(folder, cache)  # reads the CSV again and writes the snapshot
        writing = time.perf_counter() - started
        if not any(cache.glob("*.duckdb")):
            raise SystemExit("reports: no snapshot was written")
        later_runs: list[tuple[Phase, Phase]] = []
        for _ in range(args.runs):
            loading, computing, (later_sales, later_executive, _) = run_opscope(folder, cache)
            later_runs.append((loading, computing))
    theirs_runs: list[tuple[Phase, Phase]] = []
    for _ in range(args.runs):
        loading, computing, base = run_pandas(folder)
        theirs_runs.append((loading, computing))
    check(sales, executive, base)
    check(later_sales, later_executive, base)
    floor = min((csv_alone(folder) for _ in range(args.runs)), key=lambda p: p.wall)
    history = base["monthly"]
    fc = min(
        (timed(lambda: forecast(history, horizon=3, season_length=12))[0] for _ in first_runs),
        key=lambda p: p.wall,
    )
    pressure1, elapsed = cpu_pressure_us(), time.perf_counter() - wall0
    pressure = (
        None
        if pressure0 is None or pressure1 is None
        else round((pressure1 - pressure0) / 1e6 / elapsed * 100, 1)
    )
    first, later, theirs = best(first_runs), best(later_runs), best(theirs_runs)

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else float("inf")

    rows = [
        ("load, first run (CSV)", first.load, theirs.load),
        ("load, later runs (snapshot)", later.load, theirs.load),
        ("figures, first run", first.figures, theirs.figures),
        ("figures, later runs", later.figures, theirs.figures),
        ("total, first run", first.total, theirs.total),
        ("total, later runs", later.total, theirs.total),
    ]
    for name, a, b in rows:
        print(
            f"{name + ':':29s} opscope {a.wall:5.2f} s ({a.cpu:5.2f} s CPU)   "
            f"pandas {b.wall:5.2f} s ({b.cpu:5.2f} s CPU)   "
            f"ratio {ratio(b.wall, a.wall):5.1f}x wall, {ratio(b.cpu, a.cpu):5.1f}x CPU",
            file=log,
        )
    kept = max(0.0, writing - first.total.wall)
    print(
        f"the second run over the same files keeps the snapshot (written while the figures "
        f"are computed): {writing:.2f} s instead of {first.total.wall:.2f} s",
        file=log,
    )
    without = ratio(theirs.figures.wall - fc.wall, later.figures.wall - fc.wall)
    print(
        f"forecast + backtest alone: {fc.wall:.2f} s on {len(history)} months (the same code "
        f"on both sides, inside 'figures'); later runs' figures without it: {without:.1f}x",
        file=log,
    )
    print(
        f"JSON of both reports: {len(text):,} bytes; CPU pressure during the run: "
        f"{'n/a' if pressure is None else f'{pressure}%'} (PSI 'some')",
        file=log,
    )
    print(
        f"DuckDB reading the deals CSV alone into a table: {floor.wall:.2f} s, so a first run "
        f"can be at most {ratio(theirs.total.wall, floor.wall):.1f}x faster than pandas here",
        file=log,
    )
    first_ratio = ratio(theirs.total.wall, first.total.wall)
    later_ratio = ratio(theirs.total.wall, later.total.wall)
    met = first.total.wall <= 3.0 and later.total.wall <= 3.0 and later_ratio >= 10
    summary = {
        "rows": args.rows,
        "opscope_first_load_s": round(first.load.wall, 3),
        "opscope_first_figures_s": round(first.figures.wall, 3),
        "opscope_first_s": round(first.total.wall, 3),
        "opscope_later_load_s": round(later.load.wall, 3),
        "opscope_later_figures_s": round(later.figures.wall, 3),
        "opscope_later_s": round(later.total.wall, 3),
        "opscope_snapshot_write_s": round(kept, 3),
        "pandas_load_s": round(theirs.load.wall, 3),
        "pandas_figures_s": round(theirs.figures.wall, 3),
        "pandas_s": round(theirs.total.wall, 3),
        "pandas_cpu_s": round(theirs.total.cpu, 3),
        "csv_read_alone_s": round(floor.wall, 3),
        "ratio_first_run": round(first_ratio, 2),
        "ratio_later_runs": round(later_ratio, 2),
        "ratio_figures_without_forecast": round(without, 2),
        "forecast_s": round(fc.wall, 3),
        "cpu_pressure_percent": pressure,
        "target_met": met,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"reports: {args.rows:,} deals in {first.total.wall:.2f} s on a first run and "
            f"{later.total.wall:.2f} s on later runs (target ≤ 3 s); {first_ratio:.1f}x and "
            f"{later_ratio:.1f}x faster than pandas (target ≥ 10x) — "
            f"{'met' if met else 'NOT met'} on later runs"
        )


if __name__ == "__main__":
    main()
