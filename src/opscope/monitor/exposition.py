"""The Prometheus text exposition format (version 0.0.4): a validating parser and a fast decoder.

:func:`parse_exposition` validates every line and returns every sample; it is the reference
implementation and reports the first error with its line number.

:class:`ScrapeDecoder` is what the scrape loop uses. Like Prometheus's scrape cache
(``scrape/scrape.go``), it remembers, per target, which series each sample line's text (everything
before the value) resolves to. A scrape whose lines are all known costs one ``rpartition``, one
dict lookup and one ``float`` per line — no label parsing — which is what lets opscope ingest over
a million samples per second. Any unknown line sends the whole payload through the validating
parser, which also refreshes the cache.

Grammar (https://prometheus.io/docs/instrumenting/exposition_formats/)::

    line    = sample | "# HELP " name " " text | "# TYPE " name " " type | "#" comment | ""
    sample  = name [ "{" [ label { "," label } [ "," ] ] "}" ] value [ timestamp ]
    label   = label_name "=" '"' escaped_value '"'         (escapes: \\\\  \\"  \\n)
    value   = Go float: digits, exponent, NaN, +Inf, -Inf

Explicit timestamps are validated and then ignored by the scrape loop: opscope stamps every sample
of a scrape with the scrape's start time, as Prometheus does with ``honor_timestamps: false``. The
push API (:mod:`opscope.monitor.pushing`) uses the same decoder and keeps them
(:attr:`DecodedScrape.timestamps_ms`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from opscope.errors import ExpositionError, ScrapeError
from opscope.store import LabelSet, label_set
from opscope.store.database import FloatArray, IntArray

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# The value's loop is unrolled (runs of plain characters, then one escape): a label value of
# megabytes is matched at C speed, not one alternation per character.
_LABEL = re.compile(
    r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"\\\n]*(?:\\.[^"\\\n]*)*)"[ \t]*'
)
#: A timestamp: integer milliseconds (an int64), as in the text format 0.0.4.
_TIMESTAMP = re.compile(r"[+-]?[0-9]+")
_INT64 = 2**63
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN])"
)
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped", "unknown"})


@dataclass(frozen=True)
class ParsedSample:
    """One sample line: metric name, labels in file order, value, optional timestamp (ms)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int | None


def parse_value(token: str, line: int) -> float:
    """Parse a sample value with Go ``strconv.ParseFloat`` rules; raise ExpositionError."""
    if not _FLOAT.fullmatch(token):
        raise ExpositionError(f'invalid value "{token}"', line=line)
    return float(token)


def _unescape(value: str) -> str:
    """``\\\\``, ``\\"`` and ``\\n`` of a label value (well formed: every backslash
    starts a pair), with string methods only: a value of millions of escapes takes
    milliseconds. Splitting at ``\\\\`` first keeps each pair whole."""
    if "\\" not in value:
        return value
    return "\\".join(part.replace('\\"', '"').replace("\\n", "\n") for part in value.split("\\\\"))


def parse_sample_line(text: str, line: int) -> tuple[ParsedSample, int]:
    """Parse one sample line; also return the offset where the value starts.

    Raises :class:`ExpositionError` naming ``line`` when the line is malformed.
    """
    match = _NAME.match(text)
    if match is None:
        raise ExpositionError(f"invalid metric name in {text[:80]!r}", line=line)
    name = match.group()
    pos = match.end()
    labels: list[tuple[str, str]] = []
    if pos < len(text) and text[pos] == "{":
        pos += 1
        seen: set[str] = set()
        while True:
            while pos < len(text) and text[pos] in " \t":
                pos += 1
            if pos < len(text) and text[pos] == "}":
                pos += 1
                break
            label = _LABEL.match(text, pos)
            if label is None:
                raise ExpositionError(f"invalid label in {text[:80]!r}", line=line)
            label_name = label.group(1)
            if label_name in seen or label_name == "__name__":
                raise ExpositionError(f'label name "{label_name}" is not unique', line=line)
            seen.add(label_name)
            labels.append((label_name, _unescape(label.group(2))))
            pos = label.end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos < len(text) and text[pos] == "}":
                pos += 1
                break
            else:
                raise ExpositionError(f"expected ',' or '}}' in {text[:80]!r}", line=line)
    if pos >= len(text) or text[pos] not in " \t":
        raise ExpositionError(
            f"expected a space and a value after the series in {text[:80]!r}", line=line
        )
    value_at = pos
    tokens = text[pos:].split()
    if not tokens or len(tokens) > 2:
        raise ExpositionError(
            f"expected a value and an optional timestamp in {text[:80]!r}", line=line
        )
    value = parse_value(tokens[0], line)
    timestamp = None
    if len(tokens) == 2:
        if not _TIMESTAMP.fullmatch(tokens[1]) or not -_INT64 < int(tokens[1]) < _INT64:
            raise ExpositionError(
                f'invalid timestamp "{tokens[1][:40]}" (expected integer milliseconds)', line=line
            )
        timestamp = int(tokens[1])
    return ParsedSample(name, tuple(labels), value, timestamp), value_at


