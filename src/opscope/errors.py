"""The one exception tree of opscope.

Every error opscope raises on purpose derives from :class:`OpscopeError`; third-party exceptions
are caught at the boundary where they happen and re-raised as one of these, chained with
``raise … from exc`` so the cause stays visible in logs::

    OpscopeError
    ├── ConfigError            a configuration file or value is wrong (CLI exit code 2)
    │   └── ConfigFileError    …with the file, line and column of each problem
    ├── QueryError             a query or selector cannot be parsed or evaluated (HTTP 400)
    │   ├── UnsupportedQuery   valid PromQL outside the subset opscope evaluates (HTTP 400)
    │   └── QueryTooLarge      the query would exceed a resource limit (HTTP 422)
    ├── StoreError             the embedded store cannot be opened or written
    ├── DeployError            a deploy, rollback or history operation failed
    │   ├── DeployRefused      refused before anything was applied (immutable field, lock held)
    │   ├── KubeError          the Kubernetes API answered with an error (status, reason)
    │   │   └── KubeUnavailable   …or could not be reached
    │   └── LocalProcessError  the local backend cannot start, reach or control a service's
    │                          processes (front port taken, supervisor unreachable, …)
    ├── ReportError            a report cannot be computed (unknown report, empty data, …)
    │   └── SourceError        a report's data source cannot be read or does not fit its mapping
    ├── CollectError           one collection from one target failed
    │   ├── ScrapeError        HTTP or network failure, bad status, timeout
    │   └── ExpositionError    the payload is not valid Prometheus text exposition format
    └── RenderError            a report document cannot be rendered (unknown format, locale or
                               currency, no Chromium for PDF, output not writable)

Collection errors are *temporary* by nature: the collector records them for the target's health
and tries again at the next interval; they never stop the server.
"""

from __future__ import annotations

from dataclasses import dataclass


class OpscopeError(Exception):
    """Base class of every error opscope raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a configuration file.

    ``path`` is the dotted field path (``monitor.scrape[0].interval``), ``line`` and ``column``
    are 1-based positions in ``file`` (``None`` when the problem has no position, e.g. a missing
    top-level section).
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(OpscopeError):
    """A configuration value is wrong; the message says which and why."""


class ConfigFileError(ConfigError):
    """A configuration file has one or more problems, each with file, line and column."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class QueryError(OpscopeError):
    """A query, selector, time or step parameter cannot be parsed or evaluated."""


class UnsupportedQuery(QueryError):
    """Valid PromQL that uses a construct opscope does not evaluate; never mis-evaluated."""


class QueryTooLarge(QueryError):
    """The query would load more samples or read more data than the configured limits allow."""


class StoreError(OpscopeError):
    """The embedded store cannot be opened, migrated or written."""


class DeployError(OpscopeError):
    """A deploy, rollback or history operation failed; the message says what and why."""


class DeployRefused(DeployError):
    """A deploy refused before applying anything: an immutable field would change, or another
    deploy holds the release's lock."""


class KubeError(DeployError):
    """The Kubernetes API answered a request with an error.

    ``status`` is the HTTP status (``None`` when no request was made), ``reason`` the
    API server's reason (``NotFound``, ``Conflict``, ``Invalid``, …).
    """

    def __init__(self, message: str, *, status: int | None, reason: str | None = None) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


class KubeUnavailable(KubeError):
    """The Kubernetes API server cannot be reached (network error or timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None)


class LocalProcessError(DeployError):
    """The local backend cannot start, reach or control the processes of a service: the front
    port is taken, the supervisor does not answer, a secret is missing, a request is refused."""


class ReportError(OpscopeError):
    """A report cannot be computed: unknown report name, a period or option it cannot take."""


class SourceError(ReportError):
    """A data source cannot be read (missing file, database unreachable) or does not fit its
    mapping (a mapped column is missing); the message names the file or table and column."""


class MappingError(SourceError):
    """A mapped column is not in the source: a configuration error. ``table`` and ``column``
    are the canonical table and column of the mapping (to find its line in the file)."""

    def __init__(self, message: str, *, table: str, column: str) -> None:
        super().__init__(message)
        self.table = table
        self.column = column


class CollectError(OpscopeError):
    """One collection from one target failed; recorded as the target's last error."""


class ScrapeError(CollectError):
    """HTTP or network failure, unexpected status code or timeout while scraping or probing."""


class ExpositionError(CollectError):
    """A payload is not valid Prometheus text exposition format.

    ``line`` is the 1-based line number in the payload where parsing stopped.
    """

    def __init__(self, message: str, *, line: int) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


class RenderError(OpscopeError):
    """A report document cannot be rendered in the asked format; the message says why."""
