"""How values look: locale-aware text (Babel/CLDR) and Excel number formats for each value kind.

Every renderer shows a document value through this module, so "n/a", percentages, days and
money look the same in HTML, PDF, XLSX and PPTX:

==========  =========================  =====================  ==========================
kind        en_US                      de_DE                  Excel number format
==========  =========================  =====================  ==========================
money       $1,234.50                  1.234,50 €             ``"$"#,##0.00`` / ``#,##0.00" €"``
ratio       63.2%                      63,2 %                 ``0.0%``
days        12.3 d                     12,3 d                 ``#,##0.0" d"``
count       1,235                      1.235                  ``#,##0``
number      1,234.57                   1.234,57               ``#,##0.00``
==========  =========================  =====================  ==========================

Text comes from CLDR through Babel (currency symbol and its side, decimal and group separators,
the currency's number of decimals: 0 for JPY). Excel format codes are locale-independent: ``,``
and ``.`` in a code mean "group" and "decimal", and Excel shows them with the *viewer's*
separators. So a spreadsheet keeps numbers numeric and takes the currency symbol and its side
from the document's locale, while its separators follow the machine that opens it.

A missing value — ``None``, NaN, ±Inf, or a non-number where a number is expected — is shown as
``"n/a"`` (:data:`MISSING`); nothing here raises on a value.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import (
    UnknownCurrencyError,
    format_currency,
    format_decimal,
    format_percent,
    get_currency_precision,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    validate_currency,
)

from opscope.errors import RenderError
from opscope.report.document import ValueKind

#: What every format shows for a missing value.
MISSING = "n/a"

_STATUS_LABELS = {
    "on_track": "On track",
    "at_risk": "At risk",
    "off_track": "Off track",
    "no_target": "No target",
}
_TREND_LABELS = {"up": "▲ up", "down": "▼ down", "flat": "► flat", "new": "new", "n/a": MISSING}
_NUMBER_PART = re.compile(r"[#0,.]*0[#0,.]*")


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (ints, floats, NumPy scalars), else
    ``None``. Booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class NumberStyle:
    """A document's number conventions: ``locale`` (``en_US``) and ISO 4217 ``currency``.

    Raises :class:`~opscope.errors.RenderError` for an unknown locale or currency code.
    """

    locale: str
    currency: str

    def __post_init__(self) -> None:
        try:
            Locale.parse(self.locale)
        except (UnknownLocaleError, ValueError, TypeError) as exc:
            raise RenderError(f"unknown locale {self.locale!r} (expected e.g. en_US)") from exc
        try:
            validate_currency(self.currency)
        except UnknownCurrencyError as exc:
            raise RenderError(f"unknown currency {self.currency!r} (ISO 4217, e.g. USD)") from exc

    # -- text -------------------------------------------------------------------------------

    def format(self, value: Any, kind: ValueKind) -> str:
        """``value`` as text for a reader, per the table in the module docstring."""
        if kind == "text":
            return MISSING if value is None else str(value)
        if kind == "date":
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                return MISSING
            return str(value)
        number = finite(value)
        if number is None:
            return MISSING
        if kind == "money":
            return format_currency(number, self.currency, locale=self.locale)
        if kind == "ratio":
            return format_percent(number, self._percent_pattern(), locale=self.locale)
        if kind == "days":
            return format_decimal(number, "#,##0.0", locale=self.locale) + " d"
        if kind == "count":
            return format_decimal(round(number), "#,##0", locale=self.locale)
        return format_decimal(number, "#,##0.##", locale=self.locale)

    def growth(self, value: Any) -> str:
        """A period-over-period change (a fraction) with its sign: ``+12.5%``, ``-3.0%``."""
        number = finite(value)
        if number is None:
            return MISSING
        text = format_percent(abs(number), self._percent_pattern(), locale=self.locale)
        return ("+" if number >= 0 else "-") + text

    def change(self, kpi: Any) -> str:
        """A KPI card's change: its growth (:meth:`growth`), or ``new`` when the previous
        value was 0 and the current one is not (growth has no value then)."""
        return "new" if kpi.trend == "new" else self.growth(kpi.growth)

    @staticmethod
    def status(status: str) -> str:
        """A KPI status (``on_track`` …) as a label (``On track``)."""
        return _STATUS_LABELS.get(status, status)

    @staticmethod
    def trend(trend: str) -> str:
        """A KPI trend (``up`` …) as a label with an arrow."""
        return _TREND_LABELS.get(trend, trend)

    def _percent_pattern(self) -> str:
        # The locale's percent pattern (its spacing and sign position) with one decimal.
        pattern = Locale.parse(self.locale).percent_formats[None].pattern.split(";")[0]
        return _NUMBER_PART.sub(lambda m: m.group(0) + ".0", pattern, count=1)

    # -- separators and affixes for charts --------------------------------------------------

    @property
    def decimal_symbol(self) -> str:
        """The locale's decimal separator (``.`` for en_US, ``,`` for de_DE)."""
        return str(get_decimal_symbol(self.locale))

    @property
    def group_symbol(self) -> str:
        """The locale's thousands separator (``,`` for en_US, ``.`` for de_DE)."""
        return str(get_group_symbol(self.locale))

    @property
    def currency_symbol(self) -> str:
        """The currency's symbol in the locale (``$`` for USD in en_US, ``US$`` in en_GB)."""
        return str(get_currency_symbol(self.currency, self.locale))

    @property
    def currency_digits(self) -> int:
        """Decimals of the currency (2 for EUR/USD, 0 for JPY), per CLDR."""
        return int(get_currency_precision(self.currency))

    def currency_affixes(self) -> tuple[str, str]:
        """Text before and after the number in the locale's currency pattern, with the symbol
        filled in: ``("$", "")`` for en_US, ``("", "\\xa0€")`` for de_DE/EUR."""
        pattern = Locale.parse(self.locale).currency_formats["standard"].pattern.split(";")[0]
        match = _NUMBER_PART.search(pattern)
        if match is None:  # every CLDR currency pattern has a number part
            return self.currency_symbol, ""
        prefix, suffix = pattern[: match.start()], pattern[match.end() :]
        return (
            prefix.replace("¤", self.currency_symbol),
            suffix.replace("¤", self.currency_symbol),
        )

    # -- Excel ------------------------------------------------------------------------------

    def excel_format(self, kind: ValueKind) -> str:
        """The Excel number format code for ``kind``: see the module docstring. Money takes the
        currency's decimals and the locale's symbol and side; spaces in the affix become plain
        spaces inside a quoted literal."""
        if kind == "money":
            digits = self.currency_digits
            number = "#,##0" + ("." + "0" * digits if digits else "")
            prefix, suffix = (
                _excel_literal(a.replace("\xa0", " ").replace("\u202f", " "))
                for a in self.currency_affixes()
            )
            return f"{prefix}{number}{suffix}"
        return _EXCEL_FORMATS[kind]


_EXCEL_FORMATS: dict[ValueKind, str] = {
    "ratio": "0.0%",
    "days": '#,##0.0" d"',
    "count": "#,##0",
    "number": "#,##0.00",
    "date": "yyyy-mm-dd",
    "text": "@",
    "money": "#,##0.00",
}


def _excel_literal(text: str) -> str:
    return f'"{text}"' if text else ""
