"""``opscope serve`` with a commit log: the server process that ``bench/live.py`` measures.

Builds :class:`OpscopeServer` from a configuration exactly as ``opscope serve`` does and runs it
until SIGTERM/SIGINT, recording for every committed :meth:`Store.append`:

* ``ts_ms`` — the batch timestamp (collection start, ms since the epoch; what a
  ``metrics_update`` message carries as ``timestamp``), and the batch's ``group``;
* ``commit`` — ``time.time()`` (Unix s) in a store listener registered *before* the live hub's,
  i.e. right after the SQLite COMMIT, before any WebSocket message is built;
* ``after_broadcast`` — ``time.time()`` in a listener registered after :meth:`OpscopeServer.start`,
  i.e. after the hub has built and enqueued the messages of that append.

It also records the server's event-loop stalls (a 5 ms sleep waking more than 10 ms late), as
``(start Unix s, length s)``, to tell server-side delays from client-side ones.

The first listener is put in place by wrapping :meth:`Store.open` in this process only: store
listeners run in registration order, and the hub registers its own while the server starts.
On exit ``{"commits": […], "stalls": […]}`` is written as JSON to ``--commits``; ``--ready``
receives the server URL once it answers. Not a benchmark by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from _support import watch_loop
from opscope.config import load_config
from opscope.server.running import OpscopeServer
from opscope.store import Batch, Store


class CommitLog:
    """Wall-clock times of each committed append, in commit order."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self._last: Sequence[Batch] | None = None

    def on_commit(self, batches: Sequence[Batch]) -> None:
        """First listener: the append has just committed."""
        now = time.time()
        self._last = batches
        self.records.append(
            {
                "ts_ms": max(b.timestamp_ms for b in batches),
                "groups": [b.group for b in batches],
                "commit": now,
                "after_broadcast": None,
            }
        )

    def after_broadcast(self, batches: Sequence[Batch]) -> None:
        """Last listener: every other listener (the live hub) has run for this append."""
        now = time.time()
        if batches is self._last and self.records:
            self.records[-1]["after_broadcast"] = now


def install_first_listener(log: CommitLog) -> None:
    """Make :meth:`Store.open` register ``log.on_commit`` before anyone else can listen."""
    original = Store.open

    def open_with_log(cls: type[Store], data_dir: Path, *, readonly: bool = False) -> Store:
        store = original(data_dir, readonly=readonly)
        store.add_listener(log.on_commit)
        return store

    Store.open = classmethod(open_with_log)  # type: ignore[method-assign, assignment]


async def serve(args: argparse.Namespace) -> None:
    """Run the server until a signal; then stop it and write the commit log."""
    log = CommitLog()
    install_first_listener(log)
    server = OpscopeServer(load_config(args.config), port=args.port, data_dir=args.data_dir)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await server.start()
    stalls: list[tuple[float, float]] = []
    try:
        assert server.store is not None
        server.store.add_listener(log.after_broadcast)
        watcher = asyncio.create_task(watch_loop(stalls), name="bench-loop-watch")
        args.ready.write_text(server.url)
        await stopping.wait()
        watcher.cancel()
    finally:
        await server.stop()
        args.commits.write_text(json.dumps({"commits": log.records, "stalls": stalls}))


def main(argv: list[str] | None = None) -> int:
    """Parse options and serve."""
    parser = argparse.ArgumentParser(
        prog="bench/_live_server.py",
        description="Run opscope serve and log the wall-clock time of every store commit.",
    )
    parser.add_argument("-c", "--config", type=Path, required=True, help="opscope.yaml")
    parser.add_argument("--data-dir", type=Path, required=True, help="store directory")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0 = any free)")
    parser.add_argument("--ready", type=Path, required=True, help="file to write the URL to")
    parser.add_argument("--commits", type=Path, required=True, help="file to write the log to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
