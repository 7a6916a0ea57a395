"""What the gateway adds to, takes from and passes on in a response head, and what a request head
may not smuggle in: 1xx responses (RFC 9110 15.2), Date (6.6.1), the request id on every response,
header names with underscores, and error bodies that name an upstream without its address."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.ports import free_port
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]


def exchange(gw: RunningGateway, request: bytes) -> Any:
    with connect(gw.port) as sock:
        sock.sendall(request)
        return read_response(sock)


# -- 1xx -----------------------------------------------------------------------------------------


def test_103_early_hints_reach_an_http11_client_with_their_headers(gateway: RunningGateway) -> None:
    r = exchange(gateway, build_request("GET", "/early-hints"))
    assert r.status == 200
    (hints,) = r.interim
    assert hints.status == 103
    assert hints.header("Link") == "</app.css>; rel=preload"
    assert hints.header("Connection") is None  # hop-by-hop: never passed on


def test_no_1xx_for_an_http10_client(gateway: RunningGateway) -> None:
    r = exchange(gateway, build_request("GET", "/early-hints", version="HTTP/1.0"))
    assert r.status == 200 and r.interim == []


def test_the_upstreams_100_is_not_sent_again_after_the_gateways_own(gateway: RunningGateway) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(
            build_request("POST", "/continue", [("Content-Length", "5"), ("Expect", "100-continue")])
        )
        sock.settimeout(5)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # the gateway's own
        sock.sendall(b"hello")
        r = read_response(sock)
        assert r.status == 200 and r.interim == []  # the upstream's 100 was not passed on twice


# -- Date and the request id ---------------------------------------------------------------------


def test_a_response_without_date_gets_one(gateway: RunningGateway) -> None:
    r = exchange(gateway, build_request("GET", "/echo/x"))  # the test upstream sends no Date
    (date,) = r.header_values("Date")
    assert parsedate_to_datetime(date).tzname() == "UTC"


def test_an_upstream_date_is_kept_and_not_doubled(gateway: RunningGateway) -> None:
    r = exchange(gateway, build_request("GET", "/cache/d?expires=60"))  # sends Date and Expires
    assert len(r.header_values("Date")) == 1


def test_every_proxied_response_carries_the_request_id_the_upstream_saw(gateway: RunningGateway) -> None:
    r = exchange(gateway, build_request("GET", "/echo/x"))
    sent = dict((n.lower(), v) for n, v in r.json()["headers"])["x-request-id"]
    assert r.header_values("X-Request-Id") == [sent]
    # A client's valid id is continued, end to end.
    r = exchange(gateway, build_request("GET", "/echo/x", [("X-Request-Id", "abc-123")]))
    assert r.header_values("X-Request-Id") == ["abc-123"]


def test_the_upstreams_own_request_id_header_is_replaced(gateway: RunningGateway) -> None:
    r = exchange(gateway, build_request("GET", "/respond/200", [("X-Respond-X-Request-Id", "upstream-made")]))
    (rid,) = r.header_values("X-Request-Id")
    assert rid != "upstream-made"


def test_the_request_id_header_name_is_configurable(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, request_id_header="X-Correlation-Id"))
    r = exchange(gw, build_request("GET", "/echo/x", [("X-Correlation-Id", "corr-7")]))
    assert r.header("X-Correlation-Id") == "corr-7" and r.header("X-Request-Id") is None
    seen = dict((n.lower(), v) for n, v in r.json()["headers"])
    assert seen["x-correlation-id"] == "corr-7" and "x-request-id" not in seen
    missing = exchange(gw, build_request("GET", "/nowhere-else", host="other"))
    assert missing.header("X-Correlation-Id")  # errors carry it too


# -- header names with underscores ---------------------------------------------------------------


def claims_route(upstream: int, **listener: Any) -> dict[str, Any]:
    """The gateway sets X-User-Id itself; a CGI/WSGI upstream reads X_User_Id as the same variable."""
    route = {
        "id": "all",
        "path": "/{*rest}",
        "upstream": "up",
        "plugins": [{"name": "headers", "request": {"set": {"X-User-Id": "alice"}}}],
    }
    return gateway_config(upstream, routes=[route], **listener)


def seen_headers(r: Any) -> list[tuple[str, str]]:
    return [(n.lower(), v) for n, v in r.json()["headers"]]


def test_underscore_header_names_are_dropped_by_default(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(claims_route(upstream))
    r = exchange(gw, build_request("GET", "/echo/x", [("X_User_Id", "admin"), ("X-Plain", "1")]))
    seen = seen_headers(r)
    assert ("x-user-id", "alice") in seen and ("x-plain", "1") in seen
    assert not [n for n, _ in seen if "_" in n]


def test_underscore_header_names_can_be_refused(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(claims_route(upstream, headers_with_underscores="reject"))
    r = exchange(gw, build_request("GET", "/echo/x", [("X_User_Id", "admin")]))
    assert r.status == 400 and "underscore" in r.json()["error"]


def test_underscore_header_names_can_be_allowed(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(claims_route(upstream, headers_with_underscores="allow"))
    r = exchange(gw, build_request("GET", "/echo/x", [("X_User_Id", "admin")]))
    assert ("x_user_id", "admin") in seen_headers(r)


# -- error bodies name upstreams, never addresses ------------------------------------------------


@pytest.mark.parametrize("path", ["/echo/x", "/malformed", "/early-close"])
def test_a_502_names_the_upstream_not_its_address(make_gateway: Make, upstream: int, path: str) -> None:
    dead = free_port()
    gw = make_gateway(gateway_config(dead if path == "/echo/x" else upstream))
    r = exchange(gw, build_request("GET", path))
    assert r.status == 502
    error = r.json()["error"]
    assert error.startswith("upstream 'up'")
    assert "127.0.0.1" not in error and str(dead) not in error and str(upstream) not in error
