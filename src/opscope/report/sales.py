"""The sales performance report: funnel, win rate, deal size, cycle, pipeline, leaderboard.

Sections (ids): ``kpis``, ``funnel``, ``pipeline``, ``leaderboard``, ``teams``, ``regions``,
``benchmarks``, ``recommendations``, ``data_quality``. Definitions are those of
:mod:`opscope.report.deals`. Metric names (``ReportDocument.metrics``):

``revenue.won``, ``deals.won``, ``deals.lost``, ``win_rate``, ``deal_size.average``,
``sales_cycle.mean_days``, ``sales_cycle.median_days``, ``pipeline.open.count``,
``pipeline.open.value``, ``pipeline.weighted``, ``pipeline.velocity``,
``funnel.<stage>.reached``, ``funnel.<stage>.conversion``, ``funnel.lowest_conversion``,
``pipeline.coverage`` (open pipeline value / won revenue), ``reps.count``,
``reps.without_deals``, ``rep.<owner>.{revenue,won,lost,win_rate,average_deal,rank}``,
``team.<team>.{…}``, ``region.<region>.{…}``; each headline metric also as
``<name>.previous`` and ``<name>.last_year``.

Recommendations are rules; each line names its rule and the number that triggered it:

* ``win_rate_below_benchmark`` — win rate under ``benchmarks.win_rate``;
* ``win_rate_drop`` — win rate 5 points or more below the previous period's;
* ``weakest_stage`` — the lowest stage-to-stage conversion, when under
  ``benchmarks.stage_conversion`` (default 0.5);
* ``rep_below_team`` — a rep with ≥ 10 closed deals whose win rate is 10 points or more under
  the team's (the overall win rate);
* ``reps_without_deals`` — reps who closed nothing in the period;
* ``pipeline_coverage`` — open pipeline value / the period's won revenue under
  ``benchmarks.pipeline_coverage`` (default 3, the usual 3× coverage rule);
* ``sales_cycle_above_benchmark`` — mean sales cycle over ``benchmarks["sales_cycle.mean_days"]``.

The benchmarks table compares each configured benchmark with its metric
(``pipeline_coverage`` with ``pipeline.coverage``, ``stage_conversion`` with
``funnel.lowest_conversion``). The data-quality section names configured stages that no deal
is in and open deals in stages outside the stage order (:func:`stage_checks`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from opscope.report.building import (
    Direction,
    ReportRequest,
    closing_sections,
    flag_partial_comparisons,
    kpi,
    new_document,
    period_partial,
)
from opscope.report.deals import (
    FIRST_DATE,
    FUNNEL_METHOD,
    NO_DATA,
    ClosedDeals,
    close_date_span,
    closed_deals,
    closed_in,
    data_end,
    funnel,
    open_pipeline,
    ratio,
    undated_deals,
    velocity,
)
from opscope.report.document import (
    Chart,
    Column,
    KpiCards,
    Notes,
    ReportDocument,
    Section,
    Series,
    Table,
    metric_kind,
)
from opscope.report.sources import Dataset

_GROUP_COLUMNS = [
    Column("revenue", "Revenue", "money"),
    Column("won", "Won", "count"),
    Column("lost", "Lost", "count"),
    Column("win_rate", "Win rate", "ratio"),
    Column("average_deal", "Average deal", "money"),
]


def sales_performance(data: Dataset, request: ReportRequest) -> ReportDocument:
    """The sales performance report of ``request.period`` over ``data``."""
    period = request.period
    first, last = close_date_span(data)
    partial = period_partial(data, request, first, last)
    doc = new_document("sales_performance", data, request, partial)
    settings = request.settings
    order = list(settings.stages) or list(data.stage_order)
    probabilities = dict(settings.stage_probabilities) or dict(data.stage_probabilities)
    notes: list[str] = [partial] if partial else []

    now = closed_deals(data, period.start, period.end)
    prev_p, year_p = period.previous(), period.same_period_last_year()
    prev_or_none = closed_in(data, prev_p.start, prev_p.end, (first, last))
    year_or_none = closed_in(data, year_p.start, year_p.end, (first, last))
    prev, year = prev_or_none or NO_DATA, year_or_none or NO_DATA
    for label, found in ((prev_p.label, prev_or_none), (year_p.label, year_or_none)):
        if found is None:
            notes.append(f"no closed deals in the data for {label}: comparisons with it are n/a")
    pipe = open_pipeline(data, period.end, probabilities)
    speed = velocity(pipe.count, now)
    m = doc.metrics
    headline: dict[str, tuple[float | None, float | None, float | None]] = {
        "revenue.won": (now.revenue, prev.revenue, year.revenue),
        "deals.won": (now.won, prev.won, year.won),
        "deals.lost": (now.lost, prev.lost, year.lost),
        "win_rate": (now.win_rate, prev.win_rate, year.win_rate),
        "deal_size.average": (now.average_deal, prev.average_deal, year.average_deal),
        "sales_cycle.mean_days": (now.cycle_mean_days, prev.cycle_mean_days, year.cycle_mean_days),
        "sales_cycle.median_days": (
            now.cycle_median_days,
            prev.cycle_median_days,
            year.cycle_median_days,
        ),
    }
    if prev_or_none is None or year_or_none is None:
        headline = {
            k: (v[0], v[1] if prev_or_none else None, v[2] if year_or_none else None)
            for k, v in headline.items()
        }
    for name, (cur, before, last_year) in headline.items():
        m[name], m[f"{name}.previous"], m[f"{name}.last_year"] = cur, before, last_year
    m.update(
        {
            "pipeline.open.count": pipe.count,
            "pipeline.open.value": pipe.value,
            "pipeline.weighted": pipe.weighted,
            "pipeline.velocity": speed,
        }
    )
    targets = settings.targets
    card_specs: list[tuple[str, str, str, Direction]] = [
        ("Won revenue", "money", "revenue.won", "higher"),
        ("Won deals", "count", "deals.won", "higher"),
        ("Win rate", "ratio", "win_rate", "higher"),
        ("Average deal", "money", "deal_size.average", "higher"),
        ("Sales cycle (mean days)", "days", "sales_cycle.mean_days", "lower"),
    ]
    cards = [
        kpi(
            title,
            kind,
            headline[key][0],
            previous=headline[key][1],
            last_year=headline[key][2],
            target=targets.get(key),
            direction=direction,
        )
        for title, kind, key, direction in card_specs
    ]
    cards.append(
        kpi("Open pipeline", "money", pipe.value, previous=None, last_year=None, target=None)
    )
    notes += flag_partial_comparisons(
        cards, request, (first, last), m, only={c.name for c in cards[:-1]}
    )
    doc.sections.append(
        Section(
            "kpis",
            "Key figures",
            [
                KpiCards(cards),
                Notes(
                    "Definitions",
                    [
                        "Win rate = won / (won + lost) over deals closed in the period.",
                        "Average deal = won revenue / won deals. Sales cycle = close date − "
                        "created date (engaged date where there is no created date) of won "
                        "deals.",
                        f"Compared with {prev_p.label} (previous period) and {year_p.label} "
                        "(same period last year).",
                    ],
                ),
            ],
        )
    )

    steps = funnel(data, period.start, period.end, order)
    notes += stage_checks(data, order, probabilities, period.start, period.end)
    undated = undated_deals(data)
    for step in steps:
        m[f"funnel.{step.stage}.reached"] = step.reached
        m[f"funnel.{step.stage}.conversion"] = step.conversion
    if not order:
        doc.sections.append(
            Section(
                "funnel",
                "Funnel",
                omitted="no stage order configured "
                "(reports.NAME.stages or the mapping's stage_order)",
            )
        )
    elif not steps or steps[0].reached == 0:
        doc.sections.append(
            Section("funnel", "Funnel", omitted="no data: no deals were created in the period")
        )
    else:
        doc.sections.append(
            Section(
                "funnel",
                "Funnel",
                [
                    Chart(
                        "Funnel",
                        "funnel",
                        [s.stage for s in steps],
                        [Series("Deals", [float(s.reached) for s in steps])],
                        value_kind="count",
                    ),
                    Table(
                        "Stage conversion",
                        [
                            Column("stage", "Stage"),
                            Column("reached", "Deals reaching it", "count"),
                            Column("conversion", "From previous stage", "ratio"),
                            Column("from_first", "From first stage", "ratio"),
                        ],
                        [
                            {
                                "stage": s.stage,
                                "reached": s.reached,
                                "conversion": s.conversion,
                                "from_first": s.from_first,
                            }
                            for s in steps
                        ],
                    ),
                    Notes(
                        "Method",
                        [FUNNEL_METHOD]
                        + (
                            [
                                f"{undated:,} deal(s) have no created or "
                                "engaged date and are in no period's funnel."
                            ]
                            if undated
                            else []
                        ),
                        style="info",
                    ),
                ],
            )
        )

    pipeline_lines = [
        f"Open at the end of {period.label}: deals not closed by then and created before.",
        "Velocity = open deals × win rate × average deal / mean sales cycle (per day).",
    ]
    last_date = data_end(data)
    if pipe.undated_counted and pipe.undated:
        pipeline_lines.append(
            f"{pipe.undated:,} open deal(s) have no created or engaged date: the source shows "
            "them open now, so they count only after the data's last date"
            f"{f' ({last_date.isoformat()})' if last_date else ''}."
        )
    elif not pipe.undated_counted and undated:
        pipeline_lines.append(
            f"Deals without a created or engaged date are known open only now (after the "
            f"data's last date, {last_date.isoformat() if last_date else 'n/a'}): not counted "
            f"at the end of {period.label}."
        )
    pipeline_lines.append(
        "A deal open then but lost later is valued at its product's list price (a lost deal's "
        "amount of 0 is its close value)."
    )
    if pipe.valued_at_list_price:
        pipeline_lines.append(
            f"{pipe.valued_at_list_price:,} open deal(s) have no amount in the "
            "source and are valued at their product's list price."
        )
    if pipe.without_value:
        pipeline_lines.append(
            f"{pipe.without_value:,} open deal(s) have no amount and no list "
            "price: counted, valued 0."
        )
    if pipe.weighted is None:
        pipeline_lines.append(
            "Weighted pipeline n/a: no stage probabilities are configured "
            "(reports.NAME.stage_probabilities)."
        )
    elif pipe.without_probability:
        pipeline_lines.append(
            f"{pipe.without_probability:,} open deal(s) are in a stage without "
            "a probability: weighted 0."
        )
    doc.sections.append(
        Section(
            "pipeline",
            "Pipeline",
            [
                KpiCards(
                    [
                        kpi(
                            "Open deals",
                            "count",
                            pipe.count,
                            previous=None,
                            last_year=None,
                            target=None,
                        ),
                        kpi(
                            "Pipeline value",
                            "money",
                            pipe.value,
                            previous=None,
                            last_year=None,
                            target=None,
                        ),
                        kpi(
                            "Weighted pipeline",
                            "money",
                            pipe.weighted,
                            previous=None,
                            last_year=None,
                            target=None,
                        ),
                        kpi(
                            "Velocity (per day)",
                            "money",
                            speed,
                            previous=None,
                            last_year=None,
                            target=None,
                        ),
                    ]
                ),
                Notes("Method", pipeline_lines),
            ],
        )
    )

    board, without = _leaderboard(data, request)
    m["reps.count"] = len(board)
    m["reps.without_deals"] = len(without)
    for row in board:
        for key in ("revenue", "won", "lost", "win_rate", "average_deal", "rank"):
            m[f"rep.{row['owner']}.{key}"] = row[key]
    doc.sections.append(
        Section(
            "leaderboard",
            "Rep leaderboard",
            [
                Table(
                    "Leaderboard",
                    [
                        Column("rank", "Rank", "count"),
                        Column("owner", "Rep"),
                        Column("team", "Manager"),
                        Column("region", "Region"),
                        *_GROUP_COLUMNS,
                    ],
                    board,
                    note="Reps without closed deals in the period show n/a and no rank.",
                ),
                Chart(
                    "Revenue by rep",
                    "bar",
                    [r["owner"] for r in board],
                    [Series("Revenue", [r["revenue"] for r in board])],
                    value_kind="money",
                ),
            ],
        )
    )
    for section, column, title in (("teams", "team", "Manager"), ("regions", "region", "Region")):
        rows = _rollup(board, column)
        for row in rows:
            for key in ("revenue", "won", "lost", "win_rate", "average_deal", "reps"):
                m[f"{column}.{row[column]}.{key}"] = row[key]
        if rows:
            doc.sections.append(
                Section(
                    section,
                    f"By {title.lower()}",
                    [
                        Table(
                            f"By {title.lower()}",
                            [
                                Column(column, title),
                                Column("reps", "Reps", "count"),
                                *_GROUP_COLUMNS,
                            ],
                            rows,
                        )
                    ],
                )
            )
        else:
            doc.sections.append(
                Section(
                    section,
                    f"By {title.lower()}",
                    omitted=f"the source has no {column} of the reps",
                )
            )

    m["pipeline.coverage"] = ratio(pipe.value, now.revenue)
    conversions = [s.conversion for s in steps if s.conversion is not None]
    m["funnel.lowest_conversion"] = min(conversions) if conversions else None
    bench = _benchmarks(settings.benchmarks, m)
    if bench:
        doc.sections.append(
            Section(
                "benchmarks",
                "Benchmarks",
                [
                    Table(
                        "Against benchmarks",
                        [
                            Column("metric", "Metric"),
                            Column("value", "Value", "number", kind_key="kind"),
                            Column("benchmark", "Benchmark", "number", kind_key="kind"),
                            Column("difference", "Difference", "number", kind_key="kind"),
                        ],
                        bench,
                    )
                ],
            )
        )
    else:
        doc.sections.append(
            Section(
                "benchmarks",
                "Benchmarks",
                omitted="no benchmarks configured (reports.NAME.benchmarks)",
            )
        )

    recs = recommendations(now, prev, steps, board, pipe.value, settings.benchmarks)
    closing_sections(
        doc, data, recs, notes, closed_deals=now.won + now.lost, period_label=period.label
    )
    return doc


def stage_checks(
    data: Dataset,
    order: list[str],
    probabilities: dict[str, float],
    start: date,
    end: date,
) -> list[str]:
    """Data-quality lines on the stage settings: a stage of ``order`` or of ``probabilities``
    that no deal is in (a misspelt stage silently empties its funnel step), and open deals
    created in ``[start, end)`` whose stage is not in ``order`` (left out of the funnel).
    Stages compare case-insensitively. The per-stage counts are computed once per dataset
    and period (both reports ask)."""
    rows = data.memo(("stage_counts", start, end), lambda: _stage_counts(data, start, end))
    return _stage_lines(rows, order, probabilities)


def _stage_counts(data: Dataset, start: date, end: date) -> list[tuple[Any, Any]]:
    """Each stage with its open deals created in ``[start, end)``, ordered by stage."""
    rows: list[tuple[Any, Any]] = data.con.execute(
        f"""
        SELECT stage, count(*) FILTER (status = 'open' AND {FIRST_DATE} >= ? AND {FIRST_DATE} < ?)
        FROM deals WHERE stage IS NOT NULL GROUP BY stage ORDER BY stage
        """,
        [start, end],
    ).fetchall()
    return rows


def _stage_lines(
    rows: list[tuple[Any, Any]], order: list[str], probabilities: dict[str, float]
) -> list[str]:
    present = {str(stage).casefold() for stage, _ in rows}
    lines: list[str] = []
    for what, names in (("stage order", order), ("stage_probabilities", list(probabilities))):
        unknown = [n for n in names if n.casefold() not in present]
        if unknown and rows:
            lines.append(
                f"{what}: no deal is in stage(s) {', '.join(repr(n) for n in unknown)} "
                f"(stages in the data: {', '.join(str(s) for s, _ in rows)})"
            )
    if order:
        known = {n.casefold() for n in order}
        left = [(str(s), int(c)) for s, c in rows if c and str(s).casefold() not in known]
        if left:
            lines.append(
                f"funnel: {sum(c for _, c in left):,} open deal(s) created in the period are "
                f"in stages not in the stage order "
                f"({', '.join(f'{s!r}: {c:,}' for s, c in left)}): left out of the funnel"
            )
    return lines


def _leaderboard(data: Dataset, request: ReportRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """Every rep (from owners and from deals), with revenue, won, lost, win rate, average deal
    and rank by revenue (ties share a rank; reps with no closed deals have none and come last,
    after reps whose revenue is negative). A rep's team and region are those of their latest
    deal (by close, else created date) that names one, else the owners table's."""
    period = request.period
    # One pass over the deals: each owner's team and region (those of the owner's latest deal
    # that has one: a rep who moved is shown where they are now; ties go to the greatest
    # name, so that the choice does not depend on the rows' order) and closed-deal figures in
    # the period; the owners table adds reps without deals and fills what deals leave empty.
    listed = (
        "SELECT owner, min(team) AS team, min(region) AS region FROM owners "
        "WHERE owner IS NOT NULL GROUP BY owner"
        if "owners" in data.tables
        else "SELECT NULL::VARCHAR AS owner, NULL::VARCHAR AS team, NULL::VARCHAR AS region "
        "WHERE false"
    )
    latest = f"coalesce(close_date, {FIRST_DATE})"
    in_period = "close_date >= ? AND close_date < ? AND status <> 'open'"
    rows = data.con.execute(
        f"""
        WITH closed AS (
            SELECT owner,
                   arg_max(team, {{'at': {latest}, 'name': team}}) AS team,
                   arg_max(region, {{'at': {latest}, 'name': region}}) AS region,
                   coalesce(sum(amount) FILTER ({in_period} AND status = 'won'), 0) AS revenue,
                   count(*) FILTER ({in_period} AND status = 'won') AS won,
                   count(*) FILTER ({in_period} AND status = 'lost') AS lost,
                   count(amount) FILTER ({in_period} AND status = 'won') AS priced
            FROM deals WHERE owner IS NOT NULL GROUP BY owner),
        listed AS ({listed}),
        reps AS (
            SELECT owner, coalesce(c.team, l.team) AS team,
                   coalesce(c.region, l.region) AS region
            FROM closed c FULL OUTER JOIN listed l USING (owner))
        SELECT r.owner, r.team, r.region, coalesce(c.revenue, 0), coalesce(c.won, 0),
               coalesce(c.lost, 0), coalesce(c.priced, 0)
        FROM reps r LEFT JOIN closed c USING (owner)
        ORDER BY coalesce(c.won, 0) + coalesce(c.lost, 0) = 0, 4 DESC, 1
        """,
        [period.start, period.end] * 4,
    ).fetchall()
    board: list[dict[str, Any]] = []
    without: list[str] = []
    rank, previous_revenue, position = 0, None, 0
    for owner, team, region, revenue, won, lost, priced in rows:
        closed = int(won) + int(lost)
        row: dict[str, Any] = {
            "owner": owner,
            "team": team,
            "region": region,
            "revenue": float(revenue),
            "won": int(won),
            "lost": int(lost),
            "win_rate": ratio(int(won), closed),
            "average_deal": ratio(float(revenue), int(priced)),
            "rank": None,
        }
        if closed:
            position += 1
            if revenue != previous_revenue:
                rank, previous_revenue = position, revenue
            row["rank"] = rank
        else:
            without.append(owner)
        board.append(row)
    return board, without


