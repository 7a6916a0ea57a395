# cython: language_level=3
"""The per-request path: ``ClientProtocol``, ``Exchange`` and ``UpstreamConnection``.

The three live in one module as cdef classes so they read each other's fields at C speed; the
table of contents (fields, signatures) is ``_proxy.pxd``, the typed face ``_proxy.pyi``.
The asyncio and httptools callbacks are ``def`` methods: both duck-type their protocols
(``getattr`` on the protocol object), so the classes need no ``asyncio.Protocol`` base.
Everything the three call on each other is ``cdef``; what Python code (pools, listeners, the
clock, plugins) calls is ``def`` or ``cpdef``.

Client side: one ``ClientProtocol`` per accepted connection, driven by httptools.

Connection states:

    idle --first byte--> head --headers complete--> forwarding --response done--> idle (keep-alive)
                          |                           |                       \\--> closed
                          +-- limit / malformed ------+--> error response, closed

Hook points, in order, for each request (see ``hooks.py``): on_request, on_upstream_request,
on_response, on_complete. The protocol itself parses, checks what httptools leaves to us
(``server/limits.py``, with the hot checks in C below), builds an ``Exchange`` per request and
keeps pipelined ones in order: only the head-of-line exchange talks to the client; later ones
wait, their bodies buffered up to the listener's buffer size, and reading pauses while the
backlog is full.

Timeouts use deadlines swept by the process clock (``server/clock.py``): head (slowloris; counts
from the first byte of a request), body (longest stall between body reads) and keep-alive (idle
between requests). Reading is paused for three independent reasons (upstream write buffer full,
request body buffered while waiting for an upstream connection, pipeline backlog); it resumes
only when none holds.

One exchange, from a parsed client head to the last byte of the response (hook points in
brackets):

    ClientProtocol parses the head -> Exchange               (queued behind earlier ones)
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

Upstream side: one keep-alive HTTP/1.1 ``UpstreamConnection`` per socket to a target.
States: connecting -> idle (in its pool) -> busy (``exchange`` set) -> idle ... -> closed.
While busy, httptools' response parser drives the exchange: ``on_upstream_head`` with the parsed
head, ``on_upstream_body`` per body piece, ``on_upstream_complete`` at the end; after each
``data_received`` the exchange flushes what it gathered to the client in one write. A connection
goes back to its pool only when the exchange says request and response both ended cleanly with
known framing. Bytes arriving on an idle connection, or a close, make it unusable; the pool skips
it.

PERF: the per-request path creates one Exchange, one list of header pairs, one bytes block of
the header lines forwarded as they are, and the upstream head (one allocation, written by
``_Writer``-style memcpy); no Task, Future or dict per request. Header names are classified in C
(no ``.lower()``, no dict lookup); the HTTP version and the method come from the request line
when the head began a read (no ``get_http_version()`` string formatting); request ids,
Content-Length lines and chunk sizes are formatted in C.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp, memcpy

import asyncio
import logging
from collections import deque
from functools import partial

import httptools

from fastgw._router cimport MethodNotAllowed, RouteMatch

from fastgw.errors import ClientFault, HttpFault, UpstreamFault
from fastgw.hooks import Response
from fastgw.server import limits
from fastgw.server.clock import CLOCK
from fastgw.server.wire import (
    CONNECTION_CLOSE,
    CONNECTION_KEEP_ALIVE,
    CONTINUE_100,
    CRLF,
    LAST_CHUNK,
    STATUS_LINES,
    TRANSFER_CHUNKED,
    render_error,
    render_response,
)

log = logging.getLogger("fastgw")

cdef object _CLOCK = CLOCK
cdef object _ParserCallbackError = httptools.HttpParserCallbackError
cdef object _ParserUpgrade = httptools.HttpParserUpgrade
cdef object _ParserError = httptools.HttpParserError
cdef object _RequestParser = httptools.HttpRequestParser
cdef object _ResponseParser = httptools.HttpResponseParser

cdef bytes _CRLF = CRLF
cdef bytes _CONNECTION_CLOSE = CONNECTION_CLOSE
cdef bytes _CONNECTION_KEEP_ALIVE = CONNECTION_KEEP_ALIVE
cdef bytes _TRANSFER_CHUNKED = TRANSFER_CHUNKED
cdef bytes _LAST_CHUNK = LAST_CHUNK
cdef bytes _GET = b"GET"
cdef bytes _HEAD = b"HEAD"
cdef bytes _POST = b"POST"
cdef bytes _HTTP = b"http"

# STATUS_LINES by code, as a tuple: an index instead of a dict lookup.
cdef tuple _STATUS_LINES = tuple([STATUS_LINES.get(code) for code in range(600)])

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})
cdef frozenset _IDEMPOTENT = IDEMPOTENT

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})

_overload_fault = ClientFault("too many open connections", 503)
_NOT_FOUND = ClientFault("no route matches this request", 404)
_NOT_FOUND.close = False
_METHOD_NOT_ALLOWED = ClientFault("method not allowed for this path", 405)
_METHOD_NOT_ALLOWED.close = False


cdef inline double _now():
    return _CLOCK.now


# -- C helpers for the hot checks and the wire bytes ----------------------------------------------

cdef inline unsigned char _lc(char c) noexcept nogil:
    cdef unsigned char u = <unsigned char>c
    return u + 32 if 65 <= u <= 90 else u


cdef bint _ieq(const char* s, const char* lower, Py_ssize_t n) noexcept nogil:
    """ASCII case-insensitive equality of s[:n] with an already lower-case literal."""
    cdef Py_ssize_t i
    for i in range(n):
        if _lc(s[i]) != <unsigned char>lower[i]:
            return False
    return True


cdef int _request_kind(const char* s, Py_ssize_t n) noexcept nogil:
    """What the head loop does with a request header, by name (H_PASS: forwarded as it is)."""
    if n == 4:
        return H_HOST if _ieq(s, "host", 4) else H_PASS
    if n == 14:
        return H_CL if _ieq(s, "content-length", 14) else H_PASS
    if n == 10:
        if _ieq(s, "connection", 10):
            return H_CONN
        return H_DROP if _ieq(s, "keep-alive", 10) else H_PASS
    if n == 17:
        if _ieq(s, "transfer-encoding", 17):
            return H_TE
        return H_XFP if _ieq(s, "x-forwarded-proto", 17) else H_PASS
    if n == 15:
        return H_XFF if _ieq(s, "x-forwarded-for", 15) else H_PASS
    if n == 16:
        if _ieq(s, "x-forwarded-host", 16):
            return H_XFH
        return H_DROP if _ieq(s, "proxy-connection", 16) else H_PASS
    if n == 12:
        return H_RID if _ieq(s, "x-request-id", 12) else H_PASS
    if n == 6:
        return H_EXPECT if _ieq(s, "expect", 6) else H_PASS
    if n == 2:
        return H_DROP if _ieq(s, "te", 2) else H_PASS
    if n == 7:
        return H_DROP if _ieq(s, "trailer", 7) or _ieq(s, "upgrade", 7) else H_PASS
    if n == 9:
        return H_DROP if _ieq(s, "forwarded", 9) else H_PASS  # RFC 7239: not believed, not re-created
    if n == 19:
        return H_DROP if _ieq(s, "proxy-authorization", 19) else H_PASS
    return H_PASS


cdef int _response_kind(const char* s, Py_ssize_t n) noexcept nogil:
    """Response headers the gateway owns towards the client (framing, connection management)."""
    if n == 14:
        return R_CL if _ieq(s, "content-length", 14) else R_PASS
    if n == 10:
        if _ieq(s, "connection", 10):
            return R_CONN
        return R_DROP if _ieq(s, "keep-alive", 10) else R_PASS
    if n == 17:
        return R_TE if _ieq(s, "transfer-encoding", 17) else R_PASS
    if n == 16:
        return R_DROP if _ieq(s, "proxy-connection", 16) else R_PASS
    if n == 2:
        return R_DROP if _ieq(s, "te", 2) else R_PASS
    if n == 7:
        return R_DROP if _ieq(s, "trailer", 7) or _ieq(s, "upgrade", 7) else R_PASS
    return R_PASS


cdef long long _content_length(bytes value) except -1:
    """Strict digits-only Content-Length (RFC 9110 section 8.6), as ``limits.check_content_length``."""
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    cdef const char* s = PyBytes_AS_STRING(value)
    cdef long long result = 0
    if n == 0 or n > 18:
        raise ClientFault("invalid Content-Length")
    for i in range(n):
        if not (48 <= <unsigned char>s[i] <= 57):
            raise ClientFault("invalid Content-Length")
        result = result * 10 + (s[i] - 48)
    return result


cdef bint _valid_request_id(bytes value) noexcept:
    """``[A-Za-z0-9._:-]{1,128}``, as ``limits.is_valid_request_id``."""
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    cdef const char* s = PyBytes_AS_STRING(value)
    cdef unsigned char c
    if n < 1 or n > 128:
        return False
    for i in range(n):
        c = <unsigned char>s[i]
        if not (48 <= c <= 58 or 65 <= c <= 90 or 97 <= c <= 122 or c == 46 or c == 95 or c == 45):
            return False
    return True


cdef bint _needs_normalizing(bytes path) noexcept:
    """Is there a '%' or a '/.' (``limits.normalize_path``'s own test, with memchr)."""
    cdef const char* s = PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
    cdef const char* end = s + n
    cdef const char* p
    if memchr(s, b"%", n) != NULL:
        return True
    p = <const char*>memchr(s, b"/", n)
    while p != NULL:
        p += 1
        if p >= end:
            return False
        if p[0] == b".":
            return True
        p = <const char*>memchr(p, b"/", end - p)
    return False


cdef int _hex_digits(unsigned long long value) noexcept nogil:
    cdef int n = 1
    while value >= 16:
        value >>= 4
        n += 1
    return n


cdef char* _put_hex(char* p, unsigned long long value, int width) noexcept nogil:
    cdef int i
    for i in range(width - 1, -1, -1):
        p[i] = b"0123456789abcdef"[value & 15]
        value >>= 4
    return p + width


cdef int _dec_digits(unsigned long long value) noexcept nogil:
    cdef int n = 1
    while value >= 10:
        value //= 10
        n += 1
    return n


cdef char* _put_dec(char* p, unsigned long long value, int width) noexcept nogil:
    cdef int i
    for i in range(width - 1, -1, -1):
        p[i] = <char>(48 + value % 10)
        value //= 10
    return p + width


cdef inline char* _put(char* p, bytes b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(p, PyBytes_AS_STRING(b), n)
    return p + n


cdef inline char* _put_c(char* p, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef bytes _chunk_header(Py_ssize_t size):
    """``b"%x\\r\\n" % size``."""
    cdef int width = _hex_digits(<unsigned long long>size)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, width + 2)
    cdef char* p = _put_hex(PyBytes_AS_STRING(out), <unsigned long long>size, width)
    p[0] = b"\r"
    p[1] = b"\n"
    return out


def chunk_header(size: int) -> bytes:
    """The chunk-size line for ``size`` bytes of data (lower-case hex, as ``wire.chunk_header``)."""
    return _chunk_header(size)


cdef inline void _check_end(char* p, bytes out) except *:
    if p != PyBytes_AS_STRING(out) + PyBytes_GET_SIZE(out):
        raise SystemError("fastgw._proxy: rendered size mismatch")


@cython.final
cdef class RequestIds:
    """A random per-process prefix and a counter: unique, cheap, and sortable per worker.

    PERF: formats ``b"%s%08x" % (prefix, n)`` in C.
    """

    def __init__(self, bytes prefix not None) -> None:
        self.prefix = prefix
        self.number = 0

    cpdef bytes next(self):
        self.number += 1
        cdef unsigned long long number = self.number
        cdef int width = _hex_digits(number)
        if width < 8:
            width = 8
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self.prefix)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n + width)
        cdef char* p = PyBytes_AS_STRING(out)
        memcpy(p, PyBytes_AS_STRING(self.prefix), n)
        _put_hex(p + n, number, width)
        return out


