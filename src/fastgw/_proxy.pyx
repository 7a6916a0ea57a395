# cython: language_level=3
"""The per-request path: ``ClientProtocol``, ``Exchange`` and ``UpstreamConnection``.

The three live in one module as cdef classes so they read each other's fields at C speed; the
table of contents (fields, signatures) is ``_proxy.pxd``, the typed face ``_proxy.pyi``.
The asyncio callbacks are ``def`` methods: asyncio duck-types its protocols (``getattr`` on the
protocol object), so the classes need no ``asyncio.Protocol`` base. Each protocol drives its own
``_http.HttpParser`` (llhttp with C callbacks) and acts on the events it returns.
Everything the three call on each other is ``cdef``; what Python code (pools, listeners, the
clock, plugins) calls is ``def`` or ``cpdef``.

Client side: one ``ClientProtocol`` per accepted connection, driven by a request parser.

Connection states:

    idle --first byte--> head --headers complete--> forwarding --response done--> idle (keep-alive)
                          |                           |                       \\--> closed
                          +-- limit / malformed ------+--> error response, closed

Hook points, in order, for each request (see ``hooks.py``): on_request, on_upstream_request,
on_response, on_complete. The protocol itself parses, checks what llhttp leaves to us
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
    send_upstream(): group pick -> pool.take_idle_conn() | pool.acquire() (async only here)
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
While busy, the connection's response parser drives the exchange: ``on_upstream_head`` with the parsed
head, ``on_upstream_body`` per body piece, ``on_upstream_complete`` at the end; after each
``data_received`` the exchange flushes what it gathered to the client in one write. A connection
goes back to its pool only when the exchange says request and response both ended cleanly with
known framing. Bytes arriving on an idle connection, or a close, make it unusable; the pool skips
it.

PERF: the per-request path creates one Exchange (from a free list), the path, query and request id
bytes, the pass block (header lines copied from the head with memcpy), the upstream head and the
client head (one allocation each); no Task, Future, dict or per-header object. llhttp reports
offsets, not objects (``_http.pyx``); header names are classified in C where they lie; the route,
group, target and pool are read through C fields (``RouteCore``, ``GroupCore``, ``Target``,
``PoolCore`` below); the transports' ``write`` is looked up once per connection.
"""

cimport cython
from cpython.ref cimport PyObject
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp, memcpy

import asyncio
import logging
import os
from collections import deque
from functools import partial

from fastgw.http._parser cimport (
    EV_BODY,
    EV_DONE,
    EV_HEAD,
    EV_HEAD_TOO_BIG,
    EV_MALFORMED,
    EV_MORE,
    EV_TARGET_TOO_LONG,
    EV_TOO_MANY_FIELDS,
    EV_UPGRADE,
    Field,
    HttpParser,
    _ieq,
)
from fastgw.http._clock cimport Timed, TimerWheel, coarse, date_line, monotonic, running_wheel
from fastgw._router cimport MethodNotAllowed, RouteMatch

from uvloop.loop import TCPTransport, UnixTransport

