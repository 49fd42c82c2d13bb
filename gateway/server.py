"""The HTTP server around the app: connection limits and timeouts that aiohttp
does not have, and the loop that runs until SIGINT/SIGTERM.

aiohttp's server has a keep-alive timeout but no limit on how long a client may
take to send its headers, none on a request body that stalls, and no cap on open
connections, so a few hundred clients that trickle bytes hold a node's sockets
and file descriptors forever (slowloris). This module adds, per connection:

* header timeout: the request line and headers must be complete within
  `[server] header_timeout` seconds of the connection opening, or of the first
  byte of the next request on a kept-alive connection (408, then close);
* body idle timeout: while a handler waits for body bytes, the client may not
  go quiet for more than `[server] body_idle_timeout` seconds (close: the
  handler's read fails, an upload is dropped and nothing is recorded). Time the
  server itself is not reading (flow control paused) never counts;
* keep-alive idle timeout: aiohttp's own `keepalive_timeout`;

and per server a cap on open connections, `[server] max_connections`, lowered to
fit under the process's open-file limit (raised to its hard limit first). At the
cap a new connection first evicts the longest-idle connection that has no
request in progress (one waiting for headers or idling between requests) and
has been quiet for EVICT_GRACE at least; if there is none, the new one gets a
canned 503 and is closed without ever reaching the app (so a flood of
reconnecting clients gets 503s instead of churning every slot, including the
one a health check just opened). One sweeper task checks every connection twice a
second, so the cost per connection is a few attributes, not a timer.

aiohttp's RequestHandler and Server are subclassed (their private state is read:
`_current_request`, `_messages`, `_reading_paused`); this ties the module to
aiohttp 3.x, which pyproject.toml pins.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import time
import weakref
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .keys import CONFIG, METRICS
from .shared_slot import SharedSlot

log = logging.getLogger("hearth.server")

SWEEP_INTERVAL = 0.5
# asyncio accepts up to `backlog` sockets in one go before any protocol (and so the
# connection cap) sees them, and Python 3.11 reports an out-of-descriptors accept once
# per socket of that batch, pausing all accepts for a second: so the cap leaves room
# for two batches (one being accepted, one evicted and not yet closed)
ACCEPT_BACKLOG = 64
EVICT_GRACE = 0.1  # seconds: a newer connection is never evicted, it may not have had a round trip to talk yet
FD_BASE = 48  # descriptors for the database, logs, block files being read, the event loop

_REJECT_BODY = b'{"error": {"code": "too_many_connections", "message": "the node has too many open connections; retry shortly"}}'
REJECT_503 = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(_REJECT_BODY)).encode() + b"\r\n\r\n" + _REJECT_BODY)
_TIMEOUT_BODY = b'{"error": {"code": "request_timeout", "message": "the request headers did not arrive in time"}}'
REQUEST_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


@dataclass
class Limits:
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1000


@dataclass
class ConnectionStats:
    """Counters for /metrics."""

    open: int = 0
    accepted: int = 0
    rejected: int = 0  # got the canned 503
    evicted: int = 0  # idle connections closed to make room
    header_timeouts: int = 0
    body_timeouts: int = 0


class PressureReport:
    """One log line per second at most about connection pressure (idle connections
    evicted, connections refused, accept failing for want of descriptors), with
    the counts since the last line: a flood of clients cannot flood the log."""

    def __init__(self, logger: logging.Logger, every: float = 1.0, pace: SharedSlot | None = None):
        self.logger, self.every = logger, every
        self.counts: dict[str, int] = {}
        self._last = float("-inf")
        self.pace = pace  # with several workers: when any of them last wrote such a line (wall clock)

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.flush()

    def flush(self) -> None:
        now = time.monotonic()
        if not self.counts or now - self._last < self.every:
            return
        if self.pace is not None:  # one line a second for the whole node, not per worker
            wall = time.time()
            old, new = self.pace.update(lambda last: wall if wall - last >= self.every else last)
            if new != wall:
                return
        self._last = now
        parts = ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items()))
        self.counts.clear()
        self.logger.warning("connection pressure: %s", parts)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the timestamps the sweeper reads."""

    def __init__(self, manager: "GuardedServer", **kwargs):
        super().__init__(manager, **kwargs)
        now = manager._loop.time()
        # when the wait for the current request's headers began: the connection's
        # opening, then the first byte of each later request (None: idle, no bytes yet)
        self.headers_since: float | None = now
        self.partial = False  # bytes of a request have arrived, its headers have not
        self.last_payload = None  # the body of the last request parsed
        self.last_rx = now  # when bytes last arrived
        self.watched_request = None  # the request whose body the sweeper watches

    def data_received(self, data: bytes) -> None:
        if self._close and not self._force_close and self._receiving_body():
            # aiohttp stops reading once a shutdown begins (close()), even the body of the
            # request in progress; an upload must be able to finish during the drain
            self._close = False
            try:
                self.data_received(data)
            finally:
                self._close = True
            return
        now = self._loop.time()
        self.last_rx = now
        # the rest of a body the handler did not read (aiohttp drains it after the
        # response) is not the start of the next request's headers
        draining = self.last_payload is not None and not self.last_payload.is_eof()
        waiting = self._current_request is None and not self._messages and not draining
        if waiting:
            if self.headers_since is None:
                self.headers_since = now
            self.partial = True
        super().data_received(data)
        if self._messages:  # headers complete: a request was parsed
            self.headers_since, self.partial = None, False
            self.last_payload = self._messages[-1][1]

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Requests aiohttp's parser refuses (bad request line, oversized headers...) get
        the node's JSON error shape too, not aiohttp's text/plain page."""
        plain = super().handle_error(request, status, exc, message)
        if not isinstance(plain, web.Response):
            return plain
        text = " ".join((plain.text or "").split())  # one line: the parser's message has a caret diagram
        if status == 500:
            text = "internal server error"  # never a traceback, even in debug mode
        code = {400: "bad_request", 413: "too_large", 414: "uri_too_long", 431: "headers_too_large",
                500: "internal"}.get(status, "http_error")
        resp = web.json_response({"error": {"code": code, "message": text or "bad request"}}, status=status)
        resp.force_close()
        return resp

    def _receiving_body(self) -> bool:
        request = self._current_request
        return request is not None and not request.content.is_eof()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """aiohttp's shutdown, but a request in progress first gets `timeout` to finish,
        receiving its body (aiohttp's stops reading at once and waits: an upload would
        stall, then be cut)."""
        if self._request_in_progress and timeout:
            started = self._loop.time()
            self._handler_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._handler_waiter), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._handler_waiter = None
            timeout = max(0.0, timeout - (self._loop.time() - started))
        await super().shutdown(timeout)

    def resume_reading(self, resume_parser: bool = True) -> None:
        # the client was not idle while we were not reading
        self.last_rx = self._loop.time()
        super().resume_reading(resume_parser)

    def waiting_for_request(self) -> bool:
        return self._current_request is None and not self._messages and not self._force_close

    def check(self, now: float, limits: Limits, stats: ConnectionStats) -> None:
        """Close the connection if it broke a limit."""
        if self._force_close or self.transport is None:
            return
        request = self._current_request
        if request is None:
            self.watched_request = None
            if self._messages or self.headers_since is None:
                return  # a request is queued, or idle between requests (keepalive_timeout's job)
            if now - self.headers_since > limits.header_timeout:
                stats.header_timeouts += 1
                if self.partial:
                    self.transport.write(REQUEST_TIMEOUT_408)
                self.force_close()
            return
        if request is not self.watched_request:  # a new request started: its body clock starts now
            self.watched_request = request
            self.last_rx = max(self.last_rx, now)
        if request.content.is_eof() or self._reading_paused:
            return
        if now - self.last_rx > limits.body_idle_timeout:
            stats.body_timeouts += 1
            log.info("closing a connection whose request body stalled for %.0f s (%s %s)",
                     now - self.last_rx, request.method, request.path[:200])
            self.force_close()


class _Reject(asyncio.Protocol):
    """A connection over the cap: a canned 503, then close. Never reaches the app."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            transport.write(REJECT_503)  # type: ignore[attr-defined]
        finally:
            transport.close()

    def data_received(self, data: bytes) -> None:
        pass


