"""The typed configuration: frozen records produced by ``config.load`` from YAML or JSON.

Every value here has already been validated; ``plan.compile_plan`` turns these records into the
runtime Plan. Durations are seconds (float), sizes are bytes (int). Defaults are chosen for a
production edge: bounded everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastgw.http.wire import IDEMPOTENT


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-listener request limits; each maps to one status code when exceeded."""

    max_header_bytes: int = 16 * 1024  # whole head incl. request line -> 431
    max_headers: int = 100  # header count -> 431
    max_uri_bytes: int = 8 * 1024  # request target -> 414
    max_body_bytes: int = 100 * 1024 * 1024  # request body -> 413
    max_connections: int = 10_000  # open client connections per worker
    max_pipeline: int = 16  # parsed requests queued behind the one in flight


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    head: float = 10.0  # from first byte (or keep-alive reuse) to the end of the head: slowloris
    body: float = 30.0  # longest pause between two request body reads
    keepalive: float = 75.0  # idle keep-alive connection between requests
    send: float = 60.0  # a client that takes no response bytes this long is dropped (nginx's send_timeout)
    linger: float = 5.0  # after an error answer, how long unread input is drained before the close
    drain: float = 30.0  # graceful shutdown: how long in-flight requests may take


@dataclass(frozen=True, slots=True)
class Http2Config:
    """HTTP/2 from clients on a listener: offered by ALPN on TLS; cleartext only with ``h2c``."""

    enabled: bool = True  # a TLS listener offers h2 (ALPN "h2", before "http/1.1")
    h2c: bool = False  # cleartext with prior knowledge (RFC 9113 3.3), for internal listeners
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS
    stream_window_bytes: int = 65535  # SETTINGS_INITIAL_WINDOW_SIZE: request body in flight per stream


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    host: str  # bind address
    port: int
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-* are believed
    limits: Limits = field(default_factory=Limits)
    timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    buffer_bytes: int = 256 * 1024  # write-buffer high watermark per side (flow control)
    trace_context: bool = True  # continue or start a W3C trace; forward the gateway's traceparent
    headers_with_underscores: str = "drop"  # "drop" | "reject" (400) | "allow" (nginx, Envoy: not "allow")
    request_id_header: str = "X-Request-Id"  # read from clients, sent upstream, returned on every response
    tls: ListenerTlsConfig | None = None  # None: cleartext HTTP
    http2: Http2Config = field(default_factory=Http2Config)


@dataclass(frozen=True, slots=True)
class TargetConfig:
    host: str
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class PoolConfig:
    max_connections: int = 1024  # per target, in use + idle
    # per target; unset: max_connections, so idle connections are closed by idle_timeout only. A
    # lower cap churns under load: each release above it closes a connection the next request
    # reopens (1,000 clients on one target with 128: 0.76x nginx's req/s at 1.4x its CPU).
    max_idle: int = 1024
    idle_timeout: float = 50.0  # keep below the upstream's keep-alive timeout
    acquire_timeout: float = 5.0  # wait for a free connection when max_connections is reached
    max_streams: int = 100  # HTTP/2 upstreams: streams per connection (the server's SETTINGS may say fewer)


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    connect: float = 5.0
    read: float = 60.0  # longest pause between response body reads (and the head, unless `head`)
    send: float = 60.0  # longest stall while writing the request body upstream
    head: float = 0.0  # from the request sent to the response head; 0 = `read`
    total: float = 0.0  # the whole exchange with the upstream, retries included; 0 = none


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    """At most ``max_in_flight`` requests at once; ``queue`` more wait up to ``queue_timeout``."""

    max_in_flight: int
    queue: int = 0
    queue_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active checks: each worker process probes each target with ``GET path`` (upstream/health.py)."""

    path: str  # e.g. "/healthz"; sent with the Host the target's requests get
    interval: float = 5.0  # between the starts of two rounds of probes
    timeout: float = 2.0  # connect + response head; at most interval
    healthy_after: int = 2  # consecutive passed probes that put a down target back
    unhealthy_after: int = 3  # consecutive failed probes that take an up target out
    statuses: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive ranges that pass


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Passive outlier detection on live traffic: a target that keeps failing is ejected for a while."""

    consecutive_failures: int = 5  # failures in a row (connect error, reset, timeout[, 5xx]) that eject
    count_5xx: bool = True  # a 5xx response counts as a failure, not only transport errors
    base_ejection: float = 30.0  # first ejection; doubles with each ejection in a row
    max_ejection: float = 300.0  # cap on one ejection; at least base_ejection
    max_ejected_percent: int = 50  # of the upstream's targets ejected at once (at least one)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Circuit breaker per target (upstream/breaker.py): closed -> open -> half-open -> closed."""

    failures: int = 5  # failures in a row that open it (Ocelot's ExceptionsAllowedBeforeBreaking)
    failure_ratio: float | None = None  # also open when this fraction of the window's requests failed
    window: float = 10.0  # the ratio's rolling window
    min_requests: int = 20  # requests in the window before the ratio is judged
    open_for: float = 30.0  # how long it stays open before trial requests (Ocelot's DurationOfBreak)
    trial_requests: int = 1  # let through half-open; all must succeed to close, one failure reopens
    count_5xx: bool = True  # a 5xx response counts as a failure, not only transport errors and timeouts


