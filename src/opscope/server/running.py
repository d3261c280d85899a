"""Running ``opscope serve``: one asyncio process with the collectors and the web server.

:class:`OpscopeServer` owns the lifecycle: it takes an exclusive lock on the data directory (two
servers writing one store would corrupt its series ids), opens the store, binds the listening
socket (port 0 picks a free port), starts uvicorn and the monitor as named tasks, and on
:meth:`stop` — or SIGINT/SIGTERM under :meth:`run` — stops accepting, closes WebSocket clients,
cancels the collectors and closes the store. A second signal forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import socket
from collections.abc import Generator
from pathlib import Path
from typing import IO

import uvicorn

from opscope.clock import Clock, SystemClock
from opscope.config import LoadedConfig
from opscope.errors import ConfigError, StoreError
from opscope.monitor import Monitor
from opscope.monitor.rules import GroupResult, compile_groups
from opscope.notify import Notifier, NotifyAlert
from opscope.redaction import Redactor, config_secrets
from opscope.report.scheduling import ReportScheduler, scheduled_reports
from opscope.server.app import ServerState, create_app
from opscope.server.auth import is_loopback
from opscope.server.live import LiveHub
from opscope.server.reports_api import ReportsContext
from opscope.server.tokens import TokenFile
from opscope.store import Store
from opscope.store.runs import RunRecords
from opscope.telemetry import Telemetry

log = logging.getLogger(__name__)

#: Seconds to wait for tasks to finish after a stop request before cancelling them.
STOP_TIMEOUT = 5


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`OpscopeServer` handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class OpscopeServer:
    """The whole ``opscope serve`` process, startable and stoppable from code and tests."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        data_dir: Path | None = None,
        clock: Clock | None = None,
        hostname: str | None = None,
    ) -> None:
        config = loaded.config
        self.loaded = loaded
        self.host = host or config.server.host
        self.port = config.server.port if port is None else port
        self.data_dir = Path(data_dir or config.data_dir)
        self.clock = clock or SystemClock()
        self._hostname = hostname
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_file: IO[str] | None = None
        self._socket: socket.socket | None = None
        self._uvicorn: _Uvicorn | None = None
        self.store: Store | None = None
        self.monitor: Monitor | None = None
        self.hub: LiveHub | None = None
        self.notifier: Notifier | None = None
        self.runs: RunRecords | None = None
        self.reports: ReportScheduler | None = None
        self.telemetry = Telemetry()
        self._stopped = asyncio.Event()
        #: Masks the configuration's secrets; installed on the log handlers while serving.
        self.redact = Redactor(config_secrets(loaded))
        self._log_filter: logging.Filter | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server (``http://127.0.0.1:8765``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _lock_data_dir(self) -> None:
        path = self.data_dir / "serve.lock"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
        except OSError as exc:
            raise StoreError(
                f"cannot use data directory {self.data_dir}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"data directory {self.data_dir} is in use by {owner}; stop it or pass "
                "--data-dir to use another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"opscope serve (pid {os.getpid()})\n")
        handle.flush()
        self._lock_file = handle

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = _listen(self.host, self.port, family)
        except OSError as exc:
            raise StoreError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def start(self) -> None:
        """Lock the data dir, open the store, bind, and start serving and collecting.

        Raises :class:`ConfigError` when a rule does not compile and :class:`StoreError` when the
        data directory is in use or the port is taken.
        """
        config = self.loaded.config
        rule_groups = compile_groups(self.loaded.rule_groups)
        tokens = self._tokens()
        self._lock_data_dir()
        self._log_filter = self.redact.install()
        try:
            self._socket = self._bind()
            self.store = Store.open(self.data_dir)
        except BaseException:
            self._release()
            raise
        self.monitor = Monitor(
            config.monitor,
            self.store,
            telemetry=self.telemetry,
            clock=self.clock,
            hostname=self._hostname,
            rule_groups=rule_groups,
            redact=self.redact,
        )
        lookback_ms = int(config.monitor.lookback_delta.total_seconds() * 1000)
        self.hub = LiveHub(
            self.store,
            status=self.monitor.system_status,
            telemetry=self.telemetry,
            queue_size=config.server.websocket_queue,
            lookback_ms=lookback_ms,
            now=self.clock.time,
        )
        self.monitor.alert_listeners.append(self.hub.publish_alerts)
        if config.notify.channels:
            self.notifier = Notifier(config.notify, self.store, clock=self.clock)
            self.monitor.alert_listeners.append(self._notify)
        reports_context = self._start_reports()
        app = create_app(
            ServerState(
                project=config.project,
                store=self.store,
                monitor=self.monitor,
                hub=self.hub,
                telemetry=self.telemetry,
                now=self.clock.time,
                lookback_ms=lookback_ms,
                max_samples=config.server.query_max_samples,
                notifier=self.notifier,
                tokens=tokens,
                redact=self.redact,
                reports=reports_context,
                local_only=tokens is None,
            )
        )
        uv_config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=STOP_TIMEOUT,
            # Updates are small JSON texts sent to every client: compressing each copy per
            # connection costs more event-loop time than it saves.
            ws_per_message_deflate=False,
            ws_ping_interval=20,
            ws_ping_timeout=20,
        )
        self._uvicorn = _Uvicorn(uv_config)
        self._tasks.append(
            asyncio.create_task(self._uvicorn.serve(sockets=[self._socket]), name="http")
        )
        self._tasks.append(asyncio.create_task(self.monitor.run(), name="monitor"))
        if self.notifier is not None:
            self._tasks.append(asyncio.create_task(self.notifier.run(), name="notify"))
        if self.reports is not None:
            self._tasks.append(asyncio.create_task(self.reports.run(), name="reports"))
        while not self._uvicorn.started:
            if self._tasks[0].done():
                self._tasks[0].result()
                raise StoreError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        # Everything built so far (modules, the app, the store's series index) lives as long
        # as the server: keep it out of the cyclic collector's full passes, which would
        # otherwise walk it again and again (Instagram's gc.freeze() pattern).
        gc.collect()
        gc.freeze()
        log.info(
            "opscope serving %s on %s (data in %s)",
            config.project,
            self.url,
            self.data_dir / Store.FILENAME,
        )

    def _tokens(self) -> TokenFile | None:
        """The API tokens every request must carry, or ``None`` on loopback with ``server.auth:
        auto``. Raises :class:`ConfigError` when tokens are needed but none exist."""
        if self.loaded.config.server.auth != "required" and is_loopback(self.host):
            return None
        tokens = TokenFile(self.data_dir)
        if not tokens.records():
            required = self.loaded.config.server.auth == "required"
            if not is_loopback(self.host):
                why = f"binding {self.host} (not a loopback address)"
                other = "bind 127.0.0.1" + (" with server.auth: auto" if required else "")
            else:  # loopback: only server.auth: required asks for tokens
                why = "server.auth: required"
                other = f"set server.auth: auto (a server bound to {self.host} needs no token)"
            raise ConfigError(
                f"{why} needs API tokens and {tokens.path} has none; create one with "
                f"`opscope token create --name NAME --scope admin --data-dir {self.data_dir}` "
                f"(scopes: read, write, admin), or {other}"
            )
        return tokens

    def _start_reports(self) -> ReportsContext | None:
        """Open the report run records and, when reports have schedules, the scheduler."""
        config = self.loaded.config
        if not config.reports:
            return None
        assert self.store is not None
        self.runs = RunRecords(self.store.path)
        base_url = config.server.external_url or self.url
        scheduled = scheduled_reports(config.reports, config.sources)
        if scheduled:
            self.reports = ReportScheduler(
                scheduled,
                runs=self.runs,
                data_dir=self.data_dir,
                base=self.loaded.path.parent,
                base_url=base_url,
                notifier=self.notifier,
                clock=self.clock,
            )
        return ReportsContext(
            reports=config.reports,
            runs=self.runs,
            store=self.store,
            data_dir=self.data_dir,
            base_url=base_url,
            now=self.clock.time,
        )

    def _notify(self, result: GroupResult) -> None:
        """Hand a rule group's firing and resolved alerts to the notifier (pending ones are not
        notified, as Prometheus does not send them to Alertmanager)."""
        assert self.notifier is not None
        alerts = []
        for rule in result.group.rules:
            for alert in rule.alerts.values():
                if alert.state == "pending":
                    continue
                ends = alert.resolved_at if alert.state == "inactive" else None
                alerts.append(
                    NotifyAlert(
                        alert.labels, alert.annotations, alert.fired_at or alert.active_at, ends
                    )
                )
        self.notifier.receive(f"{result.group.file}:{result.group.name}", alerts)

    async def stop(self) -> None:
        """Stop serving and collecting, then close the store; safe to call twice."""
        gc.unfreeze()  # what start() froze may be garbage from now on
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        http = self._tasks[0] if self._tasks else None
        if http is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(http), STOP_TIMEOUT + 1)
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("task %s ended with %r", task.get_name(), result)
        self._tasks.clear()
        if self.monitor is not None:
            await self.monitor.aclose()
        if self.hub is not None:
            self.hub.close()
        self._release()
        self._stopped.set()

    def _release(self) -> None:
        if self._log_filter is not None:
            Redactor.uninstall(self._log_filter)
            self._log_filter = None
        if self.runs is not None:
            self.runs.close()
            self.runs = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._lock_file is not None:
            # Remove the lock file while still holding the lock, so no one reads a stale owner.
            with contextlib.suppress(OSError):
                (self.data_dir / "serve.lock").unlink()
            self._lock_file.close()
            self._lock_file = None

    async def run(self) -> None:
        """Start, then serve until SIGINT/SIGTERM (a second signal forces the exit)."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stopping.is_set():
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                if self._uvicorn is not None:
                    self._uvicorn.force_exit = True
                for task in self._tasks:
                    task.cancel()
                return
            log.info("%s received: stopping", signal.Signals(signum).name)
            stopping.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        loop.add_signal_handler(
            signal.SIGHUP,
            lambda: log.warning(
                "SIGHUP received: reloading the configuration is not supported; restart "
                "opscope serve to apply changes"
            ),
        )
        try:
            await self.start()
            waiters = [asyncio.create_task(stopping.wait()), *self._tasks]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
        finally:
            await self.stop()
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)


def _listen(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    """A listening TCP socket on ``host:port``, as :func:`socket.create_server` makes it but
    created with ``IPPROTO_TCP``: asyncio sets ``TCP_NODELAY`` on accepted connections only
    when the socket's ``proto`` is ``IPPROTO_TCP`` (``create_server`` leaves it 0). Without
    it, a response written in two parts (headers, then body) waits for the client's delayed
    ACK — about 40 ms on Linux — on every keep-alive request (Nagle's algorithm)."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock
