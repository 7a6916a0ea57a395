"""The jwt plugin on a fake exchange: every algorithm family, every way a token is refused, the
verified-token cache, and config errors with their key paths. (JWKS URLs: tests/integration.)"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastgw.hooks import Plugin, Response
from fastgw.plugins.auth_jwt import JwtAuth
from tests.support.exchange import FakeExchange, run_request
from tests.support.gateway import plugin_config_error
from tests.support.tokens import (
    ALGORITHM_KEYS,
    HMAC_SECRET,
    claims,
    forge_hs256,
    jwk,
    jwks,
    public_pem,
    sign,
    unsigned,
)

PATH = "routes[0].plugins[0]"


def plugin(**options: Any) -> JwtAuth:
    if not {"secret", "public_key", "key_file", "jwks_url"} & set(options):
        options["public_key"] = public_pem("rsa")
    compiled = JwtAuth.compile(options, PATH)
    assert isinstance(compiled, JwtAuth)
    return compiled


def bearer(token: str) -> FakeExchange:
    return FakeExchange([("Authorization", f"Bearer {token}")])


def refused(response: Response | None) -> tuple[str, str]:
    """(body error, WWW-Authenticate) of a 401; the body carries the request id."""
    assert response is not None and response.status == 401
    body = orjson.loads(response.body)
    assert body["request_id"] == "fake-00000001"
    challenge = dict(response.headers)[b"WWW-Authenticate"].decode()
    return body["error"], challenge


def invalid(response: Response | None) -> str:
    message, challenge = refused(response)
    assert challenge == f'Bearer realm="fastgw", error="invalid_token", error_description="{message}"'
    return message


# -- algorithm families --------------------------------------------------------------------------


def key_options(alg: str) -> dict[str, Any]:
    name = ALGORITHM_KEYS[alg]
    return {"secret": HMAC_SECRET} if name == "hmac" else {"public_key": public_pem(name)}


@pytest.mark.parametrize("alg", sorted(ALGORITHM_KEYS))
def test_every_algorithm_family_verifies(alg: str) -> None:
    gate = plugin(algorithms=[alg], issuer="https://issuer.test", audience="api", **key_options(alg))
    ctx = bearer(sign(claims(scope="a b"), alg))
    assert run_request([gate], ctx) is None
    assert ctx.consumer == "alice"
    assert ctx.claims is not None and ctx.claims["scope"] == "a b"


@pytest.mark.parametrize("alg", sorted(ALGORITHM_KEYS))
def test_default_algorithms_follow_the_key_type(alg: str) -> None:
    gate = plugin(**key_options(alg))
    assert alg in gate.algorithms
    families = {a[:2] for a in gate.algorithms}
    # never HS beside an asymmetric key, never RS beside an EC key, ...
    assert families in ({"HS"}, {"RS", "PS"}, {"ES"}, {"Ed"})
    assert run_request([gate], bearer(sign(claims(), alg))) is None


def test_keys_as_jwk_mapping_and_from_files(tmp_path: Path) -> None:
    token = sign(claims(), "ES256", kid="ec-1")
    assert run_request([plugin(public_key=jwk("p256"))], bearer(token)) is None
    pem_file = tmp_path / "key.pem"
    pem_file.write_text(public_pem("ed25519"))
    assert run_request([plugin(key_file=str(pem_file))], bearer(sign(claims(), "EdDSA"))) is None
    set_file = tmp_path / "jwks.json"
    set_file.write_text(orjson.dumps(jwks(("rsa", "r1"), ("p256", "ec-1"))).decode())
    gate = plugin(key_file=str(set_file))
    assert run_request([gate], bearer(token)) is None
    assert run_request([gate], bearer(sign(claims(), "RS256", kid="r1"))) is None
    # a kid the file does not have: no key without a kid to fall back on
    assert invalid(run_request([gate], bearer(sign(claims(), "RS256", kid="r2")))) == (
        "the token's key id is unknown"
    )


# -- refusals ------------------------------------------------------------------------------------


def now() -> int:
    """Read when the token is made, not at collection: a long suite runs minutes later."""
    return int(time.time())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: sign(claims(exp=now() - 100)), "the token has expired"),
        (lambda: sign(claims(nbf=now() + 100)), "the token is not valid yet"),
        (lambda: sign(claims(iss="https://evil.test")), "the token's issuer is not accepted"),
        (lambda: sign(claims(aud="other-api")), "the token's audience is not accepted"),
        (lambda: sign(claims(aud=None)), "the token lacks the 'aud' claim"),
        (lambda: sign(claims(exp=None)), "the token lacks the 'exp' claim"),
        (lambda: sign(claims(), key="rsa2"), "the token's signature is invalid"),
        (lambda: unsigned(claims()), "the token's algorithm is not allowed"),
        (lambda: unsigned(claims(), alg="None"), "the token's algorithm is not allowed"),
        (lambda: sign(claims(), "ES256"), "the token's algorithm is not allowed"),
        (lambda: "not.a.token", "the token is malformed"),
        (lambda: "abc", "the token is malformed"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-issuer",
        "wrong-audience",
        "no-audience",
        "no-exp",
        "wrong-key",
        "alg-none",
        "alg-None",
        "other-family",
        "garbage",
        "one-segment",
    ],
)
def test_refused_tokens(token: Any, message: str) -> None:
    gate = plugin(issuer="https://issuer.test", audience="api", leeway=0)
    ctx = bearer(token())
    assert invalid(run_request([gate], ctx)) == message
    assert ctx.claims is None and ctx.consumer is None


def test_tampered_payload_fails_the_signature() -> None:
    header, _, signature = sign(claims()).split(".")
    other = base64.urlsafe_b64encode(orjson.dumps(claims(sub="admin"))).rstrip(b"=").decode()
    assert invalid(run_request([plugin()], bearer(f"{header}.{other}.{signature}"))) == (
        "the token's signature is invalid"
    )


# RFC 8725 section 2.1: an HS256 token whose HMAC "secret" is the server's RSA public key.
def test_algorithm_confusion_is_refused() -> None:
    pem = public_pem("rsa").encode()
    token = forge_hs256(claims(), pem)
    assert "HS256" not in plugin().algorithms
    assert invalid(run_request([plugin()], bearer(token))) == "the token's algorithm is not allowed"


def test_algorithm_confusion_with_a_kid_naming_an_rsa_key(tmp_path: Path) -> None:
    keys = {"keys": [jwk("rsa", "r1"), jwk("hmac", "h1")]}
    set_file = tmp_path / "jwks.json"
    set_file.write_text(orjson.dumps(keys).decode())
    gate = plugin(key_file=str(set_file))
    assert {"HS256", "RS256"} <= gate.algorithms  # both families are allowed, each for its key
    assert run_request([gate], bearer(sign(claims(), "HS256", kid="h1"))) is None
    for secret in (public_pem("rsa").encode(), orjson.dumps(jwk("rsa", "r1"))):
        forged = forge_hs256(claims(), secret, kid="r1")
        assert invalid(run_request([gate], bearer(forged))) == "the token's algorithm does not match its key"


def test_leeway_accepts_a_token_just_expired() -> None:
    token = sign(claims(exp=int(time.time()) - 10))
    assert run_request([plugin(leeway="30s")], bearer(token)) is None
    assert invalid(run_request([plugin(leeway=0)], bearer(token))) == "the token has expired"
    early = sign(claims(nbf=int(time.time()) + 10))
    assert run_request([plugin()], bearer(early)) is None  # default leeway: 30s


# RFC 6750 section 3.1: no credentials -> the challenge without an error code.
@pytest.mark.parametrize(
    "headers", [[], [("Authorization", "Basic YWxpY2U6cHc=")], [("Authorization", "Bearer ")]]
)
def test_missing_token(headers: list[tuple[str, str]]) -> None:
    message, challenge = refused(run_request([plugin()], FakeExchange(headers)))
    assert (message, challenge) == ("missing bearer token", 'Bearer realm="fastgw"')


# RFC 9110 5.3 / RFC 6750 3.1: the token header twice is a malformed request (400,
# invalid_request), whether the first token is valid, cached or not; even for an optional token.
@pytest.mark.parametrize("cache", [False, {"ttl": "1m"}], ids=["no-cache", "cache"])
def test_token_header_twice_is_refused(cache: object) -> None:
    token = sign(claims())
    for header, options in (("Authorization", {}), ("X-Token", {"header": "X-Token", "optional": True})):
        gate = plugin(cache=cache, **options)
        value = f"Bearer {token}"
        assert run_request([gate], FakeExchange([(header, value)])) is None  # cached, if it caches
        ctx = FakeExchange([(header, value), (header.lower(), "Bearer forged")])
        response = run_request([gate], ctx)
        assert response is not None and response.status == 400
        message = f"more than one {header} header"
        assert orjson.loads(response.body) == {"error": message, "request_id": "fake-00000001"}
        assert dict(response.headers)[b"WWW-Authenticate"].decode() == (
            f'Bearer realm="fastgw", error="invalid_request", error_description="{message}"'
        )
        assert ctx.claims is None and ctx.consumer is None


def test_optional_lets_anonymous_requests_through_but_not_bad_tokens() -> None:
    gate = plugin(optional=True)
    ctx = FakeExchange()
    assert run_request([gate], ctx) is None and ctx.consumer is None and ctx.claims is None
    assert (
        invalid(run_request([gate], bearer(sign(claims(), key="rsa2")))) == "the token's signature is invalid"
    )


def test_other_header_consumer_claim_realm_and_forwarding() -> None:
    gate = plugin(header="X-Token", consumer_claim="client.id", realm='my "api"', forward_token=False)
    ctx = FakeExchange([("X-Token", sign(claims(client={"id": "svc-7"})))])
    assert run_request([gate], ctx) is None
    assert ctx.consumer == "svc-7" and ctx.removed == [b"x-token"]
    again = FakeExchange([("X-Token", "Bearer " + sign(claims(client={"id": 7})))])
    assert run_request([gate], again) is None and again.consumer == "7"
    _, challenge = refused(run_request([gate], FakeExchange()))
    assert challenge == 'Bearer realm="my \\"api\\""'
    nobody = FakeExchange([("X-Token", sign(claims(sub=None)))])
    assert run_request([plugin(header="X-Token")], nobody) is None and nobody.consumer is None


# -- the verified-token cache -----------------------------------------------------------------------


def count_verifications(gate: JwtAuth, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    decode = gate.decoder.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(gate.decoder, "decode", counting)
    return calls


def test_cache_hit_does_not_verify_again(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = plugin()
    calls = count_verifications(gate, monkeypatch)
    token = sign(claims(sub="bob"))
    for _ in range(3):
        ctx = bearer(token)
        assert run_request([gate], ctx) is None
        assert ctx.consumer == "bob" and ctx.claims is not None and ctx.claims["sub"] == "bob"
    assert calls == [token]
    assert run_request([gate], bearer(sign(claims(sub="carol")))) is None
    assert len(calls) == 2
    # a refused token is not cached: it is checked (and refused) every time
    bad = sign(claims(), key="rsa2")
    for _ in range(2):
        invalid(run_request([gate], bearer(bad)))
    assert len(calls) == 4


def test_cache_entry_never_outlives_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = plugin(leeway=0, cache={"ttl": "1h"})
    calls = count_verifications(gate, monkeypatch)
    exp = int(time.time()) + 1
    token = sign(claims(exp=exp))
    assert run_request([gate], bearer(token)) is None
    (entry,) = gate.cache.entries.values()  # type: ignore[union-attr]
    assert entry[0] == exp
    assert run_request([gate], bearer(token)) is None and len(calls) == 1
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert invalid(run_request([gate], bearer(token))) == "the token has expired"
    assert len(calls) == 2


def test_cache_ttl_bound_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = plugin(cache={"ttl": "100ms", "max_entries": 2})
    calls = count_verifications(gate, monkeypatch)
    tokens = [sign(claims(sub=name)) for name in ("a", "b", "c")]
    for token in tokens:
        assert run_request([gate], bearer(token)) is None
    assert gate.cache is not None and len(gate.cache.entries) == 2  # the oldest went
    assert run_request([gate], bearer(tokens[2])) is None and len(calls) == 3
    time.sleep(0.15)
    assert run_request([gate], bearer(tokens[2])) is None and len(calls) == 4
    off = plugin(cache=False)
    assert off.cache is None
    calls = count_verifications(off, monkeypatch)
    for _ in range(2):
        assert run_request([off], bearer(tokens[0])) is None
    assert len(calls) == 2


# -- config errors ---------------------------------------------------------------------------------


def compile_error(options: dict[str, Any]) -> str:
    return plugin_config_error("jwt", options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"secret": HMAC_SECRET, "algorithms": ["HS257"]},
            f"gw.yaml: {PATH}.algorithms[0]: unknown algorithm 'HS257'; expected one of: HS256, HS384,",
        ),
        (
            {"secret": HMAC_SECRET, "algorithms": ["HS256", "none"]},
            f"gw.yaml: {PATH}.algorithms[1]: 'none' is never allowed: unsigned tokens would be accepted",
        ),
        (
            {"issuer": "https://issuer.test"},
            f"gw.yaml: {PATH}: missing key: give one of secret, public_key, key_file or jwks_url",
        ),
        (
            {"jwks_url": "ftp://keys.test/jwks.json"},
            f"gw.yaml: {PATH}.jwks_url: expected an http:// or https:// URL, found 'ftp://keys.test/jwks.json'",
        ),
        (
            {"jwks_url": "http://"},
            f"gw.yaml: {PATH}.jwks_url: expected an http:// or https:// URL, found 'http://'",
        ),
        (
            {"jwks_url": "http://keys.test:99999/"},
            f"gw.yaml: {PATH}.jwks_url: expected an http:// or https:// URL",
        ),
        (
            {"secret": HMAC_SECRET, "isuer": "x"},
            f"gw.yaml: {PATH}: unknown key 'isuer'; expected one of: secret, public_key,",
        ),
        (
            {"public_key": "rsa", "algorithms": ["HS256"]},
            f"gw.yaml: {PATH}.algorithms[0]: HS256 cannot be verified with the configured key (an RSA key)",
        ),
        (
            {"secret": "too-short"},
            f"gw.yaml: {PATH}.secret: an HMAC secret of 9 bytes is too short: HS256 needs at least 32",
        ),
        (
            {"secret": "x" * 40, "algorithms": ["HS512"]},
            f"gw.yaml: {PATH}.algorithms[0]: HS512 cannot be verified with the configured key"
            " (an HMAC secret of 40 bytes)",
        ),
        (
            {"key_file": "/nonexistent/key.pem"},
            f"gw.yaml: {PATH}.key_file: cannot read '/nonexistent/key.pem': No such file or directory",
        ),
        (
            {"public_key": "not a key"},
            f"gw.yaml: {PATH}.public_key: expected a PEM key or certificate, a JWK or a JWK Set",
        ),
        (
            {"public_key": {"kty": "RSA", "n": "AQAB"}},
            f"gw.yaml: {PATH}.public_key: unusable JWK: ",
        ),
        (
            {"secret": HMAC_SECRET, "public_key": "rsa"},
            f"gw.yaml: {PATH}.public_key: give only one of secret, public_key, key_file or jwks_url"
            " (found secret too)",
        ),
        (
            {"secret": HMAC_SECRET, "jwks_refresh": "5m"},
            f"gw.yaml: {PATH}.jwks_refresh: only applies with jwks_url",
        ),
        (
            {"secret": HMAC_SECRET, "leeway": "soon"},
            f"gw.yaml: {PATH}.leeway: expected a duration like 30, '250ms', '1.5s', '2m' or '1h',"
            " found 'soon'",
        ),
        (
            {"secret": HMAC_SECRET, "cache": {"ttl": "1m", "size": 3}},
            f"gw.yaml: {PATH}.cache: unknown key 'size'; expected one of: ttl, max_entries",
        ),
        (
            {"secret": HMAC_SECRET, "audience": []},
            f"gw.yaml: {PATH}.audience: expected a string or a non-empty list",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("gw") is False else None,
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    if options.get("public_key") == "rsa":
        options = {**options, "public_key": public_pem("rsa")}
    assert compile_error(options).startswith(message)


def test_unknown_algorithm_suggests_the_closest() -> None:
    assert compile_error({"secret": HMAC_SECRET, "algorithms": ["RS265"]}).endswith("; did you mean 'RS256'?")


def test_small_rsa_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = small.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "RSA key of 1024 bits; at least 2048 are required" in compile_error({"public_key": pem.decode()})


def test_a_private_key_or_certificate_is_reduced_to_its_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.support.tokens import private_key

    pem = private_key("p384").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    gate: Plugin = plugin(public_key=pem.decode())
    assert run_request([gate], bearer(sign(claims(), "ES384"))) is None
