"""Authentication and authorization through the real gateway: what a client gets back (401 and
403 as small JSON with the request id and a challenge) and what the upstream sees (claims and
consumers copied into headers and the query, the client's forged copies and credentials gone)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from fastgw.plugins.auth_basic import hash_password
from fastgw.plugins.auth_key import hash_key
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.tokens import claims, public_pem, sign

Make = Callable[..., RunningGateway]
JWT = {"name": "jwt", "public_key": "", "issuer": "https://issuer.test", "audience": "api", "leeway": 0}
CLAIMS = {
    "name": "claims",
    "headers": {"X-User-Id": "sub", "X-Tenant": "org.tenant"},
    "query": {"tenant": "org.tenant"},
    "consumer_header": "X-Consumer",
}


def routes() -> list[dict[str, Any]]:
    jwt = {**JWT, "public_key": public_pem("rsa")}
    return [
        {
            "id": "orders",
            "path": "/orders/{*rest}",
            "upstream": "up",
            "rewrite": "/echo/orders/{rest}",
            "plugins": [jwt, {"name": "authorize", "scopes": ["orders:read"]}, CLAIMS],
        },
        {
            "id": "public",
            "path": "/maybe/{*rest}",
            "upstream": "up",
            "rewrite": "/echo/{rest}",
            "plugins": [{**jwt, "optional": True}, {"name": "authorize", "claims": {"role": "admin"}}],
        },
        {
            "id": "keyed",
            "path": "/keyed/{*rest}",
            "upstream": "up",
            "rewrite": "/echo/{rest}",
            "plugins": [
                {"name": "api_key", "query": "api_key", "consumers": {"svc-a": hash_key("key-a")}},
                {"name": "claims", "consumer_header": "X-Consumer"},
            ],
        },
        {
            "id": "staff",
            "path": "/staff/{*rest}",
            "upstream": "up",
            "rewrite": "/echo/{rest}",
            "plugins": [
                {"name": "basic_auth", "users": {"ann": hash_password("s3cret", ln=4, r=8, p=1)}},
                {"name": "authorize", "consumers": ["ann"]},
                {"name": "claims", "consumer_header": "X-Consumer"},
            ],
        },
    ]


def call(gw: RunningGateway, target: str, headers: list[tuple[str, str]] | None = None) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target, headers or []))
        return read_response(sock)


def upstream_saw(response: RawResponse) -> tuple[str, dict[str, list[str]]]:
    """The target and headers (lower-case name -> values) the upstream echoed."""
    assert response.status == 200, response.body
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return response.json()["path"], seen


def error(response: RawResponse, status: int) -> tuple[str, str | None]:
    """The JSON error of a gateway answer (with the request id of its X-Request-Id) and its challenge."""
    assert response.status == status, (response.status, response.body)
    assert response.header("Content-Type") == "application/json"
    body = response.json()
    assert body == {"error": body["error"], "request_id": response.header("X-Request-Id")}
    return body["error"], response.header("WWW-Authenticate")


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def test_jwt_authorize_and_claims_to_upstream(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    token = sign(claims(sub="alice", scope="orders:read", org={"tenant": "acme"}))
    forged = [("X-User-Id", "root"), ("x-tenant", "evil"), ("X-Consumer", "root")]
    with connect(gw.port) as sock:  # twice on one connection: the second is a cache hit
        for _ in range(2):
            sock.sendall(build_request("GET", "/orders/7?tenant=evil&page=2", [bearer(token), *forged]))
            target, seen = upstream_saw(read_response(sock))
            assert target == "/echo/orders/7?page=2&tenant=acme"
            assert seen["x-user-id"] == ["alice"] and seen["x-tenant"] == ["acme"]
            assert seen["x-consumer"] == ["alice"]
            assert seen["authorization"] == [f"Bearer {token}"]  # forwarded unless forward_token: false


def test_jwt_cache_hit_sets_the_consumer_a_later_plugin_counts(make_gateway: Make, upstream: int) -> None:
    """A token's second request is a cache hit (the compiled path): its consumer must reach the
    rate limit as the first request's did, or the hits would share one anonymous counter."""
    jwt = {**JWT, "public_key": public_pem("rsa")}
    limit = {"name": "rate_limit", "limit": 2, "window": 60, "key": "consumer"}
    route = {"path": "/echo/{*rest}", "upstream": "up", "plugins": [jwt, limit]}
    gw = make_gateway(gateway_config(upstream, routes=[route]))
    for user in ("alice", "bob"):
        token = sign(claims(sub=user))
        with connect(gw.port) as sock:
            replies = []
            for _ in range(3):
                sock.sendall(build_request("GET", "/echo/x", [bearer(token)]))
                replies.append(read_response(sock))
        assert [r.status for r in replies] == [200, 200, 429], user
        assert [(r.header("RateLimit") or "").split(";")[1] for r in replies[:2]] == ["r=1", "r=0"]


