"""The embedded store: SQLite time series (series, samples, staleness markers) and queries."""

from __future__ import annotations

from opscope.store.database import (
    STALE_NAN,
    Batch,
    RetentionResult,
    SampleBlock,
    SeriesSamples,
    Store,
    is_stale,
)
from opscope.store.labels import (
    LabelSet,
    Matcher,
    Selector,
    label_set,
    parse_selector,
    selector_for,
)
from opscope.store.querying import (
    DEFAULT_LOOKBACK_MS,
    InstantSample,
    RangeSeries,
    instant_query,
    range_query,
    step_times,
    value_at,
    values_at,
)
from opscope.store.series import SeriesIndex, SeriesRef

__all__ = [
    "DEFAULT_LOOKBACK_MS",
    "STALE_NAN",
    "Batch",
    "InstantSample",
    "LabelSet",
    "Matcher",
    "RangeSeries",
    "RetentionResult",
    "SampleBlock",
    "Selector",
    "SeriesIndex",
    "SeriesRef",
    "SeriesSamples",
    "Store",
    "instant_query",
    "is_stale",
    "label_set",
    "parse_selector",
    "range_query",
    "selector_for",
    "step_times",
    "value_at",
    "values_at",
]
