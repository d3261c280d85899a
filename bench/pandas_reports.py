"""The benchmark's baseline: the numbers of sales_performance and executive_summary computed
with plain pandas, the way an analyst would write them (read the CSVs, fix product spellings,
join the teams and accounts, then boolean masks and group-bys per figure).

It computes the same figures as opscope for one quarter (with the previous quarter and the
same quarter a year earlier): won revenue, won and lost deals, win rate, average deal, mean and
median sales cycle, open pipeline at the quarter's end (count, value with the list price for
deals without an amount), pipeline velocity, the funnel, the leaderboard of every rep with
team and region roll-ups, revenue by product, region and segment, and the monthly revenue
series that feeds the forecast (the forecast itself is the same statsmodels call in both).
:func:`load` reads and prepares the data, :func:`figures` computes from it (the benchmark
times the two apart).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The deals with fixed product spellings, team, sector, list price and status, and the
    teams (every rep): what the figures are computed from."""
    deals = pd.read_csv(folder / "sales_pipeline.csv", parse_dates=["engage_date", "close_date"])
    teams = pd.read_csv(folder / "sales_teams.csv")
    products = pd.read_csv(folder / "products.csv")
    accounts = pd.read_csv(folder / "accounts.csv")
    by_norm = {_norm(p): p for p in products["product"]}
    deals["product"] = deals["product"].map(lambda p: by_norm.get(_norm(p), p))
    deals = deals.merge(teams, on="sales_agent", how="left")
    deals = deals.merge(accounts[["account", "sector"]], on="account", how="left")
    deals = deals.merge(products[["product", "sales_price"]], on="product", how="left")
    deals["status"] = deals["deal_stage"].map({"Won": "won", "Lost": "lost"}).fillna("open")
    return deals, teams


def compute(
    folder: Path,
    start: str,
    end: str,
    prev: tuple[str, str],
    last_year: tuple[str, str],
    stages: list[str],
) -> dict[str, Any]:
    """The figures of both reports for ``[start, end)``; dates are ISO strings."""
    deals, teams = load(folder)
    return figures(deals, teams, start, end, prev, last_year, stages)


def figures(
    deals: pd.DataFrame,
    teams: pd.DataFrame,
    start: str,
    end: str,
    prev: tuple[str, str],
    last_year: tuple[str, str],
    stages: list[str],
) -> dict[str, Any]:
    """The figures of both reports for ``[start, end)`` from :func:`load`'s frames."""
    out: dict[str, Any] = {}

    def closed(a: str, b: str) -> dict[str, Any]:
        d = deals[
            (deals["close_date"] >= a) & (deals["close_date"] < b) & (deals["status"] != "open")
        ]
        won = d[d["status"] == "won"]
        lost = d[d["status"] == "lost"]
        cycle = (won["close_date"] - won["engage_date"]).dt.days
        n = len(won) + len(lost)
        return {
            "revenue": float(won["close_value"].sum()),
            "won": len(won),
            "lost": len(lost),
            "win_rate": len(won) / n if n else None,
            "average_deal": float(won["close_value"].mean()) if len(won) else None,
            "cycle_mean": float(cycle.mean()) if len(won) else None,
            "cycle_median": float(cycle.median()) if len(won) else None,
        }

    def pipeline(b: str) -> tuple[int, float]:
        is_open = (deals["status"] == "open") | (deals["close_date"] >= b)
        created = (deals["engage_date"] < b) | (
            deals["engage_date"].isna() & (deals["status"] == "open")
        )
        d = deals[is_open & created]
        return len(d), float(d["close_value"].fillna(d["sales_price"]).sum())

    now = closed(start, end)
    out["now"], out["previous"], out["last_year"] = now, closed(*prev), closed(*last_year)
    count, value = pipeline(end)
    out["pipeline"] = {
        "count": count,
        "value": value,
        "previous": pipeline(prev[1])[1],
        "last_year": pipeline(last_year[1])[1],
    }
    out["velocity"] = (
        count * now["win_rate"] * now["average_deal"] / now["cycle_mean"]
        if now["win_rate"] and now["cycle_mean"]
        else None
    )
    cohort = deals[(deals["engage_date"] >= start) & (deals["engage_date"] < end)]
    reached = []
    for i, _ in enumerate(stages):
        depth = cohort["deal_stage"].map({s: k for k, s in enumerate(stages)})
        depth = depth.where(cohort["status"] != "won", len(stages) - 1)
        depth = depth.where(cohort["status"] != "lost", len(stages) - 2)
        reached.append(int((depth >= i).sum()))
    out["funnel"] = reached
    period = deals[
        (deals["close_date"] >= start) & (deals["close_date"] < end) & (deals["status"] != "open")
    ]
    board = []
    for agent in teams["sales_agent"]:
        mine = period[period["sales_agent"] == agent]
        won = mine[mine["status"] == "won"]
        n = len(mine)
        board.append(
            {
                "owner": agent,
                "revenue": float(won["close_value"].sum()),
                "won": len(won),
                "lost": n - len(won),
                "win_rate": len(won) / n if n else None,
                "average_deal": float(won["close_value"].mean()) if len(won) else None,
            }
        )
    out["leaderboard"] = sorted(board, key=lambda r: (-r["revenue"], r["owner"]))
    won_period = period[period["status"] == "won"]
    for key, column in (
        ("team", "manager"),
        ("region", "regional_office"),
        ("product", "product"),
        ("segment", "sector"),
    ):
        out[f"by_{key}"] = won_period.groupby(column)["close_value"].sum().to_dict()
    history = deals[(deals["status"] == "won") & (deals["close_date"] < end)]
    monthly = history.groupby(history["close_date"].dt.to_period("M"))["close_value"].sum()
    out["monthly"] = [float(v) for v in monthly.to_numpy()]
    return out
