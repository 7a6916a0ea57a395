"""The gateway's own CPU cost for one proxied request, with the kernel taken out.

One client connection and one pooled upstream connection get no-op transports; each round feeds
a browser-like GET into the client protocol and a small keep-alive response into the upstream
protocol, exactly as uvloop would, so what is timed is parsing, routing, the exchange and head
rendering, nothing else. ``python bench/hot_path.py [rounds] [feature,...]`` prints microseconds
per request, with the named features of ``bench.features.FEATURES`` on (jwt, rate_limit,
access_log); ``bench/micro/test_hot_path_bench.py`` runs the same under pytest-benchmark.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.features import feature_parts
from fastgw._proxy import ClientProtocol, UpstreamConnection
from fastgw.config import parse_config
from fastgw.observe.access_log import access_log_for
from fastgw.plan import compile_plan
from fastgw.server.listener import ListenerServer

REQUEST = b"GET /items/1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 23:52:14 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 35\r\nConnection: keep-alive\r\n\r\n"
    b'{"id":1,"name":"item","price":9.99}'
)


class NullTransport:
    """Accepts every transport call and does nothing: the kernel's share is not ours to time."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, data: Any) -> None: ...
    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_reading(self) -> bool:
        return True

    def close(self) -> None: ...
    def abort(self) -> None: ...


def make_round(features: tuple[str, ...] = ()) -> Any:
    """Build a gateway with one route (and ``features`` on) and return a function proxying one
    request."""
    parts = feature_parts(Path(tempfile.mkdtemp(prefix="fastgw-hot-path-")), features)
    doc: dict[str, Any] = {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": ["127.0.0.1:9"]}},
        "routes": [
            {"path": "/items/{id}", "upstream": "up", "plugins": [yaml.safe_load(p) for p in parts.plugins]}
        ],
        **{k: v for line in parts.top for k, v in yaml.safe_load(line).items()},
    }
    request = REQUEST[:-2] + b"".join(f"{n}: {v}\r\n".encode() for n, v in parts.headers.items()) + b"\r\n"
    plan = compile_plan(parse_config(doc, "bench.yaml"))
    server = ListenerServer(next(iter(plan.listeners.values())))
    server.observers.access_log = access_log_for(plan.config.access_log, None)
    client = ClientProtocol(server)
    client.connection_made(NullTransport())  # type: ignore[arg-type]
    pool = next(iter(plan.pools.values()))
    conn = UpstreamConnection(pool)
    conn.connection_made(NullTransport())  # type: ignore[arg-type]
    pool.open = 1
    conn.reusable = True
    pool.idle.add(conn)

    def one_request() -> None:
        client.data_received(request)
        active = client.active
        if active is not None:  # None: a plugin answered (a cache hit)
            active.conn.data_received(RESPONSE)  # type: ignore[union-attr]

    return one_request


async def timed(rounds: int, features: tuple[str, ...]) -> float:
    """Seconds per request; on a running loop, as in the gateway (the access log sets timers)."""
    one_request = make_round(features)
    for _ in range(2000):
        one_request()
    # CPU time, not wall time: what the process spent, even while other work shares the machine.
    start = time.process_time()
    for _ in range(rounds):
        one_request()
    return (time.process_time() - start) / rounds


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    features = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ()
    elapsed = asyncio.run(timed(rounds, features))
    print(f"{elapsed * 1e6:.2f} us of CPU per proxied request in the gateway's own code")


if __name__ == "__main__":
    main()
