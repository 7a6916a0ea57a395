"""A real HTTP/1.1 upstream for the gateway's tests, on plain asyncio Protocols (exact wire control).

Run it: ``python tests/support/upstream_server.py --port N [--idle-close SECONDS]`` (port 0 picks a
free one); it prints ``listening <port>`` when ready and stops on SIGTERM/SIGINT. In-process:
``server = await start_upstream_server()`` then ``server.port`` and ``await server.close()``.

Theory of operation: one ``UpstreamConnection`` per socket runs one task that reads requests off
its own buffer in order (so pipelining and keep-alive just work). The request body is always read
incrementally before the handler answers (hashing it, never keeping it): reading pauses while more
than ``READ_HIGH`` bytes are buffered, and every write waits while the transport is paused, so a
200 MB upload or download stays within a few hundred KiB here. HEAD gets the head a GET would get.
``Expect: 100-continue`` is answered with ``100 Continue`` before the body is read. HTTP/1.1
keeps the connection unless ``Connection: close``; HTTP/1.0 closes unless ``keep-alive``.

Behaviour by path (the query string is ignored but by ``/cache``; every response carries
``X-Conn-Id``):

- ``/echo...``: 200 JSON {method, path (raw target), headers ([[name, value]] as received),
  body_len, body_sha256, conn_id, requests_on_conn}; ``/slow/{ms}`` the same after ms
- ``/status/{code}``: that status, body ``status {code}`` (none for 1xx, 204, 304)
- ``/bytes/{n}``, ``/chunked/{n}``: n bytes of ``pattern`` (Content-Length / chunked),
  written 64 KiB at a time under flow control
- ``/until-close/{n}``: n pattern bytes with neither Content-Length nor chunking, then a close
- ``/sink``: JSON {body_len, body_sha256}
- ``/slowbody/{ms}``: 1024 pattern bytes, of which the second half follows ms later
- ``/hang``: never answers; ``/early-close``: closes without answering
- ``/reset-mid-body``, ``/reset-mid-chunked``: 1000 of 100000 bytes (or one 1000-byte chunk),
  then a TCP RST
- ``/close``: the echo answer with ``Connection: close``, then closes
- ``/malformed``: ``HTTP/1.1 2x0 Bad`` and closes
- ``/continue``: ``100 Continue`` (even without Expect), then the echo answer
- ``/early-hints``: ``103 Early Hints`` with a ``Link`` header and a ``Connection: keep-alive``,
  then the echo answer (like every answer here but ``/cache``'s, without a ``Date`` header)
- ``/answer-first``: a chunked 200 head and a first chunk before the request body is read, the
  rest (the body's length as text) once it has been
- ``/respond/{code}``: that status, the request body as its body, and for each request header
  ``X-Respond-Name: value`` a response header ``Name: value`` (a redirect's Location, a
  Content-Type, Content-Encoding, ETag...); Content-Length framing, or chunked when asked
  with ``X-Respond-Transfer-Encoding: chunked``
- ``/stats``: JSON {connections_opened, requests}; ``/stats/reset`` zeroes them. Requests for
  ``/stats...`` and ``/health...`` are not counted, and a connection counts once it carries a
  counted request.
- ``/health``: a health endpoint for the gateway's active checks: status 200, or the one set by
  ``/health/set/{code}`` (200 to 599); both answer JSON {health, checks}, where ``checks``
  counts the ``/health`` requests so far. ``/health/checks`` answers that JSON, changing nothing.
- ``/cache/{name}``: a response for cache tests, shaped by the query: ``status`` (default 200),
  ``cc`` (Cache-Control), ``vary`` (Vary), ``expires`` (seconds from now: Expires with Date),
  ``age`` (Age), ``cookie`` (a Set-Cookie), ``location`` (Location), ``content_location``
  (Content-Location), ``delay`` (ms before answering), ``size`` (body bytes of ``pattern``,
  instead of JSON); any method gets the same answer. The JSON body is {n, target, vary}: ``n``
  counts the ``/cache`` requests this server answered, ``vary`` the request's values of the Vary
  headers.
- anything else: 404

Over TLS (``--tls-cert``/``--tls-key``, and ``--tls-client-ca`` to ask for a client certificate)
the echo JSON has a ``tls`` member: {server_name (the client's SNI), client_subject (RFC 4514,
or null), version}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import socket
import ssl
import struct
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .procs import Proc, ProcessReaper

__all__ = [
    "SLOWBODY_SIZE",
    "UpstreamServer",
    "pattern",
    "pattern_chunks",
    "pattern_sha256",
    "start_upstream_process",
    "start_upstream_server",
]

WRITE_SIZE = 64 * 1024
WRITE_HIGH = 256 * 1024  # transport write buffer high watermark
READ_HIGH = 1024 * 1024  # pause reading when this much is buffered unread
READ_LOW = 256 * 1024  # and resume below this
MAX_HEAD = 64 * 1024
SLOWBODY_SIZE = 1024
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nConnection: keep-alive\r\n\r\n"
RESET_SENT, RESET_DECLARED = 1000, 100_000

# -- the deterministic body pattern: byte i is i % 251 -------------------------------------------

_PERIOD = 251
_BLOCK = bytes(range(_PERIOD)) * (WRITE_SIZE // _PERIOD + 2)


def pattern_chunks(n: int, size: int = WRITE_SIZE) -> Iterator[bytes]:
    """``pattern(n)`` in pieces of at most ``size`` (<= 64 KiB) bytes, without building it whole."""
    offset = 0
    while offset < n:
        length = min(size, n - offset)
        start = offset % _PERIOD
        yield _BLOCK[start : start + length]
        offset += length


def pattern(n: int) -> bytes:
    """``bytes(i % 251 for i in range(n))``."""
    return b"".join(pattern_chunks(n))


def pattern_sha256(n: int) -> str:
    """Hex SHA-256 of ``pattern(n)``, computed piecewise (fine for gigabytes)."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(n):
        digest.update(chunk)
    return digest.hexdigest()


