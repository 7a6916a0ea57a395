# -- what the hot path reads of the plan, at C speed -------------------------------------------------
# The plan's Python classes (ListenerPlan, RoutePlan, UpstreamGroup) subclass these, so the
# per-request path reads typed fields instead of looking up Python attributes.

from libc.math cimport INFINITY, exp

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
        self.parser_shelf = Shelf()


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


# -- balancers' per-request work in C ----------------------------------------------------------------
# RoundRobin, PowerOfTwo and PeakEwma (upstream/balance.py) keep their configuration in Python and
# their per-request work here: the group picks through the core with no Python call (round robin's
# credits; two random targets by weight, the less loaded wins) and the core learns from each ended
# exchange in C.

cdef extern from *:
    """
    /* splitmix64 (Steele, Lea and Flood, 2014): a 64-bit state, one add and three xor-shift-
       multiplies a draw; statistically sound for choosing targets, never for secrets. */
    static inline uint64_t fastgw_splitmix64(uint64_t *state) {
        uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    """
    uint64_t fastgw_splitmix64(uint64_t* state) noexcept nogil


cdef class BalancerCore:
    """Two distinct targets drawn at random by weight, and the better of the two (``better``,
    each subclass's rule). A balancer in Python holds one and the group picks through it."""

    def __init__(self, uint64_t seed) -> None:
        self.rng_state = seed
        self.learns = False

    cdef double uniform(self) noexcept:
        return (fastgw_splitmix64(&self.rng_state) >> 11) * (1.0 / 9007199254740992.0)  # 2**-53

    cdef Target draw(self, tuple targets, double point, Target skip):
        """The target whose weight interval (in order, ``skip`` left out) holds ``point``."""
        cdef Target chosen = <Target>targets[0]
        cdef Target target
        cdef Py_ssize_t i
        for i in range(len(targets)):
            target = <Target>targets[i]
            if target is skip:
                continue
            chosen = target  # also the answer when float rounding leaves point at the very end
            point -= target.weight
            if point < 0:
                break
        return chosen

    cdef Target choose(self, tuple targets):
        cdef Py_ssize_t i, count = len(targets)
        if count == 1:
            return <Target>targets[0]
        cdef long long total = 0
        for i in range(count):
            total += (<Target>targets[i]).weight
        cdef Target a = self.draw(targets, self.uniform() * total, None)
        cdef Target b = self.draw(targets, self.uniform() * (total - a.weight), a)
        return b if self.better(b, a) else a  # a on a tie: an idle group spreads by weight

    cdef int better(self, Target b, Target a) except -1:
        """Whether ``b`` is strictly better than ``a`` (subclasses)."""
        return 0

    cdef int learn(self, object exchange) except -1:
        """An exchange sent to the group ended (only when ``learns``)."""
        return 0

    def pick(self, tuple targets) -> Target:
        """One of ``targets`` (usable ones, never empty) for a request."""
        if not targets:
            raise ValueError("no target to pick from")
        return self.choose(targets)


cdef class RoundRobinCore(BalancerCore):
    """Smooth weighted round robin (nginx's): at each pick every target gains its weight, the
    highest credit wins (the first on a tie) and pays back the total. The credit is kept on each
    ``Target``, so it survives the target leaving rotation and coming back."""

    cdef Target choose(self, tuple targets):
        cdef Py_ssize_t i, count = len(targets)
        cdef Target target, best = <Target>targets[0]
        cdef long long total = 0
        if count == 1:
            return best  # its credit would gain its weight and pay it back
        for i in range(count):
            target = <Target>targets[i]
            target.rr_credit += target.weight
            total += target.weight
            if target.rr_credit > best.rr_credit:
                best = target
        best.rr_credit -= total
        return best


cdef class PowerOfTwoCore(BalancerCore):
    """Fewer in flight per unit of weight wins (compared as cross products: exact integers)."""

    cdef int better(self, Target b, Target a) except -1:
        return <long long>b.in_flight * a.weight < <long long>a.in_flight * b.weight


cdef inline double ewma_sample(bint failed, double sent, double head, double penalty) noexcept:
    """The latency sample (seconds) an ended exchange gives, or -1.0 when it gives none: head
    minus sent; a failure at least ``penalty``; nothing when the upstream never answered."""
    cdef double measured = head - sent if head and sent else 0.0
    if failed:
        return measured if measured > penalty else penalty
    return measured if head and sent else -1.0


