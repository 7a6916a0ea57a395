"""A small HTTP/1.1 client for the gateway's own calls to upstream targets (aggregate routes).

The proxied path never uses it: ``_proxy.pyx`` streams bodies through ``UpstreamConnection``.
An aggregate route needs the opposite, a whole response in memory to merge, so this client reads
one response completely, bounded:

* the head by the parser's limits (64 KiB, 256 fields, as for proxied responses), the body by the
  caller's ``max_body``: a declared Content-Length over it fails at once, a chunked or
  close-delimited body fails on the read that passes it, so memory stays bounded;
* framing by ``_http.HttpParser`` (llhttp, the parser of the proxied path): Content-Length,
  chunked, or (RFC 9112 6.3) a body delimited by the connection's close; 1xx interim heads are
  skipped;
* time by the caller (``asyncio.timeout`` around ``request``): a cancelled request aborts its
  connection, which is never reused half-read.

Connections are kept alive in one ``ClientPool`` per target and pool settings (``PoolKey``): at
most ``max_connections`` in use and idle together (a semaphore, so a cancelled waiter leaves
nothing behind), the ``max_idle`` most recently used kept for ``idle_timeout``. A connection goes
back only when the response ended with known framing, nothing followed it and both sides allow
keep-alive. A reused connection that the target closed before answering (its idle timeout raced
ours, aiohttp #7297) is retried once on a fresh connection for idempotent methods.

Failures are ``UpstreamFault`` values naming the target: 502 refused, reset, malformed or too
large; 504 for a connect timeout.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, cast

from fastgw.http._parser import HttpParser
from fastgw.config.schema import IDEMPOTENT_METHODS
from fastgw.errors import ConnectFault, UpstreamFault
from fastgw.upstream.pool import PoolKey

MAX_HEAD = 64 * 1024  # as UPSTREAM_MAX_HEAD of the proxied path
MAX_FIELDS = 256


class ClientResponse(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ConnectionReset(UpstreamFault):
    """The connection closed before any response byte: a reused one may be retried once."""


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection: sends one request at a time and parses its response."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.transport: asyncio.Transport | None = None
        self.parser = HttpParser(False, MAX_HEAD, MAX_FIELDS)
        self.closed = False
        self.reusable = False  # the last response ended cleanly and both sides keep the connection
        self.served = 0  # responses completed (0: fresh)
        self._waiter: asyncio.Future[ClientResponse] | None = None
        self._max_body = 0
        self._reset_response()

    def _reset_response(self) -> None:
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._keep_alive = False
        self._until_close = False  # neither Content-Length nor chunked: the close ends the body
        self._body: list[bytes] = []
        self._size = 0
        self._received = False

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are Transports by duck typing

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection is out of step
            return
        self._received = True
        for kind, value in self.parser.parse(data):
            if waiter.done():  # a second message after the response: not reusable
                self.abort()
                return
            if kind == "head":
                assert isinstance(value, dict)
                self._on_head(value)
            elif kind == "body":
                assert isinstance(value, bytes)
                self._on_body(value)
            elif kind == "done":
                self._on_done()
            else:
                self._fail(f"{self.label} sent a malformed response ({kind}: {value or 'refused'})")
                return
        if waiter.done() and self.parser.head_pending:
            self.abort()  # the start of a message nobody asked for follows the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._status and self._until_close:
            self._complete(False)
        elif not self._received:
            waiter.set_exception(ConnectionReset(f"{self.label} closed the connection before responding"))
        else:
            waiter.set_exception(
                UpstreamFault(f"{self.label} closed the connection before the response completed")
            )

    # -- the response --------------------------------------------------------------------------

    def _on_head(self, head: dict[str, object]) -> None:
        status = head["status"]
        assert isinstance(status, int)
        if 100 <= status < 200:
            return  # interim (100 Continue, 103 Early Hints): the real head follows
        fields = head["fields"]
        assert isinstance(fields, list)
        self._status = status
        self._headers = [(name.lower(), value) for name, value in fields]
        self._keep_alive = bool(head["keep_alive"])
        length = _content_length(self._headers)
        chunked = any(name == b"transfer-encoding" for name, _ in self._headers)
        self._until_close = length is None and not chunked and status not in (204, 304)
        if length is not None and length > self._max_body:
            self._fail(f"{self.label} answered {length} bytes, over the limit of {self._max_body}")

    def _on_body(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._max_body:
            self._fail(f"{self.label} answered more than the limit of {self._max_body} bytes")
            return
        self._body.append(piece)

    def _on_done(self) -> None:
        if self._status:  # the end of a 1xx is not the end of the response
            self._complete(self._keep_alive and not self._until_close)

    def _complete(self, reusable: bool) -> None:
        waiter = self._waiter
        assert waiter is not None
        self.reusable = reusable
        self.served += 1
        waiter.set_result(ClientResponse(self._status, self._headers, b"".join(self._body)))

    def _fail(self, message: str) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamFault(message))
        self.abort()

    # -- for the pool --------------------------------------------------------------------------

    def send(self, request: bytes, max_body: int) -> asyncio.Future[ClientResponse]:
        """Write one request; the future gets its whole response (or the failure)."""
        assert self.transport is not None and not self.closed
        self._reset_response()
        self.reusable = False
        self._max_body = max_body
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared length (llhttp already refused invalid or conflicting ones), or None."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


class ClientPool:
    """Keep-alive connections to one target, at most ``max_connections`` at once."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.label = f"{key.host}:{key.port}"
        self.idle: list[tuple[ClientConnection, asyncio.TimerHandle]] = []  # most recent last
        self.slots = asyncio.Semaphore(key.config.max_connections)
        self.opened = 0
        self.reused = 0
        self.closed = False

    async def request(
        self, method: str, head: bytes, max_body: int, connect_timeout: float
    ) -> ClientResponse:
        """Send ``head`` (a whole request head, no body) and read the response."""
        async with self.slots:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, head, max_body)
                except ConnectionReset:
                    if method not in IDEMPOTENT_METHODS:
                        raise
                    # The target closed a kept-alive connection as we reused it: once more, fresh.
            conn = await self._connect(connect_timeout)
            return await self._exchange(conn, head, max_body)

    async def _exchange(self, conn: ClientConnection, head: bytes, max_body: int) -> ClientResponse:
        try:
            response = await conn.send(head, max_body)
        except BaseException:
            conn.abort()  # failed, timed out or cancelled half-way: never reused
            raise
        self._release(conn)
        return response

    def _take_idle(self) -> ClientConnection | None:
        while self.idle:
            conn, timer = self.idle.pop()
            timer.cancel()
            if not conn.closed:
                self.reused += 1
                return conn
        return None

    async def _connect(self, timeout: float) -> ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: ClientConnection(self.label), self.key.host, self.key.port
                )
        except TimeoutError:
            raise ConnectFault(f"connect to {self.label} timed out", 504) from None
        except OSError as exc:
            raise ConnectFault(f"connect to {self.label} failed: {exc.strerror or exc}", 502) from None
        self.opened += 1
        return conn

    def _release(self, conn: ClientConnection) -> None:
        if self.closed or not conn.reusable or conn.closed or self.key.config.max_idle == 0:
            conn.abort()
            return
        if len(self.idle) >= self.key.config.max_idle:
            oldest, timer = self.idle.pop(0)
            timer.cancel()
            oldest.abort()
        timer = asyncio.get_running_loop().call_later(self.key.config.idle_timeout, self._expire, conn)
        self.idle.append((conn, timer))

    def _expire(self, conn: ClientConnection) -> None:
        self.idle = [(c, t) for c, t in self.idle if c is not conn]
        conn.abort()

    def close(self) -> None:
        """Close the idle connections; busy ones close when their response ends."""
        self.closed = True
        for conn, timer in self.idle:
            timer.cancel()
            conn.abort()
        self.idle.clear()


class HttpClient:
    """The pools of one plan's aggregate routes, one per target and pool settings."""

    def __init__(self) -> None:
        self.pools: dict[PoolKey, ClientPool] = {}

    def pool(self, key: PoolKey) -> ClientPool:
        pool = self.pools.get(key)
        if pool is None or pool.closed:
            pool = self.pools[key] = ClientPool(key)
        return pool

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()


def render_request(method: str, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A request head without body; names and values were checked when the route was compiled or
    come from the client's validated head."""
    lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
