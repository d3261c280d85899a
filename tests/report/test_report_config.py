"""The sources and reports sections: validated with file, line and field."""

from __future__ import annotations

import pytest

from opscope.config import parse_config
from opscope.errors import ConfigFileError

GOOD = """\
notify:
  channels: {ops-email: "json://127.0.0.1:9/hook"}
sources:
  crm: {path: data/crm, mapping: maven_crm}
reports:
  sales_performance:
    source: crm
    period: weekly
    formats: [xlsx, html]
    schedule: "0 8 * * MON"
    timezone: Europe/Madrid
    to: [ops-email]
  q-exec: {report: executive_summary, period: quarterly, timezone: Asia/Tokyo}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, environ={})
    return [str(p) for p in caught.value.problems]


def test_the_design_sketch_validates() -> None:
    config = parse_config(GOOD, environ={}).config
    report = config.reports["sales_performance"]
    assert (report.schedule, report.timezone, report.to) == (
        "0 8 * * MON",
        "Europe/Madrid",
        ["ops-email"],
    )
    assert config.reports["q-exec"].report == "executive_summary"
    assert config.sources["crm"].mapping.preset == "maven_crm"


def test_a_bad_cron_expression_names_line_and_field() -> None:
    text = GOOD.replace('"0 8 * * MON"', '"0 25 * * MON"')
    assert problems(text) == [
        "opscope.yaml:10:15 reports.sales_performance.schedule: expected a cron expression of "
        'five fields (minute hour day month weekday), like "0 8 * * MON", got "0 25 * * MON"'
    ]


def test_an_unknown_timezone_names_line_and_field() -> None:
    found = problems(GOOD.replace("Europe/Madrid", "Europe/Madird"))
    assert found == [
        "opscope.yaml:11:15 reports.sales_performance.timezone: unknown IANA timezone "
        '"Europe/Madird" (e.g. Europe/Madrid, America/New_York, UTC)'
    ]


def test_unknown_source_channel_and_report_are_named() -> None:
    text = GOOD.replace("source: crm", "source: crn").replace("[ops-email]", "[ops-mail]")
    text = text.replace("q-exec: {report: executive_summary,", "q-exec: {")
    found = problems(text)
    assert (
        'opscope.yaml:7:13 reports.sales_performance.source: unknown source "crn" (sources: crm)'
        in found
    )
    assert any(
        p.startswith("opscope.yaml:12:10 reports.sales_performance.to[0]: unknown channel")
        for p in found
    )
    assert any("reports.q-exec" in p and "is not a report" in p for p in found)


def test_an_unknown_preset_is_refused() -> None:
    found = problems(GOOD.replace("mapping: maven_crm", "mapping: maven"))
    assert found == [
        "opscope.yaml:4:34 sources.crm.mapping.preset: expected 'maven_crm', 'hubspot_deals' "
        """or 'salesforce_opportunities', got "maven\""""
    ]