cdef class PeakEwmaCore(BalancerCore):
    """Cost = latency estimate x (in flight + 1) / weight, the estimate kept on each ``Target``
    (see ``PeakEwma`` in upstream/balance.py for the rules)."""

    def __init__(self, uint64_t seed, double decay, double penalty, clock=None) -> None:
        super().__init__(seed)
        self.learns = True
        self.decay = decay
        self.penalty = penalty
        self.clock = clock

    cdef double now(self) except? -1.0:
        return _now() if self.clock is None else self.clock()

    cdef double cost(self, Target target, double now) noexcept:
        if not target.ewma_measured:
            return 0.0 if target.in_flight == 0 else INFINITY  # one probe, not a flood
        cdef double seconds = target.ewma_seconds * exp(min(0.0, target.ewma_at - now) / self.decay)
        return seconds * (target.in_flight + 1) / target.weight

    cdef int better(self, Target b, Target a) except -1:
        cdef double now = self.now()
        return self.cost(b, now) < self.cost(a, now)

    cdef int record(self, Target target, double sample, double now) except -1:
        """Fold one sample into the estimate: above the decayed estimate it replaces it (peak),
        below it is weighted by the time since the last sample."""
        if not target.ewma_measured:
            target.ewma_measured = True
            target.ewma_seconds = sample
            target.ewma_at = now
            return 0
        cdef double keep = exp(min(0.0, target.ewma_at - now) / self.decay)
        cdef double peak = target.ewma_seconds * keep
        target.ewma_seconds = sample if sample > peak else peak + sample * (1.0 - keep)
        target.ewma_at = now
        return 0

    cdef int learn(self, object exchange) except -1:
        cdef Exchange x
        if type(exchange) is Exchange:  # the hot path: typed fields
            x = <Exchange>exchange
            return self.learn_from(x.target, x.upstream_error is not None, x.upstream_sent_at, x.upstream_head_at)
        return self.learn_from(  # any object with the exchange's fields (tests, tools)
            exchange.target, exchange.upstream_error is not None, exchange.upstream_sent_at,
            exchange.upstream_head_at,
        )

    cdef int learn_from(self, Target target, bint failed, double sent, double head) except -1:
        if target is None:
            return 0
        cdef double sample = ewma_sample(failed, sent, head, self.penalty)
        if sample >= 0.0:
            self.record(target, sample, self.now())
        return 0

    def observe(self, exchange) -> None:
        """Learn from an ended exchange (or any object with its fields)."""
        self.learn(exchange)

    def record_sample(self, Target target, double sample, double now) -> None:
        self.record(target, sample, now)

    def estimate(self, Target target, double now):
        """The estimate in seconds at ``now``, decayed since the last sample; None if never measured."""
        if not target.ewma_measured:
            return None
        return target.ewma_seconds * exp(min(0.0, target.ewma_at - now) / self.decay)


cdef class GroupCore:
    """The per-request face of an upstream group: the only target, when there is one (no pick),
    the usable targets and the balancer's C core to pick among them, and whether anyone wants
    each exchange sent to the group observed as it ends (the core, Python observers)."""

    def __init__(self) -> None:
        self.name = ""
        self.single = None
        self.observes = False
        self.usable = ()
        self.core = None
        self.core_picks = False
        self.observers = ()

    cdef Target choose(self, Exchange exchange, Target exclude):
        """The target for a request when there is no single one: the C core's choice when it
        may pick alone (no gate to tell, no target to avoid), else the group's ``pick`` (Python,
        which raises the 503 when no target is usable)."""
        cdef tuple usable = self.usable
        if self.core_picks and exclude is None and len(usable):
            return self.core.choose(usable)
        return self.pick(exchange) if exclude is None else self.pick(exchange, exclude)

    cdef int observe_exchange(self, object exchange) except -1:
        """An exchange sent to this group ended (called when ``observes``)."""
        cdef BalancerCore core = self.core
        if core is not None and core.learns:
            core.learn(exchange)
        for observer in self.observers:
            observer(exchange)
        return 0

    def observe(self, exchange) -> None:
        """``observe_exchange`` for Python callers; tests may pass any object with the fields."""
        self.observe_exchange(exchange)