from fastgw.errors import ClientFault, ConnectFault, HttpFault, UpstreamFault
from fastgw.hooks import Response
from fastgw.http import forwarded, limits
from fastgw.http.wire import (
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

# A response head the gateway accepts from an upstream (nginx's proxy_buffer_size is 4-8 KiB).
cdef Py_ssize_t UPSTREAM_MAX_HEAD = 64 * 1024
cdef enum:
    UPSTREAM_MAX_FIELDS = 256  # a constant: on_upstream_head keeps one byte per field on its stack

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

# A listener's headers_with_underscores, by its configured name.
UNDERSCORE_POLICIES = {"drop": U_DROP, "reject": U_REJECT, "allow": U_ALLOW}

# Why an exchange ended without its response reaching the client (the access log's error).
cdef str _LEFT_BEFORE = "client closed the connection before the response"
cdef str _LEFT_DURING = "client closed the connection during the response"
cdef str _STALLED = "client stopped reading: nothing sent within the send timeout"


# Deadlines and latencies use the precise monotonic clock (the coarse one lags by up to a few
# jiffies, which would fire timeouts early). PERF: a read costs ~17 ns; each event-loop entry
# point reads it once (``ClientProtocol.now``, ``UpstreamConnection.now``) and the request path
# reuses that reading: four reads per proxied request. Deadlines are filed on the loop's timer
# wheel (``_clock.pyx``), never on a timer of their own.
cdef inline double _now() noexcept nogil:
    return monotonic()


# Bumped when a reload swaps any listener's plan: each connection compares its own copy once per
# request and re-reads its listener's plan when they differ (a C compare, no attribute lookup).
cdef unsigned long long _plan_generation = 0


def plan_changed() -> None:
    """A listener's plan was replaced: every connection takes it from its next request on."""
    global _plan_generation
    _plan_generation += 1


# -- C helpers for the hot checks and the wire bytes ----------------------------------------------

cdef int _request_kind(const char* s, Py_ssize_t n, const PassRules* rules) noexcept nogil:
    """What the head loop does with a request header, by name (H_PASS: forwarded as it is)."""
    if n == rules.rid_len and _ieq(s, rules.rid_name, n):
        return H_RID  # the listener's request-id header (X-Request-Id unless configured)
    if n == 4:
        return H_HOST if _ieq(s, "host", 4) else H_PASS
    if n == 14:
        return H_CL if _ieq(s, "content-length", 14) else H_PASS
    if n == 10:
        if _ieq(s, "connection", 10):
            return H_CONN
        if _ieq(s, "tracestate", 10):
            return H_TRACESTATE
        if _ieq(s, "keep-alive", 10):
            return H_DROP
    elif n == 17:
        if _ieq(s, "transfer-encoding", 17):
            return H_TE
        if _ieq(s, "x-forwarded-proto", 17):
            return H_XFP
    elif n == 15:
        if _ieq(s, "x-forwarded-for", 15):
            return H_XFF
    elif n == 16:
        if _ieq(s, "x-forwarded-host", 16):
            return H_XFH
        if _ieq(s, "proxy-connection", 16):
            return H_DROP
    elif n == 6:
        if _ieq(s, "expect", 6):
            return H_EXPECT
    elif n == 11:
        if _ieq(s, "traceparent", 11):
            return H_TRACEPARENT
    elif n == 2:
        if _ieq(s, "te", 2):
            return H_DROP
    elif n == 7:
        if _ieq(s, "trailer", 7) or _ieq(s, "upgrade", 7):
            return H_DROP
    elif n == 9:
        if _ieq(s, "forwarded", 9):
            return H_DROP  # RFC 7239: not believed, not re-created
    elif n == 19:
        if _ieq(s, "proxy-authorization", 19):
            return H_DROP
    return H_PASS


cdef int _response_kind(const char* s, Py_ssize_t n, const char* rid, Py_ssize_t rid_len) noexcept nogil:
    """Response headers the gateway owns towards the client (framing, connection management, the
    request id ``rid``, lower-case, which it sets itself) and the Date it adds when missing."""
    if n == rid_len and _ieq(s, rid, n):
        return R_DROP
    if n == 4:
        return R_DATE if _ieq(s, "date", 4) else R_PASS
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


cdef object _classify_response(
    HttpParser parser, unsigned char* kinds, ResponseLines* lines, bytes request_id_lower
):
    """Classify each response header line once (``kinds``), sum what passes as it came and note
    the framing; return the header names a Connection header lists (hop-by-hop too), or None."""
    cdef const char* head = parser.head
    cdef Field* names = parser.st.names
    cdef Field* values = parser.st.values
    cdef const char* rid = PyBytes_AS_STRING(request_id_lower)
    cdef Py_ssize_t rid_len = PyBytes_GET_SIZE(request_id_lower)
    cdef int i, kind
    cdef object drop_named = None
    lines.passed_size = 0
    lines.content_length = False
    lines.chunked = False
    lines.date = False
    for i in range(parser.st.count):
        kind = kinds[i] = _response_kind(head + names[i].off, names[i].len, rid, rid_len)
        if kind <= R_CL:
            lines.passed_size += names[i].len + values[i].len + 4
        if kind == R_PASS:
            continue
        if kind == R_DATE:
            lines.date = True
        elif kind == R_CL:
            lines.content_length = True
        elif kind == R_CONN:
            if not _plain_connection(head + values[i].off, values[i].len):
                drop_named = _connection_tokens(
                    PyBytes_FromStringAndSize(head + values[i].off, values[i].len), drop_named
                )
        elif kind == R_TE:
            lines.chunked = True
    return drop_named


cdef bytes _status_line(int status, HttpParser parser):
    """The upstream's status line as we send it: the precomputed one when its reason phrase is
    the standard one (PERF: no formatting), else rebuilt with the upstream's phrase."""
    cdef const char* reason = parser.head + parser.st.target.off
    cdef Py_ssize_t reason_len = parser.st.target.len
    line = _STATUS_LINES[status] if 0 <= status < 600 else None
    if line is None or (
        PyBytes_GET_SIZE(<bytes>line) - 15 != reason_len
        or memcmp(PyBytes_AS_STRING(<bytes>line) + 13, reason, reason_len)
    ):
        return b"HTTP/1.1 %d %s\r\n" % (status, parser.target())
    return <bytes>line


cdef long long _content_length(const char* s, Py_ssize_t n) except -1:
    """Strict digits-only Content-Length (RFC 9110 section 8.6), as ``limits.check_content_length``."""
    cdef Py_ssize_t i
    cdef long long result = 0
    if n == 0 or n > 18:
        raise ClientFault("invalid Content-Length")
    for i in range(n):
        if not (48 <= <unsigned char>s[i] <= 57):
            raise ClientFault("invalid Content-Length")
        result = result * 10 + (s[i] - 48)
    return result


cdef bint _valid_request_id(const char* s, Py_ssize_t n) noexcept:
    """``[A-Za-z0-9._:-]{1,128}``, as ``limits.is_valid_request_id``."""
    cdef Py_ssize_t i
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


cdef inline char* _put_line(
    char* p, const char* name, Py_ssize_t name_len, const char* value, Py_ssize_t value_len
) noexcept nogil:
    """``name: value\r\n``"""
    p = _put_c(p, name, name_len)
    p = _put_c(p, ": ", 2)
    p = _put_c(p, value, value_len)
    return _put_c(p, "\r\n", 2)


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


# -- writing: straight to the socket while the transport holds nothing --------------------------

cdef extern from "sys/socket.h" nogil:
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    int MSG_NOSIGNAL
    int MSG_DONTWAIT


cdef extern from *:
    """
    #include <sys/ioctl.h>
    #ifdef __linux__
    #include <linux/sockios.h>
    static Py_ssize_t fastgw_unsent(int fd) {
        int n = 0;
        return (fd >= 0 && ioctl(fd, SIOCOUTQ, &n) == 0) ? (Py_ssize_t)n : 0;
    }
    #else
    static Py_ssize_t fastgw_unsent(int fd) { return 0; }
    #endif
    """
    Py_ssize_t fastgw_unsent(int fd) nogil  # bytes in the socket's send queue, not yet acknowledged


cdef int _socket_fd(object transport) except? -2:
    """The descriptor under a transport, or -1 (a transport without a socket of its own)."""
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None else -1


cdef int _outlet_open(Outlet* outlet, object transport) except -1:
    """Find the socket under a plain uvloop stream transport (TLS and others keep fd -1)."""
    outlet.fd = -1
    outlet.queued = False
    if type(transport) is TCPTransport or type(transport) is UnixTransport:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            outlet.fd = sock.fileno()
    return 0


cdef int _outlet_write(Outlet* outlet, object write, object transport, bytes data) except -1:
    """Write ``data``: with one send() when the transport has nothing queued, else (and for
    whatever the kernel did not take) through the transport, which keeps the order, buffers and
    reports errors.

    PERF: uvloop's write() costs about as much again as the send() it makes (buffer bookkeeping,
    flow-control checks, a Python call); a small response needs none of it. Safe because the
    descriptor stays open until connection_lost (uvloop closes the handle after calling it) and
    the outlet is shut before: close(), abort() and connection_lost set fd to -1."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef ssize_t sent
    if outlet.fd >= 0:
        if outlet.queued:
            if transport.get_write_buffer_size():
                write(data)
                return 0
            outlet.queued = False
        sent = send(outlet.fd, PyBytes_AS_STRING(data), size, MSG_NOSIGNAL | MSG_DONTWAIT)
        if sent == size:
            return 0
        outlet.queued = True
        if sent > 0:
            data = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + sent, size - sent)
        # sent < 0: EAGAIN, or an error the transport meets again and reports as usual
    write(data)
    return 0


@cython.final
cdef class RequestIds:
    """A random per-process prefix and a counter: unique, cheap, and sortable per worker.

    PERF: formats ``b"%s%08x" % (prefix, n)`` in C.
    """

    def __init__(self, bytes prefix not None) -> None:
        self.prefix = prefix
        self.number = 0
        self.random_state = int.from_bytes(os.urandom(8), "little")

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

    cdef unsigned long long random64(self) noexcept:
        """splitmix64: fast, well mixed, and enough for ids that must be unique, not secret."""
        self.random_state += 0x9E3779B97F4A7C15ULL
        cdef unsigned long long z = self.random_state
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        return z ^ (z >> 31)

    def random_ids(self, int count) -> list:
        """``count`` values of the id generator (for tests of its spread)."""
        return [self.random64() for _ in range(count)]


# -- W3C Trace Context (https://www.w3.org/TR/trace-context/) ---------------------------------------
SAMPLE_ALL = 0xFFFFFFFFFFFFFFFF  # trace_sample_max that samples every new trace

# traceparent: version "-" trace-id (32 hex) "-" parent-id (16 hex) "-" flags (2 hex), lower case.
# A valid one from the client is continued (same trace id and sampled flag, a new span id: the
# gateway's); anything else starts a new trace. What goes upstream is always version 00.

cdef inline int _lower_hex(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef bint _valid_traceparent(const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef bint trace_zero = True, parent_zero = True
    if n < 55:
        return False
    for i in range(55):
        if i == 2 or i == 35 or i == 52:
            if s[i] != b"-":
                return False
        elif _lower_hex(<unsigned char>s[i]) < 0:
            return False
        elif s[i] != b"0":
            if 3 <= i < 35:
                trace_zero = False
            elif 36 <= i < 52:
                parent_zero = False
    if trace_zero or parent_zero or (s[0] == b"f" and s[1] == b"f"):
        return False
    if s[0] == b"0" and s[1] == b"0":
        return n == 55  # version 00 has exactly these fields
    return n == 55 or s[55] == b"-"  # a later version's extra fields follow a dash


cdef bytes _render_traceparent(RequestIds ids, const char* client, unsigned long long sample_max):
    """Our traceparent: the client's trace (``client``, already validated) or a new one, and a
    new span id for the gateway's hop. A new trace is sampled when the lower half of its id is at
    most ``sample_max`` (OpenTelemetry's TraceIdRatioBased rule, so every worker and every
    gateway with the same ratio agrees); a continued one keeps the client's decision."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 55)
    cdef char* p = PyBytes_AS_STRING(out)
    cdef unsigned long long high, low = 0, span
    p[0] = b"0"
    p[1] = b"0"
    p[2] = b"-"
    if client != NULL:
        memcpy(p + 3, client + 3, 32)
    else:
        high = ids.random64()
        low = ids.random64() | 1  # never the invalid all-zero id
        _put_hex(p + 3, high, 16)
        _put_hex(p + 19, low, 16)
    p[35] = b"-"
    span = ids.random64() | 1
    _put_hex(p + 36, span, 16)
    p[52] = b"-"
    p[53] = b"0"
    # Only the sampled bit is defined in version 00; the gateway decides for a trace it starts.
    if client == NULL:
        p[54] = b"1" if low <= sample_max else b"0"
    else:
        p[54] = b"1" if _lower_hex(<unsigned char>client[54]) & 1 else b"0"
    return out


# -- request statistics ----------------------------------------------------------------------------

_OUTCOME_NAMES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx", "failed")  # Target.outcomes slots
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
cdef double _BOUNDS[LATENCY_BUCKETS - 1]
for _i, _bound in enumerate(LATENCY_BOUNDS):
    _BOUNDS[_i] = _bound


cdef inline int _bucket(double seconds) noexcept nogil:
    cdef int i
    for i in range(LATENCY_BUCKETS - 1):
        if seconds <= _BOUNDS[i]:
            return i
    return LATENCY_BUCKETS - 1


cdef inline int _method_slot(int llhttp_method) noexcept nogil:
    """llhttp's method number -> METHOD_NAMES index."""
    if llhttp_method == 1:
        return 0  # GET
    if llhttp_method == 2:
        return 1  # HEAD
    if llhttp_method == 3:
        return 2  # POST
    if llhttp_method == 4:
        return 3  # PUT
    if llhttp_method == 0:
        return 4  # DELETE
    if llhttp_method == 28:
        return 5  # PATCH
    if llhttp_method == 6:
        return 6  # OPTIONS
    return 7


@cython.final
cdef class RequestStats:
    """Counters of the requests that ended on one route (or matched no route on a listener).

    PERF: plain C integers and bucket arrays, incremented once as a request ends (no Python call);
    ``snapshot`` turns them into Python values only when metrics are scraped.
    """

    cdef int count(self, int method_slot, int status, double total, double upstream) noexcept:
        """One request ended with ``status`` (0: no response); durations < 0 are not observed."""
        cdef int status_class = status // 100 if 100 <= status < 600 else 0
        self.requests[method_slot * STATUS_SLOTS + status_class] += 1
        if status == 401:
            self.denied[0] += 1
        elif status == 403:
            self.denied[1] += 1
        elif status == 429:
            self.denied[2] += 1
        if total >= 0.0:
            self.total_buckets[_bucket(total)] += 1
            self.total_sum += total
        if upstream >= 0.0:
            self.upstream_buckets[_bucket(upstream)] += 1
            self.upstream_sum += upstream
        return 0

    def record(self, str method, int status, double total=-1.0, double upstream=-1.0) -> None:
        """Count one request from Python (tests, and requests refused outside the exchange)."""
        slot = METHOD_NAMES.index(method) if method in METHOD_NAMES else 7
        self.count(slot, status, total, upstream)

    def snapshot(self) -> dict:
        """{"requests": {(method, status class): n}, "denied": {status: n}, "total"/"upstream":
        (per-bucket counts, sum of seconds)}; the status class is "1xx".."5xx" or "none"."""
        cdef int m, c
        requests = {}
        for m in range(METHOD_SLOTS):
            for c in range(STATUS_SLOTS):
                if self.requests[m * STATUS_SLOTS + c]:
                    requests[(METHOD_NAMES[m], f"{c}xx" if c else "none")] = self.requests[m * STATUS_SLOTS + c]
        return {
            "requests": requests,
            "denied": {401: self.denied[0], 403: self.denied[1], 429: self.denied[2]},
            "total": ([self.total_buckets[c] for c in range(LATENCY_BUCKETS)], self.total_sum),
            "upstream": ([self.upstream_buckets[c] for c in range(LATENCY_BUCKETS)], self.upstream_sum),
        }


# -- the client side -------------------------------------------------------------------------------

@cython.final
cdef class ClientProtocol(Timed):
    PAUSE_UPSTREAM = P_UPSTREAM  # the upstream's write buffer is full
    PAUSE_BUFFER = P_BUFFER  # request body buffered while no upstream connection is ready
    PAUSE_PIPELINE = P_PIPELINE  # too many pipelined requests waiting
    PAUSE_CLIENT_WRITE = P_CLIENT_WRITE  # marker only: the client's own write buffer is full

    def __init__(self, server) -> None:
        self.server = server
        self.transport = None
        self.outlet.fd = -1
        self.parser = None
        self.peer_ip = b""
        self.peer = None
        self.trusted = False
        self.in_head = False
        self.active = None  # the exchange answering now
        self.parsing = None  # the exchange whose body is being parsed
        self.queue = deque()  # pipelined, waiting their turn
        self.refusal = None
        self.paused = 0
        self.write_paused = False
        self.deadline = 0.0
        self.send_deadline = 0.0
        self.send_backlog = 0
        self.draining = False
        self.lingering = False
        self.closed = False
        self.last_host_header = None
        self.last_host = None
        self.request_ids = server.request_ids
        self.unrouted = server.unrouted
        self.adopt(server.plan)

    cdef int adopt(self, object listener) except -1:
        """Take the listener's current plan: at accept, and again from the first request after a
        reload (in-flight requests finish on the plan they started with; they hold their route).

        PERF: the plan's limits and timeouts are copied into C fields here, not read through
        attributes per request; a reload bumps ``_plan_generation``, compared once per request."""
        self.generation = _plan_generation
        self.listener = listener
        lim = listener.limits
        timeouts = listener.timeouts
        config = listener.config
        self.router = listener.router
        self.max_connections = lim.max_connections
        self.max_body_bytes = lim.max_body_bytes
        self.max_pipeline = lim.max_pipeline
        self.buffer_bytes = listener.buffer_bytes
        self.head_timeout = timeouts.head
        self.body_timeout = timeouts.body
        self.keepalive_timeout = timeouts.keepalive
        self.send_timeout = timeouts.send
        self.linger_timeout = timeouts.linger
        self.underscores = listener.underscores
        self.request_id_header = listener.request_id_header
        self.request_id_lower = listener.request_id_lower
        self.trace_context = config.trace_context
        server = self.server
        self.access_log = server.access_log
        self.spans = spans = server.spans
        # Without export every new trace is sampled, as before: the gateway heads it for others.
        self.trace_sample_max = spans.sample_max if spans is not None else SAMPLE_ALL
        if self.peer is not None:
            self.trusted = listener.is_trusted(self.peer)  # trusted_proxies may have changed
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=self.buffer_bytes)
        return 0

    cdef int renew_parser(self) except -1:
        """A parser with the listener's current head limits; only between messages, where a
        parser holds nothing (a reload's limits apply from the next request's first byte)."""
        lim = self.listener.limits
        self.parser = HttpParser(True, lim.max_header_bytes, lim.max_headers, lim.max_uri_bytes)
        self.parser_generation = self.generation
        return 0

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write_bound = transport.write
        _outlet_open(&self.outlet, transport)
        self.sock_fd = _socket_fd(transport)
        self.wheel = running_wheel()
        self.renew_parser()
        server = self.server
        server.connections.add(self)
        if len(server.connections) > self.max_connections:
            # Degrade instead of exhausting memory: answer at once and close.
            transport.write(render_error(_overload_fault, close=True, date_line=date_line()))
            transport.close()
            return
        transport.set_write_buffer_limits(high=self.buffer_bytes)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.peer_ip = peer[0].encode()
            self.trusted = self.listener.is_trusted(peer[0])
        self.now = _now()
        self.set_deadline(self.now + self.head_timeout)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.outlet.fd = -1
        self.server.connections.discard(self)
        self.abandon(_LEFT_DURING if self.active is not None and self.active.response_started else _LEFT_BEFORE)

    def data_received(self, data) -> None:
        if self.closed:
            return
        if self.lingering:
            return  # after a refusal: what the client still sends is read and dropped
        cdef HttpParser parser = self.parser
        if parser is None:
            return  # refused: nothing after that is read
        cdef double now = _now()
        self.now = now
        if self.parser_generation != _plan_generation and parser.st.between:
            if self.generation != _plan_generation:
                self.adopt(self.server.plan)
            self.renew_parser()
            parser = self.parser
        parser.feed(data if type(data) is bytes else bytes(data))
        cdef int event
        try:
            while True:
                event = parser.next()
                if event == EV_MORE:
                    break
                if event == EV_HEAD:
                    self.on_head(parser)
                elif event == EV_BODY:
                    if self.parsing is not None:
                        self.parsing.on_client_body(_body_piece(parser))
                elif event == EV_DONE:
                    self.on_message_complete()
                else:
                    raise _request_fault(parser, event, self.parsing is not None)
                if self.closed or self.parser is None:
                    break  # answered and closed, or refused: the rest of this read is not ours
        except HttpFault as fault:
            parser.release()
            self.reject(fault)
            return
        except Exception:
            # A bug of ours: answer 500 and keep the traceback in the log.
            parser.release()
            log.error("internal error while handling a request", exc_info=True)
            self.reject(ClientFault("internal error", 500))
            return
        parser.release()
        if parser.in_head():
            if not self.in_head:
                # Slowloris: the head timeout counts from the first byte of a request.
                self.in_head = True
                self.set_deadline(now + self.head_timeout)
        elif self.parsing is not None and not self.paused:
            self.set_deadline(now + self.body_timeout)

    def eof_received(self) -> bool:
        """The client half-closed: it sends nothing more (RFC 9112 9.6)."""
        cdef Exchange active = self.active
        if self.lingering or (active is None and self.parsing is None):
            self.outlet.fd = -1  # uvloop closes the transport now: nothing more goes out
            return False
        if self.parsing is not None:
            # A request whose body can never be complete: the upstream must not wait for it.
            self.reject(ClientFault("the client closed the connection before the request body was complete"))
            return not self.closed
        if not active.response_started:
            # Gone before its response (nginx's 499): nothing it asked for is worth finishing.
            self.abandon(_LEFT_BEFORE)
            self.close()
            return False
        self.draining = True  # its response is on the way: finish it, then close
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        # The send timeout counts while the client takes nothing (nginx's send_timeout).
        self.send_backlog = self.unsent()
        self.send_deadline = _now() + self.send_timeout
        self.wheel.file(self, self.send_deadline)
        cdef Exchange active = self.active
        if active is not None and active.conn is not None:
            active.conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.send_deadline = 0.0
        cdef Exchange active = self.active
        if active is not None and active.conn is not None:
            active.conn.resume_reading()

    # -- parser events -------------------------------------------------------------------------
    cdef int on_head(self, HttpParser parser) except -1:
        self.in_head = False
        if self.generation != _plan_generation:
            self.adopt(self.server.plan)  # this request starts on the plan current now
        cdef Exchange exchange = self.build_exchange(parser)
        self.parsing = exchange
        if exchange.content_length > 0 or exchange.chunked:
            self.set_deadline(self.now + self.body_timeout)
        else:
            self.deadline = 0.0
        if self.active is None:
            self.active = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            if len(self.queue) >= self.max_pipeline:
                self.pause_reading_for(P_PIPELINE)
        return 0

    cdef int on_message_complete(self) except -1:
        cdef Exchange exchange = self.parsing
        self.parsing = None
        if self.active is None and not self.queue:
            self.set_deadline(self.now + self.keepalive_timeout)
        elif not self.paused:
            self.deadline = 0.0  # waiting for the upstream: its own timeouts apply
        if exchange is not None:
            exchange.on_client_complete()
        return 0

    # -- the head ------------------------------------------------------------------------------
    cdef Exchange build_exchange(self, HttpParser parser):
        """Check the head and turn it into an Exchange; raises ClientFault to refuse it.

        PERF: llhttp left offsets, not objects: header names are classified in place and only
        the values the gateway acts on become bytes; the forwarded lines are copied straight
        from the head into the pass block."""
        cdef int major = parser.http_major()
        cdef int minor = parser.http_minor()
        if major != 1 or minor > 1:
            raise ClientFault("unsupported HTTP version", 505 if major >= 1 else 400)
        cdef bint http_10 = minor == 0
        cdef const char* head = parser.head
        cdef Field* names = parser.st.names
        cdef Field* values = parser.st.values
        cdef int count = parser.st.count
        cdef Exchange exchange = Exchange.__new__(Exchange)
        exchange.setup(self)
        cdef PassRules rules
        rules.named = NULL
        rules.rid_name = PyBytes_AS_STRING(self.request_id_lower)
        rules.rid_len = PyBytes_GET_SIZE(self.request_id_lower)
        rules.drop_underscores = False
        cdef const char* host_ptr = NULL
        cdef Py_ssize_t host_len = 0
        cdef long long content_length = -1
        cdef bint chunked = False
        cdef bint expect_continue = False
        cdef object request_id = None
        cdef object xff = None
        cdef object xfp = None
        cdef object xfh = None
        cdef list connection_tokens = None
        cdef const char* traceparent = NULL
        cdef Py_ssize_t traceparent_len = -1  # -1: none; -2: more than one (invalid, RFC 9110 5.3)
        cdef const char* name
        cdef const char* value
        cdef Py_ssize_t value_len
        cdef int i, kind
        for i in range(count):
            name = head + names[i].off
            kind = _request_kind(name, names[i].len, &rules)
            if kind == H_PASS:
                if self.underscores == U_ALLOW or memchr(name, b"_", names[i].len) == NULL:
                    continue
                # X_User_Id reaches a CGI/WSGI upstream as HTTP_X_USER_ID, the same variable as
                # the X-User-Id the gateway sets: never forwarded unless the listener allows it.
                if self.underscores == U_REJECT:
                    raise ClientFault(
                        "header name with an underscore: "
                        + PyBytes_FromStringAndSize(name, names[i].len)[:64].decode("latin-1")
                    )
                rules.drop_underscores = True
                continue
            value = head + values[i].off
            value_len = values[i].len
            if kind == H_HOST:
                if host_ptr != NULL:
                    raise ClientFault("duplicate Host header")
                host_ptr = value
                host_len = value_len
            elif kind == H_CL:
                if content_length >= 0:
                    raise ClientFault("duplicate Content-Length")
                content_length = _content_length(value, value_len)
            elif kind == H_TE:
                if chunked:
                    raise ClientFault("duplicate Transfer-Encoding")
                limits.check_transfer_encoding(PyBytes_FromStringAndSize(value, value_len), http_10)
                chunked = True
            elif kind == H_CONN:
                if not _plain_connection(value, value_len):
                    connection_tokens = _tokens(PyBytes_FromStringAndSize(value, value_len), connection_tokens)
            elif kind == H_EXPECT:
                if value_len != 12 or not _ieq(value, "100-continue", 12):
                    raise ClientFault("unsupported Expect", 417)
                expect_continue = True
            elif kind == H_RID:
                if _valid_request_id(value, value_len):
                    request_id = PyBytes_FromStringAndSize(value, value_len)
            elif kind == H_XFF:
                if xff is None:
                    xff = PyBytes_FromStringAndSize(value, value_len)
                else:
                    xff = xff + b", " + PyBytes_FromStringAndSize(value, value_len)
            elif kind == H_XFP:
                xfp = PyBytes_FromStringAndSize(value, value_len)
            elif kind == H_XFH:
                xfh = PyBytes_FromStringAndSize(value, value_len)
            elif kind == H_TRACEPARENT:
                traceparent_len = value_len if traceparent_len == -1 else -2
                traceparent = value
        if chunked and content_length >= 0:
            raise ClientFault("both Content-Length and Transfer-Encoding")
        if content_length > self.max_body_bytes:
            raise ClientFault("request body too large", 413)


        cdef bytes method = parser.method()
        cdef const char* target = head + parser.st.target.off
        cdef Py_ssize_t target_len = parser.st.target.len
        cdef object host_header = None
        cdef bytes url
        if host_ptr != NULL:
            if (
                self.last_host_header is not None
                and PyBytes_GET_SIZE(self.last_host_header) == host_len
                and memcmp(PyBytes_AS_STRING(self.last_host_header), host_ptr, host_len) == 0
            ):
                host_header = self.last_host_header  # PERF: a keep-alive client repeats its Host
            else:
                host_header = PyBytes_FromStringAndSize(host_ptr, host_len)
        if target_len == 0 or target[0] != b"/":
            url = PyBytes_FromStringAndSize(target, target_len)
            if method == b"CONNECT" or url == b"*":
                raise ClientFault("unsupported request target")
            authority, url = limits.split_absolute_target(url)
            if host_header is not None and authority.lower() != host_header.lower():
                raise ClientFault("absolute-form target and Host disagree")
            host_header = authority
            target = PyBytes_AS_STRING(url)
            target_len = PyBytes_GET_SIZE(url)
        cdef bytes host
        if host_header is None:
            if not http_10:
                raise ClientFault("missing Host header")
            host = b""
        elif host_header is self.last_host_header:
            host = self.last_host
        else:
            host = limits.check_host(host_header)
            self.last_host_header = host_header
            self.last_host = host
        cdef const char* mark = <const char*>memchr(target, b"?", target_len)
        cdef Py_ssize_t path_len = mark - target if mark != NULL else target_len
        exchange.query = PyBytes_FromStringAndSize(mark, target_len - path_len) if mark != NULL else b""
        mark = <const char*>memchr(target, b"#", path_len)
        if mark != NULL:
            path_len = mark - target
        cdef bytes path = PyBytes_FromStringAndSize(target, path_len)
        exchange.path = limits.normalize_path(path) if _needs_normalizing(path) else path

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

        if request_id is None:
            request_id = self.request_ids.next()
        if self.trace_context:
            if traceparent_len >= 0 and _valid_traceparent(traceparent, traceparent_len):
                exchange.client_traceparent = PyBytes_FromStringAndSize(traceparent, traceparent_len)
            else:
                traceparent = NULL
            exchange.traceparent = _render_traceparent(self.request_ids, traceparent, self.trace_sample_max)
        exchange.method_slot = _method_slot(parser.method_number())
        trusted = self.trusted
        rules.named = <PyObject*>named if named is not None else NULL
        rules.keep_traceparent = exchange.traceparent is None
        rules.keep_tracestate = exchange.traceparent is None or exchange.client_traceparent is not None
        exchange.pass_block = _render_pass_block(
            parser,
            &rules,
            exchange.traceparent,
            xff if trusted and xff else None,
            self.peer_ip,
            xfp if trusted and xfp else _HTTP,
            self.request_id_header,
            request_id,
            xfh if trusted and xfh else host_header,
        )
        if count:
            # The header lines as received, parsed again only if a plugin asks (Exchange.headers).
            exchange.head_owner = parser.head_owner
            exchange.fields_lo = parser.head_origin + names[0].off
            exchange.fields_hi = parser.head_origin + values[count - 1].off + values[count - 1].len
        exchange.drop_underscores = rules.drop_underscores
        exchange.method = method
        exchange.http_10 = http_10
        exchange.keep_alive = parser.keep_alive() and not self.draining
        exchange.host = host
        exchange.host_header = host_header or b""
        exchange.content_length = content_length
        exchange.chunked = chunked
        exchange.expect_continue = expect_continue and (content_length > 0 or chunked)
        exchange.request_id = request_id
        # No body follows: the request is complete now, before start() runs (EV_DONE comes only
        # after this event is handled).
        exchange.request_done = content_length <= 0 and not chunked
        return exchange

    cdef int write(self, bytes data) except -1:
        """PERF: the transport's bound write, looked up once per connection."""
        _outlet_write(&self.outlet, self.write_bound, self.transport, data)
        return 0

    cdef bytes error_bytes(self, fault, bytes request_id, bint close, list extra, bint head_only):
        """A gateway error answer on this listener (its request-id header name, today's Date)."""
        return render_error(
            fault, request_id, close=close, extra=extra, date_line=date_line(), head_only=head_only,
            request_id_header=self.request_id_header,
        )  # fmt: skip

    # -- exchange lifecycle --------------------------------------------------------------------
    cdef int exchange_finished(self, Exchange exchange) except -1:
        """The active exchange wrote its last byte (or failed): close, or start the next one."""
        if exchange is not self.active:
            return 0
        self.active = None
        if exchange.close_after:
            if exchange.request_done or self.closed:
                self.close()
            else:
                self.linger_close()  # the rest of its body may still be on the way
            return 0
        if self.paused & P_PIPELINE and len(self.queue) < self.max_pipeline:
            self.resume_reading_for(P_PIPELINE)
        cdef Exchange nxt
        if self.queue:
            nxt = self.active = self.queue.popleft()
            nxt.start()
        elif self.refusal is not None:
            # A request refused after pipelined ones: answered in its turn, then the connection
            # ends (nothing read after it can be trusted).
            self.write(self.error_bytes(self.refusal, None, True, None, False))
            self.linger_close()
        elif self.draining:
            self.close()
        elif not self.in_head and self.parsing is None:
            self.set_deadline(exchange.ended_at + self.keepalive_timeout)
        return 0

    cdef int reject(self, fault) except -1:
        """Input we refuse: a head we cannot accept, or the body of an accepted one that turned
        out malformed or cut short. Nothing after it is read; every earlier request is answered
        first, in order; the upstream never waits for a body that will not come."""
        self.parser = None
        self.in_head = False
        cdef Exchange parsing = self.parsing
        if parsing is not None:
            self.parsing = None
            parsing.refuse(fault)  # answers it (or cuts its response) when its turn comes
            if self.active is None and not self.queue and not self.closed:
                self.linger_close()  # it had already been answered (the upstream did not wait)
            return 0
        if self.unrouted is not None:
            self.unrouted.count(METHOD_SLOTS - 1, fault.status, -1.0, -1.0)
        if self.active is None and not self.queue:
            self.write(self.error_bytes(fault, None, True, None, False))
            self.linger_close()
            return 0
        self.refusal = fault
        self.pause_reading_for(P_PIPELINE)
        return 0

    cdef int linger_close(self) except -1:
        """End the connection after an error answer without resetting the answer away.

        A close with unread input makes the kernel send RST, and an RST that reaches the client
        before it read the answer (a 431 or 413 while it still sends) destroys it. So, as nginx's
        lingering close: stop sending (FIN), read and drop what still comes for at most the
        listener's ``linger`` timeout, and close when the client closes or the time is up."""
        if self.closed:
            return 0
        if self.client_eof or not self.transport.can_write_eof():
            self.close()
            return 0
        self.lingering = True
        self.parser = None
        self.outlet.fd = -1  # from here the transport alone writes: the FIN goes after the answer
        self.transport.write_eof()
        if self.paused:
            self.paused = 0
            self.transport.resume_reading()
        self.set_deadline(_now() + self.linger_timeout)
        return 0

    cdef int abandon(self, str reason) except -1:
        """The client is gone (or will get nothing more): every exchange it started ends now,
        freeing what it holds upstream, recorded as a client abort with ``reason``."""
        cdef Exchange active = self.active
        self.active = None
        self.parsing = None
        if active is not None:
            active.client_lost(reason)
        for queued in self.queue:
            (<Exchange>queued).client_lost(_LEFT_BEFORE)
        self.queue.clear()
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
                self.set_deadline(_now() + self.body_timeout)
        return 0

    cdef Py_ssize_t unsent(self) except -1:
        """Response bytes the client has not taken: in the transport, and in the kernel's send
        queue (SIOCOUTQ: a slow reader frees the kernel's buffer long before the transport's)."""
        return self.transport.get_write_buffer_size() + fastgw_unsent(self.sock_fd)

    cdef inline int set_deadline(self, double at) except -1:
        """The read-side deadline (head, body, keep-alive or linger), filed on the wheel."""
        self.deadline = at
        self.wheel.file(self, at)
        return 0

    cpdef close(self):
        self.outlet.fd = -1
        if not self.closed:
            self.closed = True
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        self.outlet.fd = -1
        self.transport.abort()

    cpdef start_draining(self):
        """Graceful shutdown: finish what is in flight, close idle keep-alive connections now."""
        self.draining = True
        if self.active is None and not self.in_head and self.parsing is None:
            self.close()

    cpdef expire(self, double now):
        """The wheel's call: a deadline may have passed (else it files the next one again)."""
        if self.closed:
            return
        if self.send_deadline and now >= self.send_deadline:
            backlog = self.unsent()
            if backlog >= self.send_backlog:
                # Nothing taken for a whole send timeout: free the upstream side and go.
                self.abandon(_STALLED)
                self.abort()
                return
            self.send_backlog = backlog  # it reads, slowly: the timeout counts from this progress
            self.send_deadline = now + self.send_timeout
        if self.deadline and now >= self.deadline:
            self.check_deadline(now)
            if self.closed:
                return
        if self.deadline:
            self.wheel.file(self, self.deadline)
        if self.send_deadline:
            self.wheel.file(self, self.send_deadline)

    cpdef check_deadline(self, double now):
        """The read-side deadline passed: slowloris, a stalled body, an idle keep-alive, a linger."""
        if not self.deadline or now < self.deadline or self.closed:
            return
        self.deadline = 0.0
        if self.lingering:
            self.close()
        elif self.in_head or self.parsing is not None:
            # Slowloris or a stalled body: 408 if nothing was answered for it yet.
            if self.active is None or (self.active is self.parsing and not self.active.response_started):
                fault = ClientFault("timed out reading the request", 408)
                if self.active is not None:
                    self.active.fail(fault)  # the exchange closes the connection (lingering)
                else:
                    self.write(self.error_bytes(fault, None, True, None, False))
                    self.linger_close()
            else:
                self.abort()
        elif self.active is None:
            self.close()  # idle keep-alive expired