def _check_comment(text: str, line: int) -> None:
    parts = text.split(None, 3)
    if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
        if len(parts) < 3 or not _NAME.fullmatch(parts[2]):
            raise ExpositionError(f"invalid {parts[1]} line", line=line)
        if parts[1] == "TYPE" and (len(parts) < 4 or parts[3].strip() not in _TYPES):
            raise ExpositionError(f"invalid metric type in {text[:80]!r}", line=line)


def parse_exposition(text: str) -> list[ParsedSample]:
    """Parse and validate a whole payload; raise :class:`ExpositionError` at the first bad line."""
    samples = []
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped[0] == "#":
            _check_comment(stripped, number)
            continue
        samples.append(parse_sample_line(stripped, number)[0])
    return samples


@dataclass(frozen=True)
class DecodedScrape:
    """The samples of one payload as store arrays: distinct series ids and their values.

    ``samples_scraped`` counts every sample line (Prometheus's ``scrape_samples_scraped``);
    ``duplicates`` counts lines dropped because their series already appeared in the payload.
    ``timestamps_ms`` holds each sample's explicit timestamp (milliseconds, :data:`NO_TIMESTAMP`
    where a line has none), or is ``None`` when no line has one.
    """

    series_ids: IntArray
    values: FloatArray
    samples_scraped: int
    duplicates: int
    timestamps_ms: IntArray | None = None
    #: Every byte but the values equals the previous payload's (read by its layout).
    same_layout: bool = False


#: Placeholder in :attr:`DecodedScrape.timestamps_ms` for a sample without a timestamp.
NO_TIMESTAMP = np.iinfo(np.int64).min

_NEWLINE, _SPACE, _HASH = ord("\n"), ord(" "), ord("#")


def _span_mask(size: int, starts: IntArray, stops: IntArray) -> np.ndarray:
    """A boolean array of ``size`` that is true in every ``[starts[i], stops[i])`` (sorted,
    disjoint spans), built with one :func:`numpy.repeat`."""
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0::2] = np.concatenate((starts, [size])) - np.concatenate(([0], stops))
    counts[1::2] = stops - starts
    pattern = np.zeros(len(counts), dtype=bool)
    pattern[1::2] = True
    return np.repeat(pattern, counts)


def _segments(value_starts: IntArray, value_ends: IntArray) -> IntArray:
    """Bytes before each value since the previous value's newline (or the payload's start)."""
    return value_starts - np.concatenate(([0], value_ends + 1))[: len(value_starts)]


