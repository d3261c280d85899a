"""Alert label and annotation templates: the part of Prometheus's Go templates alerts use.

Supported inside ``{{ … }}`` (with ``{{-``/``-}}`` whitespace trimming):

* values: ``$value``/``.Value`` (the alert's value), ``$labels.NAME``/``.Labels.NAME`` (a missing
  label is empty), ``$externalLabels.NAME``/``.ExternalLabels.NAME``, ``"string"``, numbers;
* pipelines and calls: ``{{ $value | humanize }}``, ``{{ printf "%.2f" $value }}`` with the
  functions ``humanize``, ``humanize1024``, ``humanizePercentage``, ``humanizeDuration``,
  ``printf``, ``toUpper``, ``toLower``, ``title``.

Anything else (``if``, ``range``, ``query``, …) is refused when the rule loads, naming the
construct — a template never fails silently at alert time. Numbers print as Go prints float64
(``%v``: shortest digits, exponent form from 1e+06 or below 1e-04: ``95``, ``0.5``, ``1e+06``);
the ``humanize*`` functions follow Prometheus's ``template/template.go``.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from opscope.errors import OpscopeError


class TemplateError(OpscopeError):
    """A template uses a construct opscope does not support, or is malformed."""


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_VALUE_REF = re.compile(
    r"^(?:\$value|\.Value|(?:\$labels|\.Labels)\.([A-Za-z_][A-Za-z0-9_]*)"
    r"|(?:\$externalLabels|\.ExternalLabels)\.([A-Za-z_][A-Za-z0-9_]*))$"
)


def go_float(value: float) -> str:
    """``value`` as Go's ``fmt.Sprint(float64)`` writes it: ``strconv.FormatFloat(v, 'g', -1, 64)``,
    the shortest digits, in exponent form when the exponent is below -4 or at least 6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    assert isinstance(exponent, int)
    point = len(text) + exponent  # position of the decimal point
    x = point - 1
    if x < -4 or x >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        out = f"{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    elif point <= 0:
        out = "0." + "0" * (-point) + text
    elif point >= len(text):
        out = text + "0" * (point - len(text))
    else:
        out = text[:point] + "." + text[point:]
    return ("-" if sign else "") + out


def go_exponent(value: float, *, upper: bool = False) -> str:
    """``value`` as Go's ``strconv.FormatFloat(v, 'e', -1, 64)`` writes it (``'E'`` when
    ``upper``): the shortest digits, always in exponent form — ``5e+00``, ``6.25E-02``,
    ``NaN``, ``+Inf``. Prometheus's API gives alert values so; promtool prints samples so."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    exponent += len(digits) - 1
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    e = "E" if upper else "e"
    return f"{'-' if sign else ''}{mantissa}{e}{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _g4(value: float) -> str:
    """Go's ``%.4g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def _scale_up_small(value: float) -> tuple[float, str]:
    """A magnitude below 1 scaled by 1000s up to at least 1, with its SI prefix (m, u, n, …)."""
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix = p
        value *= 1000
    return value, prefix


def humanize(value: float) -> str:
    """SI prefixes (k, M, G, … and m, u, n, …) with 4 significant digits (Prometheus)."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    if abs(value) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix = p
            value /= 1000
        return f"{_g4(value)}{prefix}"
    value, prefix = _scale_up_small(value)
    return f"{_g4(value)}{prefix}"


def humanize1024(value: float) -> str:
    """Binary prefixes (ki, Mi, Gi, …) with 4 significant digits (Prometheus)."""
    if abs(value) <= 1 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix = p
        value /= 1024
    return f"{_g4(value)}{prefix}"


def humanize_percentage(value: float) -> str:
    """A ratio as a percentage with 4 significant digits: 0.1234 → ``12.34%``."""
    return f"{_g4(value * 100)}%"


def humanize_duration(value: float) -> str:
    """Seconds as ``1d 2h 3m 4s`` (or ``12.5ms`` below a second), as Prometheus writes them."""
    if math.isnan(value) or math.isinf(value):
        return _g4(value)
    if value == 0:
        return "0s"
    if abs(value) >= 1:
        sign = "-" if value < 0 else ""
        value = abs(value)
        whole = int(value)
        days, hours, minutes = whole // 86400, whole // 3600 % 24, whole // 60 % 60
        seconds = whole % 60  # whole seconds from a minute up, 4 digits below
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(value)}s"
    value, prefix = _scale_up_small(value)
    return f"{_g4(value)}{prefix}s"


def _printf(fmt: object, *args: object) -> str:
    """Go's printf for the verbs alert templates use: %s %d %f %e %g %v %% (with flags)."""

    def convert(match: re.Match[str]) -> str:
        spec, verb = match.group(1), match.group(2)
        if verb == "%":
            return "%"
        if not args_left:
            return f"%!{verb}(MISSING)"
        arg = args_left.pop(0)
        if verb == "v":
            return go_float(arg) if isinstance(arg, float) else str(arg)
        if verb in "dfeEgG" and isinstance(arg, str):
            try:
                arg = float(arg)
            except ValueError:
                return f"%!{verb}(string={arg})"
        if verb == "d":
            return str(f"%{spec}d" % int(arg))  # type: ignore[call-overload]
        if verb == "s":
            return f"%{spec}s" % (go_float(arg) if isinstance(arg, float) else arg)
        return f"%{spec}{verb}" % arg

    args_left = list(args)
    return re.sub(r"%([-+ #0]*\d*(?:\.\d+)?)([sdfeEgGv%])", convert, str(fmt))


