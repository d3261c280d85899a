"""Plotly figures (plain JSON data for plotly.js) from report charts, for HTML and PDF.

A figure is ``{"data": [...traces], "layout": {...}}`` in plotly.js's own schema (checked in
the tests by ``plotly.graph_objects.Figure``). How each :class:`~opscope.report.document.Chart`
kind is drawn:

* ``line``: one line per series (``forecast`` dashed, ``target`` dotted); a series with
  ``lower``/``upper`` gets a shaded band between them (two traces, the upper one filled
  ``tonexty``); ``Chart.target`` is a horizontal dotted "Target" line;
* ``bar`` / ``stacked_bar``: grouped / stacked bars per series, plus the target line;
* ``pie``: the first series over the categories (missing or negative slices are left out:
  a pie cannot show them);
* ``funnel``: a plotly funnel of the first series, stages top to bottom, with the share of the
  first stage;
* ``gauge``: a plotly indicator of the first value of the first series on ``[0, maximum]``
  with ``target`` as the threshold mark.

``None`` stays ``null``: plotly draws a gap (``connectgaps`` false). A chart without any finite
value has no figure (:func:`figure` returns ``None``); renderers say "no data" instead.
"""

from __future__ import annotations

from typing import Any

from opscope.report.document import Chart, Series, ValueKind
from opscope.report.render.locales import NumberStyle, finite

#: Colours of forecast and target series; the others take the palette by position
#: (colour-blind safe, Okabe–Ito).
ROLE_COLOURS = {"forecast": "#E69F00", "target": "#009E73"}
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
BAND_FILL = "rgba(230, 159, 0, 0.22)"
CHART_HEIGHT = 320


def values(series: Series) -> list[float | None]:
    """The series' values with every non-finite or non-number value as ``None``."""
    return [finite(v) for v in series.values]


def has_data(chart: Chart) -> bool:
    """Whether any series of ``chart`` has at least one finite value."""
    return any(v is not None for s in chart.series for v in values(s))


def series_colour(series: Series, index: int) -> str:
    """The colour of a series: forecast and target by role, the others by position."""
    return ROLE_COLOURS.get(series.role) or PALETTE[index % len(PALETTE)]


def axis_format(style: NumberStyle, kind: ValueKind) -> dict[str, Any]:
    """Value-axis tick settings for ``kind``: d3 format, currency prefix or suffix, " d"."""
    if kind == "money":
        prefix, suffix = style.currency_affixes()
        return {"tickformat": ",.0f", "tickprefix": prefix, "ticksuffix": suffix}
    if kind == "ratio":
        return {"tickformat": ".0%"}
    if kind == "days":
        return {"tickformat": ",.0f", "ticksuffix": " d"}
    return {"tickformat": ",~f"}


def hover_format(style: NumberStyle, kind: ValueKind) -> str:
    """A plotly hover template number (``%{y:...}``) for ``kind``, with prefix/suffix."""
    if kind == "money":
        prefix, suffix = style.currency_affixes()
        return f"{prefix}%{{y:,.{style.currency_digits}f}}{suffix}"
    if kind == "ratio":
        return "%{y:.1%}"
    if kind == "days":
        return "%{y:,.1f} d"
    if kind == "count":
        return "%{y:,.0f}"
    return "%{y:,.2~f}"


def figure(chart: Chart, style: NumberStyle, *, width: int | None = None) -> dict[str, Any] | None:
    """The plotly figure of ``chart`` (``None`` when it has no data); ``width`` in CSS pixels
    fixes the figure's width (print), else it follows its container."""
    if not has_data(chart) or (
        chart.kind in ("pie", "funnel", "gauge") and not _first_points(chart)[1]
    ):
        return None
    layout: dict[str, Any] = {
        "height": CHART_HEIGHT,
        "margin": {"l": 64, "r": 16, "t": 40, "b": 48},
        "separators": style.decimal_symbol + style.group_symbol,
        "font": {"family": "DejaVu Sans, Helvetica, Arial, sans-serif", "size": 12},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "showlegend": True,
    }
    if width is not None:
        layout["width"] = width
    if chart.kind in ("line", "bar", "stacked_bar"):
        data = _cartesian(chart, style)
        layout["yaxis"] = {
            **axis_format(style, chart.value_kind),
            "gridcolor": "#e5e5e5",
            "automargin": True,
        }
        layout["xaxis"] = {"type": "category", "automargin": True}
        if chart.kind != "line":
            layout["barmode"] = "stack" if chart.kind == "stacked_bar" else "group"
    elif chart.kind == "pie":
        data = [_pie(chart, style)]
    elif chart.kind == "funnel":
        data = [_funnel(chart)]
        layout["yaxis"] = {"automargin": True}
        layout["margin"]["l"] = 16
        layout["showlegend"] = False
    else:
        data = [_gauge(chart, style)]
        layout["margin"] = {"l": 32, "r": 32, "t": 32, "b": 16}
        layout["showlegend"] = False
    return {"data": data, "layout": layout}


