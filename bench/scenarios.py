"""The scenarios of ``python -m bench``: what each one sends, to which contenders, through what.

Each is driven against every contender it names (bench/run.py starts them and measures); the
README of the bench says what each measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.features import PRODUCTION


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int = 64
    script: str | None = None  # a wrk lua script in bench/peers
    routes: int = 1  # size of the route table given to fastgw and nginx
    contenders: tuple[str, ...] = ("direct", "nginx", "haproxy", "fastgw", "aiohttp")
    targets: int = 1  # upstream servers behind the proxy (the upstream nginx listens on two ports)
    balance: str = "round_robin"  # fastgw's balancer; nginx balances round robin
    features: tuple[str, ...] = ()  # switched on in fastgw and, where it has them, nginx (features.py)
    tls: str = ""  # "client": HTTPS from wrk to the proxy; "upstream": HTTPS from the proxy upstream
    key_type: str = "ecdsa"  # of the proxy's certificate (bench/tls.py)
    driver: str = "wrk"  # or "new" / "reuse": TLS handshakes by openssl s_time (bench/tls.py),
    #                      "h2load": HTTP/2 clients, ``connections`` x ``streams`` (bench/http2.py),
    #                      "ws": WebSocket messages through the proxy to an echo (bench/websocket.py),
    #                      "rate": a constant request rate, latency from each due time (bench/tail.py)
    streams: int = 1  # h2load's concurrent streams per connection
    rate: float = 0.0  # driver "rate": requests per second, at constant pace (bench/tail.py)
    grpc: bool = False  # h2load makes gRPC unary calls, a small message each (bench/http2.py)
    upstream_protocol: str = "http/1.1"  # "h2c": HTTP/2 to the upstream (bench/http2.py)
    poll_admin: bool = False  # poll fastgw's admin API as an open status page does (status_poll.py)
    workers: int = 1  # fastgw's --workers and nginx's worker_processes (--workers; haproxy stays at 1)


SCENARIOS = [
    Scenario("small-get", "/items/1", contenders=("direct", "nginx", "haproxy", "fastgw", "aiohttp", "bare")),
    Scenario(
        "latency-c1",
        "/items/1",
        connections=1,
        contenders=("direct", "nginx", "haproxy", "fastgw", "aiohttp", "bare"),
    ),
    Scenario("routes-10k", "/svc9999/items/1", routes=10_000, contenders=("nginx", "fastgw")),
    Scenario("response-64k", "/big", contenders=("direct", "nginx", "haproxy", "fastgw")),
    Scenario("post-4k", "/items", script="post.lua", contenders=("direct", "nginx", "haproxy", "fastgw")),
    Scenario("c1000", "/items/1", connections=1000, contenders=("direct", "nginx", "haproxy", "fastgw")),
    # What features cost per request: the same small GET with them on, against plain fastgw.
    Scenario("jwt+ratelimit", "/items/1", contenders=("nginx", "fastgw"), features=("jwt", "rate_limit")),
    Scenario("rate-limit", "/items/1", contenders=("nginx", "fastgw"), features=("rate_limit",)),
    Scenario("access-log", "/items/1", contenders=("nginx", "fastgw"), features=("access_log",)),
    Scenario("cached", "/items/1", contenders=("nginx", "fastgw"), features=("cache",)),
    # The status page's cost: its sampler alone, then with the page open (polling the admin API).
    Scenario("admin", "/items/1", contenders=("nginx", "fastgw"), features=("admin",)),
    Scenario("status-page", "/items/1", contenders=("nginx", "fastgw"), features=("admin",), poll_admin=True),
    # What a real edge runs at once: JWT, a limit per consumer, the access log, metrics, ids.
    Scenario("production", "/items/1", contenders=("nginx", "fastgw"), features=PRODUCTION),
    # The balancer's cost: two targets, so fastgw picks per request instead of taking its single one.
    *(
        Scenario(f"balance-{name}", "/items/1", contenders=("nginx", "fastgw"), targets=2, balance=name)
        for name in ("round_robin", "p2c", "ewma")
    ),
    # TLS: the same certificate, versions and ciphers for every contender (bench/tls.py).
    Scenario("tls-small-get", "/items/1", contenders=("nginx", "fastgw", "bare"), tls="client"),
    Scenario("tls-handshake", "/items/1", contenders=("nginx", "fastgw", "bare"), tls="client", driver="new"),
    Scenario("tls-handshake-rsa", "/items/1", contenders=("nginx", "fastgw"), tls="client", driver="new",
             key_type="rsa"),
    Scenario("tls-resumed", "/items/1", contenders=("nginx", "fastgw", "bare"), tls="client", driver="reuse"),
    Scenario("https-upstream", "/items/1", contenders=("nginx", "fastgw"), tls="upstream"),
    # HTTP/2 clients (h2load), HTTP/1.1 to the upstream (bench/http2.py).
    *(
        Scenario(f"{name}-m{streams}", "/items/1", connections=16, streams=streams, driver="h2load",
                 tls="client" if name == "h2-tls" else "", contenders=("nginx", "fastgw"))
        for name in ("h2c", "h2-tls") for streams in (10, 1)
    ),
    # WebSocket: small messages each way through open tunnels (bench/websocket.py).
    Scenario("websocket", "/ws", connections=50, contenders=("nginx", "fastgw", "bare"), driver="ws"),
    # HTTP/2 to the upstream, HTTP/1.1 from wrk: nginx by grpc_pass (bench/http2.py).
    Scenario("h2c-upstream", "/items/1", contenders=("nginx", "fastgw"), upstream_protocol="h2c"),
    Scenario("h2c-upstream-c1", "/items/1", connections=1, contenders=("nginx", "fastgw"),
             upstream_protocol="h2c"),
    Scenario("h2c-upstream-64k", "/big", contenders=("nginx", "fastgw"), upstream_protocol="h2c"),
    # gRPC unary calls end to end: h2load over h2c to the proxy, h2c to the upstream (bench/http2.py).
    Scenario("grpc-unary", "/bench.Echo/Unary", connections=16, streams=10, driver="h2load", grpc=True,
             upstream_protocol="h2c", contenders=("direct", "nginx", "fastgw")),
]  # fmt: skip
