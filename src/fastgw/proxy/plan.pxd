# What the hot path reads of the compiled plan (plan.pyx), at C speed. The plan's Python classes
# subclass these (plan.ListenerPlan, plan.RoutePlan, upstream.group.UpstreamGroup); everything
# else about a listener, a route or a group stays in Python.

from libc.stdint cimport uint64_t

cdef enum:                   # a listener's headers_with_underscores
    U_DROP = 0               # not forwarded, not seen by plugins (nginx, Envoy's DROP_HEADER)
    U_REJECT                 # 400
    U_ALLOW                  # forwarded as any other header


cdef class ListenerCore:
    cdef readonly Router router
    cdef readonly Py_ssize_t max_header_bytes    # the request head, whole -> 431
    cdef readonly int max_headers                # header lines -> 431
    cdef readonly Py_ssize_t max_uri_bytes       # the request-target -> 414
    cdef readonly long long max_body_bytes       # -> 413
    cdef readonly Py_ssize_t max_connections     # open client connections per worker
    cdef readonly Py_ssize_t max_pipeline        # parsed requests queued behind the active one
    cdef readonly Py_ssize_t buffer_bytes        # write-buffer high watermark per side
    cdef readonly double head_timeout            # client timeouts (seconds)
    cdef readonly double body_timeout
    cdef readonly double keepalive_timeout
    cdef readonly double send_timeout
    cdef readonly double linger_timeout
    cdef readonly int underscores                # U_*
    cdef readonly bytes request_id_header        # as written on the wire, e.g. b"X-Request-Id"
    cdef readonly bytes request_id_lower
    cdef readonly bint trace_context             # continue or start a W3C trace
    cdef readonly bytes scheme                   # b"https" on a TLS listener, else b"http"
    cdef readonly object tls                     # tls.server.ServerTls, or None
    cdef readonly tuple cert_headers             # (field, header name bytes): the client
                                                 # certificate's facts sent upstream (mTLS)
    cdef readonly object owned_headers           # frozenset of lower-case names the gateway
                                                 # sets itself (clients' copies dropped), or None
    cdef readonly bint h2c                       # cleartext HTTP/2 by prior knowledge
    cdef readonly int h2_max_streams             # HTTP/2 SETTINGS: concurrent streams ...
    cdef readonly int h2_stream_window           # ... and each stream's receive window
    cdef Shelf parser_shelf                      # request parsers of idle connections, reset,
                                                 # for the next read of any (client.pyx)


cdef class RouteCore:
    # What the exchange reads of a compiled route.
    cdef public object upstream          # GroupCore (plan: UpstreamGroup)
    cdef public object timeouts          # UpstreamTimeouts, and its values:
    cdef readonly double connect_timeout
    cdef readonly double read_timeout
    cdef readonly double send_timeout
    cdef readonly double head_timeout    # 0: read_timeout applies to the head too
    cdef readonly double total_timeout   # 0: none
    cdef public object chain             # HookChain, and its four tuples:
    cdef readonly tuple on_request
    cdef readonly tuple on_upstream_request
    cdef readonly tuple on_response
    cdef readonly tuple on_complete
    cdef public bint preserve_host
    cdef public object strip_prefix      # bytes or None
    cdef public object rewrite           # RewriteTemplate or None
    cdef public object retry             # upstream.retry.RetryRules: when an attempt is sent again
    cdef public long long requests       # requests matched to it (the retry budget's base)
    cdef public tuple limiters           # Limiters an exchange takes a slot in, in order
    cdef public RequestStats stats       # what ended here, counted in C (adopted by id on reload)
    cdef public TunnelPolicy tunnel      # the protocols it lets an Upgrade switch to; None: none

    cdef bytes path_upstream(self, bytes path, tuple params)


cdef class Target:
    cdef readonly str host
    cdef readonly int port
    cdef readonly int weight
    cdef readonly PoolCore pool
    cdef readonly bytes host_header      # the Host value sent upstream
    cdef readonly str label              # host:port, for logs and metrics (never error bodies)
    cdef public int in_flight            # requests sent to it and not finished (least-conn, p2c)
    cdef long long rr_credit             # smooth weighted round robin's running credit
    cdef long long outcomes[TARGET_OUTCOMES]   # attempts by outcome (stats.pxd)
    cdef long long latency_buckets[LATENCY_BUCKETS]  # request head sent -> response ended
    cdef double latency_sum
    # Peak-EWMA's latency estimate (PeakEwmaCore): state of the target, kept with it through
    # reloads that adopt it and dropped with it when discovery removes it.
    cdef bint ewma_measured              # has had a sample
    cdef double ewma_seconds             # the estimate at ewma_at
    cdef double ewma_at                  # the monotonic time of the last sample


cdef class BalancerCore:
    # A balancer's per-request work in C (upstream/balance.py's PowerOfTwo and PeakEwma hold
    # one): the group picks through it with no Python call, and it learns from ended exchanges.
    cdef uint64_t rng_state              # splitmix64
    cdef readonly bint learns            # wants learn(exchange) as each exchange ends

    cdef double uniform(self) noexcept   # [0, 1)
    cdef Target draw(self, tuple targets, double point, Target skip)
    cdef Target choose(self, tuple targets)          # targets: the usable ones, never empty
    cdef int better(self, Target b, Target a) except -1   # b strictly better than a
    cdef int learn(self, object exchange) except -1  # an Exchange, or any object with its fields


cdef class RoundRobinCore(BalancerCore):
    pass


cdef class PowerOfTwoCore(BalancerCore):
    pass


cdef class PeakEwmaCore(BalancerCore):
    cdef readonly double decay           # seconds: the estimate's time constant
    cdef readonly double penalty         # seconds: the least a failed exchange counts as
    cdef object clock                    # a callable for tests, else None: the monotonic clock

    cdef double now(self) except? -1.0
    cdef double cost(self, Target target, double now) noexcept
    cdef int record(self, Target target, double sample, double now) except -1
    cdef int learn_from(self, Target target, bint failed, double sent, double head) except -1


cdef class GroupCore:
    # What the exchange reads of an upstream group.
    cdef public str name                 # the configured name: how errors name the upstream
    cdef public Target single            # the only target, or None: then choose() picks
    cdef public bint observes            # call observe(exchange) when an exchange sent to it ends
    cdef public tuple usable             # the targets in rotation, in config order
    cdef public BalancerCore core        # the balancer's C core, or None: its pick() in Python
    cdef public bint core_picks          # choose() picks through core (no gate to tell)
    cdef public tuple observers          # Python observers (health, outliers, breakers)

    cdef Target choose(self, Exchange exchange, Target exclude)
    cdef int observe_exchange(self, object exchange) except -1
