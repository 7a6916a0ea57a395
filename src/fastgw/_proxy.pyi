"""The per-request path, compiled (see _proxy.pyx for the walk through it, proxy/*.pxd for the
pieces and the exchange's two interfaces)."""

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, final

from fastgw._router import Router
from fastgw.config.schema import Http2Config, UpstreamTimeouts
from fastgw.errors import HttpFault
from fastgw.hooks import BodyFilter, HookChain, RequestContext
from fastgw.http._clock import Timed
from fastgw.http._parser import HttpParser
from fastgw.observe.access_log import AccessLog
from fastgw.observe.otlp import SpanExport
from fastgw.observe.recent_errors import RecentErrors
from fastgw.plan import ListenerPlan, RewriteTemplate, RoutePlan
from fastgw.server.listener import ListenerServer
from fastgw.tls.server import ClientCertificate, ServerTls
from fastgw.upstream.retry import RetryRules

LATENCY_BOUNDS: tuple[float, ...]
"""Upper bounds (seconds) of the latency histogram buckets, before +Inf."""
METHOD_NAMES: tuple[str, ...]
"""The methods counted apart, then ``"other"``."""
UNDERSCORE_POLICIES: dict[str, int]
"""A listener's ``headers_with_underscores`` (drop, reject, allow) as the compiled code's value."""
FAILURE_CAUSES: dict[int, str]
"""The kinds of failure an exchange reports to its route's retry rules: connect, stale, reset,
status (a 5xx head), other."""
SAMPLE_ALL: int
"""2**64 - 1: a new trace is sampled when the lower half of its id is at most a connection's
``trace_sample_max``; this one (the value without span export) samples every trace."""

TUNNEL_CAUSES: tuple[str, ...]
"""Why a tunnel ended, by its counter's index: client, upstream (closed first), reset, idle,
lifetime (the route's tunnel timeouts), drain."""
TUNNEL_BOUNDS: tuple[float, ...]
"""Upper bounds (seconds) of the tunnel duration histogram's buckets, before +Inf."""

def plan_changed() -> None:
    """A listener's plan was replaced: every connection takes it from its next request on."""

def render_chunk_header(size: int) -> bytes:
    """The chunk-size line for ``size`` bytes of data (lower-case hex)."""

def enable_tls_link(libssl_path: bytes) -> bool: ...
def tls_link_ready() -> bool: ...

class TLSLink(asyncio.Protocol):  # and the transport above it; by duck typing at run time: a cdef class
    app: Any
    ssl_object: ssl.SSLObject | None
    def __init__(
        self,
        app: Any,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None,
        handshake_timeout: float,
        handshaken: asyncio.Future[Any] | None = None,
        failed: Callable[[str], None] | None = None,
    ) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

