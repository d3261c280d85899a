"""A synthetic CRM folder of 1,000,000 deals with the schema of Maven's CRM dataset.

Written for the report benchmark only (never report data). The distributions come from the real
dataset in ``../shared/data/crm`` (or ``OPSCOPE_CRM_DATA``): the share of each stage, product,
agent and account, each product's won deal values (mean and standard deviation), the share of
open deals without an account, and the ``GTXPro`` spelling of ``GTX Pro``. Deals are spread over
2014-01 … 2017-12 (so monthly revenue has four yearly cycles); engagement precedes closing by a
cycle drawn from the real cycle lengths. The lookup files (teams, products, accounts) are copied
from the real folder into the output folder. A fixed seed makes the file identical every time.

Run: ``.venv/bin/python bench/report_data.py OUT_DIR [--rows N]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from datetime import date
from pathlib import Path

import numpy as np

SEED = 20171231
START = date(2014, 1, 1)
DAYS = (date(2018, 1, 1) - START).days


def real_crm() -> Path:
    """The real CRM dataset folder; raises SystemExit when it is absent."""
    env = os.environ.get("OPSCOPE_CRM_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared/data/crm"
    if not (path / "sales_pipeline.csv").is_file():
        raise SystemExit(f"the CRM dataset is not at {path} (set OPSCOPE_CRM_DATA)")
    return path


def generate(out: Path, rows: int = 1_000_000, seed: int = SEED) -> Path:
    """Write ``out/sales_pipeline.csv`` (``rows`` deals) and the three lookup files."""
    real = real_crm()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("sales_teams.csv", "products.csv", "accounts.csv"):
        shutil.copyfile(real / name, out / name)
    with (real / "sales_pipeline.csv").open(newline="", encoding="utf-8") as f:
        deals = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)

    def shares(key: str, subset: list[dict[str, str]]) -> tuple[list[str], np.ndarray]:
        values, counts = np.unique([d[key] for d in subset], return_counts=True)
        return [str(v) for v in values], counts / counts.sum()

    stages, stage_p = shares("deal_stage", deals)
    products, product_p = shares("product", deals)
    agents, agent_p = shares("sales_agent", deals)
    with_account = [d for d in deals if d["account"]]
    accounts, account_p = shares("account", with_account)
    open_deals = [d for d in deals if d["deal_stage"] in ("Prospecting", "Engaging")]
    no_account_open = sum(1 for d in open_deals if not d["account"]) / len(open_deals)
    value_stats = {}
    for name in products:
        won = [
            int(d["close_value"])
            for d in deals
            if d["product"] == name and d["deal_stage"] == "Won"
        ]
        value_stats[name] = (float(np.mean(won)), float(np.std(won)))
    cycles = np.array(
        [
            (date.fromisoformat(d["close_date"]) - date.fromisoformat(d["engage_date"])).days
            for d in deals
            if d["close_date"] and d["engage_date"]
        ]
    )

    stage = rng.choice(stages, size=rows, p=stage_p)
    product = rng.choice(products, size=rows, p=product_p)
    agent = rng.choice(agents, size=rows, p=agent_p)
    account = rng.choice(accounts, size=rows, p=account_p).astype(object)
    is_open = np.isin(stage, ["Prospecting", "Engaging"])
    account[is_open & (rng.random(rows) < no_account_open)] = ""
    # Yearly seasonality and growth: more deals close late in the year and in later years.
    day = rng.integers(0, DAYS, size=rows)
    keep = rng.random(rows) < (
        0.55 + 0.25 * np.sin(2 * np.pi * (day / 365.25 - 0.2)) + 0.2 * day / DAYS
    )
    day = np.where(keep, day, rng.integers(0, DAYS, size=rows))
    cycle = rng.choice(cycles, size=rows)
    close = np.datetime64(START.isoformat()) + day.astype("timedelta64[D]")
    engage = close - cycle.astype("timedelta64[D]")
    mean = np.array([value_stats[p][0] for p in product])
    std = np.array([value_stats[p][1] for p in product])
    value = np.maximum(1, np.rint(rng.normal(mean, std))).astype(np.int64)
    won, lost = stage == "Won", stage == "Lost"
    with (out / "sales_pipeline.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "opportunity_id",
                "sales_agent",
                "product",
                "account",
                "deal_stage",
                "engage_date",
                "close_date",
                "close_value",
            ]
        )
        engage_text = engage.astype(str)
        close_text = close.astype(str)
        for i in range(rows):
            closed = won[i] or lost[i]
            writer.writerow(
                [
                    f"B{i:07d}",
                    agent[i],
                    product[i],
                    account[i],
                    stage[i],
                    "" if stage[i] == "Prospecting" else engage_text[i],
                    close_text[i] if closed else "",
                    value[i] if won[i] else (0 if lost[i] else ""),
                ]
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(generate(args.out, args.rows))


if __name__ == "__main__":
    main()
