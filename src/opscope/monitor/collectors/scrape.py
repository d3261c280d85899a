"""Scraping Prometheus text-exposition targets, with Prometheus's bookkeeping.

Per target and scrape (Prometheus ``scrape/scrape.go``):

* every sample is stored with its own labels plus ``job``, ``instance`` and the job's extra
  labels, stamped with the scrape's start time;
* the synthetic series ``up`` (1 or 0), ``scrape_duration_seconds``, ``scrape_samples_scraped``,
  ``scrape_samples_post_metric_relabeling`` and ``scrape_series_added`` are written with the
  target's labels;
* a series present in the previous successful scrape and missing now gets a staleness marker;
* a failed scrape — refused connection, timeout, HTTP status other than 200, a payload that is not
  valid exposition format — stores nothing from the payload, writes ``up`` 0 and marks every series
  of the previous scrape stale; the error is kept for ``/api/v1/targets``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import numpy as np

from opscope.config import ScrapeConfig
from opscope.errors import ExpositionError, ScrapeError
from opscope.monitor.collectors.base import TargetHealth
from opscope.monitor.collectors.http import describe_http_error
from opscope.monitor.exposition import ScrapeDecoder
from opscope.store import STALE_NAN, Batch, LabelSet, label_set

#: The synthetic series Prometheus writes for every scrape, in the order written.
SYNTHETIC_SERIES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)
_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


class ScrapeCollector:
    """Scrapes one target of one scrape job."""

    def __init__(
        self,
        *,
        job: ScrapeConfig,
        target: str,
        interval: float,
        timeout: float,
        resolve: Callable[[str, LabelSet], int],
        client: httpx.AsyncClient,
    ) -> None:
        self._job = job
        self._client = client
        self._interval = interval
        self._timeout = min(timeout, interval)
        self.url = f"{job.scheme}://{target}{job.metrics_path}"
        labels = {**job.labels, "job": job.job, "instance": target}
        self.group = f"scrape/{job.job}/{target}"
        self.health = TargetHealth(
            kind="scrape",
            job=job.job,
            instance=target,
            url=self.url,
            interval=interval,
            labels=labels,
        )
        self._decoder = ScrapeDecoder(resolve, labels)
        target_set = label_set(labels)
        self._synthetic = np.array(
            [resolve(name, target_set) for name in SYNTHETIC_SERIES], dtype=np.int64
        )
        self._live = np.zeros(0, dtype=np.int64)
        self._headers = {
            "Accept": _ACCEPT,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{self._timeout:g}",
        }

    @property
    def interval(self) -> float:
        """Seconds between scrapes."""
        return self._interval

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is shared and closed by its owner."""

    async def _fetch(self) -> bytes:
        limit = self._job.body_size_limit
        async with self._client.stream(
            "GET", self.url, headers=self._headers, timeout=self._timeout
        ) as response:
            if response.status_code != 200:
                raise ScrapeError(
                    f"server returned HTTP status {response.status_code} "
                    f"{response.reason_phrase}".rstrip()
                )
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if limit and size > limit:
                    raise ScrapeError(f"body size limit exceeded ({limit} bytes)")
                chunks.append(chunk)
        return b"".join(chunks)

    async def collect(self, now: float) -> list[Batch]:
        """Scrape once, stamped ``now``; never raises for target failures."""
        started = time.perf_counter()
        error = ""
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._fetch()
            # Parsing a large payload takes a while: do it off the event loop.
            decoded = await asyncio.to_thread(
                self._decoder.decode, body, sample_limit=self._job.sample_limit
            )
            del body
        except (ScrapeError, ExpositionError) as exc:
            error = str(exc)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = describe_http_error(self.url, exc, self._timeout)
        duration = time.perf_counter() - started

        if error:
            ids = np.zeros(0, dtype=np.int64)
            values = np.zeros(0, dtype=np.float64)
            scraped = 0
        else:
            ids, values, scraped = decoded.series_ids, decoded.values, decoded.samples_scraped
            clash = np.isin(ids, self._synthetic)
            if clash.any():  # a target exposing e.g. its own `up`: the synthetic one wins
                ids, values = ids[~clash], values[~clash]
        added = 0
        stale = np.zeros(0, dtype=np.int64)
        if not np.array_equal(ids, self._live):
            stale = np.setdiff1d(self._live, ids, assume_unique=True)
            added = len(np.setdiff1d(ids, self._live, assume_unique=True))
            self._live = ids
        report = np.array(
            [0.0 if error else 1.0, duration, float(scraped), float(len(ids)), float(added)]
        )
        batch = Batch(
            group=self.group,
            timestamp_ms=int(now * 1000),
            series_ids=np.concatenate([ids, stale, self._synthetic]),
            values=np.concatenate([values, np.full(len(stale), STALE_NAN), report]),
        )
        self.health.record(ok=not error, at=now, duration=duration, samples=scraped, error=error)
        return [batch]