# -- the client side -------------------------------------------------------------------------------

@cython.final
cdef class ClientProtocol:
    PAUSE_UPSTREAM = P_UPSTREAM  # the upstream's write buffer is full
    PAUSE_BUFFER = P_BUFFER  # request body buffered while no upstream connection is ready
    PAUSE_PIPELINE = P_PIPELINE  # too many pipelined requests waiting
    PAUSE_CLIENT_WRITE = P_CLIENT_WRITE  # marker only: the client's own write buffer is full

    def __init__(self, server) -> None:
        self.server = server
        listener = server.plan
        self.listener = listener
        self.transport = None
        self.parser = _RequestParser(self)
        self.peer_ip = b""
        self.trusted = False
        self.url = None
        self.headers = []
        self.in_head = False
        self.head_bytes = 0
        self.active = None  # the exchange answering now
        self.parsing = None  # the exchange whose body is being parsed
        self.queue = deque()  # pipelined, waiting their turn
        self.paused = 0
        self.write_paused = False
        self.deadline = 0.0
        self.draining = False
        self.closed = False
        # PERF: the listener plan is immutable and fixed for the connection's life; its limits
        # and timeouts are copied into C fields once instead of read through attributes per use.
        lim = listener.limits
        timeouts = listener.timeouts
        self.router = listener.router
        self.request_ids = server.request_ids
        self.max_connections = lim.max_connections
        self.max_header_bytes = lim.max_header_bytes
        self.max_uri_bytes = lim.max_uri_bytes
        self.max_headers = lim.max_headers
        self.max_body_bytes = lim.max_body_bytes
        self.max_pipeline = lim.max_pipeline
        self.buffer_bytes = listener.buffer_bytes
        self.head_timeout = timeouts.head
        self.body_timeout = timeouts.body
        self.keepalive_timeout = timeouts.keepalive
        self.feed = None
        self.head_start = None
        self.last_host_header = None
        self.last_host = None

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        server.connections.add(self)
        if len(server.connections) > self.max_connections:
            # Degrade instead of exhausting memory: answer at once and close.
            transport.write(render_error(_overload_fault, close=True, date_line=_CLOCK.date_line))
            transport.close()
            return
        transport.set_write_buffer_limits(high=self.buffer_bytes)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.trusted = self.listener.is_trusted(peer[0])
        self.deadline = _now() + self.head_timeout
        _CLOCK.watched.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        _CLOCK.watched.discard(self)
        cdef Exchange active = self.active
        if active is not None:
            active.client_lost()
        for queued in self.queue:
            (<Exchange>queued).client_lost()
        self.queue.clear()
        self.active = self.parsing = None

    def data_received(self, data) -> None:
        if self.closed:
            return
        cdef bint continuing_head = self.in_head
        # A head that begins at the first byte of this read can take its version and method
        # from the request line (see build_exchange); nothing is in progress between messages.
        self.feed = data if not continuing_head and self.parsing is None and type(data) is bytes else None
        try:
            self.parser.feed_data(data)
        except _ParserCallbackError as exc:
            self.feed = None
            cause = exc.__context__
            if not isinstance(cause, HttpFault):
                # A bug of ours inside a callback: answer 500 and keep the traceback in the log.
                log.error("internal error while handling a request", exc_info=cause)
                cause = ClientFault("internal error", 500)
            self.reject(cause)
            return
        except _ParserUpgrade:
            self.feed = None
            self.reject(ClientFault("protocol upgrade is not supported", 501))
            return
        except _ParserError as exc:
            self.feed = None
            self.reject(ClientFault(f"malformed request: {_parser_reason(exc)}"))
            return
        self.feed = None
        if self.in_head:
            # A head still incomplete: bound what httptools buffers for it. Only bytes of reads
            # that began inside the head are counted; the exact size is checked when it ends.
            self.head_bytes += len(data) if continuing_head else 0
            if self.head_bytes > self.max_header_bytes:
                self.reject(ClientFault("request header block too large", 431))
        elif self.parsing is not None and not self.paused:
            self.deadline = _now() + self.body_timeout

    def eof_received(self) -> bool:
        # A client half-close: finish what is in flight, then close (do not keep half-open).
        if self.active is None:
            return False
        self.draining = True
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        cdef Exchange active = self.active
        if active is not None and active.conn is not None:
            active.conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        cdef Exchange active = self.active
        if active is not None and active.conn is not None:
            active.conn.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.url = None
        self.headers = []
        self.deadline = _now() + self.head_timeout
        # Only the first message of a read that started between messages begins at its byte 0.
        self.head_start = self.feed
        self.feed = None

    def on_url(self, bytes url) -> None:
        self.url = url if self.url is None else self.url + url
        if PyBytes_GET_SIZE(self.url) > self.max_uri_bytes:
            raise ClientFault("request target too long", 414)

    def on_header(self, name, value) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        cdef Exchange exchange = self.build_exchange()
        self.parsing = exchange
        if exchange.content_length > 0 or exchange.chunked:
            self.deadline = _now() + self.body_timeout
        else:
            self.deadline = 0.0
        if self.active is None:
            self.active = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            if len(self.queue) >= self.max_pipeline:
                self.pause_reading_for(P_PIPELINE)

    def on_body(self, bytes body) -> None:
        cdef Exchange exchange = self.parsing
        if exchange is not None:
            exchange.on_client_body(body)

    def on_message_complete(self) -> None:
        cdef Exchange exchange = self.parsing
        self.parsing = None
        if self.active is None and not self.queue:
            self.deadline = _now() + self.keepalive_timeout
        elif not self.paused:
            self.deadline = 0.0  # waiting for the upstream: its own timeouts apply
        if exchange is not None:
            exchange.on_client_complete()

    # -- the head ------------------------------------------------------------------------------
    cdef Exchange build_exchange(self):
        """Check the head and turn it into an Exchange; raises ClientFault to refuse it."""
        parser = self.parser
        cdef bint http_10 = False
        cdef bint version_known = False
        cdef object method = None
        cdef bytes line_data = self.head_start
        cdef const char* s
        cdef const char* cr
        cdef Py_ssize_t line_len
        self.head_start = None
        if line_data is not None:
            # PERF: get_http_version() formats a str per call. When this head began at byte 0
            # of a read, the first CR in that read ends the request line llhttp just accepted
            # (strict mode: no CR inside the line, no bare LF), so its last 9 bytes are the
            # version. Anything but " HTTP/1.1" / " HTTP/1.0" takes the general path below.
            s = PyBytes_AS_STRING(line_data)
            cr = <const char*>memchr(s, b"\r", PyBytes_GET_SIZE(line_data))
            if cr != NULL:
                line_len = cr - s
                if line_len >= 9 and memcmp(cr - 9, b" HTTP/1.", 8) == 0:
                    if (cr - 1)[0] == b"1":
                        version_known = True
                    elif (cr - 1)[0] == b"0":
                        version_known = http_10 = True
                if version_known:
                    if memcmp(s, b"GET ", 4) == 0:
                        method = _GET
                    elif memcmp(s, b"POST ", 5) == 0:
                        method = _POST
                    elif memcmp(s, b"HEAD ", 5) == 0:
                        method = _HEAD
        if not version_known:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                raise ClientFault("unsupported HTTP version", 505 if version > "1.1" else 400)
            http_10 = version == "1.0"
        cdef list headers = self.headers
        if len(headers) > self.max_headers:
            raise ClientFault("too many request headers", 431)
        cdef bytes url = self.url if self.url is not None else b""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(url) + 16
        cdef Exchange exchange = Exchange.__new__(Exchange)
        exchange.setup(self)
        cdef object host_header = None
        cdef long long content_length = -1
        cdef bint chunked = False
        cdef bint expect_continue = False
        cdef object request_id = None
        cdef object xff = None
        cdef object xfp = None
        cdef object xfh = None
        cdef list connection_tokens = None
        cdef bytes name, value
        cdef tuple item
        cdef int kind
        cdef Py_ssize_t i
        for i in range(len(headers)):
            # PERF: built by on_header from httptools' bytes: index, do not unpack generically.
            item = headers[i]
            name = <bytes>item[0]
            value = <bytes>item[1]
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
            kind = _request_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
            if kind == H_PASS:
                continue
            elif kind == H_HOST:
                if host_header is not None:
                    raise ClientFault("duplicate Host header")
                host_header = value
            elif kind == H_CL:
                if content_length >= 0:
                    raise ClientFault("duplicate Content-Length")
                content_length = _content_length(value)
            elif kind == H_TE:
                if chunked:
                    raise ClientFault("duplicate Transfer-Encoding")
                limits.check_transfer_encoding(value, http_10)
                chunked = True
            elif kind == H_CONN:
                connection_tokens = _tokens(value, connection_tokens)
            elif kind == H_EXPECT:
                if PyBytes_GET_SIZE(value) != 12 or not _ieq(PyBytes_AS_STRING(value), "100-continue", 12):
                    raise ClientFault("unsupported Expect", 417)
                expect_continue = True
            elif kind == H_RID:
                request_id = value
            elif kind == H_XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == H_XFP:
                xfp = value
            elif kind == H_XFH:
                xfh = value
        if size > self.max_header_bytes:
            raise ClientFault("request header block too large", 431)
        if chunked and content_length >= 0:
            raise ClientFault("both Content-Length and Transfer-Encoding")
        if content_length > self.max_body_bytes:
            raise ClientFault("request body too large", 413)

        if method is None:
            method = parser.get_method()
        if PyBytes_GET_SIZE(url) == 0 or PyBytes_AS_STRING(url)[0] != b"/":
            if method == b"CONNECT" or url == b"*":
                raise ClientFault("unsupported request target")
            authority, url = limits.split_absolute_target(url)
            if host_header is not None and authority.lower() != host_header.lower():
                raise ClientFault("absolute-form target and Host disagree")
            host_header = authority
        cdef bytes host
        if host_header is None:
            if not http_10:
                raise ClientFault("missing Host header")
            host = b""
        elif self.last_host_header is not None and host_header == self.last_host_header:
            host = self.last_host  # PERF: a keep-alive client repeats its Host
        else:
            host = limits.check_host(host_header)
            self.last_host_header = host_header
            self.last_host = host
        cdef bytes path, query
        s = PyBytes_AS_STRING(url)
        cdef const char* mark = <const char*>memchr(s, b"?", PyBytes_GET_SIZE(url))
        if mark != NULL:
            path, query = url[: mark - s], url[mark - s :]
        else:
            path, query = url, b""
        s = PyBytes_AS_STRING(path)
        mark = <const char*>memchr(s, b"#", PyBytes_GET_SIZE(path))
        if mark != NULL:
            path = path[: mark - s]
        exchange.path = limits.normalize_path(path) if _needs_normalizing(path) else path
        exchange.query = query

        named = None
        if connection_tokens:
            # Headers the client names in Connection are hop-by-hop for this hop: drop them
            # from what passes through. What the gateway adds below is added after this filter.
            named = set(connection_tokens)
            if b"x-forwarded-for" in named:
                xff = None
            if b"x-forwarded-proto" in named:
                xfp = None
            if b"x-forwarded-host" in named:
                xfh = None

        if request_id is None or not _valid_request_id(request_id):
            request_id = self.request_ids.next()
        trusted = self.trusted
        exchange.pass_block = _render_pass_block(
            headers,
            named,
            xff if trusted and xff else None,
            self.peer_ip,
            xfp if trusted and xfp else _HTTP,
            request_id,
            xfh if trusted and xfh else host_header,
        )

        exchange.method = method
        exchange.http_10 = http_10
        exchange.keep_alive = parser.should_keep_alive() and not self.draining
        exchange.headers = headers
        exchange.host = host
        exchange.host_header = host_header or b""
        exchange.content_length = content_length
        exchange.chunked = chunked
        exchange.expect_continue = expect_continue and (content_length > 0 or chunked)
        exchange.request_id = request_id
        # No body follows: the request is complete now, before start() runs (on_message_complete
        # comes only after this callback returns).
        exchange.request_done = content_length <= 0 and not chunked
        return exchange

    # -- exchange lifecycle --------------------------------------------------------------------
    cdef int exchange_finished(self, Exchange exchange) except -1:
        """The active exchange wrote its last byte (or failed): close, or start the next one."""
        if exchange is not self.active:
            return 0
        self.active = None
        if exchange.close_after or (self.draining and not self.queue):
            self.close()
            return 0
        if self.paused & P_PIPELINE and len(self.queue) < self.max_pipeline:
            self.resume_reading_for(P_PIPELINE)
        cdef Exchange nxt
        if self.queue:
            nxt = self.active = self.queue.popleft()
            nxt.start()
        elif not self.in_head and self.parsing is None:
            self.deadline = _now() + self.keepalive_timeout
            if self.draining:
                self.close()
        return 0

    cdef int reject(self, fault) except -1:
        """A request we refuse before it has an exchange: answer in order if possible, close."""
        self.parser = _DeadParser()
        self.feed = self.head_start = None
        if self.active is None and not self.queue:
            data = render_error(fault, close=True, date_line=_CLOCK.date_line)
            self.transport.write(data)
            self.close()
            return 0
        # Earlier requests are still being answered; the refused one cannot be answered
        # out of order, and nothing after it can be trusted, so close once they are done.
        self.draining = True
        self.pause_reading_for(P_PIPELINE)
        return 0

    cdef int pause_reading_for(self, int reason) except -1:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
            self.deadline = 0.0  # a paused body is not a stalled client
        self.paused |= reason
        return 0

    cdef int resume_reading_for(self, int reason) except -1:
        if not self.paused & reason:
            return 0
        self.paused &= ~reason
        if not self.paused and not self.closed:
            self.transport.resume_reading()
            if self.parsing is not None:
                self.deadline = _now() + self.body_timeout
        return 0

    cpdef close(self):
        if not self.closed:
            self.closed = True
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        self.transport.abort()

    cpdef start_draining(self):
        """Graceful shutdown: finish what is in flight, close idle keep-alive connections now."""
        self.draining = True
        if self.active is None and not self.in_head and self.parsing is None:
            self.close()

    cpdef check_deadline(self, double now):
        if not self.deadline or now < self.deadline or self.closed:
            return
        if self.in_head or self.parsing is not None:
            # Slowloris or a stalled body: 408 if nothing was answered for it yet.
            if self.active is None or (self.active is self.parsing and not self.active.response_started):
                fault = ClientFault("timed out reading the request", 408)
                if self.active is not None:
                    self.active.fail(fault)
                else:
                    self.transport.write(render_error(fault, close=True, date_line=_CLOCK.date_line))
                self.close()
            else:
                self.abort()
        elif self.active is None:
            self.close()  # idle keep-alive expired