@dataclass(frozen=True, slots=True)
class HashKey:
    """What ``balance: {hash: ...}`` hashes: ``ip``, ``header:NAME``, ``cookie:NAME`` or ``param:NAME``."""

    source: str  # "ip" | "header" | "cookie" | "param"
    name: str = ""  # header (lower-cased), cookie or route parameter name; "" for ip


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    """How an upstream picks a target per request (upstream/balance.py)."""

    algorithm: str = "round_robin"  # round_robin | least_conn | p2c | ewma | hash | sticky
    hash_key: HashKey | None = None  # hash: the request key (a missing key goes round robin)
    cookie: str = "fgw_sticky"  # sticky: the cookie the gateway sets and reads


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a registry reached over https: the CA to trust, a client certificate and key."""

    ca: str | None = None  # None: the system's trust store
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class DnsRegistry:
    """Where DNS questions go (discovery/dns.py)."""

    nameservers: tuple[tuple[str, int], ...] = ()  # (ip, port); empty: the system's /etc/resolv.conf
    timeout: float = 2.0  # one question, all nameservers tried


@dataclass(frozen=True, slots=True)
class EtcdRegistry:
    """An etcd v3 cluster, over its JSON gateway (fastgw/etcd.py)."""

    endpoints: tuple[str, ...]  # http(s)://host:port, tried in order
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    timeout: float = 5.0  # one request (a watch waits longer: it is a stream)


@dataclass(frozen=True, slots=True)
class ConsulRegistry:
    """A Consul agent or server, over its HTTP API (discovery/consul.py)."""

    address: str = "http://127.0.0.1:8500"
    token: str | None = None  # ACL token, sent as X-Consul-Token
    datacenter: str | None = None  # default for upstreams that name none; None: the agent's own
    wait: float = 300.0  # longest a blocking query waits for a change (Consul caps it at 10m)
    tls: TlsFiles | None = None
    timeout: float = 5.0  # on top of ``wait`` for a blocking query


@dataclass(frozen=True, slots=True)
class EurekaRegistry:
    """A Eureka server, over its REST API (discovery/eureka.py)."""

    url: str  # the service URL, e.g. http://127.0.0.1:8761/eureka
    username: str | None = None  # HTTP basic auth
    password: str | None = None
    interval: float = 30.0  # between two fetches (Eureka's clients default to 30s)
    tls: TlsFiles | None = None
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class RegistriesConfig:
    """The ``registries:`` section: each provider's connection settings, once per gateway."""

    dns: DnsRegistry = field(default_factory=DnsRegistry)
    etcd: EtcdRegistry | None = None
    consul: ConsulRegistry | None = None
    eureka: EurekaRegistry | None = None


