"""The text exposition format: the validating parser and the cached scrape decoder."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from opscope.errors import ExpositionError
from opscope.monitor.exposition import ScrapeDecoder, parse_exposition, parse_sample_line
from opscope.store import LabelSet

# The example from https://prometheus.io/docs/instrumenting/exposition_formats/
DOCS_EXAMPLE = r"""# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="0.2"} 100392
http_request_duration_seconds_bucket{le="0.5"} 129389
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.05"} 3272
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.9"} 9001
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"""


def test_docs_example_parses_like_the_reference_parser() -> None:
    ours = [(s.name, dict(s.labels), s.value) for s in parse_exposition(DOCS_EXAMPLE)]
    reference = [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(DOCS_EXAMPLE)
        for s in family.samples
    ]
    assert ours == reference
    assert len(ours) == 20  # 2 + 1 + 1 + 1 + (6 buckets + sum + count) + (5 + sum + count)


def test_docs_example_values_and_escapes() -> None:
    samples = {(s.name, s.labels): s for s in parse_exposition(DOCS_EXAMPLE)}
    weird = samples[("something_weird", (("problem", "division by zero"),))]
    assert math.isinf(weird.value) and weird.value > 0
    assert weird.timestamp_ms == -3982045
    msdos = next(s for s in samples.values() if s.name == "msdos_file_access_time_seconds")
    assert dict(msdos.labels) == {
        "path": "C:\\DIR\\FILE.TXT",
        "error": 'Cannot find file:\n"FILE.TXT"',
    }
    assert msdos.value == 1.458255915e9


@pytest.mark.parametrize(
    ("payload", "line", "message"),
    [
        ('ok 1\nbad{x="y"} nope\n', 2, 'invalid value "nope"'),
        ("a 1\n\nb{x=y} 1\n", 3, "invalid label"),
        ("9lives 1\n", 1, "invalid metric name"),
        ('a{x="1",x="2"} 1\n', 1, 'label name "x" is not unique'),
        ('r{__name__="zz"} 1\n', 1, 'label name "__name__" is not unique'),
        ("# TYPE a gauge\n# TYPE a weird\na 1\n", 2, "invalid metric type"),
        ("a 1 2 3\n", 1, "expected a value and an optional timestamp"),
        ("a 1_000\n", 1, 'invalid value "1_000"'),
        ('a{x="1" 1\n', 1, "expected ',' or '}'"),
        ("<html><body>Not metrics</body></html>\n", 1, "invalid metric name"),
    ],
)
def test_malformed_payloads_name_the_line(payload: str, line: int, message: str) -> None:
    with pytest.raises(ExpositionError) as info:
        parse_exposition(payload)
    assert info.value.line == line
    assert message in str(info.value)


class Registry:
    """A stand-in for the store's series ids: (name, labels) -> id, recording resolutions."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, LabelSet], int] = {}
        self.calls = 0

    def __call__(self, name: str, labels: LabelSet) -> int:
        self.calls += 1
        return self.ids.setdefault((name, labels), len(self.ids) + 1)

    def key(self, series_id: int) -> tuple[str, LabelSet]:
        return next(k for k, v in self.ids.items() if v == series_id)


def decoded(registry: Registry, result: object) -> dict[tuple[str, LabelSet], float]:
    ids = result.series_ids.tolist()  # type: ignore[attr-defined]
    values = result.values.tolist()  # type: ignore[attr-defined]
    return {registry.key(i): v for i, v in zip(ids, values, strict=True)}


def test_decoder_adds_target_labels_and_keeps_conflicts_as_exported() -> None:
    registry = Registry()
    decoder = ScrapeDecoder(registry, {"job": "node", "instance": "h:9100"})
    result = decoder.decode('a{job="app",x="1"} 2\nb 3\n')
    assert decoded(registry, result) == {
        ("a", (("exported_job", "app"), ("instance", "h:9100"), ("job", "node"), ("x", "1"))): 2.0,
        ("b", (("instance", "h:9100"), ("job", "node"))): 3.0,
    }


def test_fast_path_gives_the_same_result_without_resolving_again() -> None:
    registry = Registry()
    decoder = ScrapeDecoder(registry, {"job": "j", "instance": "i"})
    # Lines with explicit timestamps always take the validating path; leave them out here.
    payload = "\n".join(
        line
        for line in DOCS_EXAMPLE.splitlines()
        if "1395066363000" not in line and "-3982045" not in line
    )
    first = decoder.decode(payload)
    calls = registry.calls
    second = decoder.decode(payload.replace("} 3102", "} 4000"))
    assert registry.calls == calls  # every line came from the scrape cache
    assert second.series_ids.tolist() == first.series_ids.tolist()
    changed = decoded(registry, second)
    assert (
        changed[("rpc_duration_seconds", (("instance", "i"), ("job", "j"), ("quantile", "0.01")))]
        == 4000.0
    )
    assert second.samples_scraped == 17  # 20 minus the three timestamped lines


def test_fast_path_still_rejects_bad_values_with_the_line() -> None:
    decoder = ScrapeDecoder(Registry(), {"job": "j", "instance": "i"})
    decoder.decode("a 1\nb 2\n")
    with pytest.raises(ExpositionError) as info:
        decoder.decode("a 1\nb two\n")
    assert info.value.line == 2
    with pytest.raises(ExpositionError):
        decoder.decode("a 1\nb 2_0\n")  # Python's float() would accept this; Prometheus does not


def test_new_series_and_disappearing_series_refresh_the_cache() -> None:
    registry = Registry()
    decoder = ScrapeDecoder(registry, {"job": "j", "instance": "i"})
    decoder.decode("a 1\nb 2\n")
    result = decoder.decode("a 5\nc 6\n")
    assert {k[0]: v for k, v in decoded(registry, result).items()} == {"a": 5.0, "c": 6.0}


