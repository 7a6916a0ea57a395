"""introspection against a real RFC 7662 endpoint process (tests/support/auth_servers.py): the
gateway's client credentials, active/inactive/expired tokens, the cache and its bound by the
token's exp, one call for concurrent requests with the same new token, scopes, failures of the
endpoint, and option errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from fastgw.plugins.introspection import Introspection
from tests.support.auth_servers import Control, start_auth_server
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.identity_probe import PROBE, identity_probe
from tests.support.ports import free_port
from tests.support.procs import reaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]
CLIENT_ID, CLIENT_SECRET = "gateway", "s3cr:t&+/"  # needs form-encoding inside HTTP Basic


@pytest.fixture(scope="module")
def endpoint_service() -> Iterator[Control]:
    with reaper(report=False) as processes:
        yield start_auth_server(
            processes, "introspection", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET
        )


@pytest.fixture
def endpoint(endpoint_service: Control) -> Control:
    endpoint_service.reset()
    return endpoint_service


@pytest.fixture(autouse=True)
def probe() -> Iterator[None]:
    with identity_probe():
        yield


def doc(upstream: int, endpoint: Control | None, **options: Any) -> dict[str, Any]:
    plugin = {"name": "introspection", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    if endpoint is not None:
        plugin["url"] = f"http://127.0.0.1:{endpoint.port}/introspect"
    plugin.update(options)
    route = {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [plugin, PROBE]}
    return gateway_config(upstream, routes=[route])


def get(gw: RunningGateway, token: str | None, target: str = "/echo/x") -> RawResponse:
    headers = [("Authorization", f"Bearer {token}")] if token is not None else []
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target, headers))
        return read_response(sock)


def identity(r: RawResponse) -> tuple[str, Any]:
    """(consumer, claims) as the upstream saw them, from the identity probe."""
    assert r.status == 200, r.body
    seen = {name.lower(): value for name, value in r.json()["headers"]}
    return seen["x-seen-consumer"], json.loads(seen["x-seen-claims"])


def test_active_token_sets_claims_and_consumer(make_gateway: Make, upstream: int, endpoint: Control) -> None:
    answer = {
        "active": True,
        "sub": "alice",
        "client_id": "app",
        "scope": "orders:read",
        "exp": time.time() + 600,
    }
    endpoint.set_tokens({"tok-alice": answer})
    gw = make_gateway(doc(upstream, endpoint))
    consumer, claims = identity(get(gw, "tok-alice"))
    assert consumer == "alice"
    assert claims == answer
    stats = endpoint.stats()
    assert stats["calls_by_token"] == {"tok-alice": 1}
    assert stats["last_client_auth"] == "basic"


def test_consumer_falls_back_to_client_id_and_credentials_go_in_the_body(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    endpoint.set_tokens({"tok-machine": {"active": True, "client_id": "billing-job"}})
    gw = make_gateway(doc(upstream, endpoint, client_auth="body"))
    assert identity(get(gw, "tok-machine"))[0] == "billing-job"
    assert endpoint.stats()["last_client_auth"] == "body"


def test_wrong_client_credentials_are_the_gateways_failure(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    endpoint.set_tokens({"tok-alice": {"active": True, "sub": "alice"}})
    gw = make_gateway(doc(upstream, endpoint, client_secret="wrong"))
    r = get(gw, "tok-alice")
    assert r.status == 502
    assert r.json()["error"] == "introspection endpoint answered 401"
    assert endpoint.stats()["rejected_clients"] == 1


def test_inactive_token_is_401_invalid_token_and_cached_briefly(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    gw = make_gateway(doc(upstream, endpoint, realm="api"))
    for _ in range(3):
        r = get(gw, "tok-revoked")
        assert r.status == 401
        assert r.header("WWW-Authenticate") == 'Bearer realm="api", error="invalid_token"'
        assert r.json() == {"error": "invalid or expired token", "request_id": r.header("X-Request-Id")}
    assert endpoint.stats()["calls_by_token"] == {"tok-revoked": 1}


def test_without_negative_cache_each_inactive_token_is_asked_again(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    gw = make_gateway(doc(upstream, endpoint, cache={"negative_ttl": 0}))
    for _ in range(2):
        assert get(gw, "tok-revoked").status == 401
    assert endpoint.stats()["calls_by_token"] == {"tok-revoked": 2}


def test_missing_or_malformed_token_is_refused_without_a_call(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    gw = make_gateway(doc(upstream, endpoint, realm="api"))
    r = get(gw, None)
    assert r.status == 401
    assert r.header("WWW-Authenticate") == 'Bearer realm="api"'  # RFC 6750 3.1: no error code
    assert r.json()["error"] == "missing bearer token"
    r = get(gw, "not a token")
    assert r.status == 400
    assert r.header("WWW-Authenticate") == 'Bearer error="invalid_request"'
    assert endpoint.stats()["calls"] == 0


def test_two_authorization_headers_are_refused_without_a_call(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    endpoint.set_tokens({"tok-a": {"active": True, "sub": "a"}})
    gw = make_gateway(doc(upstream, endpoint))
    headers = [("Authorization", "Bearer tok-a"), ("Authorization", "Bearer tok-b")]
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/echo/x", headers))
        r = read_response(sock)
    assert r.status == 400
    assert r.header("WWW-Authenticate") == 'Bearer error="invalid_request"'
    assert r.json()["error"] == "more than one Authorization header"
    assert endpoint.stats()["calls"] == 0


def test_token_whose_exp_passed_is_refused_even_if_the_endpoint_says_active(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    endpoint.set_tokens({"tok-old": {"active": True, "sub": "old", "exp": int(time.time()) - 5}})
    gw = make_gateway(doc(upstream, endpoint))
    assert get(gw, "tok-old").status == 401


def test_active_answers_are_cached(make_gateway: Make, upstream: int, endpoint: Control) -> None:
    endpoint.set_tokens({"tok-a": {"active": True, "sub": "a"}, "tok-b": {"active": True, "sub": "b"}})
    gw = make_gateway(doc(upstream, endpoint))
    for _ in range(3):
        assert identity(get(gw, "tok-a"))[0] == "a"
    assert identity(get(gw, "tok-b"))[0] == "b"
    assert endpoint.stats()["calls_by_token"] == {"tok-a": 1, "tok-b": 1}


def test_cache_entry_does_not_outlive_the_tokens_exp(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    exp = time.time() + 1.0
    # An endpoint that keeps calling it active: only the gateway's own bound can refuse it later.
    endpoint.set_tokens({"tok-short": {"active": True, "sub": "s", "exp": exp}})
    gw = make_gateway(doc(upstream, endpoint, cache={"max_ttl": "1h"}))
    first = get(gw, "tok-short")
    if time.time() < exp:  # a very slow machine may already be past exp: then it is refused
        assert first.status == 200
    while time.time() <= exp:
        time.sleep(0.05)
    assert get(gw, "tok-short").status == 401
    assert endpoint.stats()["calls_by_token"] == {"tok-short": 2}  # asked again: not served from cache


def test_concurrent_requests_with_a_new_token_make_one_call(
    make_gateway: Make, upstream: int, endpoint: Control
) -> None:
    endpoint.set_tokens({"tok-new": {"active": True, "sub": "n"}})
    endpoint.post("/_control/hold")
    gw = make_gateway(doc(upstream, endpoint))
    plugin = next(p for p in gw.plan.routes[0].plugins if isinstance(p, Introspection))
    count = 8
    results: list[RawResponse] = []
    threads = [threading.Thread(target=lambda: results.append(get(gw, "tok-new"))) for _ in range(count)]
    for thread in threads:
        thread.start()
    # Every request is waiting on the one call the endpoint holds; then let it answer.
    deadline = time.monotonic() + 10
    while gw.call(lambda: plugin.coalesced) < count - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    endpoint.post("/_control/release")
    for thread in threads:
        thread.join(10)
    assert [r.status for r in results] == [200] * count
    assert endpoint.stats()["calls_by_token"] == {"tok-new": 1}
    assert plugin.coalesced == count - 1


def test_required_scopes(make_gateway: Make, upstream: int, endpoint: Control) -> None:
    endpoint.set_tokens(
        {
            "tok-reader": {"active": True, "sub": "r", "scope": "orders:read"},
            "tok-writer": {"active": True, "sub": "w", "scope": "orders:read orders:write"},
        }
    )
    gw = make_gateway(doc(upstream, endpoint, required_scopes=["orders:read", "orders:write"]))
    r = get(gw, "tok-reader")
    assert r.status == 403
    assert (
        r.header("WWW-Authenticate") == 'Bearer error="insufficient_scope", scope="orders:read orders:write"'
    )
    assert r.json()["error"] == "insufficient scope"
    assert identity(get(gw, "tok-writer"))[0] == "w"


def test_endpoint_that_does_not_answer_is_a_504(make_gateway: Make, upstream: int, endpoint: Control) -> None:
    gw = make_gateway(doc(upstream, None, url=f"http://127.0.0.1:{endpoint.port}/hang", timeout="300ms"))
    r = get(gw, "tok-any")
    assert r.status == 504
    assert r.json()["error"] == "introspection endpoint did not answer within 0.3s"


def test_unreachable_endpoint_is_a_502(make_gateway: Make, upstream: int) -> None:
    port = free_port()
    gw = make_gateway(doc(upstream, None, url=f"http://127.0.0.1:{port}/introspect"))
    r = get(gw, "tok-any")
    assert r.status == 502
    assert r.json()["error"] == "introspection endpoint is unreachable"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://idp/x", "client_id": None}, ".client_id: expected a non-empty string, found null"),
        ({"url": "http://idp/x", "client_auth": "jwt"}, ".client_auth: expected the name of a client "
         "authentication method (basic, body), found 'jwt'"),
        ({"url": "http://idp/x", "required_scopes": ["a", "b c"]},
         ".required_scopes[1]: expected a scope like 'orders:read' (no spaces or quotes), found 'b c'"),
        ({"url": "http://idp/x", "cache": {"max_ttl": -1}},
         ".cache.max_ttl: expected a duration of at least 0, found -1"),
        ({"url": "http://idp/x", "cache": {"max_entries": 0}},
         ".cache.max_entries: expected an integer of at least 1, found 0"),
        ({"url": "http://idp/x", "realm": 'a"b'},
         ".realm: expected printable text without '\"' or '\\', found 'a\"b'"),
        ({}, ": missing required key 'url'"),
    ],
)  # fmt: skip
def test_option_errors_name_the_key_path(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_plan(parse_config(doc(1, None, **options), "gw.yaml"))
    assert str(err.value) == f"gw.yaml: routes[0].plugins[0]{message}"