Registry = DnsRegistry | EtcdRegistry | ConsulRegistry | EurekaRegistry


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """An upstream's ``discovery:``: which service of which registry its targets come from."""

    provider: str  # dns | etcd | consul | eureka
    service: str  # dns: the name; etcd: the key prefix; consul: the service; eureka: the app
    registry: Registry  # the provider's settings from ``registries:`` (a change restarts the feed)
    record: str = "A"  # dns: A, AAAA or SRV
    port: int | None = None  # dns A/AAAA: the targets' port (SRV records carry theirs)
    tags: tuple[str, ...] = ()  # consul: every one of these tags
    datacenter: str | None = None  # consul: None is the registry's default
    weight_meta: str | None = None  # consul: the service meta key holding a weight
    min_targets: int = 1  # floor: a smaller answer is not applied while a larger set is known
    require_health_check: bool = False  # a target joining a running set waits for one passed check
    retry_base: float = 0.5  # backoff after a failure: doubles up to retry_max, with full jitter
    retry_max: float = 30.0

    def describe(self) -> str:
        """Where the targets come from, in words: ``consul service catalog [v2] in dc1``."""
        if self.provider == "dns":
            port = f" port {self.port}" if self.port is not None else ""
            return f"dns {self.record} {self.service}{port}"
        if self.provider == "etcd":
            return f"etcd prefix {self.service}"
        if self.provider == "consul":
            tags = f" [{', '.join(self.tags)}]" if self.tags else ""
            datacenter = self.datacenter or getattr(self.registry, "datacenter", None)
            return f"consul service {self.service}{tags}" + (f" in {datacenter}" if datacenter else "")
        return f"eureka app {self.service}"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    targets: tuple[TargetConfig, ...]  # static ones; with discovery, beside the discovered ones
    pool: PoolConfig = field(default_factory=PoolConfig)
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)
    host_header: str | None = None  # Host sent upstream; None = the target's host:port
    health: HealthCheckConfig | None = None  # None = no active checks
    outlier: OutlierConfig | None = None  # None = no passive ejection
    breaker: BreakerConfig | None = None  # None = no circuit breaker
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    concurrency: ConcurrencyConfig | None = None  # for the whole upstream, all routes together
    tls: UpstreamTlsConfig | None = None  # None: cleartext HTTP to the targets
    discovery: DiscoveryConfig | None = None  # targets from a registry, changing at run time
    protocol: str = "http/1.1"  # UPSTREAM_PROTOCOLS: "h2c" (cleartext HTTP/2), "h2" (over TLS, ALPN)


UPSTREAM_PROTOCOLS = ("http/1.1", "h2c", "h2")

IDEMPOTENT_METHODS = frozenset(method.decode("ascii") for method in IDEMPOTENT)  # http.wire's, as text


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """When a failed request is sent again (to another target when there is one)."""

    attempts: int = 2  # tries in all, the first one included
    when: frozenset[str] = frozenset({"connect", "reset"})  # connect errors; reset/timeout before the head
    statuses: frozenset[int] = frozenset()  # upstream statuses retried, e.g. 502, 503, 504
    methods: frozenset[str] | None = IDEMPOTENT_METHODS  # None: any method
    backoff: float = 0.025  # first delay; doubles per retry (full jitter), capped at max_backoff
    max_backoff: float = 0.5
    budget: float = 0.2  # retries add at most this fraction of the route's requests (+ 3 per second)


@dataclass(frozen=True, slots=True)
class PluginConfig:
    name: str
    options: Mapping[str, Any]
    key_path: str  # where it stands in the file, for errors raised by the plugin's compile()


@dataclass(frozen=True, slots=True)
class AggregateBackend:
    """One upstream call of an aggregate route (``aggregate.py`` runs them)."""

    key: str  # its name in the merged body and in later templates; default "resp<index>"
    upstream: str
    path: str  # "/baskets/{user}?full=1": route params by name, earlier results as {key.field}
    key_path: str  # e.g. "routes[3].aggregate.backends[1]"
    method: str = "GET"
    headers: tuple[str, ...] = ()  # client request headers passed on (lower-case names)
    timeout: float = 10.0  # this call, connect included (a chained call's starts when it starts)
    required: bool = True  # a failure answers 502/504; optional: left out, X-Aggregate-Partial
    max_body: int = 1024 * 1024  # a larger response fails this backend
    target: str | None = None  # "data.items": use only this sub-object of the body
    fields: tuple[str, ...] | None = None  # allow list of top-level fields; None = all
    mapping: tuple[tuple[str, str], ...] = ()  # renames: (field, new name)
    group: str | None = None  # merge: deep: put the result under this key


