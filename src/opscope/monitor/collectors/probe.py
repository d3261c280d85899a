"""HTTP probes of URLs, reported with blackbox_exporter's metric names.

Per target and probe: ``probe_success`` (1 when the response status is valid: any 2xx by default,
else the configured ``valid_status_codes``), ``probe_duration_seconds`` (the whole request,
including connecting: every probe opens a new connection, as blackbox_exporter does) and
``probe_http_status_code`` (0 when no response was received). Labels are ``job`` and ``instance``
(the URL, its password shown as ``***``) plus the job's extra labels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import numpy as np

from opscope.config import ProbeConfig
from opscope.monitor.collectors.base import TargetHealth
from opscope.monitor.collectors.http import describe_http_error, make_client
from opscope.redaction import hide_url_secrets
from opscope.store import Batch, LabelSet, label_set

PROBE_SERIES = ("probe_success", "probe_duration_seconds", "probe_http_status_code")


def probe_succeeded(status: int, valid_status_codes: list[int]) -> bool:
    """blackbox_exporter's rule: the status is in ``valid_status_codes``, or 2xx when empty."""
    if valid_status_codes:
        return status in valid_status_codes
    return 200 <= status < 300


class ProbeCollector:
    """Probes one URL of one probe job."""

    def __init__(
        self,
        *,
        job: ProbeConfig,
        target: str,
        interval: float,
        timeout: float,
        resolve: Callable[[str, LabelSet], int],
        where: str = "probe",
        redact: Callable[[str], str] = str,
    ) -> None:
        self._job = job
        self._interval = interval
        self._timeout = min(timeout, interval)
        self._target = target
        # The URL as stored in the instance label: without the configuration's secrets.
        self.url = redact(hide_url_secrets(target))
        labels = {**job.labels, "job": job.job, "instance": self.url}
        self.group = f"probe/{job.job}/{self.url}"
        self.health = TargetHealth(
            kind="probe",
            job=job.job,
            instance=self.url,
            url=self.url,
            interval=interval,
            labels=labels,
        )
        self._ids = np.array(
            [resolve(name, label_set(labels)) for name in PROBE_SERIES], dtype=np.int64
        )
        self._client = make_client(
            job.tls,
            where=where,
            follow_redirects=job.follow_redirects,
            keepalive=False,
            headers=job.headers,
        )

    @property
    def interval(self) -> float:
        """Seconds between probes."""
        return self._interval

    async def aclose(self) -> None:
        """Close the probe's HTTP client."""
        await self._client.aclose()

    async def collect(self, now: float) -> list[Batch]:
        """Probe once, stamped ``now``; never raises for target failures."""
        started = time.perf_counter()
        status = 0
        error = ""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.request(
                    self._job.method, self._target, timeout=self._timeout
                )
            status = response.status_code
            if not probe_succeeded(status, self._job.valid_status_codes):
                error = f"unexpected HTTP status {status} {response.reason_phrase}".rstrip()
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = describe_http_error(self.url, exc, self._timeout)
        duration = time.perf_counter() - started
        success = not error
        self.health.record(ok=success, at=now, duration=duration, samples=3, error=error)
        values = np.array([1.0 if success else 0.0, duration, float(status)])
        return [Batch(self.group, int(now * 1000), self._ids, values)]
