"""Values as readers see them: CLDR conventions per locale, Excel format codes, "n/a"."""

from __future__ import annotations

import math

import pytest

from opscope.errors import RenderError
from opscope.report.render.locales import NumberStyle

NBSP, NNBSP = "\xa0", "\u202f"


@pytest.mark.parametrize(
    ("locale", "currency", "value", "expected"),
    [
        ("en_US", "USD", 1234.5, "$1,234.50"),
        ("en_US", "USD", -1234.5, "-$1,234.50"),
        ("de_DE", "EUR", 1234.5, f"1.234,50{NBSP}€"),
        ("fr_FR", "EUR", 1234.5, f"1{NNBSP}234,50{NBSP}€"),
        ("en_GB", "GBP", 1234.5, "£1,234.50"),
        # (CLDR says Spanish does not group four digits, "1234,50 €"; Babel does not implement
        # minimumGroupingDigits, so only five digits are checked for es_ES)
        ("es_ES", "EUR", 12345.5, f"12.345,50{NBSP}€"),
        ("en_US", "JPY", 1234.5, "¥1,234"),  # yen has no minor unit; half to even
    ],
)
def test_money_follows_the_locale(locale: str, currency: str, value: float, expected: str) -> None:
    assert NumberStyle(locale, currency).format(value, "money") == expected


@pytest.mark.parametrize(
    ("kind", "value", "en_us", "de_de"),
    [
        ("ratio", 0.6315, "63.2%", f"63,2{NBSP}%"),
        ("ratio", 0.0, "0.0%", f"0,0{NBSP}%"),
        ("days", 12.34, "12.3 d", "12,3 d"),
        ("count", 4238, "4,238", "4.238"),
        ("count", 4237.6, "4,238", "4.238"),
        ("number", 1234.567, "1,234.57", "1.234,57"),
        ("text", "Zoë", "Zoë", "Zoë"),
        ("date", "2017-10-01", "2017-10-01", "2017-10-01"),
    ],
)
def test_kinds(kind: str, value: object, en_us: str, de_de: str) -> None:
    assert NumberStyle("en_US", "USD").format(value, kind) == en_us  # type: ignore[arg-type]
    assert NumberStyle("de_DE", "EUR").format(value, kind) == de_de  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf, "12", True])
@pytest.mark.parametrize("kind", ["money", "ratio", "days", "count", "number"])
def test_missing_and_non_finite_values_read_n_a(value: object, kind: str) -> None:
    assert NumberStyle("en_US", "USD").format(value, kind) == "n/a"  # type: ignore[arg-type]


def test_growth_has_a_sign_and_a_zero_denominator_reads_n_a() -> None:
    style = NumberStyle("en_US", "USD")
    assert style.growth(0.12233) == "+12.2%"
    assert style.growth(-0.1186) == "-11.9%"
    assert style.growth(None) == "n/a"
    assert style.growth(math.inf) == "n/a"


def test_numpy_scalars_are_numbers() -> None:
    numpy = pytest.importorskip("numpy")
    style = NumberStyle("en_US", "USD")
    assert style.format(numpy.int64(4238), "count") == "4,238"
    assert style.format(numpy.float64("nan"), "money") == "n/a"


@pytest.mark.parametrize(
    ("locale", "currency", "expected"),
    [
        ("en_US", "USD", '"$"#,##0.00'),
        ("de_DE", "EUR", '#,##0.00" €"'),
        ("fr_FR", "EUR", '#,##0.00" €"'),
        ("es_ES", "EUR", '#,##0.00" €"'),
        ("en_GB", "GBP", '"£"#,##0.00'),
        ("en_US", "JPY", '"¥"#,##0'),
    ],
)
def test_excel_money_format(locale: str, currency: str, expected: str) -> None:
    assert NumberStyle(locale, currency).excel_format("money") == expected


def test_excel_formats_of_other_kinds() -> None:
    style = NumberStyle("de_DE", "EUR")
    assert style.excel_format("ratio") == "0.0%"
    assert style.excel_format("days") == '#,##0.0" d"'
    assert style.excel_format("count") == "#,##0"


def test_unknown_locale_or_currency_is_a_clear_error() -> None:
    with pytest.raises(RenderError, match="unknown locale 'xx_YY'"):
        NumberStyle("xx_YY", "USD")
    with pytest.raises(RenderError, match="unknown currency 'EURO'"):
        NumberStyle("en_US", "EURO")