FUNCTIONS: dict[str, Callable[..., str]] = {
    "humanize": lambda v: humanize(_number(v)),
    "humanize1024": lambda v: humanize1024(_number(v)),
    "humanizePercentage": lambda v: humanize_percentage(_number(v)),
    "humanizeDuration": lambda v: humanize_duration(_number(v)),
    "printf": _printf,
    "toUpper": lambda s: _text(s).upper(),
    "toLower": lambda s: _text(s).lower(),
    "title": lambda s: _text(s).title(),
}


def _number(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise TemplateError(f"expected a number, got {value!r}") from None


def _text(value: object) -> str:
    return go_float(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class _Context:
    labels: Mapping[str, str]
    value: float
    external_labels: Mapping[str, str]


Term = Callable[[_Context], object]


def _term(token: str) -> Term:
    match = _VALUE_REF.match(token)
    if match:
        label, external = match.group(1), match.group(2)
        if label is not None:
            return lambda ctx: ctx.labels.get(label, "")
        if external is not None:
            return lambda ctx: ctx.external_labels.get(external, "")
        return lambda ctx: ctx.value
    if len(token) >= 2 and token[0] == token[-1] == '"':
        literal = token[1:-1].encode().decode("unicode_escape")
        return lambda ctx: literal
    try:
        number = float(token)
    except ValueError:
        raise TemplateError(f"unsupported template value {token!r}") from None
    return lambda ctx: number


def _command(words: list[str], piped: Term | None) -> Term:
    head, args = words[0], [_term(w) for w in words[1:]]
    if head in FUNCTIONS:
        function = FUNCTIONS[head]
        inputs = [*args, piped] if piped is not None else args
        return lambda ctx: function(*(term(ctx) for term in inputs))
    if piped is not None or args:
        raise TemplateError(f"unsupported template function {head!r}")
    return _term(head)


def _pipeline(action: str) -> Term:
    first = action.split(None, 1)[0] if action else ""
    if first in ("if", "else", "end", "range", "with", "define", "template", "block", "query"):
        raise TemplateError(f"the template action {first!r} is not supported")
    if ":=" in action or action.startswith("/*"):
        raise TemplateError(f"unsupported template action {action!r}")
    term: Term | None = None
    for stage in action.split("|"):
        try:
            words = shlex.split(stage, posix=False)
        except ValueError as exc:
            raise TemplateError(f"malformed template action {action!r}: {exc}") from None
        if not words:
            raise TemplateError(f"empty template pipeline in {action!r}")
        term = _command(words, term)
    assert term is not None
    return term


@dataclass(frozen=True)
class Template:
    """A compiled template; :meth:`expand` fills it for one alert."""

    source: str
    _parts: tuple[str | Term, ...]

    @property
    def uses_value(self) -> bool:
        """Whether the expansion depends on the alert's value."""
        return "$value" in self.source or ".Value" in self.source

    @classmethod
    def compile(cls, source: str) -> Template:
        """Compile ``source``; raises :class:`TemplateError` for unsupported constructs."""
        parts: list[str | Term] = []
        position = 0
        for match in _ACTION.finditer(source):
            text = source[position : match.start()]
            if match.group(1):
                text = text.rstrip()
            parts.append(text)
            parts.append(_pipeline(match.group(2)))
            position = match.end()
            if match.group(3):
                rest = source[position:]
                position += len(rest) - len(rest.lstrip())
        if "{{" in source[position:]:
            raise TemplateError(f"unclosed template action in {source!r}")
        parts.append(source[position:])
        return cls(source, tuple(p for p in parts if p != ""))

    def expand(
        self,
        labels: Mapping[str, str],
        value: float,
        external_labels: Mapping[str, str] | None = None,
    ) -> str:
        """The text for an alert with ``labels`` and ``value``."""
        ctx = _Context(labels, value, external_labels or {})
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                result = part(ctx)
                out.append(go_float(result) if isinstance(result, float) else str(result))
        return "".join(out)