cdef inline bint _passes(const char* head, Field name, const PassRules* rules) except -1:
    """Is this request header forwarded as it is?"""
    cdef int kind = _request_kind(head + name.off, name.len, rules)
    if kind == H_PASS:
        if rules.drop_underscores and memchr(head + name.off, b"_", name.len) != NULL:
            return False
    elif not (
        (kind == H_TRACEPARENT and rules.keep_traceparent) or (kind == H_TRACESTATE and rules.keep_tracestate)
    ):
        return False
    return (
        rules.named == NULL
        or PyBytes_FromStringAndSize(head + name.off, name.len).lower() not in <object>rules.named
    )


cdef inline bint _plain_connection(const char* s, Py_ssize_t n) noexcept:
    """``Connection: keep-alive`` or ``close``, the values that name no header (no bytes made)."""
    return (n == 10 and _ieq(s, "keep-alive", 10)) or (n == 5 and _ieq(s, "close", 5))


cdef list _tokens(bytes value, list into):
    tokens = into if into is not None else []
    for token in value.split(b","):
        token = token.strip().lower()
        if token and token not in (b"close", b"keep-alive"):
            tokens.append(token)
    return tokens


cdef bytes _render_pass_block(
    HttpParser parser,
    const PassRules* rules,
    object traceparent,
    object xff,
    bytes peer_ip,
    bytes proto,
    bytes request_id_header,
    bytes request_id,
    object fwd_host,
):
    """The header lines forwarded as they are (``rules``: not special, not named in Connection,
    no underscore unless allowed), then the X-Forwarded-For/-Proto, request id, X-Forwarded-Host
    and traceparent lines the gateway adds (without tracing, ``traceparent`` is None and the
    client's line passes as it is). ``tracestate`` belongs to the traceparent it came with (W3C
    Trace Context 3.3): it passes when that trace is continued or tracing is off, and is dropped
    when a new trace starts."""
    cdef const char* head = parser.head
    cdef Field* names = parser.st.names
    cdef Field* values = parser.st.values
    cdef int i, count = parser.st.count
    cdef Py_ssize_t size = 0
    cdef char* p
    for i in range(count):
        if not _passes(head, names[i], rules):
            continue
        size += names[i].len + values[i].len + 4
    size += 17 + PyBytes_GET_SIZE(peer_ip) + 2  # X-Forwarded-For: [xff, ]peer
    if xff is not None:
        size += PyBytes_GET_SIZE(<bytes>xff) + 2
    size += 19 + PyBytes_GET_SIZE(proto) + 2  # X-Forwarded-Proto: proto
    size += PyBytes_GET_SIZE(request_id_header) + 2 + PyBytes_GET_SIZE(request_id) + 2  # X-Request-Id: id
    if fwd_host:
        size += 18 + PyBytes_GET_SIZE(<bytes>fwd_host) + 2  # X-Forwarded-Host: host
    if traceparent is not None:
        size += 13 + PyBytes_GET_SIZE(<bytes>traceparent) + 2  # traceparent: value
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    for i in range(count):
        if not _passes(head, names[i], rules):
            continue
        p = _put_line(p, head + names[i].off, names[i].len, head + values[i].off, values[i].len)
    p = _put_c(p, "X-Forwarded-For: ", 17)
    if xff is not None:
        p = _put(p, <bytes>xff)
        p = _put_c(p, ", ", 2)
    p = _put(p, peer_ip)
    p = _put_c(p, "\r\nX-Forwarded-Proto: ", 21)
    p = _put(p, proto)
    p = _put_c(p, "\r\n", 2)
    p = _put(p, request_id_header)
    p = _put_c(p, ": ", 2)
    p = _put(p, request_id)
    p = _put_c(p, "\r\n", 2)
    if fwd_host:
        p = _put_c(p, "X-Forwarded-Host: ", 18)
        p = _put(p, <bytes>fwd_host)
        p = _put_c(p, "\r\n", 2)
    if traceparent is not None:
        p = _put_c(p, "traceparent: ", 13)
        p = _put(p, <bytes>traceparent)
        p = _put_c(p, "\r\n", 2)
    _check_end(p, out)
    return out


