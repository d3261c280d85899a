"""HTTP clients of the scrape and probe collectors, and how their failures are described."""

from __future__ import annotations

import ssl

import httpx

from opscope import __version__
from opscope.config.models import TLSConfig
from opscope.errors import ConfigError

USER_AGENT = f"opscope/{__version__}"


def tls_context(tls: TLSConfig, *, where: str) -> ssl.SSLContext:
    """An SSL context for ``tls`` (system CAs unless ``ca_file``; client certificate if given).

    Raises :class:`ConfigError` naming ``where`` when a file cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load TLS files: {exc}") from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_client(
    tls: TLSConfig,
    *,
    where: str,
    follow_redirects: bool,
    keepalive: bool,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for one job. Without ``keepalive`` every request opens a new connection
    (probes measure connecting too, as blackbox_exporter does)."""
    return httpx.AsyncClient(
        verify=tls_context(tls, where=where),
        follow_redirects=follow_redirects,
        limits=httpx.Limits(max_keepalive_connections=100 if keepalive else 0),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        trust_env=False,  # targets are reached directly, never through a proxy from the env
    )


def describe_http_error(url: str, exc: BaseException, timeout: float) -> str:
    """A one-line reason for a failed HTTP request, in the style of Prometheus's lastError."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f'Get "{url}": context deadline exceeded (timeout {timeout:g}s)'
    if isinstance(exc, httpx.ConnectError | OSError):
        cause: BaseException | None = exc
        reason = str(exc) or "connection failed"
        while cause is not None:  # the deepest OS error says what really happened
            if isinstance(cause, ConnectionRefusedError):
                reason = "connection refused"
                break
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason = f"TLS: certificate verify failed: {cause.verify_message}"
                break
            if isinstance(cause, ssl.SSLError):
                reason = f"TLS error: {cause.reason or cause}"
                break
            if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
                reason = cause.strerror.lower()
            cause = cause.__cause__ or cause.__context__
        return f'Get "{url}": {reason}'
    if isinstance(exc, httpx.TooManyRedirects):
        return f'Get "{url}": too many redirects'
    return f'Get "{url}": {exc.__class__.__name__}: {exc}'
