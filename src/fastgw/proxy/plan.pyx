# -- what the hot path reads of the plan, at C speed -------------------------------------------------
# The plan's Python classes (ListenerPlan, RoutePlan, UpstreamGroup) subclass these, so the
# per-request path reads typed fields instead of looking up Python attributes.

cdef class ListenerCore:
    """The per-request face of a compiled listener (``plan.ListenerPlan`` is the rest)."""

    def __init__(
        self, Router router, limits, timeouts, Py_ssize_t buffer_bytes, str underscores,
        str request_id_header, bint trace_context, tls=None, tuple cert_headers=(), http2=None,
    ) -> None:
        self.router = router
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_uri_bytes = limits.max_uri_bytes
        self.max_body_bytes = limits.max_body_bytes
        self.max_connections = limits.max_connections
        self.max_pipeline = limits.max_pipeline
        self.buffer_bytes = buffer_bytes
        self.head_timeout = timeouts.head
        self.body_timeout = timeouts.body
        self.keepalive_timeout = timeouts.keepalive
        self.send_timeout = timeouts.send
        self.linger_timeout = timeouts.linger
        self.underscores = UNDERSCORE_POLICIES[underscores]
        self.request_id_header = request_id_header.encode("ascii")
        self.request_id_lower = self.request_id_header.lower()
        self.trace_context = trace_context
        self.tls = tls
        self.scheme = b"https" if tls is not None else b"http"
        self.cert_headers = tuple((field, header.encode("ascii")) for field, header in cert_headers)
        self.owned_headers = frozenset(h.lower() for _, h in self.cert_headers) or None
        self.h2c = http2 is not None and http2.enabled and http2.h2c
        self.h2_max_streams = http2.max_concurrent_streams if http2 is not None else 100
        self.h2_stream_window = http2.stream_window_bytes if http2 is not None else 65535


# A listener's headers_with_underscores, by its configured name.
UNDERSCORE_POLICIES = {"drop": U_DROP, "reject": U_REJECT, "allow": U_ALLOW}


cdef class RouteCore:
    """The per-request face of a compiled route (``plan.RoutePlan`` is the rest)."""

    def __init__(
        self, upstream, timeouts, chain, bint preserve_host, strip_prefix, rewrite, retry,
        tuple limiters, RequestStats stats,
    ) -> None:
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
        self.rewrite = rewrite
        self.retry = retry
        self.requests = 0
        self.limiters = limiters
        self.stats = stats

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