cdef object _request_fault(HttpParser parser, int event, bint in_body):
    """The answer to a request head (or body, ``in_body``) the parser refused."""
    if event == EV_HEAD_TOO_BIG:
        return ClientFault("request header block too large", 431)
    if event == EV_TOO_MANY_FIELDS:
        return ClientFault("too many request headers", 431)
    if event == EV_TARGET_TOO_LONG:
        return ClientFault("request target too long", 414)
    if event == EV_UPGRADE:
        return ClientFault("protocol upgrade is not supported", 501)
    if in_body:
        return ClientFault(f"malformed request body: {parser.error()[:80]}")
    return ClientFault(f"malformed request: {parser.error()[:80]}")


cdef str _response_problem(HttpParser parser, int event):
    """Why an upstream response was refused (the client gets 502 naming the upstream, then this)."""
    if event == EV_HEAD_TOO_BIG:
        return "sent a response head over 64 KiB"
    if event == EV_TOO_MANY_FIELDS:
        return "sent too many response headers"
    return "sent a malformed response"


cdef inline bytes _body_piece(HttpParser parser):
    """The body bytes of an EV_BODY event; the read itself when the piece is all of it (no copy)."""
    cdef const char* body = parser.st.body
    cdef Py_ssize_t n = parser.st.body_len
    if body == parser.st.buf and n == parser.fed:
        return <bytes>parser.data
    return PyBytes_FromStringAndSize(body, n)


