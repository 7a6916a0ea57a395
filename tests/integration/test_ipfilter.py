"""``ip_filter`` through the real gateway: allow and deny lists over IPv4 and IPv6 sockets, and
the client address taken from X-Forwarded-For only behind trusted proxies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]


def filtered(upstream: int, bind: str = "127.0.0.1:0", **options: Any) -> dict[str, Any]:
    listener = {k: options.pop(k) for k in ("trusted_proxies",) if k in options}
    routes = [
        {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "ip_filter", **options}]}
    ]
    document = gateway_config(upstream, routes=routes, **listener)
    document["listeners"][0]["bind"] = bind
    return document


def get(gw: RunningGateway, forwarded: str | None = None, host: str = "127.0.0.1") -> RawResponse:
    headers = [("X-Forwarded-For", forwarded)] if forwarded else []
    with connect(gw.port, host=host) as sock:
        sock.sendall(build_request("GET", "/echo", headers))
        return read_response(sock)


def test_allow_list_admits_its_networks_only(make_gateway: Make, upstream: int) -> None:
    assert get(make_gateway(filtered(upstream, allow=["127.0.0.0/8"]))).status == 200
    refused = get(make_gateway(filtered(upstream, allow=["10.0.0.0/8", "::1"])))
    assert refused.status == 403
    assert refused.json() == {
        "error": "client address not allowed",
        "request_id": refused.header("X-Request-Id"),
    }


def test_deny_wins_over_allow(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(filtered(upstream, allow=["127.0.0.0/8"], deny=["127.0.0.1"]))
    assert get(gw).status == 403


def test_ipv6_client(make_gateway: Make, upstream: int) -> None:
    allowed = make_gateway(filtered(upstream, bind="[::1]:0", allow=["::1/128"]))
    assert get(allowed, host="::1").status == 200
    denied = make_gateway(filtered(upstream, bind="[::1]:0", deny=["::/96", "::1"]))
    assert get(denied, host="::1").status == 403


def test_forwarded_for_counts_only_behind_trusted_proxies(make_gateway: Make, upstream: int) -> None:
    trusting = make_gateway(
        filtered(upstream, deny=["203.0.113.0/24", "2001:db8::/32"], trusted_proxies=["127.0.0.0/8"])
    )
    assert get(trusting, "203.0.113.5").status == 403
    assert get(trusting, "2001:db8::5").status == 403
    assert get(trusting, "::ffff:203.0.113.5").status == 403  # IPv4-mapped is the IPv4 address
    assert get(trusting, "198.51.100.5").status == 200
    assert get(trusting, "203.0.113.5, 198.51.100.5").status == 200  # the nearest hop is the client
    assert get(trusting, "not-an-address").status == 403  # garbage from a trusted proxy: refused
    untrusting = make_gateway(filtered(upstream, deny=["203.0.113.0/24"]))
    assert get(untrusting, "203.0.113.5").status == 200  # the peer, 127.0.0.1, is the client


def test_allow_list_with_ipv4_mapped_network(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(filtered(upstream, allow=["::ffff:198.51.100.0/120"], trusted_proxies=["127.0.0.0/8"]))
    assert get(gw, "198.51.100.20").status == 200
    assert get(gw, "198.51.101.20").status == 403