def _rollup(board: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in board:
        key = row[column]
        if key is None:
            continue
        g = groups.setdefault(
            key,
            {column: key, "revenue": 0.0, "won": 0, "lost": 0, "reps": 0, "priced_revenue": 0.0},
        )
        g["revenue"] += row["revenue"]
        g["won"] += row["won"]
        g["lost"] += row["lost"]
        g["reps"] += 1
    result = []
    for g in groups.values():
        g.pop("priced_revenue")
        g["win_rate"] = ratio(g["won"], g["won"] + g["lost"])
        g["average_deal"] = ratio(g["revenue"], g["won"])
        result.append(g)
    return sorted(result, key=lambda g: (-g["revenue"], g[column]))


#: Benchmarks that are thresholds of a recommendation rule → the metric the rule compares.
_RULE_METRICS = {
    "pipeline_coverage": "pipeline.coverage",
    "stage_conversion": "funnel.lowest_conversion",
}


def _benchmarks(benchmarks: dict[str, float], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, reference in sorted(benchmarks.items()):
        value = metrics.get(_RULE_METRICS.get(name, name))
        number = value if isinstance(value, int | float) else None
        rows.append(
            {
                "metric": name,
                "value": number,
                "benchmark": float(reference),
                "difference": None if number is None else number - reference,
                "kind": metric_kind(_RULE_METRICS.get(name, name)),
            }
        )
    return rows


def recommendations(
    now: ClosedDeals,
    prev: ClosedDeals,
    steps: list[Any],
    board: list[dict[str, Any]],
    pipeline_value: float,
    benchmarks: dict[str, float],
) -> list[str]:
    """The rules of the module docstring, in that order; each line names its rule."""
    lines: list[str] = []
    wr = now.win_rate
    target = benchmarks.get("win_rate")
    if wr is not None and target is not None and wr < target:
        lines.append(
            f"[win_rate_below_benchmark] Win rate {wr:.1%} is under the benchmark "
            f"{target:.1%}: review qualification of new deals."
        )
    if wr is not None and prev.win_rate is not None and prev.win_rate - wr >= 0.05:
        lines.append(
            f"[win_rate_drop] Win rate fell from {prev.win_rate:.1%} to {wr:.1%}: "
            "look at the deals lost this period."
        )
    conversions = [s for s in steps if s.conversion is not None]
    threshold = benchmarks.get("stage_conversion", 0.5)
    if conversions:
        weakest = min(conversions, key=lambda s: s.conversion)
        index = steps.index(weakest)
        if weakest.conversion < threshold:
            lines.append(
                f"[weakest_stage] Only {weakest.conversion:.1%} of deals move from "
                f"{steps[index - 1].stage} to {weakest.stage} (under "
                f"{threshold:.0%}): the step to work on first."
            )
    if wr is not None:
        laggards = [
            r
            for r in board
            if r["won"] + r["lost"] >= 10
            and r["win_rate"] is not None
            and wr - r["win_rate"] >= 0.10
        ]
        for r in sorted(laggards, key=lambda r: r["win_rate"])[:3]:
            lines.append(
                f"[rep_below_team] {r['owner']} wins {r['win_rate']:.1%} of "
                f"{r['won'] + r['lost']} closed deals against the team's {wr:.1%}: "
                "coaching."
            )
    idle = [r["owner"] for r in board if r["won"] + r["lost"] == 0]
    if idle:
        lines.append(
            f"[reps_without_deals] {len(idle)} rep(s) closed no deal in the period "
            f"({', '.join(idle[:5])}{'…' if len(idle) > 5 else ''}): check their "
            "pipeline or territory."
        )
    coverage = ratio(pipeline_value, now.revenue)
    needed = benchmarks.get("pipeline_coverage", 3.0)
    if coverage is not None and coverage < needed:
        lines.append(
            f"[pipeline_coverage] Open pipeline is {coverage:.2f}× the period's won "
            f"revenue (under {needed:g}×): generate more pipeline."
        )
    cycle = benchmarks.get("sales_cycle.mean_days")
    if cycle is not None and now.cycle_mean_days is not None and now.cycle_mean_days > cycle:
        lines.append(
            f"[sales_cycle_above_benchmark] Mean sales cycle {now.cycle_mean_days:.1f} "
            f"days is over the benchmark {cycle:g} days."
        )
    return lines