# -- one request/response exchange -----------------------------------------------------------------

@cython.final
@cython.freelist(64)  # PERF: one per request; recycled instead of malloc'd
cdef class Exchange:
    cdef int setup(self, ClientProtocol client) except -1:
        self.client = client
        self.listener = client.listener
        self.route = None
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
        self.head_owner = None
        self._headers = None
        self.counted = False
        self.tries = 0
        self.admitted = 0
        self.total_deadline = 0.0
        self.retry_handle = None
        self.upstream_error = None
        self.add_response_headers = None
        self.body_filters = None
        self.upstream_sent_at = 0.0
        self.upstream_head_at = 0.0
        self.consumer = None
        self.claims = None
        self._client_ip = None
        self.received_at = client.now  # the read that completed the head
        self.bytes_sent = 0
        self.traceparent = None
        self.client_traceparent = None
        self.upstream_status = 0
        self.held_head = None
        self.refusal = None
        self.continue_sent = False
        self.interim_sent = False
        self.abort_reason = None
        self.drop_underscores = False
        return 0

    # -- start ---------------------------------------------------------------------------------
    cdef int start(self) except -1:
        """Route and begin forwarding; called when this exchange becomes the active one."""
        if self.refusal is not None:
            self.answer_fault(self.refusal, None)  # its body turned out malformed or cut short
            return 0
        try:
            self.route_and_forward()
        except Exception:
            # A plugin's hook (or a bug of ours) raised: this request gets its 500 now. Left to
            # the reader's handler, it would wait behind itself and never be answered.
            self.internal_error()
        return 0

    cdef int route_and_forward(self) except -1:
        match = self.client.router.match(self.method, self.host, self.path, self)
        if match is None:
            self.answer_fault(_NOT_FOUND, None)
            return 0
        if type(match) is MethodNotAllowed:
            self.answer_fault(_METHOD_NOT_ALLOWED, [(b"Allow", (<MethodNotAllowed>match).allow)])
            return 0
        cdef RouteCore route = <RouteCore>(<RouteMatch>match).route  # the router holds RoutePlans
        self.route = route
        route.requests += 1
        self.params = (<RouteMatch>match).params
        if self.expect_continue and not self.request_done:
            # RFC 9110 10.1.1: we are about to read the body, so tell the client to send it.
            # (A declared length over the limit was refused with 413 before getting here.)
            self.client.write(CONTINUE_100)
            self.continue_sent = True
        if route.on_request:
            self._run_request_hooks(route.on_request, 0)
            return 0
        self.forward()
        return 0

    cdef int forward(self) except -1:
        """Past the request hooks: a slot in each concurrency limit (or a wait, or 503), then send."""
        cdef tuple limiters = self.route.limiters
        while self.admitted < len(limiters):
            if not (<Limiter>limiters[self.admitted]).admit(self):
                return 0  # waiting (the limiter calls forward again) or answered 503
            self.admitted += 1
        self.send_upstream(False, None)
        return 0

    def _forward_admitted(self) -> None:
        """A limiter gave this waiting exchange its slot."""
        self.admitted += 1
        if self.finished:
            self.release_slots()  # it ended meanwhile: pass the slot on
            return
        try:
            self.forward()
        except Exception:
            self.internal_error()

    cdef int release_slots(self) except -1:
        cdef tuple limiters
        if self.route is None:
            return 0
        limiters = self.route.limiters
        if self.admitted < len(limiters):
            (<Limiter>limiters[self.admitted]).forget(self)  # if it was waiting there
        while self.admitted > 0:
            self.admitted -= 1
            (<Limiter>limiters[self.admitted]).release()
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
        self.forward()
        return 0

    def _after_async_hook(self, tuple hooks, Py_ssize_t index, task) -> None:
        if self.finished:
            return
        if task.cancelled():
            self.answer_fault(UpstreamFault("request hook cancelled", 503), None)
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, HttpFault):
                self.answer_fault(exc, None)
                return
            # A plugin's bug: the client gets a 500, the log gets the traceback and the request id.
            log.error(
                "request hook %r failed (request %s)", hooks[index], self.request_id.decode("latin-1"),
                exc_info=exc,
            )  # fmt: skip
            self.answer_fault(UpstreamFault("request hook failed", 500), None)
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
    cdef int send_upstream(self, bint fresh, Target exclude) except -1:
        """Pick a target (not ``exclude``, a retry's failed one, when there is a choice) and send."""
        cdef RouteCore route = self.route
        cdef GroupCore group = <GroupCore>route.upstream
        cdef Target target = group.single
        if route.total_timeout and not self.total_deadline:
            self.total_deadline = _now() + route.total_timeout  # retries included
        if target is None:
            try:
                target = group.pick(self) if exclude is None else group.pick(self, exclude)
            except HttpFault as fault:  # no usable target: this request's answer, not the connection's
                self.answer_fault(fault, None)  # no upstream failed: nothing for observers to count
                return 0
        self.set_target(target)
        cdef PoolCore pool = target.pool
        cdef UpstreamConnection conn = None if fresh else pool.take_idle_conn()
        if conn is not None:
            self.attach(conn)
            return 0
        connect = route.connect_timeout
        future = pool.connect_fresh(connect) if fresh else pool.acquire(connect)
        self.acquiring = future
        future.add_done_callback(self._on_acquired)
        return 0

    # -- retries -------------------------------------------------------------------------------
    cdef bint try_again(self, str kind, int status) except -1:
        """After a failed attempt: send again if the route's retry policy allows (True: it will)."""
        if self.route.retry is None or not self.retry_allowed(kind, status):
            return False
        self.retry_later()
        return True

    cdef bint retry_allowed(self, str kind, int status) except -1:
        if self.finished or self.response_started or self.interim_sent:
            return False  # never once any byte of the response went to the client
        if self.content_length > 0 or self.chunked or self.body_received:
            return False  # the request body was streamed, not kept: it cannot be sent twice
        if self.total_deadline and _now() >= self.total_deadline:
            return False
        return self.route.retry.allows(self, kind, status)

    cdef int retry_later(self) except -1:
        """Send again after a jittered backoff, to another target when the group has one."""
        cdef RouteCore route = self.route
        cdef Target failed = self.target
        if (<GroupCore>route.upstream).observes:
            route.upstream.observe(self)  # the failed attempt counts for health and outliers
        self.count_attempt(_now())
        self.tries += 1
        self.uncount_target()
        self.target = None  # observed above: the exchange's end must not report this attempt again
        self.upstream_error = None
        self.response_status = 0
        delay = route.retry.delay(self.tries)
        self.retry_handle = asyncio.get_running_loop().call_later(delay, self._send_again, failed)
        return 0

    def _send_again(self, Target failed) -> None:
        self.retry_handle = None
        if self.finished:
            return
        try:
            self.send_upstream(False, failed)
        except Exception:
            self.internal_error()

    cdef int set_target(self, Target target) except -1:
        """Count this request against the target it is sent to (balancers read ``in_flight``)."""
        if self.counted:
            self.target.in_flight -= 1
        self.target = target
        target.in_flight += 1
        self.counted = True
        return 0

    cdef int uncount_target(self) except -1:
        if self.counted:
            self.counted = False
            self.target.in_flight -= 1
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
            if isinstance(exc, HttpFault):
                fault = (<object>exc).naming(self.upstream_name())
            else:
                fault = self.upstream_fault("connect failed", 502)
            self.upstream_error = fault
            if isinstance(fault, ConnectFault) and self.try_again("connect", 0):
                return
            self.answer_fault(fault, None)
            return
        try:
            self.attach(future.result())
        except Exception:
            self.internal_error()

    cdef int attach(self, UpstreamConnection conn) except -1:
        """Bind a connection and write the head plus whatever body already arrived, in one call."""
        cdef RouteCore route = self.route
        cdef double now = _now()
        self.conn = conn
        self.upstream_sent_at = now  # for the upstream latency metric and observers
        conn.begin(self, self.method == _HEAD, route, not self.request_done, now)
        if route.on_upstream_request:
            self.upstream_headers = []
            for hook in route.on_upstream_request:
                hook(self)
        head = self.render_upstream_head(route, self.target)
        if self.pending:
            conn.outlet.queued = True  # writelines may leave some in the transport
            conn.transport.writelines([head, *self.pending])
            self.pending.clear()
            if self.pending_size > self.client.buffer_bytes:
                self.client.resume_reading_for(P_BUFFER)
            self.pending_size = 0
        else:
            conn.write(head)
        return 0

    cdef bytes render_upstream_head(self, RouteCore route, Target target):
        """The request head sent upstream: ours, never the client's bytes as they came."""
        cdef bytes path = route.path_upstream(self.path, self.params)
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
            conn.write(data)
            if conn.sending:
                conn.arm(self.client.now)  # progress: the send timeout counts from the last write
            return 0
        if self.pending is None:
            self.pending = []
        self.pending.append(data)
        self.pending_size += PyBytes_GET_SIZE(data)
        if self.pending_size > self.client.buffer_bytes:
            self.client.pause_reading_for(P_BUFFER)
        return 0

    # -- response ------------------------------------------------------------------------------
    cdef int on_upstream_interim(self, int status, HttpParser parser) except -1:
        """A 1xx before the final response: a proxy forwards it (RFC 9110 15.2), but never to an
        HTTP/1.0 client, and not a 100 when the gateway already sent its own 100 Continue."""
        if self.http_10 or self.finished or self.response_started or (status == 100 and self.continue_sent):
            return 0
        cdef unsigned char kinds[UPSTREAM_MAX_FIELDS]
        cdef ResponseLines lines
        _classify_response(parser, kinds, &lines, self.client.request_id_lower)
        self.out.append(
            _render_response_head(
                _status_line(status, parser), None, parser, kinds, lines.passed_size, False, False, False,
                None, None, None, None,
            )
        )  # fmt: skip
        self.interim_sent = True
        return 0

    cdef int on_upstream_head(self, int status, HttpParser parser) except -1:
        self.response_status = self.upstream_status = status
        if (<GroupCore>self.route.upstream).observes:
            self.upstream_head_at = _now()
        if status >= 500 and self.route.retry is not None and self.retry_allowed(None, status):
            self._drop_conn(self.conn)  # the rest of this answer is not wanted
            self.retry_later()
            return 0
        if status == 101:
            self.fail(self.upstream_fault("switched protocols unasked", 502))
            return 0
        cdef ClientProtocol client = self.client
        cdef unsigned char kinds[UPSTREAM_MAX_FIELDS]  # each line classified once
        cdef ResponseLines lines
        cdef object drop_named = _classify_response(parser, kinds, &lines, client.request_id_lower)
        cdef bint content_length = lines.content_length
        cdef bint has_date = lines.date
        on_response = self.route.on_response
        cdef list kept = None  # None: the upstream's own lines, filtered while rendering
        cdef list added = self.add_response_headers
        if on_response or drop_named:
            kept = _response_pairs(parser, kinds, drop_named)
            if added:
                kept += added
                added = None
            if on_response:
                self.response_headers = kept
                for hook in on_response:
                    replacement = hook(self)
                    if replacement is not None:
                        self._replace_response(replacement)
                        return 0
                kept = self.response_headers
                if content_length and self.body_filters:
                    # A filter that changes the body's length removed Content-Length: re-frame.
                    content_length = _has_header(kept, b"content-length")
                has_date = _has_header(kept, b"date")
        cdef bint close = self.close_after or not self.keep_alive or client.draining
        cdef bint no_body = self.method == _HEAD or status == 204 or status == 304
        if no_body:
            self.body_filters = None  # nothing to filter
        cdef bint rechunk = False
        if not no_body and not content_length and not lines.chunked and self.conn is not None:
            self.conn.close_delimited = True
        if not no_body and not content_length:
            if self.http_10:
                close = True  # close-delimited is all an HTTP/1.0 client understands
            else:
                self.rechunk = rechunk = True
        self.close_after = close
        head = _render_response_head(
            _status_line(status, parser), kept, parser, kinds, lines.passed_size, rechunk, close, self.http_10,
            added, None if has_date else date_line(), client.request_id_header, self.request_id,
        )  # fmt: skip
        if self.body_filters is not None:
            # A filter may hold the whole body back (json_fields): until it lets something go,
            # nothing went out, and a failure is still answered with a proper error response.
            self.held_head = head
        else:
            self.out.append(head)
            self.response_started = True
        return 0

    cdef inline int release_head(self) except -1:
        """The head a body filter held back goes out, before the first body bytes it lets go."""
        if self.held_head is not None:
            self.out.append(self.held_head)
            self.held_head = None
            self.response_started = True
        return 0

    cdef int on_upstream_body(self, bytes data) except -1:
        if self.finished:
            return 0
        if self.body_filters is not None:
            for body_filter in self.body_filters:
                data = body_filter.feed(data)
            if not data:
                return 0  # a filter holds it back (it buffers, or compresses more before output)
            self.release_head()
        if self.rechunk:
            self.out += (_chunk_header(PyBytes_GET_SIZE(data)), data, _CRLF)
        else:
            self.out.append(data)
        return 0

    cdef int flush_to_client(self) except -1:
        cdef list out = self.out
        cdef Py_ssize_t n = len(out)
        cdef bytes first, second
        if n:
            if n == 1:
                self.bytes_sent += PyBytes_GET_SIZE(<bytes>out[0])
                self.client.write(out[0])
            elif n == 2 and PyBytes_GET_SIZE(<bytes>out[1]) <= 4096:
                # PERF: a head and a small body (the usual small response) leave in one buffer:
                # a copy of a few hundred bytes costs less than a second buffer in uvloop's writev.
                first = <bytes>out[0]
                second = <bytes>out[1]
                self.bytes_sent += PyBytes_GET_SIZE(first) + PyBytes_GET_SIZE(second)
                self.client.write(first + second)
            else:
                for first in out:
                    self.bytes_sent += PyBytes_GET_SIZE(first)
                self.client.outlet.queued = True  # writelines may leave some in the transport
                self.client.transport.writelines(out)
            out.clear()
        return 0

    cdef int on_upstream_complete(self, UpstreamConnection conn, bint keep_alive) except -1:
        if self.body_filters is not None:
            self._end_body_filters()
            if self.finished:
                return 0  # a filter failed the response (fail() dropped the connection and the client)
        if self.rechunk:
            self.out.append(_LAST_CHUNK)
        if not self.request_done:
            self.close_after = True  # we stop reading a body the upstream did not wait for
        conn.detach(keep_alive and self.request_done)
        self.conn = None
        self.flush_to_client()
        self.finish()
        return 0

    cdef int _end_body_filters(self) except -1:
        """The upstream's body ended: each filter gives what it held back, passed through the
        filters after it, in order."""
        cdef list filters = self.body_filters
        cdef Py_ssize_t i, j
        cdef bytes data
        self.body_filters = None  # on_upstream_body must not run them again
        for i in range(len(filters)):
            data = filters[i].end()
            for j in range(i + 1, len(filters)):
                if data:
                    data = filters[j].feed(data)
            if data:
                self.release_head()
                if self.rechunk:
                    self.out += (_chunk_header(PyBytes_GET_SIZE(data)), data, _CRLF)
                else:
                    self.out.append(data)
        self.release_head()  # an empty body: the head goes alone
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
        conn.pool.release_conn(conn)
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
            self.send_upstream(True, None)
            return 0
        self.upstream_error = self.upstream_fault("closed the connection before the response completed", 502)
        if self.try_again("reset", 0):
            return 0
        self.fail(self.upstream_error)
        return 0

    cdef int on_upstream_malformed(self, UpstreamConnection conn, str problem) except -1:
        self._drop_conn(conn)
        self.upstream_error = self.upstream_fault(problem, 502)
        self.fail(self.upstream_error)
        return 0

    cdef int on_upstream_timeout(self, UpstreamConnection conn) except -1:
        """Called by the connection's deadline check; it aborts itself afterwards."""
        self.conn = None
        conn.detach(False)
        conn.pool.release_conn(conn)
        self.upstream_error = self.upstream_fault(
            "timed out" if not self.total_deadline or _now() < self.total_deadline
            else "exceeded the route's total timeout",
            504,
        )
        if self.try_again("reset", 0):
            return 0
        self.fail(self.upstream_error)
        return 0

    cdef int _drop_conn(self, UpstreamConnection conn) except -1:
        self.conn = None
        conn.detach(False)
        conn.abort()
        conn.pool.release_conn(conn)
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
        self.held_head = None  # a head a body filter held back never goes out
        if self.response_started:
            self.out.clear()
            conn = self.conn
            if conn is not None:
                self._drop_conn(conn)
            self.end(self.response_status)  # frees its slots and in-flight count like any end
            self.close_after = True  # no pipelined request may start on the aborted connection
            self.client.abort()
            self.client.exchange_finished(self)
            return
        conn = self.conn
        if conn is not None:
            self._drop_conn(conn)
        self.flush_to_client()  # 1xx responses already forwarded go before the answer
        self.answer_fault(fault, None)

    cdef int refuse(self, fault) except -1:
        """Its request can never be complete (the body is malformed, or the client stopped
        sending it): abort what went upstream, and answer ``fault`` now if this exchange is the
        one answering, or when its turn comes; a response already under way is cut. Nothing is
        counted against the upstream: the client broke the request."""
        self.refusal = fault
        self.close_after = True
        if not self.finished and self is self.client.active:
            self.fail(fault)
        return 0

    cdef str upstream_name(self):
        return f"upstream {(<GroupCore>self.route.upstream).name!r}"

    cdef object upstream_fault(self, str what, int status):
        """A failure of the upstream, as the client reads it (the upstream's configured name) and
        as the log reads it (also the target's address)."""
        target = self.target
        return UpstreamFault(
            f"{self.upstream_name()} {what}", status, target.label if target is not None else None
        )

    cdef int answer_fault(self, fault, list extra) except -1:
        if extra is None:
            extra = fault.headers  # None for most faults; Retry-After for an unavailable upstream
        cdef bint close = (
            fault.close or self.close_after or not self.request_done or not self.keep_alive or self.client.draining
        )
        self.close_after = close
        data = self.client.error_bytes(fault, self.request_id, close, extra, self.method == _HEAD)
        self.response_status = fault.status
        self.bytes_sent += PyBytes_GET_SIZE(data)
        self.client.write(data)
        self.finish()
        return 0

    cdef int answer(self, response) except -1:
        cdef bint close = self.close_after or not self.request_done or not self.keep_alive or self.client.draining
        self.close_after = close
        # Headers earlier plugins added for the response (rate-limit fields) go on any answer.
        added = self.add_response_headers
        rid = (self.client.request_id_header, self.request_id)
        headers = [*response.headers, *added, rid] if added else [*response.headers, rid]
        data = render_response(
            response.status,
            response.body,
            content_type=response.content_type,
            close=close,
            extra=headers,
            date_line=date_line(),
            head_only=self.method == _HEAD,
        )
        self.response_status = response.status
        self.bytes_sent += PyBytes_GET_SIZE(data)
        self.client.write(data)
        self.finish()
        return 0

    cdef int finish(self) except -1:
        if self.finished:
            return 0
        self.end(self.response_status)
        self.client.exchange_finished(self)
        return 0

    cdef int end(self, int status) except -1:
        """What every way of ending does once: release the target's in-flight count and the
        concurrency slots, tell the group's observers, run on_complete, count the request."""
        self.finished = True
        self.uncount_target()
        self.release_slots()
        cdef RouteCore route = self.route
        if route is not None and self.target is not None and (<GroupCore>route.upstream).observes:
            # health, outliers, latency, breakers: only groups that ask. An attempt that ended
            # with no verdict on the target (the client left) is observed too: a half-open
            # breaker's trial gives its place back.
            route.upstream.observe(self)
        if route is not None and route.on_complete:
            for hook in route.on_complete:
                try:
                    hook(self)
                except Exception:  # the response is out: log the plugin's bug, end normally
                    log.exception("on_complete hook %r failed (request %s)", hook, self.request_id.decode("latin-1"))
        self.observe_end(status)
        return 0

    cdef int client_lost(self, str reason) except -1:
        """The client went away (``reason``, for the log): free whatever this exchange holds
        upstream, and record a client abort."""
        if self.finished:
            return 0
        self.finished = True  # first: nothing dropped below may act for this exchange again
        self.abort_reason = reason
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
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
        self.end(self.response_status if self.response_started else 0)
        return 0

    cdef int observe_end(self, int status) except -1:
        """Every request ends here once: count it (C increments) and, when an access log or span
        export is on, hand it the exchange (their only Python calls, and only then)."""
        cdef double now = _now()
        self.ended_at = now
        cdef RouteCore route = self.route
        cdef RequestStats stats = route.stats if route is not None else self.client.unrouted
        cdef double upstream = -1.0  # not observed: no upstream response
        if self.response_started and self.upstream_sent_at > 0.0:
            upstream = now - self.upstream_sent_at  # the last attempt: head sent -> response ended
        if stats is not None:
            stats.count(self.method_slot, status, now - self.received_at, upstream)
        if self.target is not None:
            self.count_attempt(now)
        access_log = self.client.access_log
        if access_log is not None:
            access_log.record(self, status, now)
        spans = self.client.spans
        if spans is not None:
            spans.record(self, status, now)
        return 0

    cdef int count_attempt(self, double now) except -1:
        """One attempt at ``target`` ended: count it there, by the upstream's status class, or as
        failed (connect error, reset, timeout, malformed), or as unanswered (the client left, or
        the gateway ended it first); time it from the request head sent to now."""
        cdef Target target = self.target
        cdef int outcome
        if self.upstream_error is not None:
            outcome = TARGET_FAILED
        elif 100 <= self.upstream_status < 600:
            outcome = self.upstream_status // 100
        else:
            outcome = 0
        target.outcomes[outcome] += 1
        if outcome and self.upstream_sent_at > 0.0:
            target.latency_buckets[_bucket(now - self.upstream_sent_at)] += 1
            target.latency_sum += now - self.upstream_sent_at
        return 0

    # -- for hooks and predicates --------------------------------------------------------------
    @property
    def headers(self) -> list:
        """The request's headers as received, (name, value) bytes pairs; parsed on first use."""
        if self._headers is None:
            self._headers = _header_pairs(self.head_owner, self.fields_lo, self.fields_hi, self.drop_underscores)
        return self._headers

    def header(self, bytes name) -> bytes | None:
        """First value of a request header (name lower-case)."""
        if self._headers is None:
            if self.drop_underscores and b"_" in name:
                return None  # dropped: neither forwarded nor seen
            # PERF: scan the validated header lines where they lie, without splitting them all
            # into pairs (an auth plugin reads one header per request).
            return _find_header(self.head_owner, self.fields_lo, self.fields_hi, name)
        for n, v in self._headers:
            if n.lower() == name:
                return v
        return None

    def header_count(self, bytes name) -> int:
        """How many lines of a request header (name lower-case) ``headers`` holds."""
        if self._headers is None:
            if self.drop_underscores and b"_" in name:
                return 0
            # PERF: counted where the lines lie (an auth plugin asks on every request it reads)
            return _count_header(self.head_owner, self.fields_lo, self.fields_hi, name)
        return sum(1 for n, _ in self._headers if n.lower() == name)

    # The client as the listener's trusted proxies tell it: one rule, fastgw.http.forwarded,
    # worked out on first use and kept (in the ``_client_ip`` slot: the whole Forwarded result).
    # PERF: without a trusted proxy the client is the peer, read without that call (the access
    # log asks on every request).
    @property
    def client_ip(self) -> str:
        if not self.client.trusted:
            return self.client.peer_ip.decode()
        return _forwarded(self).client_ip

    @property
    def client_address(self) -> bytes:
        if not self.client.trusted:
            return self.client.peer_ip  # made once per connection
        return _forwarded(self).client_address

    @property
    def via_trusted_proxy(self) -> bool:
        return self.client.trusted

    @property
    def forwarded_proto(self) -> bytes:
        return _forwarded(self).proto

    @property
    def forwarded_host(self) -> bytes:
        return _forwarded(self).host

    @property
    def forwarded_for(self) -> bytes:
        return _forwarded(self).forwarded_for

    def remove_request_header(self, name: bytes) -> None:
        """Stop a client's request header (name lower-case) from reaching the upstream, for
        headers the gateway sets itself from verified data (claims, consumer), so a client
        cannot forge them. For plugins (re-renders the forwarded lines), not the hot path."""
        lines = self.pass_block.split(b"\r\n")
        kept = [line for line in lines if line.partition(b":")[0].strip().lower() != name]
        if len(kept) != len(lines):
            self.pass_block = b"\r\n".join(kept)
            self._headers = [(n, v) for n, v in self.headers if n.lower() != name]

    def add_request_header(self, name: bytes, value: bytes) -> None:
        """Send one more header line upstream, on every attempt, for a header an ``on_request``
        hook learned by I/O (an auth service's answer): ``upstream_headers`` only exists from
        ``on_upstream_request`` on, and a hook has no per-request slot of its own to keep the
        value until then. For plugins, not the hot path."""
        # A header line must never be injected: no separators in the name, no line ends in either.
        if not name or any(c in b" \t\r\n\x00:" for c in name) or any(c in b"\r\n\x00" for c in value):
            raise ValueError(f"refusing to forward header line {name!r}: {value[:40]!r}")  # a bug
        self.pass_block += name + b": " + value + b"\r\n"

    def param(self, name) -> bytes | None:
        route = self.route
        if route is None:
            return None
        try:
            return self.params[route.param_names.index(name)]
        except ValueError:
            return None


