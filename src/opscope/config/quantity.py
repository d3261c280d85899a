"""Kubernetes resource quantities (``100m``, ``256Mi``, ``1.5Gi``, ``2``).

The grammar and the suffixes are those of Kubernetes' ``resource.Quantity``
(k8s.io/apimachinery/pkg/api/resource/quantity.go): a signed decimal number followed by a
binary suffix (``Ki Mi Gi Ti Pi Ei``), a decimal suffix (``n u m k M G T P E``) or a decimal
exponent (``e3``, ``E-2``).
"""

from __future__ import annotations

import re
from decimal import Decimal

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def _split(text: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f'"{text}" is not a Kubernetes quantity (examples: 100m, 0.5, 256Mi, 1Gi)')
    return Decimal(match.group("number")), match.group("suffix") or ""


def is_quantity(text: str) -> bool:
    """Whether ``text`` is a valid Kubernetes quantity."""
    return _QUANTITY.match(text) is not None


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity in base units: cores for CPU, bytes for memory.

    ``parse_quantity("250m") == Decimal("0.25")``; ``parse_quantity("1Gi") == 1073741824``.
    Raises :class:`ValueError` naming the text when it is not a quantity.
    """
    number, suffix = _split(text)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Decimal(10) ** int(suffix[1:])


def scale_quantity(text: str, factor: int) -> str:
    """``text`` multiplied by ``factor``, keeping its suffix: ``scale_quantity("256Mi", 2)`` is
    ``"512Mi"``, ``scale_quantity("1.5", 2)`` is ``"3"``.

    Raises :class:`ValueError` when ``text`` is not a quantity.
    """
    number, suffix = _split(text)
    scaled = number * factor
    digits = format(scaled.normalize(), "f") if scaled != scaled.to_integral() else str(int(scaled))
    return f"{digits}{suffix}"
