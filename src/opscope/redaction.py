"""Keeping the configuration's secrets out of logs, API responses and error messages.

The secrets of a configuration are the values of environment variables (``${VAR}``) whose names say
they are secrets (:data:`SECRET_VARIABLE`: ``DB_PASSWORD``, ``API_TOKEN``, ``HOOK_SECRET``…) or
that are used in a notification channel, the password of every URL in it (notification channels —
SMTP passwords —, probe and scrape targets, SQL databases), the values of URL query parameters
named like credentials (``password=``, ``apikey=``, ``token=``…), every webhook ``secret`` and
probe headers named like credentials (``Authorization``). Other substituted values
(``${OPSCOPE_PORT}``, a host name) are not secrets and are shown. :class:`Redactor` replaces each
secret with ``***`` in a text; :meth:`Redactor.install` puts it on the logging handlers so that no
log line carries one, whatever a library wrote into its message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from opscope.config import LoadedConfig

MASK = "***"
#: Shorter values are not redacted: "1" or "on" would mask half of every line.
MIN_SECRET_LENGTH = 4
#: A word of a secret with spaces is masked on its own from this length.
MIN_WORD_LENGTH = 6
#: Where an error message may cut a secret: spaces, quotes, backslashes, URL delimiters.
_WORD_BREAKS = re.compile(r"""[\s'"`\\@/:;,?#&=]+""")


#: Environment variables whose values are secrets, by name: …PASSWORD, …PASS, …PWD, a ``PW``
#: word (``DB_PW``), …SECRET, …TOKEN, …KEY, …CREDENTIAL(S), …AUTH….
SECRET_VARIABLE = re.compile(r"PASS|PWD|(?:^|_)PW(?:_|$)|SECRET|TOKEN|KEY|CREDENTIAL|AUTH", re.I)


def is_secret_variable(name: str, loc: tuple[str | int, ...] = ()) -> bool:
    """Whether the value of ``${name}``, written at ``loc`` in the configuration, is a secret:
    its name says so (:data:`SECRET_VARIABLE`), or it is part of a notification channel
    (apprise URLs carry tokens in their paths: ``slack://TokenA/TokenB/TokenC``)."""
    return bool(SECRET_VARIABLE.search(name)) or tuple(loc[:2]) == ("notify", "channels")


def url_password(url: str) -> str | None:
    """The password of ``scheme://user:password@host…``, if it has one."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    return unquote(password) if password else None


def config_secrets(loaded: LoadedConfig) -> set[str]:
    """Every secret of a loaded configuration (see the module's docstring)."""
    found = set(loaded.secrets)
    config = loaded.config
    urls: list[str] = []
    for channel in config.notify.channels.values():
        urls += [u for u in (channel.url, channel.webhook) if u]
        if channel.secret:
            found.add(channel.secret)
    urls += [query.url for query in config.monitor.sql]
    urls += [target for probe in config.monitor.probes for target in probe.targets]
    for probe in config.monitor.probes:  # Authorization, X-Api-Key…: credentials
        found.update(v for k, v in probe.headers.items() if SECRET_VARIABLE.search(k))
    for url in urls:
        password = url_password(url)
        if password:
            found.add(password)
        found.update(url_secret_parameters(url))
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


def hide_url_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (unchanged without)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


#: Query parameters whose values are credentials: password, passwd, pwd, token, secret, key
#: (apikey, api_key, access_token, client_secret …), credential, signature, auth.
SECRET_PARAMETER = re.compile(r"pass|pwd|token|secret|key|credential|signature|sig\Z|auth", re.I)


def url_secret_parameters(url: str) -> list[str]:
    """The values of ``url``'s query parameters named like credentials (decoded)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return []
    found = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and value and SECRET_PARAMETER.search(unquote(name)):
            found.append(unquote(value.replace("+", " ")))
    return found


def hide_url_secrets(url: str) -> str:
    """``url`` with its user-info password and the values of query parameters named like
    credentials (:data:`SECRET_PARAMETER`) replaced by ``***``; everything else as written."""
    hidden = hide_url_password(url)
    rest, hash_, fragment = hidden.partition("#")
    head, question, query = rest.partition("?")
    if not question:
        return hidden
    pairs = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        secret = sep and value and SECRET_PARAMETER.search(unquote(name))
        pairs.append(f"{name}={MASK}" if secret else pair)
    return f"{head}?{'&'.join(pairs)}{hash_}{fragment}"


class Redactor:
    """Replaces each of ``secrets`` (and its URL-encoded form) with ``***`` in texts."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        # As error messages quote a secret: URL-encoded, escaped as in repr() and JSON, and each
        # long enough word of it (a syntax error shows the text after a quote or a space).
        values |= {_quoted(s) for s in values}
        values |= {repr(s)[1:-1] for s in values} | {json.dumps(s)[1:-1] for s in values}
        values |= {
            w for s in list(values) for w in _WORD_BREAKS.split(s) if len(w) >= MIN_WORD_LENGTH
        }
        ordered = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret masked."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def install(self, logger: logging.Logger | None = None) -> _LogFilter:
        """Mask secrets in every record the handlers of ``logger`` (the root logger) emit."""
        target = logger or logging.getLogger()
        log_filter = _LogFilter(self)
        for handler in target.handlers:
            handler.addFilter(log_filter)
        return log_filter

    @staticmethod
    def uninstall(log_filter: logging.Filter, logger: logging.Logger | None = None) -> None:
        """Remove a filter put there by :meth:`install`."""
        for handler in (logger or logging.getLogger()).handlers:
            handler.removeFilter(log_filter)


def _quoted(secret: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(secret, safe="")


class _LogFilter(logging.Filter):
    """Formats a record's message now, masks secrets in it and in its traceback text."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self._redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True