def _cartesian(chart: Chart, style: NumberStyle) -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = []
    hover = hover_format(style, chart.value_kind) + "<extra>%{fullData.name}</extra>"
    is_line = chart.kind == "line"
    for index, series in enumerate(chart.series):
        colour = series_colour(series, index)
        lower = [finite(v) for v in series.lower] if series.lower else []
        upper = [finite(v) for v in series.upper] if series.upper else []
        if any(v is not None for v in lower) and any(v is not None for v in upper):
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": chart.categories,
                    "y": lower,
                    "line": {"width": 0, "color": colour},
                    "hoverinfo": "skip",
                    "showlegend": False,
                    "name": f"{series.name} lower",
                    "connectgaps": False,
                }
            )
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": chart.categories,
                    "y": upper,
                    "fill": "tonexty",
                    "fillcolor": BAND_FILL,
                    "line": {"width": 0, "color": colour},
                    "hoverinfo": "skip",
                    "name": f"{series.name} interval",
                    "connectgaps": False,
                }
            )
        if is_line or series.role == "target":
            dash = {"forecast": "dash", "target": "dot"}.get(series.role, "solid")
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": chart.categories,
                    "y": values(series),
                    "name": series.name,
                    "line": {"color": colour, "dash": dash, "width": 2},
                    "marker": {"size": 5, "color": colour},
                    "connectgaps": False,
                    "hovertemplate": hover,
                }
            )
        else:
            traces.append(
                {
                    "type": "bar",
                    "x": chart.categories,
                    "y": values(series),
                    "name": series.name,
                    "marker": {"color": colour},
                    "hovertemplate": hover,
                }
            )
    if finite(chart.target) is not None:
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": chart.categories,
                "y": [finite(chart.target)] * len(chart.categories),
                "name": "Target",
                "line": {"color": ROLE_COLOURS["target"], "dash": "dot", "width": 2},
                "hovertemplate": hover,
            }
        )
    return traces


def _first_points(chart: Chart) -> tuple[list[str], list[float]]:
    # Category/value pairs of the first series that a pie or funnel can show.
    first = values(chart.series[0]) if chart.series else []
    pairs = [(c, v) for c, v in zip(chart.categories, first, strict=False) if v is not None]
    return [c for c, _ in pairs], [v for _, v in pairs]


def _pie(chart: Chart, style: NumberStyle) -> dict[str, Any]:
    labels, numbers = _first_points(chart)
    kept = [(label, v) for label, v in zip(labels, numbers, strict=True) if v >= 0]
    return {
        "type": "pie",
        "labels": [label for label, _ in kept],
        "values": [v for _, v in kept],
        "sort": False,
        "marker": {"colors": PALETTE},
        "textinfo": "label+percent",
        "hovertemplate": hover_format(style, chart.value_kind).replace("%{y", "%{value")
        + "<extra>%{label}</extra>",
    }


def _funnel(chart: Chart) -> dict[str, Any]:
    labels, numbers = _first_points(chart)
    return {
        "type": "funnel",
        "y": labels,
        "x": numbers,
        "textinfo": "value+percent initial",
        "marker": {"color": PALETTE[0]},
        "name": chart.series[0].name if chart.series else chart.title,
    }


def _gauge(chart: Chart, style: NumberStyle) -> dict[str, Any]:
    _, numbers = _first_points(chart)
    value = numbers[0]
    target = finite(chart.target)
    maximum = finite(chart.maximum)
    if maximum is None or maximum <= 0:
        maximum = max(abs(value), abs(target or 0.0)) * 1.2 or 1.0
    number: dict[str, Any] = {}
    if chart.value_kind == "ratio":
        number = {"valueformat": ".1%"}
    elif chart.value_kind == "money":
        prefix, suffix = style.currency_affixes()
        number = {"valueformat": ",.0f", "prefix": prefix, "suffix": suffix}
    elif chart.value_kind == "days":
        number = {"valueformat": ",.1f", "suffix": " d"}
    gauge: dict[str, Any] = {
        "axis": {"range": [0, maximum], **axis_format(style, chart.value_kind)},
        "bar": {"color": PALETTE[0]},
    }
    if target is not None:
        gauge["threshold"] = {
            "line": {"color": ROLE_COLOURS["target"], "width": 4},
            "thickness": 0.85,
            "value": target,
        }
    return {
        "type": "indicator",
        "mode": "gauge+number",
        "value": value,
        "number": number,
        "gauge": gauge,
    }