@dataclass(frozen=True, slots=True)
class AggregateConfig:
    """A route answered by merging the JSON bodies of several upstream calls."""

    backends: tuple[AggregateBackend, ...]
    key_path: str  # "routes[3].aggregate"
    merge: str = "by_key"  # by_key: {key: body, ...}; deep: objects merged, later backends win
    aggregator: str | None = None  # "package.module:function": custom merge of the results


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """A route's upgraded connections (WebSocket, or another protocol it lets through): after the
    upstream's 101 the two connections are spliced byte for byte until either side ends."""

    idle_timeout: float = 300.0  # no byte either way for this long: closed (1001 for WebSocket)
    max_lifetime: float = 0.0  # closed (1001 for WebSocket) once this old; 0 = no limit


@dataclass(frozen=True, slots=True)
class RouteConfig:
    id: str
    path: str  # "/catalog/items/{id:int}/{*rest}"
    upstream: str  # "" for an aggregate route (see ``aggregate``)
    key_path: str  # e.g. "routes[3]", for errors found later (conflicts)
    methods: tuple[str, ...] | None = None  # None = any method
    hosts: tuple[str, ...] = ()  # exact or "*.example.com"; empty = any host
    listeners: tuple[str, ...] = ()  # empty = every listener
    headers: tuple[tuple[str, str], ...] = ()  # predicates: lower-cased name, exact value
    query: tuple[tuple[str, str], ...] = ()  # predicates: name, exact value ("" = present)
    priority: int = 0
    rewrite: str | None = None  # "/api/items/{id}/{rest}" (params by name)
    strip_prefix: str | None = None
    preserve_host: bool = False  # send the client's Host upstream instead of the upstream's
    timeouts: UpstreamTimeouts | None = None  # overrides the upstream's
    retry: RetryConfig | None = None  # None: no retries beyond a stale pooled connection
    concurrency: ConcurrencyConfig | None = None
    plugins: tuple[PluginConfig, ...] = ()
    aggregate: AggregateConfig | None = None  # instead of upstream: answered by several calls
    redirect_https: HttpsRedirectConfig | None = None  # cleartext requests get a redirect to HTTPS
    upgrade: tuple[str, ...] = ()  # protocols an Upgrade request may switch to (lower-case); () = none
    tunnel: TunnelConfig = TunnelConfig()  # the upgraded connections' timeouts


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener (health, metrics, config and live state, reload, status page)."""

    host: str = "127.0.0.1"  # loopback unless a token is set
    port: int = 9901
    token: str | None = None  # required as "Authorization: Bearer TOKEN" when set


# Every field an access log line can hold, in the order written.
ACCESS_LOG_FIELDS = (
    "time", "request_id", "client", "method", "host", "path", "query", "listener", "route",
    "upstream", "status", "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "trace_id",
    "span_id", "consumer", "error", "protocol", "tls_version", "tls_cipher",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """One JSON line per request, buffered and written in batches (observe/access_log.py)."""

    sink: str = "stdout"  # "stdout" or a file path (appended to)
    fields: tuple[str, ...] = ACCESS_LOG_FIELDS  # all: the cheapest line (no field picking)
    sample: float = 1.0  # fraction of requests logged; 5xx and unanswered ones always are
    flush_interval: float = 1.0  # longest a line waits in the buffer
    buffer_bytes: int = 64 * 1024  # a fuller buffer is written at once


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """Export one span per request to an OpenTelemetry collector, OTLP/HTTP JSON (observe/otlp.py)."""

    endpoint: str  # e.g. "http://127.0.0.1:4318/v1/traces"
    service_name: str = "fastgw"  # the resource's service.name
    sample: float = 1.0  # fraction of traces exported, decided by trace id (the same in every worker)
    batch: int = 512  # spans per export request; a full batch is sent at once
    queue: int = 8192  # spans waiting at most; more are dropped and counted, never waited for
    flush_interval: float = 1.0  # longest a span waits before its batch is sent
    timeout: float = 2.0  # one export request, connect included
    headers: tuple[tuple[str, str], ...] = ()  # sent with every export request (e.g. an API key)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What the gateway does with the traces it continues or starts (listeners' trace_context)."""

    otlp: OtlpConfig | None = None  # None: spans are not exported, at no cost


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it came from (or the etcd key, with its revision)
    listeners: tuple[ListenerConfig, ...]
    upstreams: Mapping[str, UpstreamConfig]
    routes: tuple[RouteConfig, ...]
    plugins: tuple[PluginConfig, ...] = ()  # applied to every route (before route plugins)
    admin: AdminConfig | None = None  # None: no admin listener
    access_log: AccessLogConfig | None = None  # None: no access log, at no cost
    tracing: TracingConfig | None = None  # None: no span export
    registries: RegistriesConfig = field(default_factory=RegistriesConfig)
    revision: int | None = None  # the version of the source read (etcd's mod revision); None: a file
    digest: str = ""  # a file's revision: the SHA-256 of its bytes ("" when not read from a file)


