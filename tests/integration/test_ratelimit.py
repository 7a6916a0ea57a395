"""The per-process rate limit through the real gateway: 429 after the limit with the RateLimit
fields and Retry-After, keys (client address behind trusted proxies, a header, the consumer an
auth plugin set, the route), the bypass list, and a configured refusal."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from fastgw import hooks
from fastgw.hooks import Plugin, register_plugin
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]
RATE_LIMIT = re.compile(r'"(?P<name>[^"]+)";r=(?P<r>\d+);t=(?P<t>\d+)')


class HeaderConsumer(Plugin):
    """Stands for an auth plugin: the consumer is whoever X-User names."""

    name: ClassVar[str] = "test_header_consumer"

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls()

    def on_request(self, ctx: Any) -> None:
        user = ctx.header(b"x-user")
        ctx.consumer = user.decode() if user else None


@pytest.fixture(autouse=True)
def header_consumer() -> Iterator[None]:
    register_plugin(HeaderConsumer)
    yield
    hooks._REGISTRY.pop(HeaderConsumer.name, None)


def limited(upstream: int, limit: dict[str, Any], consumer: bool = False, **listener: Any) -> dict[str, Any]:
    plugins = [{"name": "test_header_consumer"}] if consumer else []
    plugins.append({"name": "rate_limit", "window": 60, **limit})
    routes = [{"id": "limited", "path": "/{*rest}", "upstream": "up", "plugins": plugins}]
    return gateway_config(upstream, routes=routes, **listener)


def get(
    gw: RunningGateway, headers: list[tuple[str, str]] | None = None, target: str = "/echo"
) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target, headers or []))
        return read_response(sock)


def statuses(
    gw: RunningGateway, n: int, headers: list[tuple[str, str]] | None = None, target: str = "/echo"
) -> list[int]:
    return [get(gw, headers, target).status for _ in range(n)]


def rate_limit_field(r: RawResponse) -> tuple[str, int, int]:
    match = RATE_LIMIT.fullmatch(r.header("RateLimit") or "")
    assert match, r.headers
    return match["name"], int(match["r"]), int(match["t"])


def test_429_after_the_limit_with_fields_and_retry_after(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"policy": "per-ip", "limit": 3, "key": "ip"}))
    admitted = [get(gw) for _ in range(3)]
    assert [r.status for r in admitted] == [200, 200, 200]
    assert all(r.json()["path"] == "/echo" for r in admitted)  # really proxied
    assert [rate_limit_field(r)[:2] for r in admitted] == [("per-ip", 2), ("per-ip", 1), ("per-ip", 0)]
    assert all(1 <= rate_limit_field(r)[2] <= 60 for r in admitted)
    assert admitted[0].header("RateLimit-Policy") == '"per-ip";q=3;w=60'

    refused = get(gw)
    assert refused.status == 429
    body = refused.json()
    assert body["error"] == "rate limit exceeded" and body["request_id"] == refused.header("X-Request-Id")
    retry_after = int(refused.header("Retry-After") or "0")
    assert 1 <= retry_after <= 120  # the next window, where these 3 still weigh, then some
    assert rate_limit_field(refused) == ("per-ip", 0, retry_after)
    assert refused.header("RateLimit-Policy") == '"per-ip";q=3;w=60'


def test_older_header_styles_on_request(make_gateway: Make, upstream: int) -> None:
    limit = {"limit": 2, "key": "ip", "headers": ["legacy", "x"]}
    gw = make_gateway(limited(upstream, limit))
    r = get(gw)
    assert r.header("RateLimit") is None and r.header("RateLimit-Policy") is None
    assert (r.header("RateLimit-Limit"), r.header("RateLimit-Remaining")) == ("2", "1")
    assert (r.header("X-RateLimit-Limit"), r.header("X-RateLimit-Remaining")) == ("2", "1")
    assert r.header("RateLimit-Reset") == r.header("X-RateLimit-Reset")
    get(gw)
    refused = get(gw)
    assert refused.status == 429 and refused.header("X-RateLimit-Remaining") == "0"
    assert refused.header("X-RateLimit-Reset") == refused.header("Retry-After")


def test_no_fields_when_headers_are_turned_off(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 1, "key": "ip", "headers": []}))
    first, second = get(gw), get(gw)
    assert first.status == 200 and not [n for n, _ in first.headers if "ratelimit" in n.lower()]
    assert second.status == 429 and second.header("Retry-After")


def test_token_bucket_refuses_after_the_burst(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 2, "key": "ip", "algorithm": "token_bucket"}))
    assert statuses(gw, 3) == [200, 200, 429]


def test_client_address_behind_trusted_proxies(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 2, "key": "ip"}, trusted_proxies=["127.0.0.0/8"]))
    alice = [("X-Forwarded-For", "203.0.113.1")]
    bob = [("X-Forwarded-For", "198.51.100.1, 203.0.113.2")]  # a spoofed hop first
    assert statuses(gw, 3, alice) == [200, 200, 429]
    assert statuses(gw, 3, bob) == [200, 200, 429]
    # the spoofed hop does not buy a new bucket: the nearest untrusted hop is still bob
    assert statuses(gw, 1, [("X-Forwarded-For", "192.0.2.77, 203.0.113.2")]) == [429]


def test_untrusted_peer_cannot_pick_its_key_with_forwarded_for(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 2, "key": "ip"}))
    assert statuses(gw, 1, [("X-Forwarded-For", "203.0.113.1")]) == [200]
    assert statuses(gw, 2, [("X-Forwarded-For", "203.0.113.2")]) == [200, 429]


def test_keyed_by_header(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 1, "key": "header:X-Api-Key"}))
    assert statuses(gw, 2, [("X-Api-Key", "one")]) == [200, 429]
    assert statuses(gw, 2, [("X-Api-Key", "two")]) == [200, 429]
    assert statuses(gw, 2) == [200, 429]  # without the header: one shared bucket, not a free pass


def test_keyed_by_consumer(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 2, "key": "consumer"}, consumer=True))
    assert statuses(gw, 3, [("X-User", "alice")]) == [200, 200, 429]
    assert statuses(gw, 3, [("X-User", "bob")]) == [200, 200, 429]


def test_combined_key_of_route_and_consumer(make_gateway: Make, upstream: int) -> None:
    routes = [
        {"id": "a", "path": "/echo/a", "upstream": "up"},
        {"id": "b", "path": "/echo/b", "upstream": "up"},
    ]
    document = gateway_config(upstream, routes=routes)
    document["plugins"] = [  # one limit for every route, counted per route and consumer
        {"name": "test_header_consumer"},
        {"name": "rate_limit", "limit": 1, "window": 60, "key": ["route", "consumer"]},
    ]
    gw = make_gateway(document)
    alice = [("X-User", "alice")]
    assert statuses(gw, 2, alice, "/echo/a") == [200, 429]
    assert statuses(gw, 2, alice, "/echo/b") == [200, 429]
    assert statuses(gw, 1, [("X-User", "bob")], "/echo/a") == [200]


def test_bypass_by_consumer_and_by_address(make_gateway: Make, upstream: int) -> None:
    limit = {
        "limit": 1,
        "key": "ip",
        "bypass": {"consumers": ["ops"], "ips": ["203.0.113.0/24", "2001:db8::/32"]},
    }
    gw = make_gateway(limited(upstream, limit, consumer=True, trusted_proxies=["127.0.0.0/8"]))
    ops = get(gw, [("X-User", "ops")])
    assert ops.status == 200 and ops.header("RateLimit") is None  # not counted, not told
    assert statuses(gw, 3, [("X-User", "ops")]) == [200, 200, 200]
    for address in ("203.0.113.50", "2001:db8::7", "::ffff:203.0.113.9"):
        assert statuses(gw, 3, [("X-Forwarded-For", address)]) == [200, 200, 200], address
    assert statuses(gw, 2, [("X-Forwarded-For", "198.51.100.1")]) == [200, 429]


def test_configured_refusal(make_gateway: Make, upstream: int) -> None:
    reject = {"status": 503, "body": "slow down\n"}
    gw = make_gateway(limited(upstream, {"limit": 1, "key": "ip", "reject": reject}))
    get(gw)
    refused = get(gw)
    assert (refused.status, refused.body) == (503, b"slow down\n")
    assert refused.header("Content-Type") == "text/plain; charset=utf-8"
    assert refused.header("Retry-After")


def test_connection_stays_usable_after_a_refusal(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(limited(upstream, {"limit": 1, "key": "ip"}))
    with connect(gw.port) as sock:
        seen = []
        for _ in range(3):
            sock.sendall(build_request("GET", "/echo"))
            seen.append(read_response(sock).status)
    assert seen == [200, 429, 429]
