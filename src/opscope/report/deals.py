"""Deal metrics in DuckDB SQL, shared by the sales and executive reports.

Definitions (the field's standard ones; sources named):

* a deal *closes in* a period when its ``close_date`` falls in ``[start, end)``;
* **win rate** = won / (won + lost) over deals closed in the period (HubSpot's and
  Salesforce's definition; open deals do not count);
* **average deal size** = won revenue / won deals;
* **sales cycle** of a won deal = close date − created date (the engaged date where the source
  has no created date), in days; mean and median over deals won in the period;
* **open pipeline** at the end of a period = deals open then: created (engaged) before it and not
  closed by then. A deal with no date at all is known to be open only in the source's snapshot,
  so it counts only at moments after the data's last date (see :func:`data_end`). A deal's
  value is its amount, or its product's list price when the source gives no amount for open
  deals (counted in a note); a deal lost later was open with no amount of its own (a lost deal's
  amount of 0 is its close value), so it is valued at its list price too;
* **weighted pipeline** = Σ value × probability of the deal's stage (from configuration; a
  deal's own ``probability`` column where the source has one);
* **pipeline velocity** = open deals × win rate × average deal size / mean sales cycle (money
  per day; HubSpot's and Salesforce's "sales velocity").

Every function returns plain numbers; a ratio whose denominator is 0 is ``None`` ("n/a").
Results are remembered on the dataset (:meth:`Dataset.memo`): the sales report and the
executive summary ask for the same periods' figures, and the tables do not change once loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any

from opscope.report.sources import Dataset


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class ClosedDeals:
    """What closed in a period: counts, won revenue, win rate, deal size and sales cycle."""

    won: int
    lost: int
    revenue: float
    win_rate: float | None
    average_deal: float | None
    cycle_mean_days: float | None
    cycle_median_days: float | None


_FIRST_DATE = "coalesce(created_date, engaged_date)"
#: SQL of a deal's first date (created, else engaged).
FIRST_DATE = _FIRST_DATE


def closed_deals(data: Dataset, start: date, end: date, where: str = "") -> ClosedDeals:
    """Deals that closed in ``[start, end)`` (optionally filtered by the SQL ``where``)."""
    return data.memo(
        ("closed_deals", start, end, where), lambda: _closed_deals(data, start, end, where)
    )


def _closed_deals(data: Dataset, start: date, end: date, where: str) -> ClosedDeals:
    extra = f" AND ({where})" if where else ""
    row = data.con.execute(
        f"""
        SELECT count(*) FILTER (status = 'won'), count(*) FILTER (status = 'lost'),
               coalesce(sum(amount) FILTER (status = 'won'), 0),
               count(amount) FILTER (status = 'won'),
               avg(close_date - {_FIRST_DATE}) FILTER (status = 'won'),
               median(close_date - {_FIRST_DATE}) FILTER (status = 'won')
        FROM deals
        WHERE close_date >= ? AND close_date < ? AND status <> 'open'{extra}
        """,
        [start, end],
    ).fetchone()
    assert row is not None
    won, lost, revenue, priced = int(row[0]), int(row[1]), float(row[2]), int(row[3])
    return ClosedDeals(
        won=won,
        lost=lost,
        revenue=revenue,
        win_rate=ratio(won, won + lost),
        average_deal=ratio(revenue, priced),
        cycle_mean_days=None if row[4] is None else float(row[4]),
        cycle_median_days=None if row[5] is None else float(row[5]),
    )


NO_DATA = ClosedDeals(0, 0, 0.0, None, None, None, None)


def closed_in(
    data: Dataset, start: date, end: date, span: tuple[date | None, date | None]
) -> ClosedDeals | None:
    """:func:`closed_deals` of ``[start, end)``, or ``None`` when that range lies wholly outside
    ``span`` (the first and last close dates): no data, rather than zeros."""
    first, last = span
    if first is None or last is None or end <= first or start > last:
        return None
    return closed_deals(data, start, end)


@dataclass(frozen=True)
class OpenPipeline:
    """Deals open at a moment: count, value, weighted value and how values were found."""

    count: int
    value: float
    weighted: float | None
    valued_at_list_price: int
    without_value: int
    without_probability: int
    undated: int = 0
    """Open deals without any date among those counted."""
    undated_counted: bool = True
    """Whether deals without any date were counted (only after the data's last date)."""


def data_end(data: Dataset) -> date | None:
    """The data's last date: the latest created, engaged or (of closed deals) close date.
    ``None`` when no deal has a date."""

    def last() -> date | None:
        row = data.con.execute(
            "SELECT max(greatest(created_date, engaged_date, "
            "CASE WHEN status <> 'open' THEN close_date END)) FROM deals"
        ).fetchone()
        return row[0] if row else None

    return data.memo(("data_end",), last)


def open_at(end: date, *, undated: bool) -> str:
    """SQL condition: the deal was open at the start of the day ``end``; deals without any date
    count only when ``undated`` (``end`` is after the source's snapshot). Over the columns of
    :func:`_pipeline_rows`: ``is_open``, ``close_date`` and ``first`` (created, else engaged
    date)."""
    at = f"DATE '{end.isoformat()}'"
    dated = f"first < {at}"
    if undated:
        dated = f"{dated} OR (first IS NULL AND is_open)"
    return f"(is_open OR close_date >= {at}) AND ({dated})"


def _pipeline_rows(since: date, stage_p: str) -> str:
    """SQL of the deals that can have been open on or after the day ``since``: those open now
    and those closed since (read apart, so that each part skips the row groups it cannot
    match: a snapshot's deals are sorted by close date), with the columns the pipeline needs
    computed once: ``product``, ``probability`` (the deal's, else ``stage_p`` of its stage),
    ``is_open``, ``close_date``, ``first`` and ``amount`` (its amount while open: a lost deal's 0
    is its close value, not its value)."""
    columns = (
        f"product, coalesce(probability, {stage_p}) AS probability, status = 'open' AS is_open, "
        f"close_date, {_FIRST_DATE} AS first, "
        "CASE WHEN status = 'lost' AND amount = 0 THEN NULL ELSE amount END AS amount"
    )
    return (
        f"SELECT {columns} FROM deals WHERE status = 'open' UNION ALL "
        f"SELECT {columns} FROM deals WHERE status <> 'open' AND close_date >= "
        f"DATE '{since.isoformat()}'"
    )


def open_pipeline(data: Dataset, end: date, probabilities: dict[str, float]) -> OpenPipeline:
    """Deals open at the start of day ``end`` (see the module's definitions); deals without any
    date are counted only when ``end`` is after :func:`data_end`."""
    return open_pipelines(data, [end], probabilities)[0]


def open_pipelines(
    data: Dataset, ends: list[date], probabilities: dict[str, float]
) -> list[OpenPipeline]:
    """:func:`open_pipeline` at each of ``ends``; those not computed before are computed in one
    pass over the deals."""
    rates = tuple(sorted(probabilities.items()))
    missing = sorted({e for e in ends if not data.remembers(("open_pipeline", e, rates))})
    computed: dict[date, OpenPipeline] = {}
    if missing:
        computed = dict(zip(missing, _open_pipelines(data, missing, probabilities), strict=True))
    return [
        data.memo(("open_pipeline", end, rates), partial(computed.__getitem__, end)) for end in ends
    ]


def _open_pipelines(
    data: Dataset, ends: list[date], probabilities: dict[str, float]
) -> list[OpenPipeline]:
    last = data_end(data)
    stages = {k.lower(): v for k, v in probabilities.items()}
    if stages:
        cases = " ".join(
            f"WHEN '{k.replace(chr(39), chr(39) * 2)}' THEN {v!r}" for k, v in stages.items()
        )
        stage_p = f"CASE lower(stage) {cases} END"
    else:
        stage_p = "NULL"
    # Open deals are counted and summed per product and probability, with one set of
    # aggregates per moment; list prices then value the deals without an amount in Python.
    aggregates: list[str] = []
    undated_at: list[bool] = []
    for end in ends:
        undated = last is None or end > last
        undated_at.append(undated)
        at = open_at(end, undated=undated)
        aggregates.append(
            f"count(*) FILTER ({at}), count(amount) FILTER ({at}), "
            f"coalesce(sum(amount) FILTER ({at}), 0), count(*) FILTER (({at}) AND first IS NULL)"
        )
    groups = data.con.execute(
        f"SELECT product, probability, {', '.join(aggregates)} "
        f"FROM ({_pipeline_rows(min(ends), stage_p)}) GROUP BY ALL"
    ).fetchall()
    prices: dict[str, float] = {}
    if "products" in data.tables:
        for product, price in data.con.execute(
            "SELECT product, min(list_price) FROM products WHERE product IS NOT NULL "
            "GROUP BY product"
        ).fetchall():
            if price is not None:
                prices[product] = float(price)
    result: list[OpenPipeline] = []
    for i, undated in enumerate(undated_at):
        count = value = weighted_sum = 0.0
        listed = unvalued = missing_p = undated_n = 0
        for row in groups:
            product, probability = row[0], row[1]
            n, priced, amount, no_date = row[2 + 4 * i : 6 + 4 * i]
            if not n:
                continue
            unpriced = int(n) - int(priced)
            price = prices.get(product) if product is not None else None
            deal_value = float(amount) + (unpriced * price if price is not None else 0.0)
            count += int(n)
            value += deal_value
            if price is not None:
                listed += unpriced
            else:
                unvalued += unpriced
            if probability is None:
                missing_p += int(n)
            else:
                weighted_sum += deal_value * float(probability)
            undated_n += int(no_date)
        if count == 0:
            weighted: float | None = 0.0
        elif missing_p == count:
            weighted = None  # no probabilities at all: n/a rather than 0
        else:
            weighted = weighted_sum
        result.append(
            OpenPipeline(
                count=int(count),
                value=value,
                weighted=weighted,
                valued_at_list_price=listed,
                without_value=unvalued,
                without_probability=missing_p,
                undated=undated_n,
                undated_counted=undated,
            )
        )
    return result


def velocity(open_deals: int, closed: ClosedDeals) -> float | None:
    """Pipeline velocity = open deals × win rate × average deal / mean sales cycle (per day)."""
    if closed.win_rate is None or closed.average_deal is None:
        return None
    return ratio(open_deals * closed.win_rate * closed.average_deal, closed.cycle_mean_days)


@dataclass(frozen=True)
class FunnelStage:
    """One funnel step: deals that reached ``stage``, and the conversion from the step before
    (``None`` for the first) and from the first step."""

    stage: str
    reached: int
    conversion: float | None
    from_first: float | None


FUNNEL_METHOD = (
    "Funnel: deals whose created date (engaged date where there is none) falls in the period. "
    "A deal has reached its current stage and every stage before it in the stage order; a won "
    "deal has reached every stage; a lost deal every stage before the last (the source does "
    "not record where it was lost). Conversion = deals reaching a stage / deals reaching the "
    "stage before."
)


def undated_deals(data: Dataset) -> int:
    """Deals with neither a created nor an engaged date (in no period's funnel)."""

    def count() -> int:
        row = data.con.execute(f"SELECT count(*) FROM deals WHERE {_FIRST_DATE} IS NULL").fetchone()
        return int(row[0]) if row else 0

    return data.memo(("undated_deals",), count)


def funnel(data: Dataset, start: date, end: date, order: list[str]) -> list[FunnelStage]:
    """Deals reaching each stage of ``order`` among deals created in ``[start, end)``."""
    if not order:
        return []
    key = ("funnel", start, end, tuple(order))
    return list(data.memo(key, lambda: _funnel(data, start, end, order)))


def _funnel(data: Dataset, start: date, end: date, order: list[str]) -> list[FunnelStage]:
    rows = data.con.execute(
        f"""
        SELECT status, lower(stage), count(*) FROM deals
        WHERE {_FIRST_DATE} >= ? AND {_FIRST_DATE} < ?
        GROUP BY ALL
        """,
        [start, end],
    ).fetchall()
    index = {s.lower(): i for i, s in enumerate(order)}
    last = len(order) - 1
    reached = [0] * len(order)
    for status, stage, count in rows:
        if status == "won":
            depth = last
        elif status == "lost":
            depth = last - 1
        elif stage in index:
            depth = index[stage]
        else:
            continue
        for i in range(depth + 1):
            reached[i] += int(count)
    return [
        FunnelStage(
            stage=name,
            reached=reached[i],
            conversion=None if i == 0 else ratio(reached[i], reached[i - 1]),
            from_first=ratio(reached[i], reached[0]),
        )
        for i, name in enumerate(order)
    ]


def by_dimension(data: Dataset, column: str, start: date, end: date) -> list[dict[str, Any]]:
    """Won revenue, won and lost deals and win rate per value of the deals' ``column``
    (``product``, ``region``, ``segment``, ``team``, ``owner``) for deals closed in the period,
    largest revenue first; a missing value is ``(none)``."""
    rows = data.memo(
        ("by_dimension", column, start, end), lambda: _by_dimension(data, column, start, end)
    )
    return [dict(row) for row in rows]  # callers may change their copy


def _by_dimension(data: Dataset, column: str, start: date, end: date) -> list[dict[str, Any]]:
    rows = data.con.execute(
        f"""
        SELECT coalesce({column}, '(none)') AS key,
               coalesce(sum(amount) FILTER (status = 'won'), 0) AS revenue,
               count(*) FILTER (status = 'won') AS won,
               count(*) FILTER (status = 'lost') AS lost
        FROM deals WHERE close_date >= ? AND close_date < ? AND status <> 'open'
        GROUP BY 1 ORDER BY revenue DESC, key
        """,
        [start, end],
    ).fetchall()
    return [
        {
            "key": key,
            "revenue": float(revenue),
            "won": int(won),
            "lost": int(lost),
            "win_rate": ratio(int(won), int(won) + int(lost)),
        }
        for key, revenue, won, lost in rows
    ]


def revenue_series(data: Dataset, buckets: list[tuple[date, date]]) -> list[float]:
    """Won revenue per bucket ``[start, end)`` (0 for a bucket without won deals)."""
    if not buckets:
        return []
    return list(data.memo(("revenue_series", tuple(buckets)), lambda: _series(data, buckets)))


def _series(data: Dataset, buckets: list[tuple[date, date]]) -> list[float]:
    # Won revenue per close date first (one pass, a row per day), then per bucket: the range
    # join then pairs buckets with days, not with deals.
    rows = data.con.execute(
        """
        WITH days AS (
            SELECT close_date AS day, sum(amount) AS revenue FROM deals
            WHERE status = 'won' AND close_date IS NOT NULL GROUP BY close_date),
        b AS (SELECT unnest(?::DATE[]) AS s, unnest(?::DATE[]) AS e, unnest(range(?)) AS i)
        SELECT b.i, coalesce(sum(days.revenue), 0)
        FROM b LEFT JOIN days ON days.day >= b.s AND days.day < b.e
        GROUP BY b.i ORDER BY b.i
        """,
        [[b[0] for b in buckets], [b[1] for b in buckets], len(buckets)],
    ).fetchall()
    return [float(v) for _, v in rows]


def close_date_span(data: Dataset) -> tuple[date | None, date | None]:
    """First and last close date of the closed deals (the span the closed metrics cover)."""

    def span() -> tuple[date | None, date | None]:
        row = data.con.execute(
            "SELECT min(close_date), max(close_date) FROM deals WHERE status <> 'open'"
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    return data.memo(("close_date_span",), span)
