"""The front proxy of a local service: a stable TCP port in front of changing backend processes.

Every accepted connection is paired with one connection to the backend chosen *at accept time*
(the current child's port) and bytes are copied both ways until both sides have finished; an
end-of-stream in one direction is passed on as a half-close (``shutdown(SHUT_WR)``), so
request/response protocols that close their sending side first keep working. Switching the
backend therefore affects new connections only: open ones drain on the backend they started
with, and :meth:`FrontProxy.drained` tells when a backend has none left.

A backend that refuses connections (a process still starting) or has no port yet (a crashed
process waiting to be restarted) is retried every ``RETRY_INTERVAL`` for up to
``connect_timeout`` seconds, re-reading the backend each time, before the client connection is
closed. With no backend at all, a connection is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

#: Seconds between two connection attempts to a backend that refuses.
RETRY_INTERVAL = 0.05
#: Bytes read at once from either side.
CHUNK = 65536

#: The backend for a new connection: a key identifying it (for draining) and its port on
#: 127.0.0.1, ``None`` while it has none (being restarted).
Backend = tuple[Hashable, int | None]


class FrontProxy:
    """A TCP proxy listening on ``sock`` (bound and listening) and forwarding each connection to
    ``backend()``."""

    def __init__(
        self,
        sock: socket.socket,
        backend: Callable[[], Backend | None],
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self._sock = sock
        self._backend = backend
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._active: Counter[Hashable] = Counter()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start accepting connections."""
        self._server = await asyncio.start_server(self._accepted, sock=self._sock)

    async def stop_accepting(self) -> None:
        """Close the listening socket; open connections go on."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Stop accepting, then close every open connection."""
        await self.stop_accepting()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def active(self, key: Hashable) -> int:
        """Open connections to the backend identified by ``key``."""
        return self._active[key]

    async def drained(self, key: Hashable, *, timeout: float) -> bool:
        """Wait until no connection to backend ``key`` is open, at most ``timeout`` seconds;
        whether it drained."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._active[key] == 0), timeout
                )
            except TimeoutError:
                return False
        return True

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected = await self._connect()
        if connected is None:
            return
        key, (backend_reader, backend_writer) = connected
        try:
            await asyncio.gather(
                _copy(reader, backend_writer),
                _copy(backend_reader, writer),
            )
        finally:
            backend_writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await backend_writer.wait_closed()
            await self._release(key)

    async def _connect(
        self,
    ) -> tuple[Hashable, tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None:
        """Connect to the backend; the backend's key is counted as active until released."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        while True:
            backend = self._backend()
            if backend is None:
                return None
            key, port = backend
            if port is not None:
                self._active[key] += 1
                try:
                    return key, await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await self._release(key)
            if loop.time() >= deadline:
                log.warning("no backend accepted a connection within %ss", self._connect_timeout)
                return None
            await asyncio.sleep(RETRY_INTERVAL)

    async def _release(self, key: Hashable) -> None:
        async with self._changed:
            self._active[key] -= 1
            if self._active[key] <= 0:
                del self._active[key]
            self._changed.notify_all()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until end of stream, then half-close ``writer``; a reset
    on either side ends the copy."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        # A reset on one side: abort the other so the peer learns it too.
        writer.transport.abort()