class _Layout:
    """Where the values are in a payload: what lets the decoder read the next payload with
    numpy alone when every byte but the values is the same (a push or a scrape of the same
    series with new values — the usual case) instead of splitting it into lines in Python.

    ``lines`` counts newline-terminated lines; ``sample_lines`` are the indexes of the lines
    that are neither blank nor comments; a sample line's value is what follows its last space;
    ``segments[i]`` is the length of the bytes between value ``i - 1`` (with its newline) and
    value ``i``; ``skeleton`` is the payload without the values and their newlines. Equal
    segment lengths and an equal skeleton mean every comment and every series text is equal.
    """

    __slots__ = ("lines", "sample_lines", "segments", "skeleton")

    def __init__(
        self, lines: int, sample_lines: IntArray, segments: IntArray, skeleton: bytes
    ) -> None:
        self.lines = lines
        self.sample_lines = sample_lines
        self.segments = segments
        self.skeleton = skeleton

    @staticmethod
    def _spans(
        arr: np.ndarray, ends: IntArray, sample_lines: IntArray
    ) -> tuple[IntArray, IntArray] | None:
        """Value starts and ends (the newline) of ``sample_lines``; ``None`` when a line has no
        space or an empty value."""
        value_ends = ends[sample_lines]
        if not len(value_ends):
            return value_ends, value_ends
        spaces = np.flatnonzero(arr == _SPACE)
        at = np.searchsorted(spaces, value_ends) - 1
        if at[0] < 0:
            return None
        value_starts = spaces[at] + 1
        line_starts = np.concatenate(([0], ends[:-1] + 1))[sample_lines]
        if (value_starts <= line_starts).any() or (value_starts >= value_ends).any():
            return None
        return value_starts, value_ends

    @classmethod
    def of(cls, data: bytes, values: FloatArray) -> _Layout | None:
        """The layout of ``data`` whose sample lines decoded to ``values`` (in order, without
        timestamps or duplicates); ``None`` when reading it back by the layout does not give
        exactly ``values`` (unusual spacing, carriage returns, …): such payloads keep the
        line-by-line path."""
        if not data.endswith(b"\n"):
            data += b"\n"
        arr = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(arr == _NEWLINE)
        starts = np.concatenate(([0], ends[:-1] + 1))
        first = arr[np.minimum(starts, len(arr) - 1)]
        sample_lines = np.flatnonzero((starts < ends) & (first != _HASH))
        if len(sample_lines) != len(values):
            return None
        spans = cls._spans(arr, ends, sample_lines)
        if spans is None:
            return None
        value_starts, value_ends = spans
        segments = _segments(value_starts, value_ends)
        mask = _span_mask(len(arr), value_starts, value_ends + 1)
        layout = cls(len(ends), sample_lines, segments, arr[~mask].tobytes())
        again = layout.values(data)
        if again is None or not np.array_equal(again, values, equal_nan=True):
            return None
        return layout

    def values(self, data: bytes) -> FloatArray | None:
        """The sample values of ``data`` if it has this layout, else ``None``. A value is
        read as the line-by-line path reads it (Python's ``float`` without ``_``)."""
        if not data.endswith(b"\n"):
            data += b"\n"
        arr = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(arr == _NEWLINE)
        if len(ends) != self.lines:
            return None
        spans = self._spans(arr, ends, self.sample_lines)
        if spans is None:
            return None
        value_starts, value_ends = spans
        if not np.array_equal(_segments(value_starts, value_ends), self.segments):
            return None
        if len(arr) - int((value_ends - value_starts + 1).sum()) != len(self.skeleton):
            return None
        mask = _span_mask(len(arr), value_starts, value_ends + 1)
        if arr[~mask].tobytes() != self.skeleton:
            return None
        tokens = arr[mask].tobytes()
        if b"_" in tokens or not tokens.isascii():  # float() accepts "1_000"; Prometheus not
            return None
        try:
            return np.array(tokens.split(b"\n")[:-1], dtype=np.float64)
        except ValueError:
            return None


Resolver = Callable[[str, LabelSet], int]


