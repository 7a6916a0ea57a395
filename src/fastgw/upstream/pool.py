"""Per-target keep-alive connection pools.

``take_idle`` is the synchronous fast path: the most recently used idle connection (LIFO keeps
the working set small and warm, and lets the rest reach their idle timeout). Only when none is
idle does a request go async: ``acquire`` opens a new connection while under ``max_connections``,
or queues a waiter. Waiters are plain futures; a cancelled waiter is skipped, and a connection
handed to a waiter that was cancelled in the same loop turn is given back, so a client that goes
away while waiting never leaks a connection (aiohttp #9670). Idle connections are closed after
``idle_timeout``, which must stay below the upstream's own keep-alive timeout so we never pick a
connection the upstream is closing (aiohttp #7297); the exchange still retries an idempotent
request once on a fresh connection when a reused one dies before any response byte.

An upstream with ``protocol: h2c`` or ``h2`` counts streams, not sockets: ``take_idle`` hands out a
stream on the oldest connection with room (its server's SETTINGS_MAX_CONCURRENT_STREAMS and
``pool.max_streams``), and ``acquire`` waits for room, opening a connection only when the waiters
outnumber what the connections being opened will carry (so a burst opens one connection, not
one per request). A connection that failed to open fails the waiters it was to carry; one that
got GOAWAY takes no new stream and closes when its streams end (``proxy/h2_upstream.pyx``).

An upstream with ``tls:`` has its own pools (the settings are part of the key): their
connections are TLS connections, kept alive like any other. A handshake that fails (an
untrusted, expired or wrongly named certificate) is a 502 naming the upstream, and a warning in
the log naming the target and why, at most once a minute per pool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from fastgw._proxy import (
    H2UpstreamConnection,
    PoolCore,
    TLSLink,
    UpstreamConnection,
    UpstreamSide,
    enable_tls_link,
)
from fastgw.config.schema import PoolConfig, UpstreamTlsConfig
from fastgw.errors import ConnectFault, UpstreamFault
from fastgw.http import _clock
from fastgw.tls.client import client_context, describe_failure
from fastgw.tls.libraries import LIBSSL_PATH

log = logging.getLogger("fastgw")
_P = TypeVar("_P", UpstreamConnection, H2UpstreamConnection)
_TLS_LOG_INTERVAL = 60.0  # a failing TLS target is logged at most this often


class PoolKey(NamedTuple):
    """What makes two pools interchangeable across config reloads."""

    host: str
    port: int
    config: PoolConfig
    tls: UpstreamTlsConfig | None = None
    protocol: str = "http/1.1"  # or "h2c", "h2": HTTP/2, streams on shared connections


class TargetPool(PoolCore):
    """A target's pool: the idle list, counters and release are ``PoolCore`` (C, per request);
    opening connections and waiting for one are here."""

    __slots__ = (
        "__weakref__", "config", "connect_timeout", "connecting", "host", "key", "label", "port",
        "server_name", "ssl", "tls_logged", "upstreams",
    )  # fmt: skip

    def __init__(self, key: PoolKey) -> None:
        http2 = key.protocol != "http/1.1"
        super().__init__(key.config.max_idle, key.config.idle_timeout, key.config.max_streams if http2 else 0)
        self.connecting = 0  # HTTP/2 connections being opened
        self.connect_timeout = 5.0  # the last one asked for (connections opened for waiters)
        self.key = key
        self.host = key.host
        self.port = key.port
        self.config = key.config
        self.label = f"[{key.host}]:{key.port}" if ":" in key.host else f"{key.host}:{key.port}"
        self.ssl: ssl.SSLContext | None = None
        self.server_name: str | None = None
        self.tls_logged = 0.0
        self.upstreams: set[str] = set()  # the upstreams whose targets use it (for log lines)
        self.load_tls()

    def load_tls(self) -> None:
        """(Re)read the TLS settings' files (a reload: rotated client certificates, CA bundles)."""
        tls = self.key.tls
        if tls is not None:
            self.ssl = client_context(tls, "h2" if self.key.protocol == "h2" else "http/1.1")
            self.server_name = tls.server_name or self.host

    def acquire(self, connect_timeout: float) -> asyncio.Future[UpstreamSide]:
        """A future for a connection: a new one, or the next one released (slow path)."""
        if self.max_streams:
            return self._wait_for_stream(connect_timeout, False)
        loop = asyncio.get_running_loop()
        if self.open < self.config.max_connections:
            self.open += 1
            return loop.create_task(self._connect(connect_timeout))
        waiter: asyncio.Future[UpstreamSide] = loop.create_future()
        deadline = _clock.now() + self.config.acquire_timeout
        self.waiters.append((waiter, deadline))
        _clock.file(self, deadline)
        return waiter

    def connect_fresh(self, connect_timeout: float) -> asyncio.Future[UpstreamSide]:
        """A new connection even at the limit: used once to retry after a stale reused one (HTTP/2:
        a stream on another connection, opened even at the limit when none has room)."""
        if self.max_streams:
            return self._wait_for_stream(connect_timeout, True)
        self.open += 1
        return asyncio.get_running_loop().create_task(self._connect(connect_timeout))

    async def _connect(self, timeout: float) -> UpstreamSide:
        conn = await self._open(lambda: UpstreamConnection(self), timeout)
        self.opened += 1
        self.in_use += 1
        return conn

    async def _open(self, factory: Callable[[], _P], timeout: float) -> _P:
        """A connection made by ``factory``, or ConnectFault saying why not (counted)."""
        try:
            conn = await asyncio.wait_for(self._dial(factory, timeout), timeout)
        except TimeoutError:
            self._connect_failed()
            raise ConnectFault(f"connect timed out after {timeout:g}s", 504, self.label) from None
        except ssl.SSLError as exc:
            self._connect_failed()
            public, why = describe_failure(exc)
            self._log_tls(why)
            raise ConnectFault(public, 502, f"{self.label}: {why}") from None
        except OSError as exc:
            self._connect_failed()
            raise ConnectFault(f"connect failed: {_why(exc)}", 502, self.label) from None
        except BaseException:
            self._connect_failed()
            raise
        return conn

    async def _dial(self, factory: Callable[[], _P], timeout: float) -> _P:
        """The TCP connection, and over it the TLS handshake when the upstream speaks TLS."""
        loop = asyncio.get_running_loop()
        if self.ssl is None:
            _, conn = await loop.create_connection(factory, self.host, self.port)
            return conn
        if not enable_tls_link(os.fsencode(LIBSSL_PATH)):  # the event loop's TLS layer
            _, conn = await loop.create_connection(
                factory,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.server_name,
                ssl_handshake_timeout=timeout,
            )
            return conn
        handshaken: asyncio.Future[_P] = loop.create_future()
        link = TLSLink(factory(), self.ssl, False, self.server_name or self.host, timeout, handshaken)
        try:
            await loop.create_connection(lambda: link, self.host, self.port)
            return await handshaken
        except asyncio.CancelledError:
            link.abort()  # timed out or cancelled mid-handshake: the socket goes with it
            raise

    def _connect_failed(self) -> None:
        self.open -= 1
        self.connect_errors += 1
        if not self.max_streams:
            self._open_for_waiter()

    def _log_tls(self, why: str) -> None:
        now = time.monotonic()
        if now - self.tls_logged >= _TLS_LOG_INTERVAL:
            self.tls_logged = now
            names = ", ".join(repr(n) for n in sorted(self.upstreams)) or "?"
            log.warning("upstream %s: TLS to %s failed: %s", names, self.label, why)

    # -- HTTP/2: streams on shared connections -----------------------------------------------------
    def _wait_for_stream(self, connect_timeout: float, fresh: bool) -> asyncio.Future[UpstreamSide]:
        """A future for a stream: on a connection with room, else once one has room (a stream
        ended, or a connection opened for the waiters; ``fresh``: even past max_connections)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[UpstreamSide] = loop.create_future()
        stream = self.take_idle()
        if stream is not None:
            waiter.set_result(stream)
            return waiter
        deadline = _clock.now() + self.config.acquire_timeout
        self.waiters.append((waiter, deadline))
        _clock.file(self, deadline)
        self.connect_timeout = connect_timeout
        self._open_for_streams(fresh)
        return waiter

    def _open_for_streams(self, beyond_limit: bool = False) -> None:
        """Open connections while the waiters outnumber the streams those being opened will carry."""
        waiting = sum(1 for waiter, _ in self.waiters if not waiter.done())
        loop = asyncio.get_running_loop()
        while waiting > self.connecting * self.max_streams and (
            self.open < self.config.max_connections or beyond_limit
        ):
            beyond_limit = False
            self.open += 1
            self.connecting += 1
            loop.create_task(self._connect_h2(self.connect_timeout)).add_done_callback(self._connected)

    async def _connect_h2(self, timeout: float) -> H2UpstreamConnection:
        session = await self._open(lambda: H2UpstreamConnection(self, self.ssl is not None), timeout)
        if session.alpn_refused is not None:
            session.abort()
            self._connect_failed()
            why = f"ALPN: it chose {session.alpn_refused!r}, not 'h2' (does it speak HTTP/2?)"
            self._log_tls(why)
            raise ConnectFault("TLS: the target did not agree to HTTP/2", 502, f"{self.label}: {why}")
        self.opened += 1
        if not session.closed:
            self.sessions.append(session)
        return session

    def _connected(self, task: asyncio.Task[H2UpstreamConnection]) -> None:
        self.connecting -= 1
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            self.serve_waiters()
        else:
            # The waiters it was to carry get its failure (those others being opened can carry wait).
            carried = self.connecting * self.max_streams
            kept: list[tuple[asyncio.Future[UpstreamSide], float]] = []
            for waiter, deadline in self.waiters:
                if waiter.done():
                    continue
                if len(kept) < carried:
                    kept.append((waiter, deadline))
                else:
                    waiter.set_exception(failure)
            self.waiters.clear()
            self.waiters.extend(kept)
        if self.waiters:
            self._open_for_streams()  # more waiters than it carries (or its server allows)

    def refill(self) -> None:
        """A connection stopped taking streams (GOAWAY): another for the waiters, if need be."""
        if self.waiters:
            self._open_for_streams()

    def forget(self, conn: UpstreamSide | H2UpstreamConnection) -> None:
        """The connection closed (either side); free its slot for a waiter."""
        self.open -= 1
        if self.max_streams:
            if conn in self.sessions:
                self.sessions.remove(conn)
            self.refill()
            return
        self.idle.remove(conn)
        self._open_for_waiter()

    def _open_for_waiter(self) -> None:
        while self.waiters and self.open < self.config.max_connections:
            waiter, _ = self.waiters.popleft()
            if waiter.done():
                continue
            self.open += 1
            task = asyncio.get_running_loop().create_task(self._connect(5.0))
            _chain(task, waiter, self)
            return

    def expire(self, now: float) -> None:
        """Fail the waiters that waited longer than acquire_timeout (called by the timer wheel)."""
        while self.waiters and (self.waiters[0][0].done() or self.waiters[0][1] <= now):
            waiter, _ = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    UpstreamFault(
                        f"no free connection within {self.config.acquire_timeout:g}s "
                        f"(pool of {self.config.max_connections} per target)", 503, self.label,
                    )
                )  # fmt: skip
        if self.waiters:
            _clock.file(self, self.waiters[0][1])

    def close(self) -> None:
        for session in list(self.sessions):
            session.retire()  # closes now if idle, else once its streams end
        for conn in self.idle.clear():
            conn.close()


def _why(exc: OSError) -> str:
    """What went wrong, without the address (asyncio's messages quote it): the errno's text."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or type(exc).__name__


def _chain(task: asyncio.Task[UpstreamSide], waiter: asyncio.Future[UpstreamSide], pool: TargetPool) -> None:
    def done(t: asyncio.Task[UpstreamSide]) -> None:
        if t.cancelled():
            if not waiter.done():
                waiter.cancel()
            return
        exc = t.exception()
        if waiter.done():
            if exc is None:
                pool.give_back(t.result())
            return
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(t.result())

    task.add_done_callback(done)
