"""The competitive analysis: price position, feature matrix and threats.

Input: the ``competitors`` table, one row per competitor and product: ``competitor``,
``product`` (the product or category compared), ``price`` and ``features`` (``;``-separated).
Rows whose competitor is ``reports.NAME.own_company`` (default ``us``, case-insensitive) are
one's own offer, shown under that name however a row spells it. Rows without a price are left
out of the price comparison, with a data-quality note.

* **price index** of a product = own price / mean competitor price (below 1: cheaper than the
  market); **price rank** = 1 + competitors strictly cheaper;
* **feature matrix**: every feature named by anyone × every company (own first);
* **threats** (rule ``cheaper_with_features``): a competitor at least 10 % cheaper than us on a
  product while offering at least as many features; (rule ``missing_feature``): a feature that
  at least half of the competitors offer and we do not.

Metrics: ``price.<product>.ours``, ``price.<product>.competitor_mean``,
``price.<product>.index``, ``price.<product>.rank``, ``features.<company>.count``,
``threats.count``.
"""

from __future__ import annotations

from typing import Any

from opscope.report.building import ReportRequest, new_document, quality_section
from opscope.report.deals import ratio
from opscope.report.document import Chart, Column, Notes, ReportDocument, Section, Series, Table
from opscope.report.sources import Dataset


def competitive_analysis(data: Dataset, request: ReportRequest) -> ReportDocument:
    """The competitive analysis over the ``competitors`` table (the period only labels it)."""
    doc = new_document("competitive_analysis", data, request, None)
    if not data.has("competitors"):
        doc.sections.append(
            Section("prices", "Price position", omitted="no competitors table in the source")
        )
        quality_section(doc, data, [])
        return doc
    own = request.settings.own_company.casefold()
    rows = data.con.execute(
        "SELECT competitor, product, price, features FROM competitors "
        "WHERE competitor IS NOT NULL ORDER BY competitor, product"
    ).fetchall()
    notes: list[str] = []
    offers: dict[str, dict[str, tuple[float | None, set[str]]]] = {}
    unpriced: list[str] = []
    for spelt, product, price, features in rows:
        names = {f.strip() for f in (features or "").split(";") if f.strip()}
        # `us` and `Us` are one company
        competitor = request.settings.own_company if spelt.casefold() == own else spelt
        if price is None:
            unpriced.append(f"{competitor}/{product or '(none)'}")
        offers.setdefault(product or "(none)", {})[competitor] = (
            None if price is None else float(price),
            names,
        )
    companies = sorted(
        {c for _, c_map in offers.items() for c in c_map},
        key=lambda c: (c.casefold() != own, c.casefold()),
    )
    if unpriced:
        notes.append(
            f"competitors: {len(unpriced)} row(s) without a price ({', '.join(unpriced[:5])}"
            f"{'…' if len(unpriced) > 5 else ''}): left out of the price comparison"
        )
    ours = [c for c in companies if c.casefold() == own]
    if not ours:
        notes.append(
            f"competitors: no rows of {request.settings.own_company!r} "
            "(reports.NAME.own_company): price index and threats are n/a"
        )
    m = doc.metrics
    price_rows: list[dict[str, Any]] = []
    threats: list[str] = []
    for product, by_company in sorted(offers.items()):
        own_offer = next((v for c, v in by_company.items() if c.casefold() == own), None)
        others = {c: v for c, v in by_company.items() if c.casefold() != own}
        prices = [p for p, _ in others.values() if p is not None]
        mean = sum(prices) / len(prices) if prices else None
        our_price = own_offer[0] if own_offer else None
        index = ratio(our_price, mean)
        rank = None if our_price is None else 1 + sum(1 for p in prices if p < our_price)
        price_rows.append(
            {
                "product": product,
                "ours": our_price,
                "competitor_mean": mean,
                "competitor_min": min(prices) if prices else None,
                "competitor_max": max(prices) if prices else None,
                "index": index,
                "rank": rank,
                "competitors": len(others),
            }
        )
        m[f"price.{product}.ours"] = our_price
        m[f"price.{product}.competitor_mean"] = mean
        m[f"price.{product}.index"] = index
        m[f"price.{product}.rank"] = rank
        if own_offer is None or our_price is None:
            continue
        for company, (price, features) in sorted(others.items()):
            if (
                price is not None
                and price <= 0.9 * our_price
                and len(features) >= len(own_offer[1])
            ):
                threats.append(
                    f"[cheaper_with_features] {company} sells {product} at {price:,.2f}, "
                    f"{1 - price / our_price:.0%} under our {our_price:,.2f}, with "
                    f"{len(features)} feature(s) against our {len(own_offer[1])}."
                )
    all_features = sorted({f for c_map in offers.values() for _, fs in c_map.values() for f in fs})
    has: dict[str, set[str]] = {}
    for c_map in offers.values():
        for company, (_, fs) in c_map.items():
            has.setdefault(company, set()).update(fs)
    for company in companies:
        m[f"features.{company}.count"] = len(has.get(company, set()))
    rivals = [c for c in companies if c.casefold() != own]
    if ours and rivals:
        mine = has.get(ours[0], set())
        for feature in all_features:
            offering = [c for c in rivals if feature in has.get(c, set())]
            if feature not in mine and len(offering) * 2 >= len(rivals):
                threats.append(
                    f"[missing_feature] {len(offering)} of {len(rivals)} "
                    f"competitors offer {feature!r}; we do not."
                )
    m["threats.count"] = len(threats)
    doc.sections.append(
        Section(
            "prices",
            "Price position",
            [
                Table(
                    "Price position",
                    [
                        Column("product", "Product"),
                        Column("ours", "Our price", "money"),
                        Column("competitor_mean", "Competitor mean", "money"),
                        Column("competitor_min", "Lowest", "money"),
                        Column("competitor_max", "Highest", "money"),
                        Column("index", "Price index", "number"),
                        Column("rank", "Price rank", "count"),
                    ],
                    price_rows,
                    note="Price index = our price / mean competitor price; rank 1 = cheapest.",
                ),
                Chart(
                    "Prices by product",
                    "bar",
                    [r["product"] for r in price_rows],
                    [
                        Series(
                            company,
                            [
                                offers[r["product"]].get(company, (None, set()))[0]
                                for r in price_rows
                            ],
                        )
                        for company in companies
                    ],
                    value_kind="money",
                ),
            ],
        )
    )
    doc.sections.append(
        Section(
            "features",
            "Feature matrix",
            [
                Table(
                    "Feature matrix",
                    [Column("feature", "Feature"), *[Column(c, c) for c in companies]],
                    [
                        {
                            "feature": f,
                            **{c: "yes" if f in has.get(c, set()) else "no" for c in companies},
                        }
                        for f in all_features
                    ],
                )
            ]
            if all_features
            else [],
            omitted=None if all_features else "no features listed in the source",
        )
    )
    doc.sections.append(
        Section(
            "threats",
            "Threats",
            [Notes("Threats", threats or ["no rule triggered"], style="recommendations")],
        )
    )
    quality_section(doc, data, notes)
    return doc