def test_jwt_refusals_on_the_wire(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    assert error(call(gw, "/orders/1"), 401) == ("missing bearer token", 'Bearer realm="fastgw"')
    expired = sign(claims(scope="orders:read", exp=1))
    assert error(call(gw, "/orders/1", [bearer(expired)]), 401) == (
        "the token has expired",
        'Bearer realm="fastgw", error="invalid_token", error_description="the token has expired"',
    )
    no_scope = sign(claims(scope="orders:write"))
    assert error(call(gw, "/orders/1", [bearer(no_scope)]), 403) == (
        "insufficient scope: missing orders:read",
        'Bearer realm="fastgw", error="insufficient_scope", scope="orders:read"',
    )
    # a refused request's connection stays usable
    with connect(gw.port) as sock:
        for expected in (401, 403, 200):
            scope = "orders:read" if expected == 200 else "x"
            headers = [bearer(sign(claims(scope=scope)))] if expected != 401 else []
            sock.sendall(build_request("GET", "/orders/2", headers))
            assert read_response(sock).status == expected


def test_no_identity_is_401_identity_without_the_claim_403(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    assert error(call(gw, "/maybe/x"), 401) == ("authentication required", 'Bearer realm="fastgw"')
    user = sign(claims(role="user"))
    assert error(call(gw, "/maybe/x", [bearer(user)]), 403) == (
        "the 'role' claim does not allow this route",
        None,
    )
    assert call(gw, "/maybe/x", [bearer(sign(claims(role="admin")))]).status == 200


def test_api_key_in_header_and_in_query(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    target, seen = upstream_saw(call(gw, "/keyed/a?x=1", [("X-API-Key", "key-a"), ("X-Consumer", "root")]))
    assert target == "/echo/a?x=1" and seen["x-consumer"] == ["svc-a"] and "x-api-key" not in seen
    target, seen = upstream_saw(call(gw, "/keyed/b?x=1&api_key=key-a&y=2"))
    assert target == "/echo/b?x=1&y=2" and seen["x-consumer"] == ["svc-a"]
    assert error(call(gw, "/keyed/c"), 401) == ("missing API key", 'ApiKey realm="fastgw"')
    assert error(call(gw, "/keyed/c?api_key=key-b"), 401)[0] == "invalid API key"


def test_basic_auth_good_and_bad(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))

    def basic(user: str, password: str) -> tuple[str, str]:
        return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())

    with connect(gw.port) as sock:
        for _ in range(2):  # the second from the verification cache
            sock.sendall(build_request("GET", "/staff/x", [basic("ann", "s3cret")]))
            _, seen = upstream_saw(read_response(sock))
            assert seen["x-consumer"] == ["ann"] and "authorization" not in seen
    challenge = 'Basic realm="fastgw", charset="UTF-8"'
    assert error(call(gw, "/staff/x", [basic("ann", "wrong")]), 401) == ("invalid credentials", challenge)
    assert error(call(gw, "/staff/x", [basic("bob", "s3cret")]), 401) == ("invalid credentials", challenge)
    assert error(call(gw, "/staff/x"), 401) == ("missing credentials", challenge)


# RFC 9110 5.3: Authorization (and an API key header) is a singleton field. With two, the plugin
# would verify one while the upstream may read the other, unverified: the request is refused.
@pytest.mark.parametrize("cached", [False, True], ids=["first-sight", "cache-hit"])
def test_jwt_refuses_a_second_authorization_header(make_gateway: Make, upstream: int, cached: bool) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    valid = bearer(sign(claims(sub="alice", scope="orders:read", org={"tenant": "acme"})))
    if cached:  # the compiled cache-hit hook must refuse it too
        assert call(gw, "/orders/1", [valid]).status == 200
    message = "more than one Authorization header"
    challenge = f'Bearer realm="fastgw", error="invalid_request", error_description="{message}"'
    for second in (("Authorization", "Bearer forged"), ("authorization", valid[1])):
        assert error(call(gw, "/orders/1", [valid, second]), 400) == (message, challenge)
    # A client naming Authorization in Connection (hop-by-hop, so not forwarded) is still refused.
    hop = [valid, ("Authorization", "Bearer forged"), ("Connection", "keep-alive, Authorization")]
    assert error(call(gw, "/orders/1", hop), 400) == (message, challenge)


def test_api_key_refuses_a_second_key_header(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    for second in ("key-b", "key-a"):
        headers = [("X-API-Key", "key-a"), ("x-api-key", second)]
        assert error(call(gw, "/keyed/a", headers), 400) == ("more than one X-API-Key header", None)


def test_basic_auth_refuses_a_second_authorization_header(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=routes()))
    good = ("Authorization", "Basic " + base64.b64encode(b"ann:s3cret").decode())
    assert call(gw, "/staff/x", [good]).status == 200  # cached: the second check is a lookup
    headers = [good, ("Authorization", "Bearer something-else")]
    assert error(call(gw, "/staff/x", headers), 400) == ("more than one Authorization header", None)
