"""What plugins read and change on ``ctx`` beyond the hook points: the client's address behind
trusted proxies, the consumer and claims slots, and removing a client's request header."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import orjson
import pytest

from fastgw import hooks
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]


class Identify(Plugin):
    """Reports ctx.client_ip upstream, sets consumer/claims, strips X-User from the client."""

    name: ClassVar[str] = "test_identify"

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls()

    def on_request(self, ctx: Any) -> None:
        assert ctx.consumer is None and ctx.claims is None  # fresh on every exchange (free list)
        ctx.consumer = "alice"
        ctx.claims = {"sub": "alice"}
        ctx.remove_request_header(b"x-user")
        assert ctx.header(b"x-user") is None

    def on_upstream_request(self, ctx: Any) -> None:
        ctx.upstream_headers.append((b"X-Client-Ip", ctx.client_ip.encode()))
        ctx.upstream_headers.append((b"X-User", ctx.claims["sub"].encode()))


@pytest.fixture(autouse=True)
def identify() -> Iterator[None]:
    register_plugin(Identify)
    yield
    hooks._REGISTRY.pop(Identify.name, None)


def seen_headers(gw: RunningGateway, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    with connect(gw.port) as sock:
        for _ in range(2):  # twice on one connection: the second exchange comes from the free list
            sock.sendall(build_request("GET", "/echo", headers))
            r = read_response(sock)
            assert r.status == 200
    return [(n.lower(), v) for n, v in r.json()["headers"]]


def doc(upstream: int, **listener: Any) -> dict[str, Any]:
    routes = [{"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "test_identify"}]}]
    return gateway_config(upstream, routes=routes, **listener)


def test_untrusted_peer_is_the_client_and_forged_header_replaced(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream))
    seen = seen_headers(gw, [("X-Forwarded-For", "203.0.113.9"), ("X-User", "mallory")])
    assert ("x-client-ip", "127.0.0.1") in seen
    assert [v for n, v in seen if n == "x-user"] == ["alice"]


def test_trusted_proxy_chain_is_read_right_to_left(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"]))
    # spoofed by the client, then appended by two trusted proxies: the last untrusted hop is the client
    seen = seen_headers(gw, [("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3")])
    assert ("x-client-ip", "203.0.113.9") in seen


def test_trusted_peer_without_forwarded_header_is_the_client(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, trusted_proxies=["127.0.0.0/8"]))
    assert ("x-client-ip", "127.0.0.1") in seen_headers(gw, [])


class AddHeaders(Plugin):
    """Adds request headers from an awaited on_request, as an auth plugin does with what it learned."""

    name: ClassVar[str] = "test_add_headers"
    refused: ClassVar[list[str]] = []

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls()

    async def on_request(self, ctx: Any) -> None:
        for name, value in [(b"X-Injected", b"a\r\nX-Evil: 1"), (b"X Bad", b"v"), (b"", b"v")]:
            try:
                ctx.add_request_header(name, value)
            except ValueError:
                self.refused.append(name.decode())
        ctx.remove_request_header(b"x-learned")
        ctx.add_request_header(b"X-Learned", b"from-io")


def test_headers_added_in_on_request_reach_the_upstream_and_cannot_inject(
    make_gateway: Make, upstream: int
) -> None:
    register_plugin(AddHeaders)
    AddHeaders.refused.clear()
    try:
        routes = [
            {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "test_add_headers"}]}
        ]
        gw = make_gateway(gateway_config(upstream, routes=routes))
        seen = seen_headers(gw, [("X-Learned", "forged")])
    finally:
        hooks._REGISTRY.pop(AddHeaders.name, None)
    assert [v for n, v in seen if n == "x-learned"] == ["from-io"]
    assert not [n for n, _ in seen if n in ("x-injected", "x-evil", "x bad")]
    assert AddHeaders.refused == ["X-Injected", "X Bad", ""] * 2  # seen_headers sends two requests


class ReadHeaders(Plugin):
    """Answers with what ctx.header finds for a few names, read straight from the raw head."""

    name: ClassVar[str] = "test_read_headers"

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls()

    def on_request(self, ctx: Any) -> Response:
        found = {n.decode(): (v.decode() if (v := ctx.header(n)) is not None else None) for n in NAMES}
        return Response(200, orjson.dumps(found))


NAMES = [b"x-a", b"x-ab", b"x-empty", b"x-missing", b"host", b"x-last"]


@pytest.mark.parametrize("split", [None, 20, 45], ids=["one-read", "split-in-names", "split-in-values"])
def test_header_finds_exact_names_case_blind_and_trims_whitespace(
    make_gateway: Make, upstream: int, split: int | None
) -> None:
    register_plugin(ReadHeaders)
    try:
        routes = [
            {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "test_read_headers"}]}
        ]
        gw = make_gateway(gateway_config(upstream, routes=routes))
        raw = (
            b"GET /h HTTP/1.1\r\nHost: example.test\r\nX-Ab:  two words \t\r\nx-A: 1\r\n"
            b"X-Empty:\r\nX-Last: end\r\n\r\n"
        )
        with connect(gw.port) as sock:
            if split is None:
                sock.sendall(raw)
            else:  # the head arrives in two reads: the parser keeps it in its own buffer
                sock.sendall(raw[:split])
                time.sleep(0.05)
                sock.sendall(raw[split:])
            r = read_response(sock)
        assert r.json() == {
            "x-a": "1",
            "x-ab": "two words",
            "x-empty": "",
            "x-missing": None,
            "host": "example.test",
            "x-last": "end",
        }
    finally:
        hooks._REGISTRY.pop(ReadHeaders.name, None)


class CountHeaders(Plugin):
    """Answers with ctx.header_count for a few names: from the raw head, then from the parsed
    pairs, then once x-twice is removed; and what the context says about the client."""

    name: ClassVar[str] = "test_count_headers"

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls()

    def on_request(self, ctx: RequestContext) -> Response:
        raw = {n.decode(): ctx.header_count(n) for n in COUNTED}
        assert ctx.headers  # parsed into pairs from here on
        parsed = {n.decode(): ctx.header_count(n) for n in COUNTED}
        ctx.remove_request_header(b"x-twice")
        client = {
            "ip": ctx.client_ip,
            "address": ctx.client_address.decode(),
            "trusted": ctx.via_trusted_proxy,
            "proto": ctx.forwarded_proto.decode(),
            "host": ctx.forwarded_host.decode(),
            "for": ctx.forwarded_for.decode(),
        }
        answer = {"raw": raw, "parsed": parsed, "removed": ctx.header_count(b"x-twice"), "client": client}
        return Response(200, orjson.dumps(answer))


COUNTED = [b"x-twice", b"x-once", b"x-hop", b"x-missing", b"x_under"]
COUNTED_HEAD = (
    b"GET /c HTTP/1.1\r\nHost: gw.test:8080\r\nX-Twice: 1\r\nx-twice-not: 3\r\nX-Once: 1\r\n"
    b"x-twice: 2\r\nX-Hop: a\r\nConnection: keep-alive, x-hop\r\nX-Hop: b\r\nX_Under: u\r\n"
    b"X-Forwarded-For: 198.51.100.1, 203.0.113.9\r\nX-Forwarded-Proto: HTTPS\r\n"
    b"X-Forwarded-Host: api.example.com, internal\r\n\r\n"
)


def counted(make_gateway: Make, upstream: int, **listener: Any) -> dict[str, Any]:
    register_plugin(CountHeaders)
    try:
        routes = [
            {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "test_count_headers"}]}
        ]
        gw = make_gateway(gateway_config(upstream, routes=routes, **listener))
        with connect(gw.port) as sock:
            sock.sendall(COUNTED_HEAD)
            r = read_response(sock)
    finally:
        hooks._REGISTRY.pop(CountHeaders.name, None)
    assert r.status == 200, r.body
    answer: dict[str, Any] = r.json()
    return answer


def test_header_count_counts_the_lines_received_until_one_is_removed(
    make_gateway: Make, upstream: int
) -> None:
    answer = counted(make_gateway, upstream)
    # x-hop is named in Connection (not forwarded) but was received twice; x_under is dropped
    # (headers_with_underscores: drop): neither forwarded nor seen.
    expected = {"x-twice": 2, "x-once": 1, "x-hop": 2, "x-missing": 0, "x_under": 0}
    assert answer["raw"] == expected and answer["parsed"] == expected
    assert answer["removed"] == 0


def test_the_context_reads_x_forwarded_only_from_a_trusted_proxy(make_gateway: Make, upstream: int) -> None:
    assert counted(make_gateway, upstream)["client"] == {
        "ip": "127.0.0.1",
        "address": "127.0.0.1",
        "trusted": False,
        "proto": "http",
        "host": "gw.test:8080",
        "for": "127.0.0.1",
    }
    assert counted(make_gateway, upstream, trusted_proxies=["127.0.0.0/8"])["client"] == {
        "ip": "203.0.113.9",
        "address": "203.0.113.9",
        "trusted": True,
        "proto": "https",
        "host": "api.example.com",
        "for": "198.51.100.1, 203.0.113.9, 127.0.0.1",
    }