class Collected:
    """The response to one of the gateway's own calls."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

def fetch(
    route: RouteCore, parent: RequestContext, method: bytes, path: bytes, pass_block: bytes, max_body: int
) -> asyncio.Future[Collected]:
    """One request of the gateway's own through ``route``'s upstream (an aggregate's backend call):
    the same pools, balancer, health checks, breakers and retries as a proxied request. An
    HttpFault (502/503/504 naming the upstream) when it fails; cancelling drops it."""

@final
class RequestIds:
    """Request ids: a per-process random prefix and a counter, formatted in C."""

    def __init__(self, prefix: bytes) -> None: ...
    @property
    def prefix(self) -> bytes: ...
    @property
    def number(self) -> int:
        """How many ids were made."""
    def next(self) -> bytes:
        """``prefix`` followed by the next counter value in lower-case hex, at least 8 digits."""
    def random_ids(self, count: int) -> list[int]:
        """``count`` values of the generator behind trace and span ids."""

@final
class RequestStats:
    """C counters of the requests that ended on a route (or matched none on a listener)."""

    def __init__(self) -> None: ...
    def record(self, method: str, status: int, total: float = -1.0, upstream: float = -1.0) -> None:
        """Count one request; status 0 means no response; negative durations are not observed."""
    def snapshot(self) -> dict[str, Any]:
        """``requests``: {(method, status class): n}; ``denied``: {401|403|429: n}; ``total`` and
        ``upstream``: (count per bucket of LATENCY_BOUNDS then +Inf, sum of seconds)."""

class Observers:
    """What every request of a listener is counted, logged and identified by: one per listener
    server, shared by its connections (set access_log, spans, recent_errors; None: off)."""

    def __init__(
        self, unrouted: RequestStats | None = None, request_ids: RequestIds | None = None
    ) -> None: ...
    @property
    def unrouted(self) -> RequestStats | None: ...
    @property
    def request_ids(self) -> RequestIds | None: ...
    access_log: AccessLog | None
    spans: SpanExport | None
    recent_errors: RecentErrors | None

@final
class TlsFacts:
    """A TLS client connection's facts (version, cipher suite, verified client certificate)."""

    def __init__(
        self, version: str, cipher: str | None, certificate: ClientCertificate | None, cert_lines: bytes
    ) -> None: ...
    @property
    def version(self) -> str: ...
    @property
    def cipher(self) -> str | None: ...
    @property
    def certificate(self) -> ClientCertificate | None: ...

class Downstream(Timed):
    """The client side of exchanges (the interface is C-level: proxy/exchange.pxd)."""

    listener: ListenerPlan
    peer_ip: bytes
    peer: str | None
    trusted: bool
    tls: TlsFacts | None
    """The connection's TLS facts, or None for cleartext."""
    @property
    def tls_version(self) -> str | None: ...
    @property
    def tls_cipher(self) -> str | None: ...
    @property
    def client_certificate(self) -> ClientCertificate | None: ...

class UpstreamSide(Timed):
    """The upstream side of an exchange (the interface is C-level: proxy/exchange.pxd)."""

    pool: PoolCore
    exchange: Exchange | None
    closed: bool
    received: bool
    served: int
    reusable: bool
    def close(self) -> None: ...

@final
class ClientProtocol(Downstream, asyncio.Protocol):  # by duck typing at run time: a cdef class
    """One accepted HTTP/1.1 connection, driven by its HttpParser (an asyncio protocol by duck typing)."""

    PAUSE_UPSTREAM: ClassVar[int]
    PAUSE_BUFFER: ClassVar[int]
    PAUSE_PIPELINE: ClassVar[int]

    server: ListenerServer
    transport: Any
    parser: HttpParser | None
    in_head: bool
    active: Exchange | None
    parsing: Exchange | None
    queue: list[Exchange] | None
    paused: int
    write_paused: bool
    deadline: float
    """Read side (head, body, keep-alive, linger), monotonic clock; 0 = none."""
    send_deadline: float
    """Write side: when the client, taking nothing, is dropped; 0 = none."""
    draining: bool
    lingering: bool
    closed: bool

    def __init__(self, server: ListenerServer) -> None: ...
    # the asyncio callbacks are asyncio.Protocol's
    # for the listener and the timer wheel
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def start_draining(self) -> None:
        """Graceful shutdown: finish what is in flight, close idle keep-alive connections now."""
    def expire(self, now: float) -> None: ...
    def check_deadline(self, now: float) -> None: ...

@final
class Exchange:
    """One request/response exchange: the ``ctx`` every hook receives."""

    client: Downstream
    """Who asked: an HTTP/1.1 connection, or the gateway itself (an aggregate's backend call)."""
    listener: ListenerPlan
    method: bytes
    path: bytes
    """Normalized: what was matched and what is forwarded."""
    query: bytes
    """``b""`` or ``b"?..."`` as received."""
    http_10: bool
    keep_alive: bool
    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Request headers as received; parsed on first use."""
    host: bytes
    """Lower-cased, without port: what routing used."""
    host_header: bytes
    content_length: int
    """-1 when absent."""
    chunked: bool
    expect_continue: bool
    request_id: bytes
    pass_block: bytes
    route: RoutePlan | None
    params: tuple[bytes, ...]
    state: int
    """Where it is (ExchangeState, proxy/exchange.pxd): waiting, hooks, admission, connecting,
    backoff, sent, held, streaming, done."""
    @property
    def finished(self) -> bool:
        """It ended (answered, completed, cut, or abandoned by the client)."""
    request_done: bool
    must_close: bool
    """The client connection must not take another request after this one."""
    body_received: int
    pending: list[bytes] | None
    pending_size: int
    target: Target | None
    conn: UpstreamSide | None
    acquiring: asyncio.Future[UpstreamSide] | None
    retried_stale: bool
    """The one retry of a request a stale pooled connection lost was made."""
    interim_sent: bool
    """A 1xx response went to the client (no retry from then on)."""
    response_status: int
    response_headers: list[tuple[bytes, bytes]] | None
    """The response headers an ``on_response`` hook may edit or replace."""
    response_started: bool
    upstream_headers: list[tuple[bytes, bytes]] | None
    """Extra request headers an ``on_upstream_request`` hook appends."""
    tries: int
    """Retries made so far (0 on the first attempt)."""
    total_deadline: float
    """When the route's total timeout ends (monotonic clock), from the first send; 0 = none."""
    upstream_error: HttpFault | None
    """The fault that ended it when the upstream failed (connect, reset, malformed, timeout)."""
    upstream_status: int
    """The upstream's final status (0: none), whatever the client got instead."""
    abort_reason: str | None
    """Why the client got no (complete) response: it left, or stopped reading; else None."""
    add_response_headers: list[tuple[bytes, bytes]] | None
    """Headers added to the proxied response (a sticky-session cookie, for instance)."""
    body_filters: list[BodyFilter] | None
    """Filters the proxied response body runs through, appended by ``on_response`` hooks."""
    upstream_sent_at: float
    """Precise monotonic time the request head went upstream (the last attempt's)."""
    upstream_head_at: float
    upgrade: bytes | None
    """An Upgrade request: what it asks for, then what went upstream, then the protocol switched to."""
    switched_at: float
    """When its 101 went out (0: none): a tunnel's request is timed to it."""
    """... and the response head was parsed (only when the group observes)."""
    received_at: float
    """Monotonic time of the read that completed the request head."""
    bytes_sent: int
    """Response bytes handed to the client side, head included."""
    traceparent: bytes | None
    """The W3C traceparent sent upstream (the gateway's span), or None without trace context."""
    client_traceparent: bytes | None
    """The client's traceparent when it was valid (its trace was continued), else None."""

    def fail(self, fault: HttpFault) -> None:
        """A failure at any point: an error response if nothing went out yet, else a cut."""
    def header(self, name: bytes) -> bytes | None:
        """First value of a request header (name lower-case); for plugins, not the hot path."""
    def header_count(self, name: bytes) -> int:
        """How many lines of a request header (name lower-case) ``headers`` holds."""
    def param(self, name: str) -> bytes | None:
        """A route parameter's value by name, or None."""
    consumer: str | None
    """Who the request is from, set by an authentication plugin (API key, Basic, JWT subject)."""
    claims: dict[str, Any] | None
    """The verified token's claims, set by an authentication plugin."""
    # The client as hooks.RequestContext describes it: fastgw.http.forwarded.resolve, on first use.
    @property
    def client_ip(self) -> str: ...
    @property
    def client_address(self) -> bytes: ...
    @property
    def via_trusted_proxy(self) -> bool: ...
    @property
    def client_certificate(self) -> ClientCertificate | None: ...
    @property
    def forwarded_proto(self) -> bytes: ...
    @property
    def forwarded_host(self) -> bytes: ...
    @property
    def forwarded_for(self) -> bytes: ...
    def remove_request_header(self, name: bytes) -> None:
        """Keep a client's request header (lower-case name) from the upstream."""
    def add_request_header(self, name: bytes, value: bytes) -> None:
        """Send one more header line upstream on every attempt (for an ``on_request`` hook that
        learned it by I/O); ValueError if the name or value could break the header block."""

@final
class UpstreamConnection(UpstreamSide, asyncio.Protocol):  # by duck typing at run time: a cdef class
    """One keep-alive HTTP/1.1 connection to an upstream target."""

    transport: Any
    parser: HttpParser
    interim: bool
    deadline: float
    read_timeout: float
    send_timeout: float
    head_timeout: float
    got_head: bool
    sending: bool
    chunked: bool
    reading_paused: bool
    close_delimited: bool

    def __init__(self, pool: PoolCore) -> None: ...
    # the asyncio callbacks are asyncio.Protocol's; the exchange's calls are C-level
    def abort(self) -> None: ...
    def expire(self, now: float) -> None: ...

@final
class H2UpstreamConnection(Timed, asyncio.Protocol):  # by duck typing at run time: a cdef class
    """One HTTP/2 connection to an upstream target (protocol h2c or h2), carrying streams."""

    pool: PoolCore
    transport: Any
    alpn_refused: str | None
    """TLS chose another protocol than h2 (its name, or "none")."""
    active: int
    """Streams handed out and not yet released."""
    limit: int
    """Streams at once: the pool's max_streams, or the server's lower limit."""
    taken: int
    served: int
    usable: bool
    closed: bool
    goaway: bool
    deadline: float

    def __init__(self, pool: PoolCore, tls: bool) -> None: ...
    def unconsumed_bytes(self) -> int:
        """Response DATA its streams hold unacknowledged while their clients read slowly."""
    def retire(self) -> None:
        """No new streams: close now if idle, else when the last one ends."""
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def expire(self, now: float) -> None: ...

class ListenerCore:
    """The per-request face of a compiled listener (``plan.ListenerPlan`` subclasses it)."""

    def __init__(
        self,
        router: Router,
        limits: Any,
        timeouts: Any,
        buffer_bytes: int,
        underscores: str,
        request_id_header: str,
        trace_context: bool,
        tls: ServerTls | None = None,
        cert_headers: tuple[tuple[str, str], ...] = (),
        http2: Http2Config | None = None,
    ) -> None: ...
    @property
    def router(self) -> Router: ...
    @property
    def h2c(self) -> bool: ...
    @property
    def h2_max_streams(self) -> int: ...
    @property
    def h2_stream_window(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_headers(self) -> int: ...
    @property
    def max_uri_bytes(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_pipeline(self) -> int: ...
    @property
    def buffer_bytes(self) -> int: ...
    @property
    def head_timeout(self) -> float: ...
    @property
    def body_timeout(self) -> float: ...
    @property
    def keepalive_timeout(self) -> float: ...
    @property
    def send_timeout(self) -> float: ...
    @property
    def linger_timeout(self) -> float: ...
    @property
    def underscores(self) -> int: ...
    @property
    def request_id_header(self) -> bytes: ...
    @property
    def request_id_lower(self) -> bytes: ...
    @property
    def trace_context(self) -> bool: ...
    @property
    def scheme(self) -> bytes:
        """b"https" on a TLS listener, else b"http"."""
    @property
    def tls(self) -> ServerTls | None: ...
    @property
    def cert_headers(self) -> tuple[tuple[str, bytes], ...]: ...
    @property
    def owned_headers(self) -> frozenset[bytes] | None: ...

class RouteCore:
    """The per-request face of a compiled route (``plan.RoutePlan`` subclasses it)."""

    upstream: Any
    timeouts: UpstreamTimeouts
    chain: HookChain
    preserve_host: bool
    strip_prefix: bytes | None
    rewrite: RewriteTemplate | None
    retry: RetryRules
    requests: int
    """Requests matched to the route (the retry budget's base)."""
    limiters: tuple[Limiter, ...]
    """The concurrency limits a request to this route takes a slot in, in order."""
    stats: RequestStats
    """Counters of the requests that ended on this route (adopted by route id on reload)."""
    tunnel: TunnelPolicy | None
    """The protocols an Upgrade request may switch to on this route; None refuses every upgrade."""
    @property
    def connect_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...
    @property
    def send_timeout(self) -> float: ...
    @property
    def head_timeout(self) -> float: ...
    @property
    def total_timeout(self) -> float: ...
    def __init__(
        self,
        upstream: GroupCore,
        timeouts: UpstreamTimeouts,
        chain: HookChain,
        preserve_host: bool,
        strip_prefix: bytes | None,
        rewrite: RewriteTemplate | None,
        retry: RetryRules,
        limiters: tuple[Limiter, ...],
        stats: RequestStats,
    ) -> None: ...
    def upstream_path(self, path: bytes, params: tuple[bytes, ...]) -> bytes:
        """The path sent upstream: the rewrite template, the path minus strip_prefix, or as is."""

@final
class Target:
    """One upstream server of a group, with its pool and the Host value sent to it."""

    def __init__(self, host: str, port: int, weight: int, pool: PoolCore, host_header: bytes) -> None: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def pool(self) -> PoolCore: ...
    @property
    def host_header(self) -> bytes: ...
    @property
    def label(self) -> str: ...
    in_flight: int
    """Requests sent to it and not finished."""
    def snapshot(self) -> dict[str, Any]:
        """``responses``: {"none"|"1xx".."5xx"|"failed": attempts}; ``latency``: (count per
        bucket of LATENCY_BOUNDS then +Inf, sum of seconds) from request head sent to response end."""

class BalancerCore:
    """A balancer's per-request work in C: two targets drawn at random by weight, the better wins."""

    @property
    def learns(self) -> bool:
        """Wants ``observe(exchange)`` as each exchange sent to the group ends."""
    def __init__(self, seed: int) -> None: ...
    def pick(self, targets: tuple[Target, ...]) -> Target:
        """One of ``targets`` (usable ones, never empty) for a request."""

class RoundRobinCore(BalancerCore): ...

class PowerOfTwoCore(BalancerCore):
    """Fewer in flight per unit of weight wins."""

class PeakEwmaCore(BalancerCore):
    """Cost = latency estimate x (in flight + 1) / weight; the estimate is kept on each target."""

    def __init__(
        self, seed: int, decay: float, penalty: float, clock: Callable[[], float] | None = None
    ) -> None: ...
    @property
    def decay(self) -> float: ...
    @property
    def penalty(self) -> float: ...
    def observe(self, exchange: Exchange) -> None:
        """Fold the exchange's latency (or its failure) into its target's estimate."""
    def record_sample(self, target: Target, sample: float, now: float) -> None: ...
    def estimate(self, target: Target, now: float) -> float | None:
        """The estimate in seconds at ``now``, decayed since the last sample; None if never measured."""

class GroupCore:
    """The per-request face of an upstream group (``UpstreamGroup`` subclasses it)."""

    name: str
    """The configured name: how errors name the upstream."""
    single: Target | None
    observes: bool
    """Call ``observe(exchange)`` as each exchange sent to the group ends."""
    usable: tuple[Target, ...]
    """The targets in rotation, in config order."""
    core: BalancerCore | None
    """The balancer's C core, or None (its ``pick`` runs in Python)."""
    core_picks: bool
    """The hot path picks through ``core`` (no gate to tell)."""
    observers: tuple[Callable[[Exchange], None], ...]
    """Told of each ended exchange, after the core."""
    def __init__(self) -> None: ...
    def observe(self, exchange: Exchange) -> None:
        """Tell the core (when it learns) and the observers that an exchange sent to the group ended."""

@final
class Shelf:
    """Objects kept for reuse, the last put taken first (a pool's idle connections)."""

    @property
    def count(self) -> int: ...
    def add(self, item: Any) -> None: ...
    def remove(self, item: Any) -> bool:
        """Take ``item`` off wherever it is; False if it is not here."""
    def items(self) -> list[Any]:
        """What it holds, first put first."""
    def clear(self) -> list[Any]:
        """Empty it; return what it held."""
    def __len__(self) -> int: ...

class PoolCore(Timed):
    """The synchronous half of a keep-alive pool (``TargetPool`` subclasses it)."""

    idle: Shelf
    open: int
    in_use: int
    waiters: deque[tuple[asyncio.Future[UpstreamSide], float]]
    opened: int
    reused: int
    connect_errors: int
    max_idle: int
    idle_timeout: float
    max_streams: int
    """HTTP/2 pools: streams per connection at most; 0 for an HTTP/1.1 pool."""
    sessions: list[H2UpstreamConnection]
    """HTTP/2 pools: the connections, oldest first."""
    def __init__(self, max_idle: int, idle_timeout: float, max_streams: int = 0) -> None: ...
    @property
    def stats(self) -> dict[str, int]:
        """Counters read by metrics and tests."""
    def take_idle(self) -> UpstreamSide | None:
        """The most recently used idle connection still open, or None."""
    def release(self, conn: UpstreamSide) -> None:
        """Take a connection back after a response; keep it only if it is clean and reusable."""
    def give_back(self, conn: UpstreamSide) -> None:
        """A waiter was cancelled after it was handed a connection: return it unused."""
    def serve_waiters(self) -> int:
        """(HTTP/2) Hand the waiters streams while a connection has room."""

@final
class Limiter:
    """At most ``limit`` requests in flight, ``queue_max`` more waiting ``queue_timeout`` seconds."""

    def __init__(self, name: str, limit: int, queue_max: int, queue_timeout: float) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def queue_max(self) -> int: ...
    @property
    def queue_timeout(self) -> float: ...
    active: int
    refused: int

@final
class TunnelStats:
    """C counters of one route's tunnels (adopted by route id on reload)."""

    opened: int
    open: int
    bytes_in: int
    """From clients, passed upstream."""
    bytes_out: int
    """From the upstream, passed to clients."""
    def __init__(self) -> None: ...
    def snapshot(self) -> dict[str, Any]:
        """``opened``, ``open``, ``bytes_in``, ``bytes_out``; ``ended``: {cause: n} (TUNNEL_CAUSES);
        ``duration``: (count per bucket of TUNNEL_BOUNDS then +Inf, sum of seconds)."""

@final
class TunnelPolicy:
    """What a route tunnels, and how long a tunnel may live."""

    def __init__(
        self, protocols: tuple[str, ...], idle_timeout: float, max_lifetime: float, stats: TunnelStats
    ) -> None: ...
    @property
    def protocols(self) -> frozenset[bytes]: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_lifetime(self) -> float: ...
    @property
    def stats(self) -> TunnelStats: ...

@final
class Tunnel(Timed):
    """An upgraded client connection and upstream connection spliced byte for byte (WebSocket),
    among its listener's connections while open."""

    exchange: Exchange | None
    websocket: bool
    cause: int
    def start_draining(self) -> None:
        """A drain began: the tunnel lives on until it ends or the drain timeout passes."""
    def close_for_drain(self) -> None:
        """The drain timeout passed: close frames 1001 "going away" both ways, then close."""
    def abort(self) -> None: ...
    @property
    def open(self) -> bool: ...
