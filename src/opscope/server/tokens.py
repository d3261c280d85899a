"""API tokens: created by ``opscope token create``, kept as hashes in ``<data_dir>/tokens.json``.

A token is ``opscope_`` followed by 43 characters of base64url randomness (256 bits, Python's
``secrets``). Only its SHA-256 is stored — a hash that cannot be reversed into a token of that
much entropy, the scheme GitHub and Grafana use for their API tokens — with a name, a scope and
the creation time; the token itself is printed once. The file is written atomically with mode
0600. The running server re-reads it when it changes, so a new or revoked token takes effect
without a restart.

Scopes are ordered, as Grafana's roles are: ``read`` (queries, series, targets, rules, alerts,
the dashboard's data, ``/metrics``, the WebSocket) < ``write`` (also pushes) < ``admin`` (also
silences and every other endpoint that changes the server's state).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

from opscope.errors import ConfigError, StoreError

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
FILENAME = "tokens.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_PREFIX = "opscope_"


def allows(granted: Scope, needed: Scope) -> bool:
    """Whether a token of scope ``granted`` may do what needs ``needed`` (ordered scopes)."""
    return SCOPES.index(granted) >= SCOPES.index(needed)


def token_hash(token: str) -> str:
    """SHA-256 of a token, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: its name, scope, hash and creation time (Unix seconds)."""

    name: str
    scope: Scope
    sha256: str
    created: float


class TokenFile:
    """The tokens of one data directory (``<data_dir>/tokens.json``).

    Reading a missing file gives no tokens; a file that is not what opscope writes raises
    :class:`StoreError`.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILENAME
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    def records(self) -> list[TokenRecord]:
        """Every stored token, oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            items = json.loads(text)["tokens"]
            return [
                TokenRecord(
                    name=str(i["name"]),
                    scope=cast(Scope, i["scope"]) if i["scope"] in SCOPES else "read",
                    sha256=str(i["sha256"]),
                    created=float(i["created"]),
                )
                for i in items
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.path} is not a token file of opscope: {exc}") from exc

    def create(self, name: str, scope: Scope, *, now: float | None = None) -> str:
        """Create a token and store its hash; return the token (shown once).

        Raises :class:`ConfigError` for a bad name or scope, or a name already in use.
        """
        if not _NAME.match(name):
            raise ConfigError(
                f'invalid token name "{name}": use letters, digits, ".", "_" and "-" '
                "(at most 64, starting with a letter or digit)"
            )
        if scope not in SCOPES:
            raise ConfigError(f'invalid scope "{scope}": expected one of {", ".join(SCOPES)}')
        records = self.records()
        if any(r.name == name for r in records):
            raise ConfigError(f'a token named "{name}" exists; revoke it first or pick a name')
        token = _PREFIX + secrets.token_urlsafe(32)
        created = time.time() if now is None else now
        records.append(TokenRecord(name, scope, token_hash(token), created))
        self._write(records)
        return token

    def revoke(self, name: str) -> bool:
        """Delete the token called ``name``; ``False`` when there is none."""
        records = self.records()
        kept = [r for r in records if r.name != name]
        if len(kept) == len(records):
            return False
        self._write(kept)
        return True

    def _write(self, records: list[TokenRecord]) -> None:
        text = json.dumps({"tokens": [asdict(r) for r in records]}, indent=2) + "\n"
        tmp = self.path.with_suffix(".json.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from exc

    def scope_of(self, token: str) -> Scope | None:
        """The scope of ``token``, or ``None`` when it is not a stored token. The file is
        re-read when it changed since the last call."""
        with self._lock:
            self._refresh()
            record = self._by_hash.get(token_hash(token))
        if record is None or not hmac.compare_digest(record.sha256, token_hash(token)):
            return None
        return record.scope

    def _refresh(self) -> None:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return
        self._by_hash = {r.sha256: r for r in self.records()} if stamp is not None else {}
        self._stamp = stamp
