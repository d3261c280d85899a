"""Canonical tables, their column types, and the mapping presets of known exports.

Every report reads the same canonical tables (see
:data:`opscope.config.reports.CANONICAL_COLUMNS`): ``deals`` and, when a source has them,
``owners``, ``products``, ``accounts``, ``leads``, ``targets``, ``automations``,
``nps_responses`` and ``competitors``. A *mapping* says where each comes from and which source
column holds each canonical column. Presets:

* ``maven_crm`` — Maven Analytics' "CRM Sales Opportunities" (``sales_pipeline.csv``,
  ``sales_teams.csv``, ``products.csv``, ``accounts.csv``): stages Prospecting → Engaging →
  Won/Lost.
* ``hubspot_deals`` — HubSpot's deal export (Record ID, Deal Name, Deal Stage, Amount, Deal
  owner, Close Date, Create Date, Pipeline); stages and probabilities of HubSpot's default
  sales pipeline (Appointment scheduled 20 % … Contract sent 90 %).
* ``salesforce_opportunities`` — Salesforce's Opportunity object (Id, Name, StageName,
  Amount, Probability, CloseDate, CreatedDate, OwnerId, IsClosed, IsWon,
  ForecastCategoryName); won and lost come from IsWon/IsClosed, probabilities (in percent)
  from the Probability column; stages of Salesforce's default sales process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opscope.config.reports import (
    CANONICAL_COLUMNS,
    DealsMapping,
    MappingConfig,
    MappingPreset,
    TableMapping,
)

ColumnKind = Literal["text", "date", "money", "number", "bool"]

#: Kind of every canonical column that is not text.
_KINDS: dict[str, ColumnKind] = {
    "created_date": "date",
    "engaged_date": "date",
    "close_date": "date",
    "mql_date": "date",
    "sql_date": "date",
    "opportunity_date": "date",
    "date": "date",
    "amount": "money",
    "list_price": "money",
    "price": "money",
    "hourly_cost": "money",
    "running_cost": "money",
    "revenue": "number",
    "employees": "number",
    "probability": "number",
    "value": "number",
    "runs": "number",
    "minutes_saved_per_run": "number",
    "score": "number",
    "is_won": "bool",
    "is_closed": "bool",
}

#: Tables whose rows name the values deals refer to (deal column → lookup table).
LOOKUPS: dict[str, str] = {"owner": "owners", "product": "products", "account": "accounts"}


def column_kind(column: str) -> ColumnKind:
    """How the canonical ``column`` is parsed: ``text``, ``date``, ``money`` (currency strings
    allowed), ``number`` or ``bool``."""
    return _KINDS.get(column, "text")


PRESETS: dict[MappingPreset, MappingConfig] = {
    "maven_crm": MappingConfig(
        deals=DealsMapping(
            file="sales_pipeline.csv",
            columns={
                "id": "opportunity_id",
                "owner": "sales_agent",
                "product": "product",
                "account": "account",
                "stage": "deal_stage",
                "engaged_date": "engage_date",
                "close_date": "close_date",
                "amount": "close_value",
            },
            won_stages=["Won"],
            lost_stages=["Lost"],
            stage_order=["Prospecting", "Engaging", "Won"],
        ),
        owners=TableMapping(
            file="sales_teams.csv",
            columns={"owner": "sales_agent", "team": "manager", "region": "regional_office"},
        ),
        products=TableMapping(
            file="products.csv",
            columns={"product": "product", "series": "series", "list_price": "sales_price"},
        ),
        accounts=TableMapping(
            file="accounts.csv",
            columns={
                "account": "account",
                "segment": "sector",
                "country": "office_location",
                "employees": "employees",
                "revenue": "revenue",
            },
        ),
    ),
    "hubspot_deals": MappingConfig(
        deals=DealsMapping(
            file="*.csv",
            columns={
                "id": "Record ID",
                "name": "Deal Name",
                "stage": "Deal Stage",
                "amount": "Amount",
                "owner": "Deal owner",
                "close_date": "Close Date",
                "created_date": "Create Date",
                "pipeline": "Pipeline",
            },
            won_stages=["Closed Won"],
            lost_stages=["Closed Lost"],
            stage_order=[
                "Appointment Scheduled",
                "Qualified To Buy",
                "Presentation Scheduled",
                "Decision Maker Bought-In",
                "Contract Sent",
                "Closed Won",
            ],
            stage_probabilities={
                "Appointment Scheduled": 0.2,
                "Qualified To Buy": 0.4,
                "Presentation Scheduled": 0.6,
                "Decision Maker Bought-In": 0.8,
                "Contract Sent": 0.9,
            },
        ),
    ),
    "salesforce_opportunities": MappingConfig(
        deals=DealsMapping(
            file="*.csv",
            table="Opportunity",
            columns={
                "id": "Id",
                "name": "Name",
                "stage": "StageName",
                "amount": "Amount",
                "probability": "Probability",
                "close_date": "CloseDate",
                "created_date": "CreatedDate",
                "owner": "OwnerId",
                "is_closed": "IsClosed",
                "is_won": "IsWon",
                "pipeline": "ForecastCategoryName",
            },
            stage_order=[
                "Prospecting",
                "Qualification",
                "Needs Analysis",
                "Value Proposition",
                "Id. Decision Makers",
                "Perception Analysis",
                "Proposal/Price Quote",
                "Negotiation/Review",
                "Closed Won",
            ],
            probability_percent=True,
        ),
    ),
}


@dataclass(frozen=True)
class ResolvedMapping:
    """A mapping with its preset applied: the tables it defines, ``deals`` always among them."""

    deals: DealsMapping
    tables: dict[str, TableMapping]


def resolve_mapping(mapping: MappingConfig) -> ResolvedMapping:
    """Apply ``mapping.preset`` (if any) and the tables written next to it: a field written in
    the configuration replaces the preset's field, ``columns`` are merged key by key.

    Raises :class:`ValueError` when no ``deals`` table results.
    """
    base = PRESETS[mapping.preset] if mapping.preset else MappingConfig()
    tables: dict[str, TableMapping] = {}
    for name in CANONICAL_COLUMNS:
        preset_table: TableMapping | None = getattr(base, name)
        own: TableMapping | None = getattr(mapping, name)
        if own is None:
            if preset_table is not None:
                tables[name] = preset_table
            continue
        if preset_table is None:
            tables[name] = own
            continue
        changes = {field: getattr(own, field) for field in own.model_fields_set}
        if "columns" in changes:
            changes["columns"] = {**preset_table.columns, **own.columns}
        tables[name] = preset_table.model_copy(update=changes)
    deals = tables.get("deals")
    if not isinstance(deals, DealsMapping):
        raise ValueError("the mapping has no deals table (give a preset or mapping.deals)")
    return ResolvedMapping(deals=deals, tables=tables)