cdef object _forwarded(Exchange exchange):
    """The exchange's ``forwarded.Forwarded``, resolved on first use (headers parsed only when the
    peer is a trusted proxy)."""
    cdef ClientProtocol client
    if exchange._client_ip is None:
        client = exchange.client
        exchange._client_ip = forwarded.resolve(
            client.peer_ip,
            client.trusted,
            exchange.headers if client.trusted else (),
            exchange.host_header,
            exchange.listener.is_trusted,
        )
    return exchange._client_ip


cdef const char* _named_line(const char* p, const char* end, const char* want, Py_ssize_t n) noexcept nogil:
    """The start of the first line in [p, end) named ``want`` (``n`` bytes, lower-case), or NULL;
    lines llhttp already validated (``name: value`` separated by CRLF)."""
    cdef const char* line_end
    while p < end:
        line_end = <const char*>memchr(p, b"\r", end - p)
        if line_end == NULL:
            line_end = end
        if line_end - p > n and p[n] == b":" and _ieq(p, want, n):
            return p
        p = line_end + 2
    return NULL


cdef inline const char* _owner_bytes(object owner):
    return PyBytes_AS_STRING(owner) if type(owner) is bytes else PyByteArray_AS_STRING(owner)


cdef object _find_header(object owner, Py_ssize_t lo, Py_ssize_t hi, bytes name):
    """The value of the first header line named ``name`` (lower-case) in owner[lo:hi], or None."""
    if owner is None:
        return None
    cdef const char* end = _owner_bytes(owner) + hi
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    cdef const char* p = _named_line(_owner_bytes(owner) + lo, end, PyBytes_AS_STRING(name), n)
    if p == NULL:
        return None
    cdef const char* line_end = <const char*>memchr(p, b"\r", end - p)
    if line_end == NULL:
        line_end = end
    cdef const char* value = p + n + 1
    while value < line_end and (value[0] == b" " or value[0] == b"\t"):
        value += 1
    while line_end > value and ((line_end - 1)[0] == b" " or (line_end - 1)[0] == b"\t"):
        line_end -= 1
    return PyBytes_FromStringAndSize(value, line_end - value)


