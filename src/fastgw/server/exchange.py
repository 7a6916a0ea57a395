"""One request/response exchange: from a parsed client head to the last byte of the response.

Order of events for one exchange (the hook points in brackets):

    ClientProtocol parses the head -> Exchange(...)          (queued behind earlier ones)
    start(): router.match -> 404/405 | limits -> 413 | 100 Continue
             [on_request] -> may answer, or await
    send_upstream(): Balancer pick -> pool.take_idle() | pool.acquire() (async only here)
    attach(conn): [on_upstream_request] head + buffered body written in one call
    on_client_body / on_client_complete: body streamed upstream (re-framed when chunked)
    on_upstream_head: [on_response] head re-serialized for the client
    on_upstream_body: body queued in ``out``; ``flush_to_client`` writes it once per read
    on_upstream_complete -> finish(): [on_complete]; the connection goes back to its pool only
        if request and response both ended with known framing

Failure rules: before anything went to the client, a failure is one error response (502 refused
or reset or malformed, 503 no connection, 504 timeout); after the head went out, the only honest
signal is closing the client connection, never a clean end. A reused upstream connection that
dies before any response byte is retried once on a fresh one, only for idempotent requests with
no body, so a POST is never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fastgw._router import MethodNotAllowed
from fastgw.errors import ClientFault, HttpFault, UpstreamFault
from fastgw.hooks import Response
from fastgw.server.clock import CLOCK
from fastgw.server.wire import (
    COLON_SP,
    CONNECTION_CLOSE,
    CONNECTION_KEEP_ALIVE,
    CONTINUE_100,
    CRLF,
    LAST_CHUNK,
    STATUS_LINES,
    TRANSFER_CHUNKED,
    chunk_header,
    render_error,
    render_response,
)

if TYPE_CHECKING:
    from fastgw.plan import ListenerPlan, RoutePlan
    from fastgw.server.protocol import ClientProtocol
    from fastgw.upstream.group import Target
    from fastgw.upstream.protocol import UpstreamConnection

log = logging.getLogger("fastgw")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})

# Response headers the gateway owns towards the client (framing and connection management).
_RESPONSE_DROP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})

_NOT_FOUND = ClientFault("no route matches this request", 404)
_NOT_FOUND.close = False
_METHOD_NOT_ALLOWED = ClientFault("method not allowed for this path", 405)
_METHOD_NOT_ALLOWED.close = False


class Exchange:
    __slots__ = (
        "acquiring",
        "body_received",
        "chunked",
        "client",
        "close_after",
        "conn",
        "content_length",
        "expect_continue",
        "finished",
        "forwarded",
        "headers",
        "host",
        "host_header",
        "http_10",
        "keep_alive",
        "listener",
        "method",
        "out",
        "params",
        "pass_lines",
        "path",
        "pending",
        "pending_size",
        "query",
        "rechunk",
        "request_done",
        "request_id",
        "response_headers",
        "response_started",
        "response_status",
        "retried",
        "route",
        "started_at",
        "target",
        "upstream_headers",
    )

    # Set by ClientProtocol.build_exchange from the validated head.
    method: bytes
    path: bytes  # normalized, what was matched and what is forwarded
    query: bytes  # "" or "?..." as received
    http_10: bool
    keep_alive: bool
    headers: list[tuple[bytes, bytes]]  # as received, for hooks and predicates
    pass_lines: list[bytes]  # name, ": ", value, CRLF for each header forwarded as it is
    host: bytes  # lower-cased, no port: for routing
    host_header: bytes  # as received
    content_length: int  # -1 when absent
    chunked: bool
    expect_continue: bool
    request_id: bytes
    forwarded: list[bytes]  # X-Forwarded-* and X-Request-Id lines, ready to join

    def __init__(self, client: ClientProtocol, listener: ListenerPlan) -> None:
        self.client = client
        self.listener = listener
        self.route: RoutePlan | None = None
        self.params: tuple[bytes, ...] = ()
        self.request_done = False
        self.body_received = 0
        self.pending: list[bytes] = []  # request body framed for upstream, waiting for a connection
        self.pending_size = 0
        self.target: Target | None = None
        self.conn: UpstreamConnection | None = None
        self.acquiring: asyncio.Future[UpstreamConnection] | None = None
        self.retried = False
        self.response_status = 0
        self.response_headers: list[tuple[bytes, bytes]] | None = None
        self.response_started = False
        self.rechunk = False
        self.close_after = False
        self.out: list[bytes] = []
        self.finished = False
        self.upstream_headers: list[tuple[bytes, bytes]] | None = None
        self.started_at = CLOCK.now

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Route and begin forwarding; called when this exchange becomes the active one."""
        match = self.listener.router.match(self.method, self.host, self.path, self)
        if match is None:
            self.answer_fault(_NOT_FOUND)
            return
        if type(match) is MethodNotAllowed:
            self.answer_fault(_METHOD_NOT_ALLOWED, [(b"Allow", match.allow)])
            return
        route: RoutePlan = match.route  # type: ignore[assignment]  # the router holds RoutePlans
        self.route = route
        self.params = match.params
        if self.expect_continue and not self.request_done:
            # RFC 9110 10.1.1: we are about to read the body, so tell the client to send it.
            # (A declared length over the limit was refused with 413 before getting here.)
            self.client.transport.write(CONTINUE_100)
        on_request = route.chain.on_request
        if on_request:
            self._run_request_hooks(on_request, 0)
            return
        self.send_upstream()

    def _run_request_hooks(self, hooks: tuple[Any, ...], index: int) -> None:
        for i in range(index, len(hooks)):
            result = hooks[i](self)
            if result is None:
                continue
            if isinstance(result, Response):
                self.answer(result)
                return
            # The hook must do I/O: only now does this request leave the synchronous path.
            task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t, i=i: self._after_async_hook(t, hooks, i))
            return
        self.send_upstream()

    def _after_async_hook(
        self, task: asyncio.Future[Response | None], hooks: tuple[Any, ...], index: int
    ) -> None:
        if self.finished:
            return
        if task.cancelled():
            self.answer_fault(UpstreamFault("request hook cancelled", 503))
            return
        exc = task.exception()
        if exc is not None:
            fault = exc if isinstance(exc, HttpFault) else UpstreamFault("request hook failed", 500)
            self.answer_fault(fault)
            return
        try:
            result = task.result()
            if isinstance(result, Response):
                self.answer(result)
            else:
                self._run_request_hooks(hooks, index + 1)
        except Exception:
            self.internal_error()

    # -- upstream ------------------------------------------------------------------------------
    def send_upstream(self, fresh: bool = False) -> None:
        route = self.route
        assert route is not None
        target = self.target = route.upstream.pick()
        pool = target.pool
        conn = None if fresh else pool.take_idle()
        if conn is not None:
            self.attach(conn)
            return
        timeouts = route.timeouts
        future = pool.connect_fresh(timeouts.connect) if fresh else pool.acquire(timeouts.connect)
        self.acquiring = future
        future.add_done_callback(self._on_acquired)

    def _on_acquired(self, future: asyncio.Future[UpstreamConnection]) -> None:
        self.acquiring = None
        if future.cancelled():
            return
        exc = future.exception()
        if self.finished:
            if exc is None:
                future.result().pool.give_back(future.result())
            return
        if exc is not None:
            self.answer_fault(
                exc if isinstance(exc, HttpFault) else UpstreamFault("upstream connect failed", 502)
            )
            return
        try:
            self.attach(future.result())
        except Exception:
            self.internal_error()

    def attach(self, conn: UpstreamConnection) -> None:
        """Bind a connection and write the head plus whatever body already arrived, in one call."""
        route = self.route
        assert route is not None and self.target is not None
        self.conn = conn
        conn.begin(self, self.method == b"HEAD", route.timeouts, not self.request_done)
        if route.chain.on_upstream_request:
            self.upstream_headers = []
            for hook in route.chain.on_upstream_request:
                hook(self)
        head = self.render_upstream_head(route, self.target)
        transport = conn.transport
        assert transport is not None
        if self.pending:
            transport.writelines([head, *self.pending])
            self.pending.clear()
            if self.pending_size > self.listener.buffer_bytes:
                self.client.resume_reading_for(self.client.PAUSE_BUFFER)
            self.pending_size = 0
        else:
            transport.write(head)

    def render_upstream_head(self, route: RoutePlan, target: Target) -> bytes:
        """The request head sent upstream: ours, never the client's bytes as they came."""
        path = route.upstream_path(self.path, self.params)
        host = self.host_header if route.preserve_host and self.host_header else target.host_header
        parts = [self.method, b" ", path, self.query, b" HTTP/1.1\r\nHost: ", host, CRLF]
        parts += self.pass_lines
        parts += self.forwarded
        if self.chunked:
            parts.append(TRANSFER_CHUNKED)
        elif self.content_length >= 0:
            parts.append(b"Content-Length: %d\r\n" % self.content_length)
        if self.upstream_headers:
            for name, value in self.upstream_headers:
                parts += (name, COLON_SP, value, CRLF)
        parts.append(CRLF)
        return b"".join(parts)

    # -- request body --------------------------------------------------------------------------
    def on_client_body(self, data: bytes) -> None:
        size = len(data)
        self.body_received += size
        if self.body_received > self.listener.limits.max_body_bytes:
            self.fail(ClientFault("request body too large", 413))
            return
        if self.chunked:
            self.to_upstream(chunk_header(size))
            self.to_upstream(data)
            self.to_upstream(CRLF)
        else:
            self.to_upstream(data)

    def on_client_complete(self) -> None:
        self.request_done = True
        if self.chunked:
            self.to_upstream(LAST_CHUNK)  # trailers are not forwarded
        conn = self.conn
        if conn is not None and conn.sending:
            conn.request_sent()

    def to_upstream(self, data: bytes) -> None:
        if self.finished:
            return  # the exchange already ended; the rest of the body is dropped
        conn = self.conn
        if conn is not None:
            transport = conn.transport
            assert transport is not None
            transport.write(data)
            if conn.sending:
                conn.arm()  # progress: the send timeout counts from the last write
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > self.listener.buffer_bytes:
            self.client.pause_reading_for(self.client.PAUSE_BUFFER)

    # -- response ------------------------------------------------------------------------------
    def on_upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.response_status = status
        if status == 101:
            self.fail(UpstreamFault("upstream switched protocols unasked", 502))
            return
        kept: list[tuple[bytes, bytes]] = []
        content_length = upstream_chunked = False
        drop_named: set[bytes] | None = None
        for name, value in headers:
            lname = name.lower()
            if lname in _RESPONSE_DROP:
                if lname == b"connection":
                    drop_named = _connection_tokens(value, drop_named)
                elif lname == b"transfer-encoding":
                    upstream_chunked = True
                continue
            if lname == b"content-length":
                content_length = True
            kept.append((name, value))
        if drop_named:
            kept = [(n, v) for n, v in kept if n.lower() not in drop_named]
        route = self.route
        assert route is not None
        if route.chain.on_response:
            self.response_headers = kept
            for hook in route.chain.on_response:
                replacement = hook(self)
                if replacement is not None:
                    self._replace_response(replacement)
                    return
            kept = self.response_headers
        client = self.client
        close = self.close_after or not self.keep_alive or client.draining
        no_body = self.method == b"HEAD" or status == 204 or status == 304
        framing = b""
        if not no_body and not content_length and not upstream_chunked and self.conn is not None:
            self.conn.close_delimited = True
        if not no_body and not content_length:
            if self.http_10:
                close = True  # close-delimited is all an HTTP/1.0 client understands
            else:
                self.rechunk = True
                framing = TRANSFER_CHUNKED
        self.close_after = close
        line = STATUS_LINES.get(status)
        if line is None or line[13:-2] != reason:
            line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        parts = [line]
        for name, value in kept:
            parts += (name, COLON_SP, value, CRLF)
        if framing:
            parts.append(framing)
        if close:
            parts.append(CONNECTION_CLOSE)
        elif self.http_10:
            parts.append(CONNECTION_KEEP_ALIVE)
        parts.append(CRLF)
        self.out.append(b"".join(parts))
        self.response_started = True

    def on_upstream_body(self, data: bytes) -> None:
        if self.finished:
            return
        if self.rechunk:
            self.out += (chunk_header(len(data)), data, CRLF)
        else:
            self.out.append(data)

    def flush_to_client(self) -> None:
        out = self.out
        if out:
            transport = self.client.transport
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
            out.clear()

    def on_upstream_complete(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        if self.rechunk:
            self.out.append(LAST_CHUNK)
        if not self.request_done:
            self.close_after = True  # we stop reading a body the upstream did not wait for
        conn.detach(keep_alive and self.request_done)
        self.conn = None
        self.flush_to_client()
        self.finish()

    def _replace_response(self, response: Response) -> None:
        """An on_response hook answered instead of the upstream: drop the upstream connection."""
        conn = self.conn
        if conn is not None:
            self._drop_conn(conn)
        self.response_status = 0
        self.answer(response)

    # -- upstream failures ---------------------------------------------------------------------
    def on_upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None:
        """Called by the connection after it unbound itself: the upstream closed or reset."""
        self.conn = None
        conn.pool.release(conn)
        if self.finished:
            return
        if (
            not conn.received
            and conn.served > 0
            and not self.retried
            and self.method in IDEMPOTENT
            and self.body_received == 0
            and not self.chunked
            and self.content_length <= 0
        ):
            # A pooled connection the upstream had already closed: safe to send once more.
            self.retried = True
            self.send_upstream(fresh=True)
            return
        self.fail(UpstreamFault("upstream closed the connection before the response completed", 502))

    def on_upstream_malformed(self, conn: UpstreamConnection, exc: Exception) -> None:
        self._drop_conn(conn)
        self.fail(UpstreamFault("upstream sent a malformed response", 502))

    def on_upstream_timeout(self, conn: UpstreamConnection) -> None:
        """Called by the connection's deadline check; it aborts itself afterwards."""
        self.conn = None
        conn.detach(False)
        conn.pool.release(conn)
        self.fail(UpstreamFault("upstream timed out", 504))

    def _drop_conn(self, conn: UpstreamConnection) -> None:
        self.conn = None
        conn.detach(False)
        conn.abort()
        conn.pool.release(conn)

    def upstream_write_paused(self) -> None:
        self.client.pause_reading_for(self.client.PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading_for(self.client.PAUSE_UPSTREAM)

    # -- answers and endings -------------------------------------------------------------------
    def internal_error(self) -> None:
        """A bug of ours outside a protocol callback: log it once, answer 500 (or close)."""
        log.exception("internal error in request %s", self.request_id.decode("ascii", "replace"))
        self.fail(UpstreamFault("internal error", 500))

    def fail(self, fault: HttpFault) -> None:
        """A failure at any point: an error response if nothing went out yet, else a close."""
        if self.finished:
            return
        if self.response_started:
            self.out.clear()
            conn = self.conn
            if conn is not None:
                self._drop_conn(conn)
            self.finished = True
            self.client.abort()
            self.client.exchange_finished(self)
            return
        conn = self.conn
        if conn is not None:
            self._drop_conn(conn)
        self.answer_fault(fault)

    def answer_fault(self, fault: HttpFault, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        close = fault.close or not self.request_done or not self.keep_alive or self.client.draining
        self.close_after = close
        data = render_error(
            fault,
            self.request_id,
            close=close,
            extra=extra,
            date_line=CLOCK.date_line,
            head_only=self.method == b"HEAD",
        )
        self.response_status = fault.status
        self.client.transport.write(data)
        self.finish()

    def answer(self, response: Response) -> None:
        close = not self.request_done or not self.keep_alive or self.client.draining
        self.close_after = close
        headers = [*response.headers, (b"X-Request-Id", self.request_id)]
        data = render_response(
            response.status,
            response.body,
            content_type=response.content_type,
            close=close,
            extra=headers,
            date_line=CLOCK.date_line,
            head_only=self.method == b"HEAD",
        )
        self.response_status = response.status
        self.client.transport.write(data)
        self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        route = self.route
        if route is not None and route.chain.on_complete:
            for hook in route.chain.on_complete:
                hook(self)
        self.client.exchange_finished(self)

    def client_lost(self) -> None:
        """The client went away: free whatever this exchange holds upstream."""
        if self.finished:
            return
        self.finished = True
        acquiring = self.acquiring
        if acquiring is not None:
            self.acquiring = None
            if acquiring.done():
                if not acquiring.cancelled() and acquiring.exception() is None:
                    acquired = acquiring.result()
                    acquired.pool.give_back(acquired)
            else:
                acquiring.cancel()
        conn = self.conn
        if conn is not None:
            self._drop_conn(conn)
        route = self.route
        if route is not None and route.chain.on_complete:
            for hook in route.chain.on_complete:
                hook(self)

    # -- for hooks and predicates --------------------------------------------------------------
    def header(self, name: bytes) -> bytes | None:
        """First value of a request header (name lower-case); for plugins, not the hot path."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def param(self, name: str) -> bytes | None:
        route = self.route
        if route is None:
            return None
        try:
            return self.params[route.param_names.index(name)]
        except ValueError:
            return None


def _connection_tokens(value: bytes, into: set[bytes] | None) -> set[bytes] | None:
    """Header names listed in a Connection header are hop-by-hop too (RFC 9110 7.6.1)."""
    if value in _PLAIN_CONNECTION:
        return into  # PERF: the usual "keep-alive" / "close" name no header
    for token in value.split(b","):
        token = token.strip().lower()
        if token and token not in (b"close", b"keep-alive"):
            if into is None:
                into = set()
            into.add(token)
    return into
