"""Hand-built report documents for the renderer tests (the report computations are tested on
their own; these documents have the shape and size of a real sales performance report)."""

from __future__ import annotations

import math

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

# 35 sales agents, like the CRM sample's team; non-ASCII names on purpose.
REPS = [
    "Anna Snelling",
    "Cecily Lampkin",
    "Versie Hillebrand",
    "Lajuana Vencill",
    "Moses Frase",
    "Jonathan Berthelot",
    "Marty Freudenburg",
    "Gladys Colclough",
    "Niesha Huffines",
    "Darcel Schlecht",
    "Violet Mclelland",
    "Corliss Cosme",
    "Rosie Papadopoulos",
    "Garret Kinder",
    "Wilburn Farren",
    "Elizabeth Anderson",
    "Daniell Hammack",
    "Cassey Cress",
    "Donn Cantrell",
    "Reed Clapper",
    "Boris Faz",
    "Natalya Ivanova",
    "Vicki Laflamme",
    "Rosalina Dieter",
    "Hayden Neloms",
    "Markita Hansen",
    "Elease Gluck",
    "James Ascencio",
    "Kary Hendrixson",
    "Kami Bicknell",
    "Zoë Müller-Lüdenscheidt",
    "José Núñez Peña",
    "Łukasz Żółkiewski",
    "Ørjan Bråthen",
    "Françoise Dupré",
]
QUARTERS = [f"{year}-Q{q}" for year in range(2003, 2018) for q in range(1, 5)]  # 60 quarters


def leaderboard(reps: list[str] = REPS) -> Table:
    """One row per agent: won deals, revenue, win rate, average deal size, sales cycle."""
    rows = []
    for i, rep in enumerate(reps):
        won = 40 + (i * 37) % 90
        lost = 20 + (i * 23) % 60
        revenue = won * (1200.0 + (i * 311) % 2500) + 0.5
        rows.append(
            {
                "rank": i + 1,
                "agent": rep,
                "won": won,
                "revenue": revenue,
                "win_rate": won / (won + lost),
                "deal_size": revenue / won,
                "cycle": 30.0 + (i * 7) % 60 + 0.25,
            }
        )
    return Table(
        title="Leaderboard",
        columns=[
            Column("rank", "#", "count"),
            Column("agent", "Sales agent", "text"),
            Column("won", "Won deals", "count"),
            Column("revenue", "Revenue", "money"),
            Column("win_rate", "Win rate", "ratio"),
            Column("deal_size", "Average deal size", "money"),
            Column("cycle", "Sales cycle", "days"),
        ],
        rows=rows,
        note="Win rate = won / (won + lost).",
    )


def revenue_forecast(points: int = 60, horizon: int = 4) -> Chart:
    """Quarterly revenue with a forecast and its 80 % prediction interval for the last
    ``horizon`` categories, one missing quarter (a gap) and a target line."""
    categories = QUARTERS[:points]
    history = points - horizon
    actual: list[float | None] = [
        100_000 + 2_000 * i + 15_000 * math.sin(i / 2) for i in range(history)
    ] + [None] * horizon
    actual[5] = None  # a quarter without data: a gap, not a zero
    forecast: list[float | None] = [None] * history + [
        100_000 + 2_000 * i for i in range(history, points)
    ]
    lower = [
        None if v is None else v - 9_000 - 1_000 * (k - history) for k, v in enumerate(forecast)
    ]
    upper = [
        None if v is None else v + 9_000 + 1_000 * (k - history) for k, v in enumerate(forecast)
    ]
    return Chart(
        title="Revenue by quarter",
        kind="line",
        categories=categories,
        series=[
            Series("Revenue", actual),
            Series("Forecast", forecast, lower=lower, upper=upper, role="forecast"),
        ],
        value_kind="money",
        target=180_000.0,
        note="Forecast with 80 % prediction interval.",
    )