class GuardedServer(web.Server):
    def __init__(self, *args, limits: Limits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.stats = ConnectionStats()
        self._pending: weakref.WeakSet[GuardedRequestHandler] = weakref.WeakSet()  # made, not yet connected
        self._sweeper: asyncio.Task | None = None
        self.pressure = PressureReport(log)

    def start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop_sweeper(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.pressure.flush()
            now = self._loop.time()
            for handler in list(self._connections):
                try:
                    handler.check(now, self.limits, self.stats)  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001 - one odd connection must not stop the sweeper
                    log.exception("connection check failed")

    def __call__(self):
        open_now = len(self._connections) + len(self._pending)
        if open_now >= self.limits.max_connections and not self._evict_idle():
            self.stats.rejected += 1
            self.pressure.note(f"connections refused with 503 (limit {self.limits.max_connections})")
            return _Reject()
        self.stats.accepted += 1
        handler = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        self._pending.add(handler)
        return handler

    def connection_made(self, handler, transport) -> None:
        self._pending.discard(handler)
        super().connection_made(handler, transport)
        self.stats.open = len(self._connections)

    def connection_lost(self, handler, exc=None) -> None:
        super().connection_lost(handler, exc)
        self.stats.open = len(self._connections)

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest without a request in progress,
        if it has been quiet for EVICT_GRACE at least."""
        victim, since = None, self._loop.time() - EVICT_GRACE
        for handler in self._connections:
            if isinstance(handler, GuardedRequestHandler) and handler.waiting_for_request():
                if handler.last_rx < since:
                    victim, since = handler, handler.last_rx
        if victim is None:
            return False
        self.stats.evicted += 1
        self.pressure.note(f"idle connections closed for new ones (limit {self.limits.max_connections})")
        victim.force_close()
        return True

    async def shutdown(self, timeout: float | None = None) -> None:
        await super().shutdown(timeout)  # the sweeper goes on while requests drain: a stalled body is cut
        await self.stop_sweeper()


class GuardedAppRunner(web.AppRunner):
    """web.AppRunner whose server is a GuardedServer (the body of AppRunner._make_server
    and Application._make_handler, with the server class swapped)."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs):
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        app = self._app
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        kwargs = dict(self._kwargs)
        kwargs["debug"] = app._debug
        kwargs.setdefault("access_log_class", web.AccessLogger)
        kwargs.update(app._handler_args or {})
        server = GuardedServer(app._handle, request_factory=app._make_request, loop=loop, limits=self.limits, **kwargs)
        server.start_sweeper()
        return server


def fit_connections_to_fd_limit(wanted: int, engine_fds: int = 32) -> int:
    """Raise the soft open-file limit to the hard one, then cap connections under it,
    leaving room for the engine's own descriptors (its connections to Kubo, say)."""
    reserve = FD_BASE + 2 * ACCEPT_BACKLOG + engine_fds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    room = max(8, soft - reserve)
    if wanted > room:
        log.warning("open-file limit is %d: serving at most %d connections (not %d)", soft, room, wanted)
        return room
    return wanted


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, pressure: PressureReport) -> None:
    """Out-of-descriptor accept errors go to the pressure report, without a traceback
    (asyncio itself stops accepting for a second each time)."""
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            pressure.note(f"accept failures ({exc.strerror})")
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def register_connection_metrics(metrics, server: GuardedServer) -> None:
    stats = server.stats
    open_ = metrics.gauge("hearth_connections_open", "Open client connections.")
    limit = metrics.gauge("hearth_connections_limit", "The connection cap in force (max_connections, fitted "
                                                      "under the open-file limit).")
    accepted = metrics.counter("hearth_connections_accepted_total", "Client connections accepted.")
    refused = metrics.counter("hearth_connections_refused_total", "Connections over the cap, answered 503 and closed.")
    evicted = metrics.counter("hearth_connections_evicted_total", "Idle connections closed to make room at the cap.")
    timeouts = metrics.counter("hearth_connection_timeouts_total", "Connections closed for sending too slowly.",
                               ["phase"])

    def collect(_m) -> None:
        open_.set(stats.open)
        limit.set(server.limits.max_connections)
        accepted.set_total(stats.accepted)
        refused.set_total(stats.rejected)
        evicted.set_total(stats.evicted)
        timeouts.set_total(stats.header_timeouts, phase="headers")
        timeouts.set_total(stats.body_timeouts, phase="body")

    metrics.add_collector(collect)


async def serve(app: web.Application, host: str, port: int, limits: Limits, *, shutdown_timeout: float = 30,
                on_listening=None, reuse_port: bool = False, worker: bool = False) -> None:
    """Run until SIGINT or SIGTERM; then stop accepting and give requests in flight
    shutdown_timeout seconds (an upload cut short is never recorded)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # a worker stops on its supervisor's SIGTERM only: Ctrl-C reaches the whole process
    # group, and the supervisor passes it on as SIGTERM (a second signal would cut the drain)
    signals = (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM)
    if worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    runner = GuardedAppRunner(app, limits=limits, access_log=None, shutdown_timeout=shutdown_timeout,
                              handle_signals=False)
    await runner.setup()
    runner.server.pressure.pace = SharedSlot(app[CONFIG].data_dir / "run" / "pressure.pace", "<d")  # type: ignore
    quiet_accept_errors(loop, runner.server.pressure)  # type: ignore[union-attr]
    register_connection_metrics(app[METRICS], runner.server)
    try:
        site = web.TCPSite(runner, host, port, backlog=ACCEPT_BACKLOG, reuse_port=reuse_port or None)
        await site.start()
        if on_listening is not None:
            on_listening(runner)
        await stop.wait()
    finally:
        def now(signum: int) -> None:  # a second signal while draining: stop at once
            log.warning("second %s while stopping: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)

        for sig in signals:
            loop.add_signal_handler(sig, now, sig)
        try:
            # requests get shutdown_timeout; the services' own stops are bounded too
            await asyncio.wait_for(runner.cleanup(), shutdown_timeout + 15)
        except asyncio.TimeoutError:
            log.error("stopping took longer than %.0f s: exiting anyway", shutdown_timeout + 15)
        for sig in signals:
            loop.remove_signal_handler(sig)
