"""Alert templates; expected strings are what the real promtool printed for the same input."""

from __future__ import annotations

import pytest

from opscope.monitor.templates import (
    Template,
    TemplateError,
    go_float,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (95.0, "95"),
        (0.5, "0.5"),
        (1234567.0, "1.234567e+06"),
        (123456.0, "123456"),
        (1e6, "1e+06"),
        (0.0001, "0.0001"),
        (0.00001234, "1.234e-05"),
        (-2.5, "-2.5"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
    ],
)
def test_values_print_like_go(value: float, text: str) -> None:
    assert go_float(value) == text


def test_prometheus_functions() -> None:
    # promtool printed: h="1.235M", d="1d 2h 3m 4s" for these inputs
    assert humanize(1234567) == "1.235M"
    assert humanize(0.0012) == "1.2m"
    assert humanize(0) == "0"
    assert humanize1024(2048) == "2ki"
    assert humanize_percentage(0.1234) == "12.34%"
    assert humanize_duration(93784.5) == "1d 2h 3m 4s"
    assert humanize_duration(3.14159) == "3.142s"
    assert humanize_duration(0.0125) == "12.5ms"


def test_expansion_as_promtool_shows_it() -> None:
    text = (
        'v={{ $value }} h={{ $value | humanize }} p={{ printf "%.2f" $value }} '
        "m=[{{ $labels.nope }}] i={{ .Labels.instance }} u={{ $labels.job | toUpper }}"
    )
    out = Template.compile(text).expand({"instance": "h:1", "job": "node"}, 1234567.0)
    assert out == "v=1.234567e+06 h=1.235M p=1234567.00 m=[] i=h:1 u=NODE"


def test_trim_markers() -> None:
    assert Template.compile("a  {{- $value -}}  b").expand({}, 1.0) == "a1b"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ if $value }}x{{ end }}", "'if' is not supported"),
        ('{{ query "up" }}', "'query' is not supported"),
        ("{{ $x := 1 }}", "unsupported"),
        ("{{ $value | nosuch }}", "unsupported template function 'nosuch'"),
        ("{{ $value", "unclosed"),
    ],
)
def test_unsupported_templates_fail_at_compile_time(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.compile(source)