# -- TLS ----------------------------------------------------------------------------------------

# Mozilla's "intermediate" TLS 1.2 suites (forward secret AEAD only); TLS 1.3's own are always on.
MODERN_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True, slots=True)
class CertificateConfig:
    """One certificate chain and its key; entries serving the same names share one TLS context
    (an ECDSA and an RSA certificate side by side: each client gets the one it can use)."""

    cert: str  # PEM file: the certificate, then its intermediates
    key: str  # PEM file: its private key
    names: tuple[str, ...] = ()  # SNI names (exact, or "*.example.com"); () = the certificate's own
    ocsp: str | None = None  # a DER OCSP response for it, stapled to handshakes that ask
    key_path: str = ""


@dataclass(frozen=True, slots=True)
class ClientCertificatesConfig:
    """mTLS on a listener: clients present certificates verified against ``ca``."""

    mode: str  # "optional" | "required"
    ca: str  # PEM bundle of the CAs whose clients are accepted
    headers: tuple[tuple[str, str], ...] = ()  # (subject | sans | fingerprint, header sent upstream)
    key_path: str = ""


@dataclass(frozen=True, slots=True)
class SessionTicketsConfig:
    enabled: bool = True
    rotate: float = 3600.0  # a new ticket key each period (all workers derive the same one)
    secret: str | None = None  # the key material's seed, to share tickets across instances


@dataclass(frozen=True, slots=True)
class ListenerTlsConfig:
    certificates: tuple[CertificateConfig, ...]  # the first entry's names are the default's
    min_version: str = "1.2"  # "1.2" | "1.3"
    ciphers: str = MODERN_CIPHERS  # TLS 1.2 suites (OpenSSL syntax)
    alpn: tuple[str, ...] | None = None  # None: h2 (when the listener's http2 is on), then http/1.1
    tickets: SessionTicketsConfig = field(default_factory=SessionTicketsConfig)
    client_certificates: ClientCertificatesConfig | None = None
    key_path: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamTlsConfig:
    """HTTPS to an upstream's targets: verified unless ``insecure_skip_verify``."""

    ca: str | None = None  # PEM bundle; None = the system's CA store
    server_name: str | None = None  # SNI and the name checked; None = each target's host
    cert: str | None = None  # a client certificate (mTLS to the upstream) ...
    key: str | None = None  # ... and its key
    insecure_skip_verify: bool = False  # no certificate or name check at all (logged at start)
    min_version: str = "1.2"
    key_path: str = ""


@dataclass(frozen=True, slots=True)
class HttpsRedirectConfig:
    """A route answers cleartext requests with a redirect to the same URL over HTTPS."""

    status: int = 308  # 301, 302, 307 or 308 (307/308 keep the method and body)
    port: int = 443  # of the HTTPS URL (443 is left out of it)