def test_duplicate_series_keep_the_first_sample() -> None:
    registry = Registry()
    decoder = ScrapeDecoder(registry, {"job": "j", "instance": "i"})
    result = decoder.decode('a{x="1"} 1\na{x="1"} 2\nb 3\n')
    assert result.duplicates == 1
    assert result.samples_scraped == 3
    assert sorted(decoded(registry, result).values()) == [1.0, 3.0]
    again = decoder.decode('a{x="1"} 1\na{x="1"} 2\nb 3\n')  # fast path: same answer
    assert again.duplicates == 1 and len(again.series_ids) == 2


def test_special_values_and_openmetrics_eof() -> None:
    samples = parse_exposition("a NaN\nb -Inf\nc +Inf\nd 1e-3\ne -0.5\n# EOF\n")
    assert math.isnan(samples[0].value)
    assert [s.value for s in samples[1:]] == [-math.inf, math.inf, 0.001, -0.5]


# A payload as exporters write it: comments, label values with spaces and escapes, blank lines.
LAYOUT_PAYLOAD = (
    "# HELP jobs_total Jobs run.\n"
    "# TYPE jobs_total counter\n"
    'jobs_total{queue="a b",state="ok"} 12\n'
    'jobs_total{queue="a b",state="failed"} 3\n'
    "\n"
    "# TYPE temp gauge\n"
    'temp{room="x\\"y"} -1.5e3\n'
    "temp 7"
)


def _fresh(payload: bytes) -> tuple[str, object]:
    """What a decoder that never saw the target makes of ``payload`` (the validating path)."""
    registry = Registry()
    try:
        result = ScrapeDecoder(registry, {"job": "j"}).decode(payload.decode("utf-8"))
    except (ExpositionError, UnicodeDecodeError):
        return "error", None
    return "ok", sorted(
        (registry.key(i), repr(v))
        for i, v in zip(result.series_ids.tolist(), result.values.tolist(), strict=True)
    )


def _warm(registry: Registry, payload: bytes) -> tuple[str, object]:
    decoder = ScrapeDecoder(registry, {"job": "j"})
    decoder.decode(LAYOUT_PAYLOAD.encode())
    decoder.decode(LAYOUT_PAYLOAD.encode())  # the layout is known now
    try:
        result = decoder.decode(payload)
    except ExpositionError:
        return "error", None
    return "ok", sorted(
        (registry.key(i), repr(v))
        for i, v in zip(result.series_ids.tolist(), result.values.tolist(), strict=True)
    )


def test_same_layout_reads_new_values_without_splitting_lines() -> None:
    registry = Registry()
    decoder = ScrapeDecoder(registry, {"job": "j"})
    first = decoder.decode(LAYOUT_PAYLOAD.encode())
    calls = registry.calls
    changed = LAYOUT_PAYLOAD.replace("} 12", "} 13.25").replace("temp 7", "temp NaN")
    second = decoder.decode(changed.encode())
    assert second.same_layout and registry.calls == calls
    assert second.series_ids.tolist() == first.series_ids.tolist()
    assert second.values[0] == 13.25 and math.isnan(second.values[-1])
    assert second.values.tolist()[1:3] == [3.0, -1500.0]


@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(LAYOUT_PAYLOAD)),
            st.integers(min_value=0, max_value=3),
            st.sampled_from(
                [
                    "",
                    " ",
                    "1",
                    "-",
                    ".",
                    "e",
                    "_",
                    "#",
                    "\n",
                    "\r",
                    "\t",
                    "}",
                    '"',
                    "x y",
                    "+Inf",
                    "nan",
                    "0x1p3",
                    "1 2",
                    "1_0",
                    "é",
                    "\\",
                ]
            ),
        ),
        max_size=3,
    ),
    value=st.one_of(
        st.floats(allow_nan=False).map(repr), st.sampled_from(["1_0", "1e", "inf", "--1", ""])
    ),
)
@settings(max_examples=400, deadline=None)
def test_a_known_layout_reads_any_payload_as_the_validating_path(
    edits: list[tuple[int, int, str]], value: str
) -> None:
    """Whatever a target sends after a payload whose layout is known — new values, or
    bytes cut, inserted or replaced anywhere — the decoder gives exactly what a fresh decoder
    gives (same series, same values, or an error for both)."""
    text = LAYOUT_PAYLOAD.replace("} 12", "} " + value)
    for offset, cut, insert in edits:
        at = min(offset, len(text))
        text = text[:at] + insert + text[at + cut :]
    payload = text.encode()
    expected = _fresh(payload)
    got = _warm(Registry(), payload)
    assert got[0] == expected[0], (edits, value, payload)
    if expected[0] == "ok":
        # Series are compared by name and labels: ids differ between the two registries.
        assert got[1] == expected[1]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["\\\\", '\\"', "\\n", "\\q"]),
            st.text(alphabet=st.characters(blacklist_characters='\\"\n'), max_size=3),
        ),
        max_size=12,
    )
)
def test_label_value_escapes_are_read_pair_by_pair(pieces: list[str]) -> None:
    """The text format's three escapes (\\\\, \\", \\n) of a label value, every other character
    (and an unknown escape) kept: the same as reading pair by pair from the left."""
    raw = "".join(pieces)
    expected = "".join(
        {"\\\\": "\\", '\\"': '"', "\\n": "\n"}.get(piece, piece) for piece in pieces
    )
    sample, _ = parse_sample_line(f'm{{a="{raw}"}} 1', 1)
    assert sample.labels == (("a", expected),)
