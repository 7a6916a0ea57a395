# cython: language_level=3
"""The per-request path, compiled: one extension built from the pieces in ``proxy/``.

The table of contents is ``_proxy.pxd`` (each piece's declarations); the typed face for Python is
``_proxy.pyi``. Pieces are included, not imported, so every call between them is a C call.

A request's way, piece by piece (hook points in brackets):

1. ``client.pyx``: an accepted HTTP/1.1 connection (``ClientProtocol``) feeds each read to its
   llhttp parser (``fastgw.http._parser``). A complete head goes to ``request_head.pyx``: the
   checks llhttp leaves to us, the header lines classified where they lie, the forwarded-header
   block copied from the head, the request id and trace context (``ids.pyx``). The result is an
   ``Exchange`` (``exchange.pyx``), queued behind earlier pipelined requests.
2. ``exchange.pyx``: its turn comes (``start``): the listener's router (``fastgw._router``)
   matches it -> 404/405, or the route; 100 Continue; [on_request] (``hooks.pyx``: may answer,
   or await I/O); a slot in each concurrency limit (``limiter.pyx``: wait, or 503); a target
   from the route's upstream group (``plan.pyx``: one target, else the group's balancer) and a
   connection from its pool (``pool.pyx``: an idle one at once, else ``upstream/pool.py``'s
   async half); [on_upstream_request]; the upstream side sends the head and body.
3. ``upstream.pyx``: the upstream connection (``UpstreamConnection``) renders the head, frames
   the body, parses the response and hands the exchange its head's lines: 1xx passed on;
   [on_response] (headers, a replacement, body filters); the client side frames and renders the
   head (``client.pyx``), then the body as it comes, flushed once per upstream read
   (``render.pyx``: straight to the socket while the transport holds nothing).
4. The end: [on_complete], the group's observers (health, outliers, breakers, latency), the
   counters (``stats.pyx``), the access log and span export; the upstream connection goes back
   to its pool if both directions ended cleanly; the client connection takes its next request.

Failures follow one rule (``Exchange``'s docstring): before anything went to the client, one
error response; after, a cut. A failed attempt is sent again only as ``upstream/retry.py``'s
rules allow. The gateway's own calls (an aggregate's backends) take the same path from step 2
with an in-memory client side (``collect.pyx``).

An Upgrade request (WebSocket) takes the same path to the upstream's 101; then ``tunnel.pyx``
takes both connections over and splices them byte for byte until either side ends.

The exchange talks to its client side and its upstream side only through the ``Downstream`` and
``UpstreamSide`` interfaces (``proxy/exchange.pxd``), so an HTTP/2 stream can drive the same
exchange. The asyncio callbacks are ``def`` methods (asyncio duck-types its
protocols); everything the pieces call on each other is ``cdef``; what Python calls (pools,
listeners, plugins) is ``def`` or ``cpdef``.

PERF: a proxied request creates one Exchange (from a free list), the path, query and request id
bytes, the pass block, the upstream head and the client head (one allocation each); no Task,
Future, dict or per-header object; four clock reads; deadlines filed on the loop's timer wheel
(``fastgw.http._clock``), no timer of their own.
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memchr, memcmp, memcpy

from fastgw._router cimport MethodNotAllowed, RouteMatch
from fastgw.http._clock cimport coarse, date_line, monotonic, running_wheel
from fastgw.http._parser cimport (
    EV_BODY,
    EV_DONE,
    EV_HEAD,
    EV_HEAD_TOO_BIG,
    EV_MORE,
    EV_TARGET_TOO_LONG,
    EV_TOO_MANY_FIELDS,
    EV_UPGRADE,
    _ieq,
)

import asyncio
import logging
import os
from collections import deque
from functools import partial

from uvloop.loop import TCPTransport, UnixTransport

from fastgw.hooks import Response
from fastgw.http import forwarded, limits
from fastgw.http.faults import ClientFault, ConnectFault, HttpFault, UpstreamFault
from fastgw.http.wire import (
    CONNECTION_CLOSE,
    CONNECTION_KEEP_ALIVE,
    CONTINUE_100,
    CRLF,
    LAST_CHUNK,
    STATUS_LINES,
    TRANSFER_CHUNKED,
    error_body,
    render_error,
    render_answer_head,
)

log = logging.getLogger("fastgw")

cdef bytes _HEAD = b"HEAD"
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})
# STATUS_LINES by code, as a tuple: an index instead of a dict lookup.
cdef tuple STATUS_LINE_BY_CODE = tuple([STATUS_LINES.get(code) for code in range(600)])


cdef inline double _now() noexcept nogil:
    """The precise monotonic clock (the coarse one lags by up to a few jiffies, which would fire
    timeouts early). PERF: ~17 ns a read; each loop entry point reads it once and the request
    path reuses it (``Downstream.now``, ``UpstreamSide.now``)."""
    return monotonic()


# The kinds of failure the exchange reports to a route's retry rules (upstream/retry.py).
FAILURE_CAUSES = {0: "other", F_CONNECT: "connect", F_STALE: "stale", F_RESET: "reset", F_TIMEOUT: "reset", F_STATUS: "status"}


# Bumped when a reload swaps any listener's plan: each connection compares its own copy once per
# request and re-reads its listener's plan when they differ (a C compare, no attribute lookup).
cdef unsigned long long _plan_generation = 0


def plan_changed() -> None:
    """A listener's plan was replaced: every connection takes it from its next request on."""
    global _plan_generation
    _plan_generation += 1


include "proxy/render.pyx"
include "proxy/tls_link.pyx"
include "proxy/ids.pyx"
include "proxy/stats.pyx"
include "proxy/shelf.pyx"
include "proxy/plan.pyx"
include "proxy/pool.pyx"
include "proxy/limiter.pyx"
include "proxy/response_head.pyx"
include "proxy/hooks.pyx"
include "proxy/header_lines.pyx"
include "proxy/client_facts.pyx"
include "proxy/exchange.pyx"
include "proxy/request_head.pyx"
include "proxy/client.pyx"
include "proxy/h2.pyx"
include "proxy/h2_stream.pyx"
include "proxy/upstream.pyx"
include "proxy/h2_upstream.pyx"
include "proxy/h2_upstream_stream.pyx"
include "proxy/collect.pyx"
include "proxy/tunnel.pyx"
