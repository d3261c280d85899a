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


def test_benchmark_names_are_checked_and_the_readme_example_validates() -> None:
    # the README's example: pipeline_coverage is the threshold of a recommendation rule
    ok = GOOD.replace(
        "    to: [ops-email]\n",
        "    to: [ops-email]\n    benchmarks: {win_rate: 0.6, pipeline_coverage: 3}\n",
    )
    assert parse_config(ok, environ={}).config.reports["sales_performance"].benchmarks == {
        "win_rate": 0.6,
        "pipeline_coverage": 3,
    }
    found = problems(ok.replace("win_rate: 0.6", "winrate: 0.6"))
    assert len(found) == 1
    assert found[0].startswith(
        'opscope.yaml:13:27 reports.sales_performance.benchmarks.winrate: unknown benchmark "winrate"'
        " (benchmarks: revenue.won, "
    )
    assert "win_rate" in found[0] and "pipeline_coverage" in found[0]
    # a value that is not a number: one message, not one per member of a type union
    assert problems(ok.replace("win_rate: 0.6", "win_rate: high")) == [
        "opscope.yaml:13:28 reports.sales_performance.benchmarks.win_rate: expected a number, "
        'got "high"'
    ]


def test_a_stage_probability_outside_the_reports_stages_is_refused() -> None:
    text = GOOD.replace(
        "    to: [ops-email]\n",
        "    to: [ops-email]\n    stages: [Prospecting, Engaging, Won]\n"
        "    stage_probabilities: {Prospectin: 0.1, Engaging: 0.5}\n",
    )
    assert problems(text) == [
        "opscope.yaml:14:39 reports.sales_performance.stage_probabilities.Prospectin: stage "
        '"Prospectin" is not one of the report\'s stages (Prospecting, Engaging, Won)'
    ]


def test_an_invalid_date_format_is_refused_when_the_configuration_loads() -> None:
    text = GOOD.replace(
        "  crm: {path: data/crm, mapping: maven_crm}\n",
        "  crm:\n    path: data/crm\n    mapping:\n      preset: hubspot_deals\n"
        '      deals: {date_format: "%d/%m/%Q"}\n',
    )
    assert problems(text) == [
        "opscope.yaml:8:28 sources.crm.mapping.deals.date_format: not a strptime date format "
        '(unknown directive %Q; e.g. "%m/%d/%Y", "%d.%m.%Y %H:%M"), got "%d/%m/%Q"'
    ]
    # DuckDB's directives, unpadded ones included, are accepted
    good = text.replace("%d/%m/%Q", "%-d.%-m.%Y %H:%M:%S")
    assert parse_config(good, environ={}).config.sources["crm"].mapping.deals is not None


def test_currency_and_locale_are_checked_against_cldr() -> None:
    text = GOOD.replace(
        "mapping: maven_crm}", "mapping: maven_crm, currency: XYZ, locale: klingon}"
    )
    assert problems(text) == [
        "opscope.yaml:4:55 sources.crm.currency: not an ISO 4217 currency code (e.g. USD, EUR, "
        'GBP, CHF), got "XYZ"',
        "opscope.yaml:4:68 sources.crm.locale: not a locale known to CLDR (e.g. en_US, de_DE, "
        'fr_FR, de_CH), got "klingon"',
    ]
    good = GOOD.replace("mapping: maven_crm}", "mapping: maven_crm, currency: CHF, locale: de_CH}")
    source = parse_config(good, environ={}).config.sources["crm"]
    assert (source.currency, source.locale) == ("CHF", "de_CH")
