"""Each client-side limit and each request-smuggling shape gets its precise status, over a real
socket, and nothing reaches the upstream. Raw bytes in, exact status out."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable

import pytest

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, parse_responses, read_response, send_raw

Make = Callable[..., RunningGateway]


def status_of(gw: RunningGateway, data: bytes | list[bytes], delay: float = 0) -> int:
    responses = parse_responses(send_raw(gw.port, data, delay=delay, timeout=5))
    assert len(responses) == 1, responses
    return responses[0].status


@pytest.fixture
def limited(make_gateway: Make, upstream: int) -> RunningGateway:
    return make_gateway(
        gateway_config(
            upstream,
            limits={
                "max_header_bytes": 4096,
                "max_headers": 20,
                "max_uri_bytes": 512,
                "max_body_bytes": 10000,
            },
        )
    )


def test_header_block_too_large_is_431(limited: RunningGateway) -> None:
    big = build_request("GET", "/echo", [("X-Big", "a" * 5000)])
    assert status_of(limited, big) == 431
    # the same, arriving a byte-run at a time (httptools would buffer it all otherwise)
    assert status_of(limited, [big[:100], big[100:3000], big[3000:]], delay=0.05) == 431


def test_unfinished_oversize_head_is_431_without_waiting(limited: RunningGateway) -> None:
    start = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000
    assert status_of(limited, [start[:10], start[10:]], delay=0.05) == 431


def test_too_many_headers_is_431(limited: RunningGateway) -> None:
    headers = [(f"X-H{i}", "v") for i in range(25)]
    assert status_of(limited, build_request("GET", "/echo", headers)) == 431


def test_uri_too_long_is_414(limited: RunningGateway) -> None:
    assert status_of(limited, build_request("GET", "/echo/" + "a" * 600)) == 414


def test_declared_body_too_large_is_413_before_upstream(limited: RunningGateway) -> None:
    req = build_request("POST", "/sink", [("Content-Length", "20000")])
    assert status_of(limited, req) == 413


def test_chunked_body_over_limit_is_413(limited: RunningGateway) -> None:
    head = build_request("POST", "/sink", [("Transfer-Encoding", "chunked")])
    chunk = b"%x\r\n%b\r\n" % (6000, b"x" * 6000)
    data = send_raw(limited.port, [head, chunk, chunk, b"0\r\n\r\n"], delay=0.05)
    assert parse_responses(data)[0].status == 413


def test_expect_100_continue(limited: RunningGateway) -> None:
    with connect(limited.port) as sock:
        sock.sendall(build_request("POST", "/sink", [("Content-Length", "5"), ("Expect", "100-continue")]))
        sock.settimeout(5)
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        r = read_response(sock)
        assert r.status == 200 and r.json()["body_len"] == 5
    # over the limit: 413 straight away, no 100 Continue
    data = send_raw(
        limited.port,
        build_request("POST", "/sink", [("Content-Length", "20000"), ("Expect", "100-continue")]),
    )
    assert data.startswith(b"HTTP/1.1 413 ")


SMUGGLING = {
    "te-leading-comma": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
    "te-not-chunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-on-http10": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-and-te": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "cl-plus-sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "cl-duplicate": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "http09": b"GET /\r\n\r\n",
    "missing-host": b"GET /echo HTTP/1.1\r\n\r\n",
    "duplicate-host": b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "host-with-slash": b"GET /echo HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "absolute-form-host-mismatch": b"GET http://evil.example/echo HTTP/1.1\r\nHost: good.example\r\n\r\n",
    "obs-fold": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET /echo HTTP/1.1\nHost: x\n\n",
    "path-above-root": b"GET /echo/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded-nul": b"GET /echo/%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-escape": b"GET /echo/%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    "garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_shapes_are_400_and_close(gateway: RunningGateway, upstream: int, name: str) -> None:
    data = send_raw(gateway.port, SMUGGLING[name])
    responses = parse_responses(data)
    assert [r.status for r in responses] == [400], data
    assert responses[0].header("Connection") == "close"


def test_smuggled_second_request_never_reaches_upstream(gateway: RunningGateway) -> None:
    # A classic CL.TE attempt: the hidden request must not be answered or forwarded.
    hidden = b"GET /echo/hidden HTTP/1.1\r\nHost: x\r\n\r\n"
    attack = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
        + hidden
    )
    responses = parse_responses(send_raw(gateway.port, attack))
    assert [r.status for r in responses] == [400]


def test_path_is_normalized_once_and_forwarded_as_matched(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(
        gateway_config(
            upstream,
            routes=[
                {"id": "admin", "path": "/admin/{*rest}", "upstream": "up", "rewrite": "/echo/ADMIN/{rest}"},
                {"id": "rest", "path": "/{*rest}", "upstream": "up"},
            ],
        )
    )

    def path_seen(target: str) -> str:
        (r,) = parse_responses(send_raw(gw.port, build_request("GET", target, [("Connection", "close")])))
        return str(r.json()["path"])

    # dot-segments and encoded unreserved characters resolve before matching
    assert path_seen("/echo/x/%2e%2e/../admin/panel") == "/echo/ADMIN/panel"
    assert path_seen("/echo/%7Euser/./a") == "/echo/~user/a"
    # an encoded slash stays encoded and is never a separator
    assert path_seen("/echo/a%2fb") == "/echo/a%2Fb"


def test_header_and_forwarding_rules(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream))
    req = build_request(
        "GET",
        "/echo/h",
        [
            ("Connection", "keep-alive, X-Secret, X-Forwarded-For"),
            ("X-Secret", "hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "bad id with spaces"),
            ("X-Kept", "yes"),
        ],
        host="shop.local",
    )
    with connect(gw.port) as sock:
        sock.sendall(req)
        seen = dict((n.lower(), v) for n, v in read_response(sock).json()["headers"])
    assert "x-secret" not in seen and "keep-alive" not in seen and "connection" not in seen
    assert seen["x-kept"] == "yes"
    # not a trusted proxy: the client's forwarding claims are replaced, not extended
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "shop.local"
    assert seen["x-request-id"] != "bad id with spaces" and len(seen["x-request-id"]) >= 16
    assert seen["host"] == f"127.0.0.1:{upstream}"


def test_trusted_proxy_forwarding_headers_are_extended(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, trusted_proxies=["127.0.0.0/8"]))
    req = build_request(
        "GET",
        "/echo/t",
        [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"), ("X-Request-Id", "abc-123")],
    )
    with connect(gw.port) as sock:
        sock.sendall(req)
        r = read_response(sock)
    seen = dict((n.lower(), v) for n, v in r.json()["headers"])
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-request-id"] == "abc-123"


def test_slowloris_head_gets_408(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, timeouts={"head": "0.5s"}))
    with connect(gw.port) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        r = read_response(sock, timeout=5)
        assert r.status == 408


def test_head_timeouts_never_fire_early(make_gateway: Make, upstream: int) -> None:
    """Ten slowloris clients started 37 ms apart: each 408 comes no sooner than 500 ms after its
    first byte. (Deadlines computed from a clock that ticked every 250 ms fired as early as 0.30 s.)"""
    gw = make_gateway(gateway_config(upstream, timeouts={"head": "0.5s"}))
    sockets = [connect(gw.port) for _ in range(10)]
    started: dict[socket.socket, float] = {}
    answered: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            started[sock] = time.monotonic()
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
            selector.register(sock, selectors.EVENT_READ)
            time.sleep(0.037)
        while len(answered) < len(sockets):
            events = selector.select(timeout=5)
            assert events, "a head timeout did not fire"
            for key, _ in events:
                answered[key.fileobj] = time.monotonic()  # type: ignore[index]
                selector.unregister(key.fileobj)
    for sock in sockets:
        assert answered[sock] - started[sock] >= 0.5
        assert sock.recv(100).startswith(b"HTTP/1.1 408 ")
        sock.close()


def test_stalled_body_gets_408(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, timeouts={"body": "0.5s"}))
    with connect(gw.port) as sock:
        sock.sendall(build_request("POST", "/sink", [("Content-Length", "100")]) + b"only some")
        r = read_response(sock, timeout=5)
        assert r.status == 408


def test_idle_keep_alive_is_closed(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, timeouts={"keepalive": "0.5s"}))
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/echo"))
        assert read_response(sock).status == 200
        sock.settimeout(5)
        assert sock.recv(10) == b""  # closed by the gateway, no bytes


def test_connection_cap_degrades_with_503(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, limits={"max_connections": 2}))
    held = [connect(gw.port), connect(gw.port)]
    try:
        time.sleep(0.2)
        data = send_raw(gw.port, build_request("GET", "/echo"))
        assert data.startswith(b"HTTP/1.1 503 ")
        for sock in held:
            sock.sendall(build_request("GET", "/echo"))
            assert read_response(sock).status == 200
    finally:
        for sock in held:
            sock.close()


def test_closed_connections_are_let_go(make_gateway: Make, upstream: int) -> None:
    """A connection's deadlines must not keep it in memory once it is closed: 300 connections of
    one request each leave nothing behind (their head and keep-alive deadlines were minutes
    ahead, and upstream connections closed by the upstream go too)."""
    from tests.support.gateway import live_objects

    gw = make_gateway(gateway_config(upstream))
    for i in range(300):
        sock = connect(gw.port)
        with sock:
            sock.sendall(build_request("GET", "/close" if i % 2 else "/echo", version="HTTP/1.0"))
            while sock.recv(65536):
                pass
    deadline = time.monotonic() + 5
    while gw.connection_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.connection_count() == 0
    assert live_objects(gw, "ClientProtocol") == 0
    assert live_objects(gw, "UpstreamConnection") <= 1  # the pool keeps at most its idle one
