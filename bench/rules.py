"""Rule evaluation: 100 alerting rules over 10,000 series, milliseconds per evaluation round.

The store holds 100 metrics × 100 series (labels ``instance``, ``service``, ``zone``) with
15-second samples over the last 10 minutes, generated from a fixed seed (counters for the
``rate`` rules, gauges for the rest). The 100 rules mix what alerting rules usually do —
thresholds, ``rate(…[5m])``, ``avg_over_time(…[5m])``, ``sum by (service)``, ratios, ``absent``
— each over one metric of 100 series, with ``for: 5m`` so that alerts go through the pending
state. One round evaluates every rule once (as a rule group does), including writing ALERTS and
alert state to the store. There is no baseline to run beside it (Prometheus is a Go binary); the
target is ≤ 100 ms per round on one core.

Run: ``.venv/bin/python bench/rules.py [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from opscope.config import parse_config
from opscope.monitor.rules import RuleEngine, compile_groups
from opscope.store import Batch, Store, label_set

METRICS = 100
SERIES = 100
STEP_S = 15
HISTORY_S = 600
T_END = 1_800_000_000.0


def build_store(path: Path, seed: int) -> Store:
    """A store with 10,000 series and 10 minutes of 15 s samples."""
    rng = random.Random(seed)
    store = Store.open(path)
    for m in range(METRICS):
        name = f"bench_counter_{m}_total" if m % 2 == 0 else f"bench_gauge_{m}"
        ids = np.array(
            [
                store.series_id(
                    name,
                    label_set(
                        {"instance": f"i-{s:03d}", "service": f"svc-{s % 10}", "zone": f"z{s % 3}"}
                    ),
                )
                for s in range(SERIES)
            ],
            dtype=np.int64,
        )
        base = np.array([rng.uniform(0, 100) for _ in range(SERIES)])
        slope = np.array([rng.uniform(0, 20) for _ in range(SERIES)])
        for i, t in enumerate(range(int(T_END) - HISTORY_S, int(T_END) + 1, STEP_S)):
            values = base + slope * i if m % 2 == 0 else base + rng.uniform(-5, 5)
            store.append([Batch(f"bench/{m}", t * 1000, ids, values.astype(np.float64))])
    return store


def rule_text(m: int) -> str:
    """The rule over metric ``m`` (kinds cycle so every kind is evaluated 20 times)."""
    kind = m % 10
    if m % 2 == 0:
        name = f"bench_counter_{m}_total"
        exprs = {
            0: f"rate({name}[5m]) > 1",
            2: f"sum by (service) (rate({name}[5m])) > 5",
            4: f"increase({name}[5m]) > 300",
            6: f"irate({name}[5m]) > 1",
            8: f"rate({name}[5m]) / ignoring(zone) rate({name}[5m]) > 0.5",
        }
    else:
        name = f"bench_gauge_{m}"
        exprs = {
            1: f"{name} > 50",
            3: f"avg_over_time({name}[5m]) > 60",
            5: f"max by (zone) ({name}) > 90",
            7: f'absent({name}{{instance="nope"}})',
            9: f"{name} > 50 and {name} < 95",
        }
    return f"    - {{alert: Bench{m}, expr: '{exprs[kind]}', for: 5m}}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="evaluation rounds measured")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opscope-bench-rules-") as workdir:
        store = build_store(Path(workdir), args.seed)
        text = "monitor:\n  rules:\n" + "".join(rule_text(m) for m in range(METRICS))
        groups = compile_groups(parse_config(text, environ={}).rule_groups)
        engine = RuleEngine(store, groups)
        (group,) = groups
        engine.evaluate(group, T_END)  # warm-up: first selection of every series
        times, cpu = [], []
        for i in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            result = engine.evaluate(group, T_END + (i + 1) * 0.001)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        alerts = sum(len(r.alerts) for r in group.rules)
        errors = [r.last_error for r in group.rules if r.health != "ok"]
        store.close()
    p50, worst = statistics.median(times), max(times)
    met = "met" if p50 <= 100 else "MISSED"
    summary = (
        f"rules: {METRICS} rules over {METRICS * SERIES} series: median "
        f"{p50:.1f} ms per round (max {worst:.1f} ms, CPU {statistics.median(cpu):.1f} ms); "
        f"{alerts} alerts, {len(errors)} rule errors; target <= 100 ms per round: {met}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "rules": METRICS,
                    "series": METRICS * SERIES,
                    "median_ms": p50,
                    "max_ms": worst,
                    "alerts": alerts,
                    "errors": errors,
                    "changes_last_round": len(result.changes),
                    "target_met": met == "met",
                }
            )
        )
    else:
        print(f"rules: rounds {args.rounds}, per-round ms: " + ", ".join(f"{t:.0f}" for t in times))
        print(summary)


if __name__ == "__main__":
    main()
