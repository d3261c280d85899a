"""Selectors and matchers with Prometheus's rules."""

from __future__ import annotations

import pytest

from opscope.errors import QueryError, UnsupportedQuery
from opscope.store import SeriesIndex, SeriesRef, label_set, parse_selector, selector_for


def test_matchers_follow_prometheus_semantics() -> None:
    labels = label_set({"job": "node", "mode": "idle"})
    assert parse_selector('m{job="node"}').matches("m", labels)
    assert not parse_selector('m{job!="node"}').matches("m", labels)
    assert parse_selector('m{mode=~"id.*"}').matches("m", labels)
    assert not parse_selector('m{mode=~"d"}').matches("m", labels)  # regexes are anchored
    assert parse_selector('m{mode!~"user|system"}').matches("m", labels)
    assert parse_selector('m{absent=""}').matches("m", labels)  # missing label == ""
    assert not parse_selector('m{absent!=""}').matches("m", labels)
    assert not parse_selector("other").matches("m", labels)
    assert parse_selector('{__name__=~"m|n", job="node"}').matches("m", labels)


def test_selectors_that_match_everything_are_refused() -> None:
    with pytest.raises(QueryError, match="at least one non-empty matcher"):
        parse_selector('{job=~".*"}')


def test_non_selectors_are_refused_as_unsupported() -> None:
    with pytest.raises(UnsupportedQuery):
        parse_selector("rate(m[5m])")
    with pytest.raises(QueryError, match="cannot parse"):
        parse_selector("m{")


def test_metric_and_labels_form() -> None:
    assert (
        str(selector_for("up", 'job="node", instance=~"a.*"')) == 'up{job="node", instance=~"a.*"}'
    )
    assert str(selector_for("up", '{job="node"}')) == 'up{job="node"}'
    assert str(selector_for("up")) == "up"


def test_index_selects_by_name_and_labels() -> None:
    index = SeriesIndex()
    index.add(SeriesRef(1, "up", label_set({"job": "a"})))
    index.add(SeriesRef(2, "up", label_set({"job": "b"})))
    index.add(SeriesRef(3, "down", label_set({"job": "a"})))
    assert [r.id for r in index.select(parse_selector('up{job="a"}'))] == [1]
    assert [r.id for r in index.select(parse_selector('{job="a"}'))] == [1, 3]
    assert [r.id for r in index.select(parse_selector('up{job!="a"}'))] == [2]
    index.remove(1)
    assert [r.id for r in index.select(parse_selector("up"))] == [2]
    assert index.names() == ["down", "up"]