class _DeadParser:
    """Stands in for the parser once a connection is refused: input after that is ignored."""

    def feed_data(self, data):
        return None

    def get_http_version(self):
        return "1.1"

    def get_method(self):
        return b""

    def should_keep_alive(self):
        return False


cdef list _tokens(bytes value, list into):
    tokens = into if into is not None else []
    for token in value.split(b","):
        token = token.strip().lower()
        if token and token not in (b"close", b"keep-alive"):
            tokens.append(token)
    return tokens


cdef bytes _render_pass_block(
    list headers, object named, object xff, bytes peer_ip, bytes proto, bytes request_id, object fwd_host
):
    """The header lines forwarded as they are (not special, not named in Connection), then the
    X-Forwarded-For/-Proto, X-Request-Id and X-Forwarded-Host lines the gateway adds."""
    cdef Py_ssize_t i, size = 0
    cdef bytes name, value
    cdef tuple item
    cdef char* p
    for i in range(len(headers)):
        item = headers[i]  # PERF: pairs made by on_header (see build_exchange)
        name = <bytes>item[0]
        value = <bytes>item[1]
        if _request_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) != H_PASS:
            continue
        if named is not None and name.lower() in named:
            continue
        size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    size += 17 + PyBytes_GET_SIZE(peer_ip) + 2  # X-Forwarded-For: [xff, ]peer
    if xff is not None:
        size += PyBytes_GET_SIZE(<bytes>xff) + 2
    size += 19 + PyBytes_GET_SIZE(proto) + 2  # X-Forwarded-Proto: proto
    size += 14 + PyBytes_GET_SIZE(request_id) + 2  # X-Request-Id: id
    if fwd_host:
        size += 18 + PyBytes_GET_SIZE(<bytes>fwd_host) + 2  # X-Forwarded-Host: host
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    for i in range(len(headers)):
        item = headers[i]
        name = <bytes>item[0]
        value = <bytes>item[1]
        if _request_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) != H_PASS:
            continue
        if named is not None and name.lower() in named:
            continue
        p = _put(p, name)
        p = _put_c(p, ": ", 2)
        p = _put(p, value)
        p = _put_c(p, "\r\n", 2)
    p = _put_c(p, "X-Forwarded-For: ", 17)
    if xff is not None:
        p = _put(p, <bytes>xff)
        p = _put_c(p, ", ", 2)
    p = _put(p, peer_ip)
    p = _put_c(p, "\r\nX-Forwarded-Proto: ", 21)
    p = _put(p, proto)
    p = _put_c(p, "\r\nX-Request-Id: ", 16)
    p = _put(p, request_id)
    p = _put_c(p, "\r\n", 2)
    if fwd_host:
        p = _put_c(p, "X-Forwarded-Host: ", 18)
        p = _put(p, <bytes>fwd_host)
        p = _put_c(p, "\r\n", 2)
    _check_end(p, out)
    return out


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:80]