def sales_document(
    *,
    locale: str = "en_US",
    currency: str = "USD",
    reps: list[str] = REPS,
    extra_charts: int = 0,
    chart_points: int = 12,
) -> ReportDocument:
    """A sales performance report: KPIs, funnel, trend with forecast, leaderboard, products,
    regional split, quota gauge, recommendations, an omitted NPS section."""
    kpis = KpiCards(
        [
            Kpi(
                "Revenue",
                "money",
                1_234_567.5,
                previous=1_100_000.0,
                target=1_500_000.0,
                growth=0.12233,
                status="at_risk",
                trend="up",
                same_period_last_year=980_000.0,
            ),
            Kpi(
                "Win rate",
                "ratio",
                0.6315,
                previous=0.6,
                target=0.65,
                growth=0.0525,
                status="on_track",
                trend="up",
            ),
            Kpi("Average deal size", "money", 2361.0, previous=None, growth=None, trend="new"),
            Kpi(
                "Sales cycle",
                "days",
                12.34,
                previous=14.0,
                growth=-0.1186,
                trend="down",
                note="Median days from engage to close.",
            ),
            Kpi("Won deals", "count", 4238, previous=4000, growth=0.0595, trend="up"),
            Kpi("Pipeline velocity", "money", None, note="No open pipeline: n/a."),
        ]
    )
    funnel = Chart(
        "Stage conversion",
        "funnel",
        ["Prospecting", "Engaging", "Won"],
        [Series("Opportunities", [8800.0, 6200.0, 4238.0])],
        value_kind="count",
    )
    products = Chart(
        "Revenue by product",
        "bar",
        ["GTX Basic", "GTX Pro", "MG Special", "MG Advanced", "GTK 500"],
        [
            Series("2017", [499_263.0, 3_510_578.0, 43_768.0, 2_216_387.0, 400_612.0]),
            Series("2016", [410_000.0, None, 40_000.0, 2_000_000.0, 380_000.0]),
        ],
        value_kind="money",
    )
    regions = Chart(
        "Deals by region and outcome",
        "stacked_bar",
        ["Central", "East", "West"],
        [Series("Won", [1629.0, 1316.0, 1293.0]), Series("Lost", [903.0, 750.0, 856.0])],
        value_kind="count",
    )
    sectors = Chart(
        "Revenue share by sector",
        "pie",
        ["retail", "technology", "medical", "software"],
        [Series("Revenue", [1_867_528.0, 1_515_487.0, 1_359_595.0, 1_077_934.0])],
        value_kind="money",
    )
    quota = Chart(
        "Quota attainment",
        "gauge",
        ["attainment"],
        [Series("Attainment", [0.823])],
        value_kind="ratio",
        target=1.0,
        maximum=1.5,
    )
    charts = [
        Chart(
            f"Won deals per quarter, team {k + 1}",
            "line",
            QUARTERS[:chart_points],
            [
                Series(
                    f"Won deals of team {k + 1}",
                    [float(50 + (k * 13 + i * 7) % 40) for i in range(chart_points)],
                )
            ],
            value_kind="count",
            note=f"Closed won deals of team {k + 1}, by close date.",
        )
        for k in range(extra_charts)
    ]
    return ReportDocument(
        report="sales_performance",
        title="Sales performance",
        period=Period("2017-Q4", "2017-10-01", "2018-01-01", "Europe/Madrid", partial=True),
        generated_at="2018-01-02T08:00:00+01:00",
        currency=currency,
        locale=locale,
        sections=[
            Section("kpis", "Headline KPIs", [kpis]),
            Section("funnel", "Funnel", [funnel, regions]),
            Section("trend", "Revenue trend and forecast", [revenue_forecast(), *charts]),
            Section("team", "Team performance", [leaderboard(reps)]),
            Section("products", "Products and sectors", [products, sectors, quota]),
            Section("nps", "Customer satisfaction (NPS)", omitted="no NPS responses in the source"),
            Section(
                "recommendations",
                "Recommendations",
                [
                    Notes(
                        "Recommendations",
                        [
                            "Coach the three agents with win rate below 55 %.",
                            "Review MG Special pricing: 1.2 % of revenue.",
                        ],
                        style="recommendations",
                    ),
                    Notes(
                        "Warnings",
                        ["2017-Q4 is partial: data ends on 2017-12-31."],
                        style="warnings",
                    ),
                ],
            ),
        ],
        metrics={
            "revenue.won": 1_234_567.5,
            "win_rate": 0.6315,
            "deals.won": 4238,
            "pipeline_velocity": None,
        },
        data_quality=[
            "12 opportunities dropped: close_date before engage_date.",
            "product 'GTXPro' renamed to 'GTX Pro' (1,480 rows).",
        ],
    )


def empty_document(*, locale: str = "en_US") -> ReportDocument:
    """A report whose every section is omitted: no data at all."""
    return ReportDocument(
        report="executive_summary",
        title="Executive summary",
        period=Period("2018-W02", "2018-01-08", "2018-01-15", "UTC"),
        generated_at="2018-01-15T08:00:00+00:00",
        locale=locale,
        sections=[
            Section("kpis", "Headline KPIs", omitted="no closed opportunities in the period"),
            Section("revenue", "Revenue", omitted="no closed opportunities in the period"),
            Section("blank", "Operations"),
        ],
    )
