"""The jwt plugin with keys from a JWKS URL, through the real gateway, against a real JWKS
server process (tests/support/jwks_server.py) that the test rotates and whose fetches it counts."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.jwks_server import JwksControl
from tests.support.ports import free_port
from tests.support.procs import start_process
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.tokens import claims, forge_hs256, jwk, jwks, public_pem, sign

Make = Callable[..., RunningGateway]
SERVER = str(Path(__file__).parents[1] / "support" / "jwks_server.py")


@pytest.fixture
def keys() -> Iterator[JwksControl]:
    port = free_port()
    proc = start_process([sys.executable, SERVER, "--port", str(port)], ready_line="listening")
    try:
        yield JwksControl(port)
    finally:
        proc.stop()


def doc(upstream: int, url: str, **options: Any) -> dict[str, Any]:
    plugin = {"name": "jwt", "jwks_url": url, "cache": False, **options}
    return gateway_config(
        upstream, routes=[{"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [plugin]}]
    )


def call(gw: RunningGateway, token: str) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/echo", [("Authorization", f"Bearer {token}")]))
        return read_response(sock)


def description(response: RawResponse) -> str:
    assert response.status == 401, response.body
    challenge = response.header("WWW-Authenticate") or ""
    assert challenge.startswith('Bearer realm="fastgw", error="invalid_token", error_description=')
    error: str = response.json()["error"]
    assert challenge.endswith(f'"{error}"')
    return error


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_keys_are_fetched_once_and_every_family_verifies(
    make_gateway: Make, upstream: int, keys: JwksControl
) -> None:
    keys.set_keys(jwks(("rsa", "r1"), ("p256", "e1"), ("ed25519", "d1")))
    gw = make_gateway(doc(upstream, keys.url))
    assert keys.fetches == 0  # nothing is fetched before a request needs keys
    for alg, kid in [("RS256", "r1"), ("PS384", "r1"), ("ES256", "e1"), ("EdDSA", "d1"), ("RS512", "r1")]:
        r = call(gw, sign(claims(), alg, kid=kid))
        assert r.status == 200, (alg, r.body)
    assert keys.fetches == 1


def test_unknown_kid_refetches_the_rotated_set(make_gateway: Make, upstream: int, keys: JwksControl) -> None:
    keys.set_keys(jwks(("rsa", "old")))
    gw = make_gateway(doc(upstream, keys.url, jwks_min_refetch=0))
    assert call(gw, sign(claims(), kid="old")).status == 200
    keys.set_keys(jwks(("rsa", "old"), ("rsa2", "new")))  # the issuer rotates in a new key
    assert call(gw, sign(claims(), key="rsa2", kid="new")).status == 200
    assert keys.fetches == 2


def test_refetch_on_unknown_kid_is_rate_limited(make_gateway: Make, upstream: int, keys: JwksControl) -> None:
    keys.set_keys(jwks(("rsa", "k1")))
    gw = make_gateway(doc(upstream, keys.url, jwks_min_refetch="2s"))
    assert call(gw, sign(claims(), kid="k1")).status == 200
    # within two seconds of that fetch: unknown kids are refused without asking the server
    for kid in ("x1", "x2", "x3"):
        assert description(call(gw, sign(claims(), kid=kid))) == "the token's key id is unknown"
    assert keys.fetches == 1
    time.sleep(2.1)
    assert description(call(gw, sign(claims(), kid="x4"))) == "the token's key id is unknown"
    assert description(call(gw, sign(claims(), kid="x5"))) == "the token's key id is unknown"
    assert keys.fetches == 2  # one refetch for x4, none for x5


def test_stale_set_is_refreshed_in_the_background(
    make_gateway: Make, upstream: int, keys: JwksControl
) -> None:
    keys.set_keys(jwks(("rsa", "k1")))
    gw = make_gateway(doc(upstream, keys.url, jwks_refresh="1s", jwks_min_refetch="500ms"))
    old_token = sign(claims(), kid="k1")
    assert call(gw, old_token).status == 200
    keys.set_keys(jwks(("rsa2", "k2")))  # k1 revoked
    time.sleep(1.1)
    # the set is stale: this request is served with the keys at hand, and a refresh starts
    assert call(gw, old_token).status == 200
    assert wait_for(lambda: keys.fetches == 2)
    assert wait_for(lambda: call(gw, old_token).status == 401)  # once the new set is installed
    assert description(call(gw, old_token)) == "the token's key id is unknown"
    assert call(gw, sign(claims(), key="rsa2", kid="k2")).status == 200


def test_a_failed_refetch_keeps_the_last_good_set(
    make_gateway: Make, upstream: int, keys: JwksControl
) -> None:
    keys.set_keys(jwks(("rsa", "k1")))
    gw = make_gateway(doc(upstream, keys.url, jwks_min_refetch=0))
    assert call(gw, sign(claims(), kid="k1")).status == 200
    keys.fail(500)
    assert description(call(gw, sign(claims(), kid="k2"))) == "the token's key id is unknown"
    assert keys.fetches == 2
    assert call(gw, sign(claims(sub="bob"), kid="k1")).status == 200


def test_no_keys_at_all_answers_503(make_gateway: Make, upstream: int, keys: JwksControl) -> None:
    keys.fail(503)
    gw = make_gateway(doc(upstream, keys.url, jwks_min_refetch="10s"))
    for _ in range(2):
        r = call(gw, sign(claims(), kid="k1"))
        assert r.status == 503
        assert r.json() == {
            "error": "the token signing keys are not available",
            "request_id": r.header("X-Request-Id"),
        }
    assert keys.fetches == 1  # the second request did not hammer the failing server


def test_bad_documents_and_timeouts_are_failed_fetches(
    make_gateway: Make, upstream: int, keys: JwksControl
) -> None:
    keys.set_keys({"keys": [{"kty": "RSA", "kid": "broken", "n": "AQAB"}, {"kty": "weird"}]})
    gw = make_gateway(doc(upstream, keys.url, jwks_min_refetch=0, jwks_timeout="300ms"))
    assert call(gw, sign(claims(), kid="k1")).status == 503  # no usable key in the set
    keys.set_keys(jwks(("rsa", "k1")))
    keys.delay(1000)
    assert call(gw, sign(claims(), kid="k1")).status == 503  # timed out
    keys.delay(0)
    assert call(gw, sign(claims(), kid="k1")).status == 200


# RFC 8725 section 2.1 with a JWKS: HS256 is accepted for the set's HMAC key only, never for an
# RSA key named by the token's kid, whatever the forger used as the secret.
def test_algorithm_confusion_against_a_jwks_key(make_gateway: Make, upstream: int, keys: JwksControl) -> None:
    keys.set_keys({"keys": [jwk("rsa", "r1"), jwk("hmac", "h1")]})
    gw = make_gateway(doc(upstream, keys.url, algorithms=["RS256", "HS256"]))
    assert call(gw, sign(claims(), "HS256", kid="h1")).status == 200
    forged = forge_hs256(claims(sub="admin"), public_pem("rsa").encode(), kid="r1")
    assert description(call(gw, forged)) == "the token's algorithm does not match its key"
    assert keys.fetches == 1
