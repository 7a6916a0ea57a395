# fastgw._proxy: table of contents.
#
# One extension built from the pieces in proxy/ (uvloop's way: loop.pyx includes handles/*.pyx),
# so that every call between pieces is a C call. Each piece's declarations are included here in
# dependency order; its code is included by _proxy.pyx, whose opening docstring walks the
# request path. The typed face for Python is _proxy.pyi.

from cpython.ref cimport PyObject

from fastgw._router cimport Router
from fastgw.http._clock cimport Timed, TimerWheel
from fastgw.http._parser cimport Field, HttpParser

cdef class ListenerCore
cdef class RouteCore
cdef class Target
cdef class GroupCore
cdef class PoolCore
cdef class Limiter
cdef class RequestStats
cdef class RequestIds
cdef class Exchange
cdef class Downstream
cdef class UpstreamSide
cdef class H2Connection
cdef class H2Stream
cdef class H2UpstreamConnection
cdef class H2UpstreamStream
cdef class TunnelPolicy

include "proxy/render.pxd"       # wire bytes and the direct-send outlet
include "proxy/ids.pxd"          # request ids, W3C trace context
include "proxy/stats.pxd"        # request counters and latency histograms
include "proxy/shelf.pxd"        # objects kept for reuse, last in first out
include "proxy/plan.pxd"         # what the hot path reads of the compiled plan
include "proxy/pool.pxd"         # a target's keep-alive pool (its synchronous half)
include "proxy/limiter.pxd"      # concurrency limits
include "proxy/exchange.pxd"     # one exchange, and the client and upstream sides' interfaces
include "proxy/nghttp2.pxd"      # the HTTP/2 library compiled in (vendor/nghttp2)
include "proxy/client.pxd"       # HTTP/1.1 client connections
include "proxy/h2.pxd"           # HTTP/2 client connections and their streams
include "proxy/upstream.pxd"     # HTTP/1.1 upstream connections
include "proxy/h2_upstream.pxd"  # HTTP/2 upstream connections and their streams
include "proxy/collect.pxd"      # the gateway's own calls, answered in memory
include "proxy/tunnel.pxd"       # protocol upgrades: the 101, then both connections spliced
