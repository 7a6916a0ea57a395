"""The client side: one ``ClientProtocol`` per accepted connection, driven by httptools.

Connection states:

    idle --first byte--> head --headers complete--> forwarding --response done--> idle (keep-alive)
                          |                           |                       \\--> closed
                          +-- limit / malformed ------+--> error response, closed

Hook points, in order, for each request (see ``hooks.py``): on_request, on_upstream_request,
on_response, on_complete. The protocol itself parses, checks what httptools leaves to us
(``limits.py``), builds an ``Exchange`` per request and keeps pipelined ones in order: only the
head-of-line exchange talks to the client; later ones wait, their bodies buffered up to the
listener's buffer size, and reading pauses while the backlog is full.

Timeouts use deadlines swept by the process clock (``clock.py``): head (slowloris; counts from the
first byte of a request), body (longest stall between body reads) and keep-alive (idle between
requests). Reading is paused for three independent reasons (upstream write buffer full, request
body buffered while waiting for an upstream connection, pipeline backlog); it resumes only when
none holds.

PERF: the per-request path creates one Exchange, one list of header pairs and the joined head; no
Task, Future or dict per request, headers are lower-cased once, and only the few the gateway must
act on are inspected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from fastgw.errors import ClientFault, HttpFault
from fastgw.server import limits
from fastgw.server.clock import CLOCK
from fastgw.server.exchange import Exchange
from fastgw.server.wire import COLON_SP, CRLF, render_error

if TYPE_CHECKING:
    from fastgw.plan import ListenerPlan
    from fastgw.server.listener import ListenerServer

# What the head loop does with a header, by lower-cased name. Anything absent passes through.
_HOST, _CL, _TE, _CONN, _EXPECT, _XFF, _XFP, _XFH, _RID, _DROP = range(10)
_SPECIAL = {
    b"host": _HOST,
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONN,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"x-request-id": _RID,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"proxy-authorization": _DROP,
    b"forwarded": _DROP,  # RFC 7239 form: not believed, and not re-created
}

log = logging.getLogger("fastgw")
_overload_fault = ClientFault("too many open connections", 503)


class ClientProtocol(asyncio.Protocol):
    PAUSE_UPSTREAM = 1  # the upstream's write buffer is full
    PAUSE_BUFFER = 2  # request body buffered while no upstream connection is ready
    PAUSE_PIPELINE = 4  # too many pipelined requests waiting
    PAUSE_CLIENT_WRITE = 8  # marker only: the client's own write buffer is full

    __slots__ = (
        "active",
        "closed",
        "deadline",
        "draining",
        "head_bytes",
        "headers",
        "in_head",
        "listener",
        "parser",
        "parsing",
        "paused",
        "peer_ip",
        "queue",
        "requests",
        "server",
        "transport",
        "trusted",
        "url",
        "write_paused",
    )

    def __init__(self, server: ListenerServer) -> None:
        self.server = server
        self.listener: ListenerPlan = server.plan
        self.transport: Any = None
        self.parser: httptools.HttpRequestParser | _DeadParser = httptools.HttpRequestParser(self)
        self.peer_ip = b""
        self.trusted = False
        self.url: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = False
        self.head_bytes = 0
        self.active: Exchange | None = None  # the exchange answering now
        self.parsing: Exchange | None = None  # the exchange whose body is being parsed
        self.queue: deque[Exchange] = deque()  # pipelined, waiting their turn
        self.paused = 0
        self.write_paused = False
        self.deadline = 0.0
        self.draining = False
        self.closed = False

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        server = self.server
        server.connections.add(self)
        if len(server.connections) > self.listener.limits.max_connections:
            # Degrade instead of exhausting memory: answer at once and close.
            transport.write(render_error(_overload_fault, close=True, date_line=CLOCK.date_line))  # type: ignore[attr-defined]
            transport.close()
            return
        transport.set_write_buffer_limits(high=self.listener.buffer_bytes)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.trusted = self.listener.is_trusted(peer[0])
        self.deadline = CLOCK.now + self.listener.timeouts.head
        CLOCK.watched.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        CLOCK.watched.discard(self)
        active = self.active
        if active is not None:
            active.client_lost()
        for queued in self.queue:
            queued.client_lost()
        self.queue.clear()
        self.active = self.parsing = None

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        continuing_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, HttpFault):
                # A bug of ours inside a callback: answer 500 and keep the traceback in the log.
                log.error("internal error while handling a request", exc_info=cause)
                cause = ClientFault("internal error", 500)
            self.reject(cause)
            return
        except httptools.HttpParserUpgrade:
            self.reject(ClientFault("protocol upgrade is not supported", 501))
            return
        except httptools.HttpParserError as exc:
            self.reject(ClientFault(f"malformed request: {_parser_reason(exc)}"))
            return
        if self.in_head:
            # A head still incomplete: bound what httptools buffers for it. Only bytes of reads
            # that began inside the head are counted; the exact size is checked when it ends.
            self.head_bytes += len(data) if continuing_head else 0
            if self.head_bytes > self.listener.limits.max_header_bytes:
                self.reject(ClientFault("request header block too large", 431))
        elif self.parsing is not None and not self.paused:
            self.deadline = CLOCK.now + self.listener.timeouts.body

    def eof_received(self) -> bool:
        # A client half-close: finish what is in flight, then close (do not keep half-open).
        if self.active is None:
            return False
        self.draining = True
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        active = self.active
        if active is not None and active.conn is not None:
            active.conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self.active
        if active is not None and active.conn is not None:
            active.conn.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.url = None
        self.headers = []
        self.deadline = CLOCK.now + self.listener.timeouts.head

    def on_url(self, url: bytes) -> None:
        self.url = url if self.url is None else self.url + url
        if len(self.url) > self.listener.limits.max_uri_bytes:
            raise ClientFault("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        exchange = self.build_exchange()
        self.parsing = exchange
        if exchange.content_length > 0 or exchange.chunked:
            self.deadline = CLOCK.now + self.listener.timeouts.body
        else:
            self.deadline = 0.0
        if self.active is None:
            self.active = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            if len(self.queue) >= self.listener.limits.max_pipeline:
                self.pause_reading_for(self.PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.on_client_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if self.active is None and not self.queue:
            self.deadline = CLOCK.now + self.listener.timeouts.keepalive
        elif not self.paused:
            self.deadline = 0.0  # waiting for the upstream: its own timeouts apply
        if exchange is not None:
            exchange.on_client_complete()

    # -- the head ------------------------------------------------------------------------------
    def build_exchange(self) -> Exchange:
        """Check the head and turn it into an Exchange; raises ClientFault to refuse it."""
        parser = self.parser
        listener = self.listener
        lim = listener.limits
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise ClientFault("unsupported HTTP version", 505 if version > "1.1" else 400)
        http_10 = version == "1.0"
        headers = self.headers
        if len(headers) > lim.max_headers:
            raise ClientFault("too many request headers", 431)
        url = self.url or b""
        size = len(url) + 16
        exchange = Exchange(self, listener)
        pass_lines: list[bytes] = []
        host_header: bytes | None = None
        content_length = -1
        chunked = False
        expect_continue = False
        request_id: bytes | None = None
        xff = xfp = xfh = None
        connection_tokens: list[bytes] | None = None
        special = _SPECIAL
        for name, value in headers:
            size += len(name) + len(value) + 4
            lname = name.lower()
            kind = special.get(lname)
            if kind is None:
                pass_lines += (name, COLON_SP, value, CRLF)
            elif kind == _HOST:
                if host_header is not None:
                    raise ClientFault("duplicate Host header")
                host_header = value
            elif kind == _CL:
                if content_length >= 0:
                    raise ClientFault("duplicate Content-Length")
                content_length = limits.check_content_length(value)
            elif kind == _TE:
                if chunked:
                    raise ClientFault("duplicate Transfer-Encoding")
                limits.check_transfer_encoding(value, http_10)
                chunked = True
            elif kind == _CONN:
                connection_tokens = _tokens(value, connection_tokens)
            elif kind == _EXPECT:
                if value.lower() != b"100-continue":
                    raise ClientFault("unsupported Expect", 417)
                expect_continue = True
            elif kind == _RID:
                request_id = value
            elif kind == _XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == _XFP:
                xfp = value
            elif kind == _XFH:
                xfh = value
        if size > lim.max_header_bytes:
            raise ClientFault("request header block too large", 431)
        if chunked and content_length >= 0:
            raise ClientFault("both Content-Length and Transfer-Encoding")
        if content_length > lim.max_body_bytes:
            raise ClientFault("request body too large", 413)

        method = parser.get_method()
        if url[:1] != b"/":
            if method == b"CONNECT" or url == b"*":
                raise ClientFault("unsupported request target")
            authority, url = limits.split_absolute_target(url)
            if host_header is not None and authority.lower() != host_header.lower():
                raise ClientFault("absolute-form target and Host disagree")
            host_header = authority
        if host_header is None:
            if not http_10:
                raise ClientFault("missing Host header")
            host = b""
        else:
            host = limits.check_host(host_header)
        query_at = url.find(b"?")
        if query_at >= 0:
            path, query = url[:query_at], url[query_at:]
        else:
            path, query = url, b""
        fragment_at = path.find(b"#")
        if fragment_at >= 0:
            path = path[:fragment_at]
        exchange.path = limits.normalize_path(path)
        exchange.query = query

        if connection_tokens:
            # Headers the client names in Connection are hop-by-hop for this hop: drop them
            # from what passes through. What the gateway adds below is added after this filter.
            named = set(connection_tokens)
            pass_lines = _without_named(pass_lines, named)
            if b"x-forwarded-for" in named:
                xff = None
            if b"x-forwarded-proto" in named:
                xfp = None
            if b"x-forwarded-host" in named:
                xfh = None

        if request_id is None or not limits.is_valid_request_id(request_id):
            request_id = self.server.new_request_id()
        trusted = self.trusted
        forwarded = [
            b"X-Forwarded-For: ",
            xff + b", " + self.peer_ip if trusted and xff else self.peer_ip,
            b"\r\nX-Forwarded-Proto: ",
            xfp if trusted and xfp else b"http",
            b"\r\nX-Request-Id: ",
            request_id,
            CRLF,
        ]
        forwarded_host = xfh if trusted and xfh else host_header
        if forwarded_host:
            forwarded += (b"X-Forwarded-Host: ", forwarded_host, CRLF)

        exchange.method = method
        exchange.http_10 = http_10
        exchange.keep_alive = parser.should_keep_alive() and not self.draining
        exchange.headers = headers
        exchange.pass_lines = pass_lines
        exchange.host = host
        exchange.host_header = host_header or b""
        exchange.content_length = content_length
        exchange.chunked = chunked
        exchange.expect_continue = expect_continue and (content_length > 0 or chunked)
        exchange.request_id = request_id
        exchange.forwarded = forwarded
        # No body follows: the request is complete now, before start() runs (on_message_complete
        # comes only after this callback returns).
        exchange.request_done = content_length <= 0 and not chunked
        return exchange

    # -- exchange lifecycle --------------------------------------------------------------------
    def exchange_finished(self, exchange: Exchange) -> None:
        """The active exchange wrote its last byte (or failed): close, or start the next one."""
        if exchange is not self.active:
            return
        self.active = None
        if exchange.close_after or (self.draining and not self.queue):
            self.close()
            return
        if self.paused & self.PAUSE_PIPELINE and len(self.queue) < self.listener.limits.max_pipeline:
            self.resume_reading_for(self.PAUSE_PIPELINE)
        if self.queue:
            nxt = self.active = self.queue.popleft()
            nxt.start()
        elif not self.in_head and self.parsing is None:
            self.deadline = CLOCK.now + self.listener.timeouts.keepalive
            if self.draining:
                self.close()

    def reject(self, fault: HttpFault) -> None:
        """A request we refuse before it has an exchange: answer in order if possible, close."""
        self.parser = _DeadParser()
        if self.active is None and not self.queue:
            data = render_error(fault, close=True, date_line=CLOCK.date_line)
            self.transport.write(data)
            self.close()
            return
        # Earlier requests are still being answered; the refused one cannot be answered
        # out of order, and nothing after it can be trusted, so close once they are done.
        self.draining = True
        self.pause_reading_for(self.PAUSE_PIPELINE)

    def pause_reading_for(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
            self.deadline = 0.0  # a paused body is not a stalled client
        self.paused |= reason

    def resume_reading_for(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and not self.closed:
            self.transport.resume_reading()
            if self.parsing is not None:
                self.deadline = CLOCK.now + self.listener.timeouts.body

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def start_draining(self) -> None:
        """Graceful shutdown: finish what is in flight, close idle keep-alive connections now."""
        self.draining = True
        if self.active is None and not self.in_head and self.parsing is None:
            self.close()

    def check_deadline(self, now: float) -> None:
        if not self.deadline or now < self.deadline or self.closed:
            return
        if self.in_head or self.parsing is not None:
            # Slowloris or a stalled body: 408 if nothing was answered for it yet.
            if self.active is None or (self.active is self.parsing and not self.active.response_started):
                fault = ClientFault("timed out reading the request", 408)
                if self.active is not None:
                    self.active.fail(fault)
                else:
                    self.transport.write(render_error(fault, close=True, date_line=CLOCK.date_line))
                self.close()
            else:
                self.abort()
        elif self.active is None:
            self.close()  # idle keep-alive expired


class _DeadParser:
    """Stands in for the parser once a connection is refused: input after that is ignored."""

    def feed_data(self, data: bytes) -> None:
        return None

    def get_http_version(self) -> str:
        return "1.1"

    def get_method(self) -> bytes:
        return b""

    def should_keep_alive(self) -> bool:
        return False


def _tokens(value: bytes, into: list[bytes] | None) -> list[bytes]:
    tokens = into if into is not None else []
    for token in value.split(b","):
        token = token.strip().lower()
        if token and token not in (b"close", b"keep-alive"):
            tokens.append(token)
    return tokens


def _without_named(pass_lines: list[bytes], named: set[bytes]) -> list[bytes]:
    kept: list[bytes] = []
    for i in range(0, len(pass_lines), 4):
        if pass_lines[i].lower() not in named:
            kept += pass_lines[i : i + 4]
    return kept


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:80]