# -- one request/response exchange -----------------------------------------------------------------

@cython.final
cdef class Exchange:
    cdef int setup(self, ClientProtocol client) except -1:
        self.client = client
        self.listener = client.listener
        self.route = None
        self.chain = None
        self.params = ()
        self.request_done = False
        self.body_received = 0
        self.pending = None  # request body framed for upstream, waiting for a connection (lazy)
        self.pending_size = 0
        self.target = None
        self.conn = None
        self.acquiring = None
        self.retried = False
        self.response_status = 0
        self.response_headers = None
        self.response_started = False
        self.rechunk = False
        self.close_after = False
        self.out = []
        self.finished = False
        self.upstream_headers = None
        self.started_at = _now()
        return 0

    # -- start ---------------------------------------------------------------------------------
    cdef int start(self) except -1:
        """Route and begin forwarding; called when this exchange becomes the active one."""
        match = self.client.router.match(self.method, self.host, self.path, self)
        if match is None:
            self.answer_fault(_NOT_FOUND, None)
            return 0
        if type(match) is MethodNotAllowed:
            self.answer_fault(_METHOD_NOT_ALLOWED, [(b"Allow", (<MethodNotAllowed>match).allow)])
            return 0
        route = (<RouteMatch>match).route  # the router holds RoutePlans
        self.route = route
        self.params = (<RouteMatch>match).params
        # PERF: HookChain is a NamedTuple; index it in C instead of four property lookups.
        self.chain = route.chain
        if self.expect_continue and not self.request_done:
            # RFC 9110 10.1.1: we are about to read the body, so tell the client to send it.
            # (A declared length over the limit was refused with 413 before getting here.)
            self.client.transport.write(CONTINUE_100)
        on_request = self.chain[0]  # on_request
        if on_request:
            self._run_request_hooks(on_request, 0)
            return 0
        self.send_upstream(False)
        return 0

    cdef int _run_request_hooks(self, tuple hooks, Py_ssize_t index) except -1:
        cdef Py_ssize_t i
        for i in range(index, len(hooks)):
            result = hooks[i](self)
            if result is None:
                continue
            if isinstance(result, Response):
                self.answer(result)
                return 0
            # The hook must do I/O: only now does this request leave the synchronous path.
            task = asyncio.ensure_future(result)
            task.add_done_callback(partial(self._after_async_hook, hooks, i))
            return 0
        self.send_upstream(False)
        return 0

    def _after_async_hook(self, tuple hooks, Py_ssize_t index, task) -> None:
        if self.finished:
            return
        if task.cancelled():
            self.answer_fault(UpstreamFault("request hook cancelled", 503), None)
            return
        exc = task.exception()
        if exc is not None:
            fault = exc if isinstance(exc, HttpFault) else UpstreamFault("request hook failed", 500)
            self.answer_fault(fault, None)
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
    cdef int send_upstream(self, bint fresh) except -1:
        route = self.route
        assert route is not None
        target = self.target = route.upstream.pick()
        pool = target.pool
        conn = None if fresh else pool.take_idle()
        if conn is not None:
            self.attach(conn)
            return 0
        timeouts = route.timeouts
        future = pool.connect_fresh(timeouts.connect) if fresh else pool.acquire(timeouts.connect)
        self.acquiring = future
        future.add_done_callback(self._on_acquired)
        return 0

    def _on_acquired(self, future) -> None:
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
                exc if isinstance(exc, HttpFault) else UpstreamFault("upstream connect failed", 502), None
            )
            return
        try:
            self.attach(future.result())
        except Exception:
            self.internal_error()

    cdef int attach(self, UpstreamConnection conn) except -1:
        """Bind a connection and write the head plus whatever body already arrived, in one call."""
        route = self.route
        assert route is not None and self.target is not None
        self.conn = conn
        conn.begin(self, self.method == _HEAD, route.timeouts, not self.request_done)
        hooks = self.chain[1]  # on_upstream_request
        if hooks:
            self.upstream_headers = []
            for hook in hooks:
                hook(self)
        head = self.render_upstream_head(route, self.target)
        transport = conn.transport
        assert transport is not None
        if self.pending:
            transport.writelines([head, *self.pending])
            self.pending.clear()
            if self.pending_size > self.client.buffer_bytes:
                self.client.resume_reading_for(P_BUFFER)
            self.pending_size = 0
        else:
            transport.write(head)
        return 0

    cdef bytes render_upstream_head(self, route, target):
        """The request head sent upstream: ours, never the client's bytes as they came."""
        cdef bytes path = route.upstream_path(self.path, self.params)
        cdef bytes host = (
            self.host_header if route.preserve_host and self.host_header else target.host_header
        )
        cdef list extra = self.upstream_headers
        cdef bytes name, value
        cdef int cl_width = 0
        cdef Py_ssize_t size = (
            PyBytes_GET_SIZE(self.method) + 1 + PyBytes_GET_SIZE(path) + PyBytes_GET_SIZE(self.query)
            + 17 + PyBytes_GET_SIZE(host) + 2 + PyBytes_GET_SIZE(self.pass_block) + 2
        )
        if self.chunked:
            size += PyBytes_GET_SIZE(_TRANSFER_CHUNKED)
        elif self.content_length >= 0:
            cl_width = _dec_digits(<unsigned long long>self.content_length)
            size += 16 + cl_width + 2
        if extra:
            for name, value in extra:
                size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef char* p = PyBytes_AS_STRING(out)
        p = _put(p, self.method)
        p[0] = b" "
        p = _put(p + 1, path)
        p = _put(p, self.query)
        p = _put_c(p, " HTTP/1.1\r\nHost: ", 17)
        p = _put(p, host)
        p = _put_c(p, "\r\n", 2)
        p = _put(p, self.pass_block)
        if self.chunked:
            p = _put(p, _TRANSFER_CHUNKED)
        elif self.content_length >= 0:
            p = _put_c(p, "Content-Length: ", 16)
            p = _put_dec(p, <unsigned long long>self.content_length, cl_width)
            p = _put_c(p, "\r\n", 2)
        if extra:
            for name, value in extra:
                p = _put(p, name)
                p = _put_c(p, ": ", 2)
                p = _put(p, value)
                p = _put_c(p, "\r\n", 2)
        p = _put_c(p, "\r\n", 2)
        _check_end(p, out)
        return out

    # -- request body --------------------------------------------------------------------------
    cdef int on_client_body(self, bytes data) except -1:
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        self.body_received += size
        if self.body_received > self.client.max_body_bytes:
            self.fail(ClientFault("request body too large", 413))
            return 0
        if self.chunked:
            self.to_upstream(_chunk_header(size))
            self.to_upstream(data)
            self.to_upstream(_CRLF)
        else:
            self.to_upstream(data)
        return 0

    cdef int on_client_complete(self) except -1:
        self.request_done = True
        if self.chunked:
            self.to_upstream(_LAST_CHUNK)  # trailers are not forwarded
        cdef UpstreamConnection conn = self.conn
        if conn is not None and conn.sending:
            conn.request_sent()
        return 0

    cdef int to_upstream(self, bytes data) except -1:
        if self.finished:
            return 0  # the exchange already ended; the rest of the body is dropped
        cdef UpstreamConnection conn = self.conn
        if conn is not None:
            transport = conn.transport
            assert transport is not None
            transport.write(data)
            if conn.sending:
                conn.arm()  # progress: the send timeout counts from the last write
            return 0
        if self.pending is None:
            self.pending = []
        self.pending.append(data)
        self.pending_size += PyBytes_GET_SIZE(data)
        if self.pending_size > self.client.buffer_bytes:
            self.client.pause_reading_for(P_BUFFER)
        return 0

    # -- response ------------------------------------------------------------------------------
    cdef int on_upstream_head(self, int status, bytes reason, list headers) except -1:
        self.response_status = status
        if status == 101:
            self.fail(UpstreamFault("upstream switched protocols unasked", 502))
            return 0
        cdef bint content_length = False
        cdef bint upstream_chunked = False
        cdef object drop_named = None
        cdef bytes name, value
        cdef tuple item
        cdef int kind
        cdef Py_ssize_t i
        for i in range(len(headers)):
            item = headers[i]  # PERF: pairs made by on_header from httptools' bytes
            name = <bytes>item[0]
            value = <bytes>item[1]
            kind = _response_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
            if kind == R_PASS:
                continue
            if kind == R_CL:
                content_length = True
            elif kind == R_CONN:
                drop_named = _connection_tokens(value, drop_named)
            elif kind == R_TE:
                upstream_chunked = True
        route = self.route
        assert route is not None
        on_response = self.chain[2]  # on_response
        cdef list kept
        cdef bint filtered = False
        if on_response or drop_named:
            kept = [
                (n, v) for n, v in headers
                if _response_kind(PyBytes_AS_STRING(n), PyBytes_GET_SIZE(n)) <= R_CL
            ]
            if drop_named:
                kept = [(n, v) for n, v in kept if n.lower() not in drop_named]
            filtered = True
            if on_response:
                self.response_headers = kept
                for hook in on_response:
                    replacement = hook(self)
                    if replacement is not None:
                        self._replace_response(replacement)
                        return 0
                kept = self.response_headers
        else:
            kept = headers  # PERF: filtered while rendering, no second list
        cdef ClientProtocol client = self.client
        cdef bint close = self.close_after or not self.keep_alive or client.draining
        cdef bint no_body = self.method == _HEAD or status == 204 or status == 304
        cdef bint rechunk = False
        if not no_body and not content_length and not upstream_chunked and self.conn is not None:
            self.conn.close_delimited = True
        if not no_body and not content_length:
            if self.http_10:
                close = True  # close-delimited is all an HTTP/1.0 client understands
            else:
                self.rechunk = rechunk = True
        self.close_after = close
        line = _STATUS_LINES[status] if 0 <= status < 600 else None
        if line is None or (
            PyBytes_GET_SIZE(<bytes>line) - 15 != PyBytes_GET_SIZE(reason)
            or memcmp(PyBytes_AS_STRING(<bytes>line) + 13, PyBytes_AS_STRING(reason), PyBytes_GET_SIZE(reason))
        ):
            line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        self.out.append(_render_response_head(line, kept, filtered, rechunk, close, self.http_10))
        self.response_started = True
        return 0

    cdef int on_upstream_body(self, bytes data) except -1:
        if self.finished:
            return 0
        if self.rechunk:
            self.out += (_chunk_header(PyBytes_GET_SIZE(data)), data, _CRLF)
        else:
            self.out.append(data)
        return 0

    cdef int flush_to_client(self) except -1:
        cdef list out = self.out
        if out:
            transport = self.client.transport
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
            out.clear()
        return 0

    cdef int on_upstream_complete(self, UpstreamConnection conn, bint keep_alive) except -1:
        if self.rechunk:
            self.out.append(_LAST_CHUNK)
        if not self.request_done:
            self.close_after = True  # we stop reading a body the upstream did not wait for
        conn.detach(keep_alive and self.request_done)
        self.conn = None
        self.flush_to_client()
        self.finish()
        return 0

    cdef int _replace_response(self, response) except -1:
        """An on_response hook answered instead of the upstream: drop the upstream connection."""
        conn = self.conn
        if conn is not None:
            self._drop_conn(conn)
        self.response_status = 0
        self.answer(response)
        return 0

    # -- upstream failures ---------------------------------------------------------------------
    cdef int on_upstream_lost(self, UpstreamConnection conn, exc) except -1:
        """Called by the connection after it unbound itself: the upstream closed or reset."""
        self.conn = None
        conn.pool.release(conn)
        if self.finished:
            return 0
        if (
            not conn.received
            and conn.served > 0
            and not self.retried
            and self.method in _IDEMPOTENT
            and self.body_received == 0
            and not self.chunked
            and self.content_length <= 0
        ):
            # A pooled connection the upstream had already closed: safe to send once more.
            self.retried = True
            self.send_upstream(True)
            return 0
        self.fail(UpstreamFault("upstream closed the connection before the response completed", 502))
        return 0

    cdef int on_upstream_malformed(self, UpstreamConnection conn, exc) except -1:
        self._drop_conn(conn)
        self.fail(UpstreamFault("upstream sent a malformed response", 502))
        return 0

    cdef int on_upstream_timeout(self, UpstreamConnection conn) except -1:
        """Called by the connection's deadline check; it aborts itself afterwards."""
        self.conn = None
        conn.detach(False)
        conn.pool.release(conn)
        self.fail(UpstreamFault("upstream timed out", 504))
        return 0

    cdef int _drop_conn(self, UpstreamConnection conn) except -1:
        self.conn = None
        conn.detach(False)
        conn.abort()
        conn.pool.release(conn)
        return 0

    cdef int upstream_write_paused(self) except -1:
        self.client.pause_reading_for(P_UPSTREAM)
        return 0

    cdef int upstream_write_resumed(self) except -1:
        self.client.resume_reading_for(P_UPSTREAM)
        return 0

    # -- answers and endings -------------------------------------------------------------------
    cdef int internal_error(self) except -1:
        """A bug of ours outside a protocol callback: log it once, answer 500 (or close)."""
        log.exception("internal error in request %s", self.request_id.decode("ascii", "replace"))
        self.fail(UpstreamFault("internal error", 500))
        return 0

    cpdef fail(self, fault):
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
        self.answer_fault(fault, None)

    cdef int answer_fault(self, fault, list extra) except -1:
        cdef bint close = fault.close or not self.request_done or not self.keep_alive or self.client.draining
        self.close_after = close
        data = render_error(
            fault,
            self.request_id,
            close=close,
            extra=extra,
            date_line=_CLOCK.date_line,
            head_only=self.method == _HEAD,
        )
        self.response_status = fault.status
        self.client.transport.write(data)
        self.finish()
        return 0

    cdef int answer(self, response) except -1:
        cdef bint close = not self.request_done or not self.keep_alive or self.client.draining
        self.close_after = close
        headers = [*response.headers, (b"X-Request-Id", self.request_id)]
        data = render_response(
            response.status,
            response.body,
            content_type=response.content_type,
            close=close,
            extra=headers,
            date_line=_CLOCK.date_line,
            head_only=self.method == _HEAD,
        )
        self.response_status = response.status
        self.client.transport.write(data)
        self.finish()
        return 0

    cdef int finish(self) except -1:
        if self.finished:
            return 0
        self.finished = True
        if self.chain is not None:
            on_complete = self.chain[3]  # on_complete
            if on_complete:
                for hook in on_complete:
                    hook(self)
        self.client.exchange_finished(self)
        return 0

    cdef int client_lost(self) except -1:
        """The client went away: free whatever this exchange holds upstream."""
        if self.finished:
            return 0
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
        if self.chain is not None and self.chain[3]:  # on_complete
            for hook in self.chain[3]:
                hook(self)
        return 0

    # -- for hooks and predicates --------------------------------------------------------------
    def header(self, name) -> bytes | None:
        """First value of a request header (name lower-case); for plugins, not the hot path."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def param(self, name) -> bytes | None:
        route = self.route
        if route is None:
            return None
        try:
            return self.params[route.param_names.index(name)]
        except ValueError:
            return None


cdef object _connection_tokens(bytes value, object into):
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


cdef bytes _render_response_head(
    bytes line, list headers, bint filtered, bint rechunk, bint close, bint http_10
):
    """Status line, the kept headers (``filtered``: a list already chosen, maybe by a hook; else
    the upstream's own pairs, skipping the ones the gateway owns), the framing and connection
    lines, and the blank line: one allocation."""
    cdef Py_ssize_t i, size = PyBytes_GET_SIZE(line) + 2
    cdef bytes name, value
    cdef tuple item
    cdef char* p
    if filtered:
        for name, value in headers:
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    else:
        # PERF: pairs made by on_header from httptools' bytes: indexed, not unpacked.
        for i in range(len(headers)):
            item = headers[i]
            name = <bytes>item[0]
            if _response_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) <= R_CL:
                size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(<bytes>item[1]) + 4
    if rechunk:
        size += PyBytes_GET_SIZE(_TRANSFER_CHUNKED)
    if close:
        size += PyBytes_GET_SIZE(_CONNECTION_CLOSE)
    elif http_10:
        size += PyBytes_GET_SIZE(_CONNECTION_KEEP_ALIVE)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = _put(PyBytes_AS_STRING(out), line)
    if filtered:
        for name, value in headers:
            p = _put(p, name)
            p = _put_c(p, ": ", 2)
            p = _put(p, value)
            p = _put_c(p, "\r\n", 2)
    else:
        for i in range(len(headers)):
            item = headers[i]
            name = <bytes>item[0]
            if _response_kind(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) <= R_CL:
                p = _put(p, name)
                p = _put_c(p, ": ", 2)
                p = _put(p, <bytes>item[1])
                p = _put_c(p, "\r\n", 2)
    if rechunk:
        p = _put(p, _TRANSFER_CHUNKED)
    if close:
        p = _put(p, _CONNECTION_CLOSE)
    elif http_10:
        p = _put(p, _CONNECTION_KEEP_ALIVE)
    p = _put_c(p, "\r\n", 2)
    _check_end(p, out)
    return out


# -- the upstream side -----------------------------------------------------------------------------

@cython.final
cdef class UpstreamConnection:
    def __init__(self, pool) -> None:
        self.pool = pool
        self.transport = None
        self.exchange = None
        self.parser = None
        self.headers = []
        self.reason = b""
        self.status = 0
        self.served = 0  # responses completed on this connection (0 = fresh)
        self.received = False  # any byte of the current response arrived
        self.closed = False
        # Deadline of the current exchange, 0 = none: the send timeout while the request body is
        # still streaming up (refreshed by progress), then the read timeout (refreshed by each
        # read); suspended while the gateway itself paused reading for a slow client.
        self.deadline = 0.0
        self.read_timeout = 60.0
        self.send_timeout = 60.0
        self.sending = False
        self.reading_paused = False
        self.idle_deadline = 0.0
        self.head_only = False
        self.reusable = False  # set by detach(): may the pool keep it after this response
        self.close_delimited = False  # the current response's body ends when the upstream closes
        self.served_head_only = False  # the parser saw a HEAD response it was not told about

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        _CLOCK.watched.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        _CLOCK.watched.discard(self)
        cdef Exchange exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost(self, exc)
        self.pool.forget(self)

    def data_received(self, data) -> None:
        cdef Exchange exchange = self.exchange
        if exchange is None:
            # An idle connection must be silent; anything else means it is out of sync.
            self.close()
            return
        self.received = True
        if not self.sending and not self.reading_paused:
            self.deadline = _now() + self.read_timeout
        try:
            self.parser.feed_data(data)
        except _ParserCallbackError as exc:
            # Not the upstream's fault: our own callback raised. Log it and answer 500.
            log.error("internal error handling an upstream response", exc_info=exc.__context__)
            if self.exchange is exchange:
                self.exchange = None
                self.abort()
                exchange.conn = None
                self.pool.release(self)
                exchange.fail(UpstreamFault("internal error", 500))
            return
        except _ParserError as exc:
            if self.exchange is exchange:
                exchange.on_upstream_malformed(self, exc)
                return
            self.reusable = False  # garbage after a complete response
        exchange.flush_to_client()
        if self.exchange is None:
            # The response ended inside this feed. Releasing only now, after the parser returned,
            # means no other exchange can be handed this connection while its old parser runs.
            self.pool.release(self)

    def eof_received(self) -> bool:
        cdef Exchange exchange = self.exchange
        if exchange is not None and self.close_delimited:
            # httptools has no end-of-input call: a body framed by the close ends here.
            exchange.on_upstream_complete(self, False)
            exchange.flush_to_client()
            self.pool.release(self)
        return False

    cpdef pause_reading(self):
        """Backpressure from a slow client: the upstream is not stalled, so no read deadline."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.reading_paused = True
            self.deadline = 0.0

    cpdef resume_reading(self):
        if self.transport is not None and not self.closed and not self.transport.is_reading():
            self.transport.resume_reading()
        if self.reading_paused:
            self.reading_paused = False
            self.arm()

    cdef int arm(self) except -1:
        """Set the deadline that applies now (see ``__init__``)."""
        if self.exchange is None or self.reading_paused:
            self.deadline = 0.0
        else:
            self.deadline = _now() + (self.send_timeout if self.sending else self.read_timeout)
        return 0

    cdef int request_sent(self) except -1:
        """The whole request went upstream: from now on the read timeout applies."""
        self.sending = False
        self.arm()
        return 0

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.exchange is None:
            self.reusable = False  # a second response nobody asked for

    def on_status(self, bytes reason) -> None:
        self.reason = reason

    def on_header(self, name, value) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.exchange is None:
            return
        cdef list headers = self.headers
        self.headers = []
        parser = self.parser
        cdef int status = parser.get_status_code()
        self.status = status  # the same message's on_message_complete reads it
        if status < 200 and status != 101:
            return  # interim 1xx: the gateway answered Expect itself; wait for the final head
        cdef Exchange exchange = self.exchange
        exchange.on_upstream_head(status, self.reason, headers)
        if self.head_only and self.exchange is exchange:
            # httptools cannot be told this response answers HEAD; end it at the head.
            self.served_head_only = True
            exchange.on_upstream_complete(self, parser.should_keep_alive())

    def on_body(self, bytes body) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is None:
            return
        if self.status < 200 and self.status != 101:
            return
        self.exchange.on_upstream_complete(self, self.parser.should_keep_alive())

    # -- used by the exchange and the pool ---------------------------------------------------
    cdef int begin(self, Exchange exchange, bint head_only, timeouts, bint sending) except -1:
        """Bind to an exchange for one request/response; ``sending``: a body is still to come."""
        self.exchange = exchange
        self.received = False
        self.close_delimited = False
        self.head_only = head_only
        self.reason = b""
        self.status = 0
        if self.parser is None or self.served_head_only:
            # PERF: a parser is reused across responses; only one ended early at a HEAD
            # response's head is left expecting a body, and is replaced.
            self.parser = _ResponseParser(self)
            self.served_head_only = False
        self.read_timeout = timeouts.read
        self.send_timeout = timeouts.send
        self.sending = sending
        self.reading_paused = False
        self.arm()
        return 0

    cdef int detach(self, bint reusable) except -1:
        """Unbind from the exchange. Called from inside a parser callback, the pool takes the
        connection back when ``data_received`` returns; elsewhere, at once."""
        self.exchange = None
        self.deadline = 0.0
        self.served += 1
        self.reusable = reusable and not self.closed
        if reusable:
            self.resume_reading()  # so an idle connection still notices the upstream closing
        return 0

    cpdef close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    cpdef check_deadline(self, double now):
        cdef Exchange exchange
        if self.exchange is not None:
            if self.deadline and now >= self.deadline:
                exchange = self.exchange
                self.exchange = None
                exchange.on_upstream_timeout(self)
                self.abort()
        elif self.idle_deadline and now >= self.idle_deadline:
            self.close()