# -- requests ------------------------------------------------------------------------------------


class BadRequest(Exception):
    pass


class Request:
    """One parsed request head."""

    __slots__ = ("body", "chunked", "content_length", "headers", "method", "path", "target", "version")

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(f"bad request line {lines[0]!r}")
        self.method, self.target, self.version = parts
        self.body: bytearray | None = None  # kept only for /respond
        self.path = self.target.split("?", 1)[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(f"bad header line {line!r}")
            self.headers.append((name, value.strip(" \t")))
        encoding = self.header("transfer-encoding")
        self.chunked = encoding is not None and "chunked" in encoding.lower()
        length = self.header("content-length")
        self.content_length = 0
        if length is not None and not self.chunked:
            if not length.isdigit():
                raise BadRequest(f"bad Content-Length {length!r}")
            self.content_length = int(length)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for k, v in self.headers if k.lower() == name for t in v.split(",")}

    @property
    def keep_alive(self) -> bool:
        connection = self.tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class Closed(Exception):
    """The connection ended (EOF, reset or closed by us) while a handler was using it."""


def render_head(status: int, headers: list[tuple[str, str]], reason: str | None = None) -> bytes:
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- the server ----------------------------------------------------------------------------------


class UpstreamServer:
    """Listening socket, shared stats and the set of open connections."""

    def __init__(self, idle_close: float | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.idle_close = idle_close
        self.tls = tls
        self.connections_opened = 0
        self.requests = 0
        self.health_status = 200  # what /health answers with
        self.health_checks = 0  # /health requests so far
        self.cache_answers = 0  # /cache/... requests answered so far
        self.next_conn_id = 0
        self.connections: set[UpstreamConnection] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: UpstreamConnection(self), host, port, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def stats(self) -> dict[str, int]:
        return {"connections_opened": self.connections_opened, "requests": self.requests}

    async def close(self) -> None:
        """Stop listening, abort every connection and wait for their tasks to end."""
        if self.server is not None:
            self.server.close()
        tasks = []
        for connection in list(self.connections):
            connection.abort()
            if connection.task is not None:
                connection.task.cancel()
                tasks.append(connection.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


def upstream_tls(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context for this upstream: it records each connection's SNI name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=client_ca)

    def remember_name(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        SERVER_NAMES[id(ssl_object)] = name

    context.sni_callback = remember_name
    return context


SERVER_NAMES: dict[int, str | None] = {}  # by SSLObject id, until the connection is made


async def start_upstream_server(
    port: int = 0,
    host: str = "127.0.0.1",
    idle_close: float | None = None,
    tls: ssl.SSLContext | None = None,
) -> UpstreamServer:
    """An upstream serving in the running loop; ``.port`` is where it listens."""
    server = UpstreamServer(idle_close, tls)
    await server.start(host, port)
    return server


Handler = Callable[["UpstreamConnection", Request, str, int, str], Awaitable[bool]]


class UpstreamConnection(asyncio.Protocol):
    """One client connection: buffered reads with backpressure, writes that honour pause_writing."""

    def __init__(self, server: UpstreamServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.eof = False
        self.closed = False
        self.reading_paused = False
        self.counted = False
        self.requests_on_conn = 0
        self.conn_id = 0
        self.tls: dict[str, str | None] | None = None
        self.transport: asyncio.Transport | None = None
        self.data_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    # protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.server.next_conn_id += 1
        self.conn_id = self.server.next_conn_id
        self.server.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            subject = ssl_object.getpeercert() or {}
            self.tls = {
                "server_name": SERVER_NAMES.pop(id(ssl_object), None),
                "client_subject": ",".join(f"{k}={v}" for rdn in subject.get("subject", ()) for k, v in rdn)
                or None,
                "version": ssl_object.version(),
            }
        loop = asyncio.get_running_loop()
        self.lost = loop.create_future()
        self.task = loop.create_task(self.serve())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_HIGH and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return True  # keep the write side open: a half-closed client still gets its answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        self.server.connections.discard(self)
        self._wake_reader()
        for waiter in (self.drain_waiter, self.lost):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        if self.drain_waiter is None or self.drain_waiter.done():
            self.drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def _wake_reader(self) -> None:
        if self.data_waiter is not None and not self.data_waiter.done():
            self.data_waiter.set_result(None)

    # reading

    async def _more(self, timeout: float | None = None) -> None:
        """Wait for more bytes; Closed at EOF, TimeoutError after ``timeout``."""
        if self.eof:
            raise Closed
        self.data_waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self.data_waiter, timeout)
        if self.eof and not self.buffer:
            raise Closed

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.reading_paused and len(self.buffer) < READ_LOW and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    async def read_some(self, limit: int) -> bytes:
        while not self.buffer:
            await self._more()
        return self._take(min(limit, len(self.buffer)))

    async def read_line(self, limit: int = MAX_HEAD) -> bytes:
        """Up to and including CRLF."""
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > limit:
                raise BadRequest("line too long")
            await self._more()
        return self._take(end + 2)

    async def read_head(self) -> bytes | None:
        """The next request head (through CRLF CRLF); None when the client is done or idle."""
        while self.buffer[:2] == b"\r\n":  # RFC 9112 2.2: ignore CRLF before a request line
            self._take(2)
        if not self.buffer:
            try:
                await self._more(self.server.idle_close)
            except (Closed, TimeoutError):
                return None
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise BadRequest("request head too large")
            await self._more()
        return self._take(end + 4)

    async def read_body(self, request: Request) -> tuple[int, str]:
        """Read (and discard) the whole body; its length and hex SHA-256."""
        digest = hashlib.sha256()
        total = 0
        if request.chunked:
            while True:
                size_text = (await self.read_line()).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest(f"bad chunk size {size_text!r}") from None
                if size == 0:
                    while await self.read_line() != b"\r\n":  # trailers
                        pass
                    break
                total += await self._read_into(digest, size, request.body)
                if await self._read_exactly(2) != b"\r\n":
                    raise BadRequest("chunk data not followed by CRLF")
        else:
            total = await self._read_into(digest, request.content_length, request.body)
        return total, digest.hexdigest()

    async def _read_into(self, digest: hashlib._Hash, n: int, keep: bytearray | None = None) -> int:
        remaining = n
        while remaining:
            data = await self.read_some(min(remaining, WRITE_SIZE))
            digest.update(data)
            if keep is not None:
                keep += data
            remaining -= len(data)
        return n

    async def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        return self._take(n)

    # writing

    async def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise Closed
        transport.write(data)
        if self.drain_waiter is not None and not self.drain_waiter.done():
            await self.drain_waiter
            if self.closed:
                raise Closed

    async def drain(self) -> None:
        """Wait until the transport's buffer is empty (the bytes are in the kernel)."""
        while self.transport is not None and self.transport.get_write_buffer_size():
            if self.closed:
                raise Closed
            await asyncio.sleep(0.001)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0) instead of a FIN."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    async def respond(
        self,
        request: Request,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        keep_alive: bool = True,
    ) -> bool:
        """One whole response with Content-Length; whether the connection stays open."""
        keep_alive = keep_alive and request.keep_alive
        headers = self.base_headers(request, keep_alive)
        if status >= 200 and status not in (204, 304):
            headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        else:
            body = b""
        if request.method == "HEAD":
            body = b""
        await self.write(render_head(status, headers) + body)
        return keep_alive

    def base_headers(self, request: Request, keep_alive: bool) -> list[tuple[str, str]]:
        headers = [("X-Conn-Id", str(self.conn_id))]
        if not keep_alive:
            headers.append(("Connection", "close"))
        elif request.version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        return headers

    # the request loop

    async def serve(self) -> None:
        try:
            while await self.serve_one():
                pass
        except (Closed, ConnectionError, asyncio.CancelledError):
            pass
        except BadRequest as error:
            if self.transport is not None and not self.transport.is_closing():
                body = f"bad request: {error}".encode()
                head = render_head(
                    400,
                    [("Content-Length", str(len(body))), ("Connection", "close")],
                )
                self.transport.write(head + body)
        except Exception:
            traceback.print_exc()
            self.abort()
        finally:
            self.close()

    async def serve_one(self) -> bool:
        head = await self.read_head()
        if head is None:
            return False
        request = Request(head)
        self.requests_on_conn += 1
        if not request.path.startswith(("/stats", "/health")):
            self.server.requests += 1
            if not self.counted:
                self.counted = True
                self.server.connections_opened += 1
        path = request.path
        if path == "/early-close":
            self.close()
            return False
        expects = "100-continue" in request.tokens("expect")
        if path == "/continue" or (expects and (request.chunked or request.content_length)):
            await self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif path == "/early-hints":
            await self.write(EARLY_HINTS)
        elif path == "/answer-first":
            headers = [*self.base_headers(request, request.keep_alive), ("Transfer-Encoding", "chunked")]
            await self.write(render_head(200, headers) + b"8\r\nstarted\n\r\n")
        if path.startswith("/respond/"):
            request.body = bytearray()
        body_len, body_sha256 = await self.read_body(request)
        handler, argument = _route(path)
        return await handler(self, request, argument, body_len, body_sha256)

    def echo_body(self, request: Request, body_len: int, body_sha256: str) -> bytes:
        return json.dumps(
            {
                "method": request.method,
                "path": request.target,
                "headers": [[name, value] for name, value in request.headers],
                "body_len": body_len,
                "body_sha256": body_sha256,
                "conn_id": self.conn_id,
                "requests_on_conn": self.requests_on_conn,
                **({"tls": self.tls} if self.tls is not None else {}),
            }
        ).encode()


# -- handlers: (connection, request, path argument, body_len, body_sha256) -> keep the connection?


async def _echo(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    return await c.respond(r, 200, c.echo_body(r, n, sha))


async def _status(c: UpstreamConnection, r: Request, code: str, n: int, sha: str) -> bool:
    if not code.isdigit() or not 100 <= int(code) <= 999:
        return await c.respond(r, 400, b"bad status", "text/plain")
    return await c.respond(r, int(code), f"status {code}".encode(), "text/plain")


async def _bytes(c: UpstreamConnection, r: Request, count: str, n: int, sha: str) -> bool:
    if not count.isdigit():
        return await c.respond(r, 400, b"bad count", "text/plain")
    keep_alive = r.keep_alive
    headers = c.base_headers(r, keep_alive)
    headers += [("Content-Type", "application/octet-stream"), ("Content-Length", count)]
    await c.write(render_head(200, headers))
    if r.method != "HEAD":
        for chunk in pattern_chunks(int(count)):
            await c.write(chunk)
    return keep_alive


async def _until_close(c: UpstreamConnection, r: Request, count: str, n: int, sha: str) -> bool:
    """An HTTP/1.0-style response: no Content-Length, no chunking; the close ends the body."""
    if not count.isdigit():
        return await c.respond(r, 400, b"bad count", "text/plain")
    await c.write(render_head(200, [("X-Conn-Id", str(c.conn_id)), ("Connection", "close")]))
    if r.method != "HEAD":
        for chunk in pattern_chunks(int(count)):
            await c.write(chunk)
    return False


async def _chunked(c: UpstreamConnection, r: Request, count: str, n: int, sha: str) -> bool:
    if not count.isdigit():
        return await c.respond(r, 400, b"bad count", "text/plain")
    keep_alive = r.keep_alive
    headers = c.base_headers(r, keep_alive)
    headers += [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]
    await c.write(render_head(200, headers))
    if r.method != "HEAD":
        for chunk in pattern_chunks(int(count)):
            await c.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        await c.write(b"0\r\n\r\n")
    return keep_alive


async def _respond(c: UpstreamConnection, r: Request, code: str, n: int, sha: str) -> bool:
    if not code.isdigit() or not 200 <= int(code) <= 599:
        return await c.respond(r, 400, b"bad status", "text/plain")
    status = int(code)
    keep_alive = r.keep_alive
    headers = c.base_headers(r, keep_alive)
    headers += [(k[len("x-respond-") :], v) for k, v in r.headers if k.lower().startswith("x-respond-")]
    chunked = any(k.lower() == "transfer-encoding" for k, _ in headers)
    body = bytes(r.body or b"") if r.method != "HEAD" and status not in (204, 304) else b""
    if status not in (204, 304) and not chunked:
        headers.append(("Content-Length", str(len(r.body or b""))))
    if not chunked:
        await c.write(render_head(status, headers) + body)
        return keep_alive
    await c.write(render_head(status, headers))
    if r.method != "HEAD" and status not in (204, 304):
        for start in range(0, len(body), WRITE_SIZE):
            piece = body[start : start + WRITE_SIZE]
            await c.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        await c.write(b"0\r\n\r\n")
    return keep_alive


async def _sink(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    return await c.respond(r, 200, json.dumps({"body_len": n, "body_sha256": sha}).encode())


async def _slow(c: UpstreamConnection, r: Request, ms: str, n: int, sha: str) -> bool:
    await asyncio.sleep(int(ms) / 1000 if ms.isdigit() else 0)
    return await _echo(c, r, "", n, sha)


async def _slowbody(c: UpstreamConnection, r: Request, ms: str, n: int, sha: str) -> bool:
    body = pattern(SLOWBODY_SIZE)
    keep_alive = r.keep_alive
    headers = c.base_headers(r, keep_alive)
    headers += [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
    if r.method == "HEAD":
        await c.write(render_head(200, headers))
        return keep_alive
    half = len(body) // 2
    await c.write(render_head(200, headers) + body[:half])
    await asyncio.sleep(int(ms) / 1000 if ms.isdigit() else 0)
    await c.write(body[half:])
    return keep_alive


async def _answer_first(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    text = str(n).encode()
    await c.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(text), text))  # the head went before the body was read
    return r.keep_alive


async def _hang(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    assert c.lost is not None
    await c.lost
    return False


async def _reset_mid_body(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    headers = c.base_headers(r, True)
    headers += [("Content-Type", "application/octet-stream")]
    if r.path == "/reset-mid-chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"%x\r\n%b\r\n" % (RESET_SENT, pattern(RESET_SENT))
    else:
        headers.append(("Content-Length", str(RESET_DECLARED)))
        body = pattern(RESET_SENT)
    await c.write(render_head(200, headers) + body)
    await c.drain()
    await asyncio.sleep(0.05)  # let the peer read the bytes before the RST overtakes them
    c.reset()
    return False


async def _close(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    return await c.respond(r, 200, c.echo_body(r, n, sha), keep_alive=False)


async def _malformed(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    await c.write(b"HTTP/1.1 2x0 Bad\r\n\r\n")
    return False


async def _stats(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    if r.path == "/stats/reset":
        c.server.connections_opened = c.server.requests = 0
    return await c.respond(r, 200, json.dumps(c.server.stats()).encode())


def _health_state(server: UpstreamServer) -> bytes:
    return json.dumps({"health": server.health_status, "checks": server.health_checks}).encode()


async def _health(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    c.server.health_checks += 1
    return await c.respond(r, c.server.health_status, _health_state(c.server))


async def _health_checks(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    return await c.respond(r, 200, _health_state(c.server))


async def _health_set(c: UpstreamConnection, r: Request, code: str, n: int, sha: str) -> bool:
    if not code.isdigit() or not 200 <= int(code) <= 599:
        return await c.respond(r, 400, b"expected a status from 200 to 599", "text/plain")
    c.server.health_status = int(code)
    return await c.respond(r, 200, _health_state(c.server))


async def _cache(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    query = {name: values[0] for name, values in parse_qs(urlsplit(r.target).query).items()}
    await asyncio.sleep(int(query.get("delay", "0")) / 1000)
    c.server.cache_answers += 1
    status = int(query.get("status", "200"))
    keep_alive = r.keep_alive
    headers = c.base_headers(r, keep_alive)
    fields = (("cc", "Cache-Control"), ("vary", "Vary"), ("age", "Age"), ("cookie", "Set-Cookie"))
    fields += (("location", "Location"), ("content_location", "Content-Location"))
    for field, name in fields:
        if field in query:
            headers.append((name, query[field]))
    if "expires" in query:
        now = time.time()
        headers += [("Date", formatdate(now, usegmt=True))]
        headers += [("Expires", formatdate(now + int(query["expires"]), usegmt=True))]
    if "size" in query:
        body, kind = pattern(int(query["size"])), "application/octet-stream"
    else:
        names = [name.strip() for name in query.get("vary", "").split(",") if name.strip()]
        vary = {name: r.header(name) for name in names}
        body = json.dumps({"n": c.server.cache_answers, "target": r.target, "vary": vary}).encode()
        kind = "application/json"
    if status not in (204, 304):
        headers += [("Content-Type", kind), ("Content-Length", str(len(body)))]
    else:
        body = b""
    await c.write(render_head(status, headers) + (b"" if r.method == "HEAD" else body))
    return keep_alive


async def _not_found(c: UpstreamConnection, r: Request, _: str, n: int, sha: str) -> bool:
    return await c.respond(r, 404, b"not found", "text/plain")


_EXACT: dict[str, Handler] = {
    "/sink": _sink,
    "/hang": _hang,
    "/reset-mid-body": _reset_mid_body,
    "/reset-mid-chunked": _reset_mid_body,
    "/close": _close,
    "/malformed": _malformed,
    "/continue": _echo,
    "/early-hints": _echo,
    "/answer-first": _answer_first,
    "/stats": _stats,
    "/stats/reset": _stats,
    "/health": _health,
    "/health/checks": _health_checks,
}
_WITH_ARGUMENT: dict[str, Handler] = {
    "/status/": _status,
    "/bytes/": _bytes,
    "/chunked/": _chunked,
    "/until-close/": _until_close,
    "/slow/": _slow,
    "/slowbody/": _slowbody,
    "/respond/": _respond,
    "/health/set/": _health_set,
    "/cache/": _cache,
}


def _route(path: str) -> tuple[Handler, str]:
    if path.startswith("/echo"):
        return _echo, ""
    handler = _EXACT.get(path)
    if handler is not None:
        return handler, ""
    prefix, slash, argument = path.rpartition("/")
    handler = _WITH_ARGUMENT.get(prefix + slash)
    if handler is not None and argument:
        return handler, argument
    return _not_found, ""


# -- running it ----------------------------------------------------------------------------------


def start_upstream_process(
    port: int = 0,
    idle_close: float | None = None,
    processes: ProcessReaper | None = None,
    tls: tuple[str, ...] = (),
) -> tuple[Proc, int]:
    """This server as a child process (remembered by ``processes`` if given); (proc, port).
    ``tls``: (cert, key) or (cert, key, client CA) to serve HTTPS."""
    from .procs import start_process

    argv = [sys.executable, __file__, "--port", str(port)]
    if idle_close is not None:
        argv += ["--idle-close", str(idle_close)]
    for flag, value in zip(("--tls-cert", "--tls-key", "--tls-client-ca"), tls, strict=False):
        argv += [flag, value]
    proc = (
        processes.start(argv, ready_line="listening")
        if processes
        else start_process(argv, ready_line="listening")
    )
    return proc, int(proc.wait_for_output("listening").split()[1])


async def _run(host: str, port: int, idle_close: float | None, tls: ssl.SSLContext | None) -> None:
    server = await start_upstream_server(port, host, idle_close, tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening {server.port}", flush=True)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="HTTP/1.1 test upstream for fastgw")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--idle-close", type=float, default=None, metavar="SECONDS",
        help="close keep-alive connections idle this long",
    )  # fmt: skip
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="... and this key")
    parser.add_argument("--tls-client-ca", help="ask for client certificates from this CA")
    args = parser.parse_args(argv)
    tls = upstream_tls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    asyncio.run(_run(args.host, args.port, args.idle_close, tls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
