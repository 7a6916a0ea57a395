"""Gateways started from translated Ocelot configurations enforce their policies against real
upstream processes as Ocelot's docs describe them: the circuit breaker and timeouts of QoSOptions,
rate limits (status, body and headers, in the 24.0 and the 24.1 schema), authentication with
scopes, claims requirements and claims transforms (JWT keys from a real JWKS server), caching, IP
lists and the request id header."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway
from tests.support.jwks_server import JwksControl
from tests.support.ocelot_files import echoed, ocelot_gateway, request, upstream_ports
from tests.support.ports import free_port
from tests.support.procs import start_process
from tests.support.tokens import claims, jwks, sign

Make = Callable[..., RunningGateway]
__all__ = ["upstream_ports"]  # the fixture, used by name
JWKS_SERVER = str(Path(__file__).parents[1] / "support" / "jwks_server.py")


def upstream_requests(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def test_qos_breaker_opens_after_minimum_throughput_failures(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "qos.json", upstream_ports, tmp_path)
    upstream = upstream_ports[51002]
    before = upstream_requests(upstream)
    # MinimumThroughput 3; BreakDuration 500 ms, which Ocelot 23.3 and later make 5 s
    assert [request(gw, "GET", "/short-break/status/500").status for _ in range(3)] == [500, 500, 500]
    refused = request(gw, "GET", "/short-break/status/500")
    assert refused.status == 503 and refused.header("Retry-After") is not None
    assert upstream_requests(upstream) - before == 3  # the open circuit did not call the upstream


def test_qos_timeout_answers_without_waiting_for_the_upstream(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "qos.json", upstream_ports, tmp_path)
    assert request(gw, "GET", "/timed/slow/10").status == 200
    assert request(gw, "GET", "/timed/slow/5000").status == 504  # QoS Timeout 500 ms (Ocelot: 503)


def test_rate_limits_of_the_24_1_schema(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "ratelimit.json", upstream_ports, tmp_path)
    client = [("Oc-Client", "c1")]
    admitted = [request(gw, "GET", "/coffee/espresso", client) for _ in range(3)]
    assert [r.status for r in admitted] == [200, 200, 200]
    assert [r.header("X-RateLimit-Limit") for r in admitted] == ["3", "3", "3"]
    assert [r.header("X-RateLimit-Remaining") for r in admitted] == ["2", "1", "0"]
    refused = request(gw, "GET", "/coffee/espresso", client)
    assert refused.status == 418
    assert refused.body.decode().startswith(
        "Out of coffee! Our bar can only serve up to 3 cups of coffee every 20s."
    )
    assert refused.header("Retry-After") is not None
    assert request(gw, "GET", "/coffee/espresso", [("Oc-Client", "c2")]).status == 200  # per client
    # R2 has no rule of its own: the global one (2 per 30s, 429, its message) applies
    grouped = [request(gw, "GET", "/grouped/x", [("Oc-Client", "g")]).status for _ in range(3)]
    assert grouped == [200, 200, 429]
    last = request(gw, "GET", "/grouped/x", [("Oc-Client", "g")])
    assert last.body == b"Ocelot API calls quota exceeded! Maximum admitted 2 per 30s."
    # R3 is outside the global rule's group
    open_route = [request(gw, "GET", "/open/x", [("Oc-Client", "g")]) for _ in range(5)]
    assert [r.status for r in open_route] == [200] * 5
    assert open_route[-1].header("X-RateLimit-Limit") is None


def test_the_ocelot_15_file(make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path) -> None:
    """ReRoutes, nulls and defaults, 24.0 rate limiting, round robin, the 1.x host spelling."""
    gw = ocelot_gateway(make_gateway, "reroutes-legacy.json", upstream_ports, tmp_path)
    assert echoed(request(gw, "GET", "/"))[:2] == (upstream_ports[51001], "/echo/home")
    assert echoed(request(gw, "GET", "/legacy/a/b"))[:2] == (upstream_ports[51003], "/echo/legacy/a/b")
    client = [("MyRateLimiting", "m1")]
    first, second = (request(gw, "GET", "/api/values/1", client) for _ in range(2))
    assert {echoed(first)[0], echoed(second)[0]} == {upstream_ports[51001], upstream_ports[51002]}
    sent = echoed(first)[2]
    assert sent["ocrequestid"] == sent["x-request-id"]  # RequestIdKey: the request id under that name too
    refused = request(gw, "GET", "/api/values/1", client)
    assert (refused.status, refused.body) == (418, b"Customize Tips!")


@pytest.fixture
def keys() -> Iterator[JwksControl]:
    port = free_port()
    proc = start_process([sys.executable, JWKS_SERVER, "--port", str(port)], ready_line="listening")
    try:
        yield JwksControl(port)
    finally:
        proc.stop()


def test_authentication_scopes_claims_and_their_transforms(
    make_gateway: Make,
    upstream_ports: dict[int, int],
    tmp_path: Path,
    keys: JwksControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys.set_keys(jwks(("rsa", "k1")))
    monkeypatch.setenv("FASTGW_JWT_BEARER_JWKS_URL", keys.url)  # completing the "Bearer" JWT setting
    gw = ocelot_gateway(make_gateway, "auth.json", upstream_ports, tmp_path)
    good = claims(scope="api.read other", UserType="registered", name="Alice", LocationId="L9", sub="user|42")

    def call(token_claims: dict[str, object] | None, *extra: tuple[str, str]) -> tuple[int, object]:
        headers = [*extra]
        if token_claims is not None:
            headers.append(("Authorization", f"Bearer {sign(token_claims, kid='k1')}"))
        response = request(gw, "GET", "/secure/orders?page=1", headers)
        return response.status, (echoed(response) if response.status == 200 else None)

    assert call(None)[0] == 401
    assert call({**good, "scope": "other"})[0] == 403  # none of AllowedScopes
    assert call({**good, "UserType": "guest"})[0] == 403  # RouteClaimsRequirement
    status, seen = call(good, ("CustomerId", "forged"), ("UserName", "forged"))
    assert status == 200 and isinstance(seen, tuple)
    _, path, headers = seen
    assert path == "/echo/secure/orders?page=1&LocationId=L9"
    assert headers["username"] == "Alice"
    assert "customerid" not in headers  # indexed claim: not supported, but the forged copy is removed
    # the global provider's setting is not completed: the route refuses, never lets a request through
    token = [("Authorization", f"Bearer {sign({**good, 'scope': 'Admin'}, kid='k1')}")]
    assert request(gw, "GET", "/global-auth").status == 401
    assert request(gw, "GET", "/global-auth", token).status == 503
    assert request(gw, "GET", "/anonymous").status == 200
    assert request(gw, "GET", "/users/1/orders").status == 404  # left out: its requirement has no fastgw form


def test_caching_ip_lists_and_the_request_id(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "caching-security.json", upstream_ports, tmp_path)
    target = f"/cached/{tmp_path.name}"  # the cache zone lives as long as the process
    first, second = (request(gw, "GET", target) for _ in range(2))
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert first.json()["n"] == second.json()["n"]
    varied = request(gw, "GET", target, [("OC-Cache-Control", "v2")])  # the Header is in the key
    assert varied.header("X-Cache") == "MISS"
    # the test client is 127.0.0.1
    assert request(gw, "GET", "/office").status == 403  # not in IPAllowedList
    assert request(gw, "GET", "/blocked-range").status == 403  # 127.0.0.1-127.0.0.255
    assert request(gw, "GET", "/local-subnet").status == 200  # 127.0.0.0/255.0.0.0
    sent = echoed(request(gw, "GET", "/request-id", [("X-Request-Id", "abc-123")]))[2]
    assert sent["oc-requestid"] == "abc-123" == sent["x-request-id"]
