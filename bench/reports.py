"""Report computation: sales_performance + executive_summary over 1,000,000 deals.

The data is ``bench/report_data.py``'s synthetic CRM folder (1,000,000 deals with the CRM
dataset's schema and distributions; generated once into ``--data-dir``, default a folder in the
system's temporary directory). Measured, best of ``--runs`` (3) after one warm-up:

- **(a) opscope**: ``load_source`` (CSV → DuckDB canonical tables, name matching, data quality)
  + ``build_report("sales_performance")`` + ``build_report("executive_summary")`` (with its ETS
  forecast and rolling-origin backtest) + ``json.dumps(doc.to_dict())`` of both, for 2017-Q4;
- **(b) baseline**: ``bench/pandas_reports.py`` — the same figures in straightforward pandas —
  plus the same forecast call on its monthly revenue series.

The key figures of (a) and (b) are compared first (revenue, deals, win rate, pipeline, funnel,
leaderboard); the benchmark stops if they differ. Targets: (a) ≤ 3 s, and (b) / (a) ≥ 10.
Also printed: the forecast's share (the same work on both sides) and the ratio without it.

Run: ``.venv/bin/python bench/reports.py [--rows N] [--runs N] [--data-dir DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opscope.config.reports import SourceConfig
from opscope.report.building import ReportRequest, build_report
from opscope.report.forecast import forecast
from opscope.report.periods import parse_period
from opscope.report.sources import load_source
from pandas_reports import compute
from report_data import generate

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = "2017-Q4"
STAGES = ["Prospecting", "Engaging", "Won"]


def run_opscope(folder: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    data = load_source(SourceConfig(path=folder, mapping="maven_crm"), timezone="UTC")
    request = ReportRequest(parse_period(PERIOD, now=NOW), "UTC", NOW)
    sales = build_report("sales_performance", data, request)
    executive = build_report("executive_summary", data, request)
    text = json.dumps([sales.to_dict(), executive.to_dict()])
    data.close()
    return sales.metrics, executive.metrics, text


def run_pandas(folder: Path) -> dict[str, Any]:
    result = compute(
        folder,
        "2017-10-01",
        "2018-01-01",
        ("2017-07-01", "2017-10-01"),
        ("2016-10-01", "2017-01-01"),
        STAGES,
    )
    result["forecast"] = forecast(result["monthly"], horizon=3, season_length=12)
    return result


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


def best(fn: Any, runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


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
    run_opscope(folder)  # warm-up: imports, file cache
    ours_s, (sales, executive, text) = best(lambda: run_opscope(folder), args.runs)
    theirs_s, base = best(lambda: run_pandas(folder), args.runs)
    check(sales, executive, base)
    history = base["monthly"]
    fc_s, _ = best(lambda: forecast(history, horizon=3, season_length=12), args.runs)
    ratio = theirs_s / ours_s
    ratio_without = (theirs_s - fc_s) / (ours_s - fc_s)
    print(f"opscope: {ours_s:.2f} s (load + both reports + JSON, {len(text):,} bytes)", file=log)
    print(f"pandas:  {theirs_s:.2f} s (same figures; same forecast)", file=log)
    print(
        f"forecast + backtest alone: {fc_s:.2f} s on {len(history)} months; ratio without "
        f"it: {ratio_without:.1f}x",
        file=log,
    )
    met = ours_s <= 3.0 and ratio >= 10
    summary = {
        "rows": args.rows,
        "opscope_s": round(ours_s, 3),
        "pandas_s": round(theirs_s, 3),
        "ratio": round(ratio, 2),
        "ratio_without_forecast": round(ratio_without, 2),
        "forecast_s": round(fc_s, 3),
        "target_met": met,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"reports: {args.rows:,} deals in {ours_s:.2f} s (target ≤ 3 s), "
            f"{ratio:.1f}x faster than pandas (target ≥ 10x) — "
            f"{'met' if met else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