class ScrapeDecoder:
    """Decodes the payloads of one target into series ids, with Prometheus's scrape cache.

    ``resolve(name, labels)`` returns the store id of a series; ``target_labels`` (``job``,
    ``instance`` and configured labels) are added to every series. A scraped label that collides
    with a target label is kept as ``exported_<name>`` (Prometheus's ``honor_labels: false``);
    with ``override=True`` the target label simply replaces it (the Pushgateway's rule for the
    labels of the grouping key).
    """

    def __init__(
        self, resolve: Resolver, target_labels: dict[str, str], *, override: bool = False
    ) -> None:
        self._resolve = resolve
        self._target_labels = target_labels
        self._override = override
        self._cache: dict[str, int] = {}
        # The previous payload's sample-line keys and ids, when it had no duplicate series:
        # a payload with the very same keys in the same order reuses the ids as they are.
        self._last_keys: list[str] | None = None
        self._last_ids: IntArray = np.zeros(0, dtype=np.int64)
        # The previous payload's layout, when it was given as bytes and read without
        # timestamps or duplicates (its series are ``_last_ids``).
        self._layout: _Layout | None = None

    def decode(self, payload: str | bytes, *, sample_limit: int = 0) -> DecodedScrape:
        """Decode ``payload`` (UTF-8 bytes or text); raises :class:`ExpositionError` (with
        line) when it is malformed or not UTF-8, and :class:`ScrapeError` when it holds more
        than ``sample_limit`` samples (0: no limit) — checked before any new series is created.

        Bytes whose every byte but the values equals the previous payload's are read by
        :class:`_Layout` (the result's ``same_layout`` is then true)."""
        if isinstance(payload, bytes):
            layout, self._layout = self._layout, None
            if layout is not None and not (sample_limit and len(self._last_ids) > sample_limit):
                values = layout.values(payload)
                if values is not None:
                    self._layout = layout
                    return DecodedScrape(self._last_ids, values, len(values), 0, same_layout=True)
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = payload[: exc.start].count(b"\n") + 1
                raise ExpositionError("not UTF-8 text", line=line) from None
            decoded = self._decode_text(text, sample_limit)
            if decoded.timestamps_ms is None and not decoded.duplicates:
                self._layout = _Layout.of(payload, decoded.values)
            return decoded
        self._layout = None
        return self._decode_text(payload, sample_limit)

    def _decode_text(self, text: str, sample_limit: int) -> DecodedScrape:
        """Decode by the scrape cache (series texts seen before), else by the validating path."""
        split = text.split("\n")
        lines = [line for line in split if line and line[0] != "#"]
        if sample_limit and len(lines) > sample_limit:
            raise ScrapeError(f"sample limit exceeded ({len(lines)} > {sample_limit})")
        if text.startswith("#") or "\n#" in text:  # check HELP and TYPE lines
            try:
                for line in split:
                    if line[:1] == "#":
                        _check_comment(line.strip(), 0)
            except ExpositionError:
                return self._decode_slow(text)  # which names the line
        pairs = [line.rpartition(" ") for line in lines]
        keys = [key for key, _, _ in pairs]
        tokens = [value for _, _, value in pairs]
        try:
            joined = "".join(tokens)
            # float() accepts "1_000" and non-ASCII digits ("٣"); Prometheus does not.
            if "_" in joined or not joined.isascii():
                return self._decode_slow(text)
            values = [float(v) for v in tokens]
        except ValueError:
            return self._decode_slow(text)
        if keys == self._last_keys:
            return DecodedScrape(self._last_ids, np.array(values, dtype=np.float64), len(lines), 0)
        get = self._cache.get
        ids = [get(key) for key in keys]
        if None in ids:
            return self._decode_slow(text)
        known: list[int] = ids  # type: ignore[assignment]  # no None left
        return self._finish(known, values, len(lines), keys)

    def _decode_slow(self, text: str) -> DecodedScrape:
        cache: dict[str, int] = {}
        ids: list[int] = []
        values: list[float] = []
        timestamps: list[int] = []
        for number, raw in enumerate(text.split("\n"), start=1):
            stripped = raw.strip()
            if not stripped:
                continue
            if stripped[0] == "#":
                _check_comment(stripped, number)
                continue
            sample, value_at = parse_sample_line(stripped, number)
            series_id = self._resolve(sample.name, self._labels(sample.labels))
            ids.append(series_id)
            values.append(sample.value)
            timestamps.append(NO_TIMESTAMP if sample.timestamp_ms is None else sample.timestamp_ms)
            if sample.timestamp_ms is None and raw == stripped:
                # Cache under the exact text the fast path will look up (see decode()).
                key = raw.rpartition(" ")[0]
                if key.rstrip(" \t") == raw[:value_at]:
                    cache[key] = series_id
        self._cache = cache
        explicit = any(t != NO_TIMESTAMP for t in timestamps)
        return self._finish(ids, values, len(ids), None, timestamps if explicit else None)

    def remap(self, mapping: dict[int, int]) -> None:
        """Replace series ids in the decoder's cache (``old → new``): the push API resolves
        new series to placeholder ids until a request is accepted as a whole."""
        if not mapping:
            return
        self._cache = {key: mapping.get(sid, sid) for key, sid in self._cache.items()}
        if len(self._last_ids):
            self._last_ids = np.array(
                [mapping.get(sid, sid) for sid in self._last_ids.tolist()], dtype=np.int64
            )

    def _labels(self, scraped: tuple[tuple[str, str], ...]) -> LabelSet:
        labels = dict(scraped)
        for name, value in self._target_labels.items():
            if not self._override and labels.get(name, "") != "":
                labels[f"exported_{name}"] = labels[name]
            labels[name] = value
        return label_set(labels)

    def _finish(
        self,
        ids: list[int],
        values: list[float],
        scraped: int,
        keys: list[str] | None,
        timestamps: list[int] | None = None,
    ) -> DecodedScrape:
        duplicates = 0
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            keep = []
            for index, series_id in enumerate(ids):
                if series_id not in seen:
                    seen.add(series_id)
                    keep.append(index)
            duplicates = len(ids) - len(keep)
            ids = [ids[i] for i in keep]
            values = [values[i] for i in keep]
            if timestamps is not None:
                timestamps = [timestamps[i] for i in keep]
        id_array = np.array(ids, dtype=np.int64)
        self._last_keys = keys if duplicates == 0 else None
        self._last_ids = id_array
        return DecodedScrape(
            series_ids=id_array,
            values=np.array(values, dtype=np.float64),
            samples_scraped=scraped,
            duplicates=duplicates,
            timestamps_ms=None if timestamps is None else np.array(timestamps, dtype=np.int64),
        )