cdef Py_ssize_t _count_header(object owner, Py_ssize_t lo, Py_ssize_t hi, bytes name):
    """How many header lines in owner[lo:hi] are named ``name`` (lower-case)."""
    if owner is None:
        return 0
    cdef const char* end = _owner_bytes(owner) + hi
    cdef const char* p = _owner_bytes(owner) + lo
    cdef Py_ssize_t found = 0
    while True:
        p = _named_line(p, end, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        if p == NULL:
            return found
        found += 1
        p = <const char*>memchr(p, b"\r", end - p)
        if p == NULL:
            return found
        p += 2


cdef list _header_pairs(object owner, Py_ssize_t lo, Py_ssize_t hi, bint drop_underscores):
    """Split header lines llhttp already validated (no obs-fold, no bare LF) into pairs; names
    with "_" are left out when the listener drops them."""
    if owner is None:
        return []
    pairs = []
    for line in bytes(owner[lo:hi]).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if drop_underscores and b"_" in name:
            continue
        pairs.append((name, value.strip(b" \t")))
    return pairs


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


cdef bint _has_header(list pairs, bytes lower_name):
    for name, _ in pairs:
        if (<bytes>name).lower() == lower_name:
            return True
    return False


cdef list _response_pairs(HttpParser parser, const unsigned char* kinds, object drop_named):
    """The upstream's headers the gateway forwards, as (name, value) pairs for hooks."""
    cdef const char* head = parser.head
    cdef Field* names = parser.st.names
    cdef Field* values = parser.st.values
    cdef list kept = []
    cdef int i
    cdef bytes name
    for i in range(parser.st.count):
        if kinds[i] > R_CL:
            continue
        name = PyBytes_FromStringAndSize(head + names[i].off, names[i].len)
        if drop_named is not None and name.lower() in drop_named:
            continue
        kept.append((name, PyBytes_FromStringAndSize(head + values[i].off, values[i].len)))
    return kept


cdef bytes _render_response_head(
    bytes line,
    list kept,
    HttpParser parser,
    const unsigned char* kinds,
    Py_ssize_t passed_size,
    bint rechunk,
    bint close,
    bint http_10,
    list added,
    bytes date,
    bytes rid_name,
    bytes rid_value,
):
    """Status line, the headers (``kept``: pairs chosen by hooks or filtered by Connection; None:
    the upstream's own lines whose ``kinds`` say they pass, ``passed_size`` bytes, then ``added``,
    pairs plugins add without reading the others: PERF, no pairs made of the upstream's lines),
    ``date`` (the Date line, when the upstream sent none), the request id line (``rid_name``:
    ``rid_value``; None for a 1xx), the framing and connection lines, and the blank line: one
    allocation."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(line) + 2
    cdef const char* head = parser.head
    cdef Field* names = parser.st.names
    cdef Field* values = parser.st.values
    cdef int i, count = parser.st.count
    cdef bytes name, value
    cdef char* p
    if kept is not None:
        for name, value in kept:
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    else:
        size += passed_size
    if added is not None:
        for name, value in added:
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    if date is not None:
        size += PyBytes_GET_SIZE(date)
    if rid_name is not None:
        size += PyBytes_GET_SIZE(rid_name) + PyBytes_GET_SIZE(rid_value) + 4
    if rechunk:
        size += PyBytes_GET_SIZE(_TRANSFER_CHUNKED)
    if close:
        size += PyBytes_GET_SIZE(_CONNECTION_CLOSE)
    elif http_10:
        size += PyBytes_GET_SIZE(_CONNECTION_KEEP_ALIVE)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = _put(PyBytes_AS_STRING(out), line)
    if kept is not None:
        for name, value in kept:
            p = _put_line(p, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    else:
        for i in range(count):
            if kinds[i] <= R_CL:
                p = _put_line(p, head + names[i].off, names[i].len, head + values[i].off, values[i].len)
    if added is not None:
        for name, value in added:
            p = _put_line(p, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    if date is not None:
        p = _put(p, date)
    if rid_name is not None:
        p = _put_line(p, PyBytes_AS_STRING(rid_name), PyBytes_GET_SIZE(rid_name), PyBytes_AS_STRING(rid_value), PyBytes_GET_SIZE(rid_value))
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
cdef class UpstreamConnection(Timed):
    def __init__(self, pool) -> None:
        self.pool = pool
        self.transport = None
        self.outlet.fd = -1
        self.exchange = None
        self.parser = HttpParser(False, UPSTREAM_MAX_HEAD, UPSTREAM_MAX_FIELDS)
        self.interim = False
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
        self.head_only = False
        self.reusable = False  # set by detach(): may the pool keep it after this response
        self.close_delimited = False  # the current response's body ends when the upstream closes

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write_bound = transport.write
        _outlet_open(&self.outlet, transport)
        self.wheel = running_wheel()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.outlet.fd = -1
        self.deadline = 0.0
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
        self.now = _now()
        if not self.sending and not self.reading_paused:
            self.arm(self.now)  # progress: the next pause is timed from now
        cdef HttpParser parser = self.parser
        parser.feed(data if type(data) is bytes else bytes(data))
        cdef int event
        try:
            while self.exchange is exchange:
                event = parser.next()
                if event == EV_MORE:
                    break
                if event == EV_HEAD:
                    self.on_head(exchange, parser)
                elif event == EV_BODY:
                    exchange.on_upstream_body(_body_piece(parser))
                elif event == EV_DONE:
                    self.on_message_complete(exchange, parser)
                else:
                    parser.release()
                    exchange.on_upstream_malformed(self, _response_problem(parser, event))
                    return
            else:
                if parser.pos < parser.end:
                    self.reusable = False  # bytes after the response: a reply nobody asked for
        except Exception:
            # Not the upstream's fault: our own code raised. Log it and answer 500.
            parser.release()
            log.error("internal error handling an upstream response", exc_info=True)
            if self.exchange is exchange:
                self.exchange = None
                self.abort()
                exchange.conn = None
                self.pool.release_conn(self)
                exchange.fail(UpstreamFault("internal error", 500))
            return
        parser.release()
        exchange.flush_to_client()
        if self.exchange is None and not self.closed:
            # The response ended inside this read. Releasing only now, after the parser returned,
            # means no other exchange can be handed this connection while its old read is parsed.
            # (A connection dropped on the way was released by whoever dropped it.)
            self.pool.release_conn(self)

    def eof_received(self) -> bool:
        cdef Exchange exchange = self.exchange
        if exchange is not None and self.close_delimited:
            # A body framed by the close ends here (llhttp would only confirm it).
            exchange.on_upstream_complete(self, False)
            exchange.flush_to_client()
            if not self.closed:  # else whoever closed it (a failing body filter) released it
                self.pool.release_conn(self)
        # uvloop closes the transport on return, and drops what is written to it from now until
        # connection_lost: so must the direct path (the pool may hand the connection out once
        # more in between; that request is then retried or failed as before).
        self.outlet.fd = -1
        return False

    cpdef pause_reading(self):
        """Backpressure from a slow client: the upstream is not stalled, so no read deadline."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.reading_paused = True
            self.deadline = 0.0

    cpdef resume_reading(self):
        if not self.reading_paused:
            return  # PERF: our own flag, not transport.is_reading(): detach() asks every response
        self.reading_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self.arm(_now())

    cdef int write(self, bytes data) except -1:
        """PERF: the transport's bound write, looked up once per connection."""
        _outlet_write(&self.outlet, self.write_bound, self.transport, data)
        return 0

    cdef int arm(self, double now) except -1:
        """Set the deadline that applies now (see ``__init__``): the send timeout while the request
        streams up, then the head timeout until the response head, then the read timeout between
        reads; none while we paused reading for a slow client. The route's total timeout, if any,
        bounds them all, paused or not."""
        cdef Exchange exchange = self.exchange
        cdef double timeout
        if exchange is None:
            self.deadline = 0.0
            return 0
        if self.reading_paused:
            self.set_deadline(exchange.total_deadline)
            return 0
        if self.sending:
            timeout = self.send_timeout
        elif not self.got_head and self.head_timeout:
            timeout = self.head_timeout
        else:
            timeout = self.read_timeout
        cdef double at = now + timeout
        if exchange.total_deadline and exchange.total_deadline < at:
            at = exchange.total_deadline
        self.set_deadline(at)
        return 0

    cdef int request_sent(self) except -1:
        """The whole request went upstream: from now on the read timeout applies."""
        self.sending = False
        self.arm(_now())
        return 0

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- parser events -----------------------------------------------------------------------
    cdef int on_head(self, Exchange exchange, HttpParser parser) except -1:
        cdef int status = parser.status()
        if status < 200 and status != 101:
            self.interim = True  # 1xx: passed on (or not) by the exchange; the final head follows
            exchange.on_upstream_interim(status, parser)
            return 0
        if not self.got_head:
            self.got_head = True
            if self.head_timeout and not self.reading_paused:
                self.arm(self.now)  # from here the read timeout applies between reads
        exchange.on_upstream_head(status, parser)
        return 0

    cdef int on_message_complete(self, Exchange exchange, HttpParser parser) except -1:
        if self.interim:
            self.interim = False
            return 0
        exchange.on_upstream_complete(self, parser.keep_alive())
        return 0

    # -- used by the exchange and the pool ---------------------------------------------------
    cdef int begin(self, Exchange exchange, bint head_only, RouteCore route, bint sending, double now) except -1:
        """Bind to an exchange for one request/response; ``sending``: a body is still to come."""
        self.exchange = exchange
        self.received = False
        self.close_delimited = False
        self.head_only = head_only
        self.interim = False
        self.parser.st.skip_body = head_only  # llhttp cannot know the request was a HEAD
        self.read_timeout = route.read_timeout
        self.send_timeout = route.send_timeout
        self.head_timeout = route.head_timeout
        self.got_head = False
        self.sending = sending
        self.arm(now)
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
        self.outlet.fd = -1
        if self.transport is not None:
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        self.outlet.fd = -1
        if self.transport is not None:
            self.transport.abort()

    cdef inline int set_deadline(self, double at) except -1:
        """While busy: the exchange's current timeout; while idle in the pool: the idle timeout."""
        self.deadline = at
        self.wheel.file(self, at)
        return 0

    cpdef expire(self, double now):
        """The wheel's call: time out the exchange, or close an idle connection, when due."""
        cdef Exchange exchange
        if self.closed or not self.deadline:
            return
        if now < self.deadline:
            self.wheel.file(self, self.deadline)
            return
        self.deadline = 0.0
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_timeout(self)
            self.abort()
        else:
            self.close()  # idle past the pool's idle timeout


# -- what the exchange reads of the plan, at C speed ----------------------------------------------
# The plan's Python classes (RoutePlan, UpstreamGroup, TargetPool) subclass these, so the per-request
# path reads typed fields and calls C methods instead of looking up Python attributes and calling
# Python functions. Everything else about a route, a group or a pool stays in Python.

cdef class RouteCore:
    """The per-request face of a compiled route (``plan.RoutePlan`` is the rest)."""

    def __init__(self, upstream, timeouts, chain, bint preserve_host, strip_prefix) -> None:
        self.upstream = upstream
        self.timeouts = timeouts
        self.connect_timeout = timeouts.connect
        self.read_timeout = timeouts.read
        self.send_timeout = timeouts.send
        self.head_timeout = timeouts.head
        self.total_timeout = timeouts.total
        self.chain = chain
        self.on_request, self.on_upstream_request, self.on_response, self.on_complete = chain
        self.preserve_host = preserve_host
        self.strip_prefix = strip_prefix
        self.rewrite = None
        self.retry = None
        self.requests = 0
        self.limiters = ()
        self.stats = RequestStats()

    cdef bytes path_upstream(self, bytes path, tuple params):
        """The path sent upstream: the rewrite template, the path minus strip_prefix, or as is."""
        if self.rewrite is not None:
            return self.rewrite.render(params)
        cdef bytes prefix = self.strip_prefix
        if prefix is None:
            return path
        cdef bytes rest = path[PyBytes_GET_SIZE(prefix):]
        return rest if PyBytes_GET_SIZE(rest) and PyBytes_AS_STRING(rest)[0] == b"/" else b"/" + rest

    def upstream_path(self, path: bytes, params: tuple) -> bytes:
        return self.path_upstream(path, params)


@cython.final
cdef class Target:
    """One upstream server of a group, with its pool and the Host value sent to it."""

    def __init__(self, str host, int port, int weight, PoolCore pool, bytes host_header) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.pool = pool
        self.host_header = host_header
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.in_flight = 0

    def snapshot(self) -> dict:
        """{"responses": {"1xx".."5xx" | "failed" | "none": n}, "latency": (per-bucket counts,
        sum of seconds)}: every attempt sent to this target, summed over plans that shared it."""
        cdef int i
        return {
            "responses": {_OUTCOME_NAMES[i]: self.outcomes[i] for i in range(TARGET_OUTCOMES)},
            "latency": ([self.latency_buckets[i] for i in range(LATENCY_BUCKETS)], self.latency_sum),
        }


cdef class GroupCore:
    """The per-request face of an upstream group: the only target, when there is one (no pick),
    and whether the group wants ``observe(exchange)`` called as each exchange sent to it ends."""

    def __init__(self) -> None:
        self.name = ""
        self.single = None
        self.observes = False


cdef class PoolCore:
    """The synchronous half of a target's keep-alive pool (``upstream/pool.py`` adds the async
    half): a LIFO idle list, the counters, and taking back a connection after a response."""

    def __init__(self, int max_idle, double idle_timeout) -> None:
        self.idle = []
        self.open = 0  # connections open or being opened
        self.in_use = 0
        self.waiters = deque()  # (future, deadline) of requests waiting for a connection
        self.opened = 0
        self.reused = 0
        self.connect_errors = 0
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout

    @property
    def stats(self) -> dict:
        """Counters read by metrics and tests."""
        return {"opened": self.opened, "reused": self.reused, "connect_errors": self.connect_errors}

    cdef UpstreamConnection take_idle_conn(self):
        """The most recently used idle connection still open, or None (the synchronous fast path)."""
        cdef list idle = self.idle
        cdef UpstreamConnection conn
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.deadline = 0.0
                self.in_use += 1
                self.reused += 1
                return conn
        return None

    def take_idle(self) -> UpstreamConnection | None:
        return self.take_idle_conn()

    cdef int release_conn(self, UpstreamConnection conn) except -1:
        """Take a connection back after a response; keep it only if it is clean and reusable."""
        self.in_use -= 1
        if not conn.reusable or conn.closed:
            conn.close()
            return 0
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()[0]
            if not waiter.done():
                self.in_use += 1
                self.reused += 1
                waiter.set_result(conn)
                return 0
        if len(self.idle) >= self.max_idle:
            conn.close()
            return 0
        conn.set_deadline(coarse() + self.idle_timeout)  # PERF: no precise read; a few ms early at most
        self.idle.append(conn)
        return 0

    def release(self, UpstreamConnection conn) -> None:
        self.release_conn(conn)

    def give_back(self, UpstreamConnection conn) -> None:
        """A waiter was cancelled after it was handed a connection: return it unused."""
        conn.reusable = not conn.closed
        self.release_conn(conn)


@cython.final
cdef class Limiter:
    """At most ``limit`` requests in flight (a route's, or an upstream's), up to ``queue_max`` more
    waiting at most ``queue_timeout`` seconds for a slot, the rest answered 503 at once: a slow
    upstream cannot take every connection, and a burst waits briefly instead of failing."""

    def __init__(self, str name, int limit, int queue_max, double queue_timeout) -> None:
        self.name = name
        self.limit = limit
        self.queue_max = queue_max
        self.queue_timeout = queue_timeout
        self.active = 0
        self.waiting = deque()  # (exchange, timer handle)
        self.refused = 0

    cdef bint admit(self, Exchange exchange) except -1:
        """True: a slot is taken. False: the exchange waits for one, or was answered 503."""
        if self.active < self.limit:
            self.active += 1
            return True
        if len(self.waiting) < self.queue_max:
            timer = asyncio.get_running_loop().call_later(self.queue_timeout, self._expire, exchange)
            self.waiting.append((exchange, timer))
            return False
        self.refused += 1
        exchange.answer_fault(
            UpstreamFault(f"{self.name}: {self.limit} requests in flight, {self.queue_max} waiting", 503),
            [(b"Retry-After", b"1")],
        )
        return False

    cdef int release(self) except -1:
        """A slot is free: hand it to the oldest waiter still there, else keep it free."""
        cdef Exchange exchange
        while self.waiting:
            exchange, timer = self.waiting.popleft()
            timer.cancel()
            if not exchange.finished:
                # The slot passes on without ever being free; the waiter resumes on the next turn
                # of the loop, not inside whatever released it.
                asyncio.get_running_loop().call_soon(exchange._forward_admitted)
                return 0
        self.active -= 1
        return 0

    cdef int forget(self, Exchange exchange) except -1:
        """The exchange ended while waiting here."""
        for entry in self.waiting:
            if entry[0] is exchange:
                entry[1].cancel()
                self.waiting.remove(entry)
                break
        return 0

    def _expire(self, Exchange exchange) -> None:
        for entry in self.waiting:
            if entry[0] is exchange:
                self.waiting.remove(entry)
                self.refused += 1
                exchange.answer_fault(
                    UpstreamFault(f"{self.name}: no request slot within {self.queue_timeout:g}s", 503),
                    [(b"Retry-After", b"1")],
                )
                return
