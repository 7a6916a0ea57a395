"""api_key and basic_auth on a fake exchange: consumers, hashed secrets, what reaches the
upstream, the Basic verification cache, and config errors with their key paths."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from typing import Any

import orjson
import pytest

from fastgw.hooks import Plugin, Response
from fastgw.plugins import auth_basic
from fastgw.plugins._auth import query_param, without_query_params
from fastgw.plugins.auth_basic import BasicAuth, hash_password, parse_password_hash
from fastgw.plugins.auth_key import ApiKeyAuth, generate_key, hash_key
from tests.support.exchange import FakeExchange, run_request
from tests.support.gateway import plugin_config_error

PATH = "routes[0].plugins[0]"
ALICE_KEY = "k-alice-0123456789"
BOB_KEYS = ["k-bob-old", "k-bob-new"]
# cheap parameters for tests (the format is self-describing; the default costs ~0.25 s)
FAST = {"ln": 4, "r": 8, "p": 1}
USERS = {
    "alice": hash_password("wonderland", **FAST),
    "bob": hash_password("builder", scheme="pbkdf2-sha256", iterations=1000),
}


def api_key(**options: Any) -> Plugin:
    consumers = {"alice": hash_key(ALICE_KEY), "bob": [hash_key(k) for k in BOB_KEYS]}
    return ApiKeyAuth.compile({"consumers": consumers, **options}, PATH)


def basic(**options: Any) -> Plugin:
    return BasicAuth.compile({"users": USERS, **options}, PATH)


def refused(response: Response | None, status: int = 401) -> tuple[str, str | None]:
    assert response is not None and response.status == status
    body = orjson.loads(response.body)
    assert body["request_id"] == "fake-00000001"
    challenge = dict(response.headers).get(b"WWW-Authenticate")
    return body["error"], challenge.decode() if challenge else None


def basic_header(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


# -- api_key --------------------------------------------------------------------------------------


def test_api_key_in_header_names_the_consumer_and_is_hidden() -> None:
    ctx = FakeExchange([("X-API-Key", ALICE_KEY), ("Accept", "*/*")])
    assert run_request([api_key()], ctx) is None
    assert ctx.consumer == "alice" and ctx.removed == [b"x-api-key"]
    for key in BOB_KEYS:  # a consumer may have several keys (rotation)
        ctx = FakeExchange([("x-api-key", key)])
        assert run_request([api_key()], ctx) is None and ctx.consumer == "bob"


# RFC 9110 5.3: which of two keys would the upstream read? Refused, even when both are valid.
@pytest.mark.parametrize("header", ["X-API-Key", "X-Key"])
def test_api_key_header_twice_is_refused(header: str) -> None:
    gate = api_key(header=header, query="api_key")
    for second in (BOB_KEYS[0], ALICE_KEY):
        ctx = FakeExchange([(header, ALICE_KEY), (header.upper(), second)], query=b"?api_key=x")
        assert refused(run_request([gate], ctx), 400) == (f"more than one {header} header", None)
        assert ctx.consumer is None


def test_basic_auth_header_twice_is_refused() -> None:
    gate = basic()
    assert run_request([gate], FakeExchange([basic_header("alice", "wonderland")])) is None  # cached
    ctx = FakeExchange([basic_header("alice", "wonderland"), basic_header("bob", "builder")])
    assert refused(run_request([gate], ctx), 400) == ("more than one Authorization header", None)
    assert ctx.consumer is None


def test_api_key_in_query_is_removed_from_the_query() -> None:
    gate = api_key(query="api_key", header="X-Key")
    ctx = FakeExchange(query=f"?a=1&api_key={ALICE_KEY}&b=%20x".encode())
    assert run_request([gate], ctx) is None
    assert ctx.consumer == "alice" and ctx.query == b"?a=1&b=%20x"
    ctx = FakeExchange(query=b"?api_key=" + "k-bob-new".replace("-", "%2D").encode())
    assert run_request([gate], ctx) is None and ctx.consumer == "bob" and ctx.query == b""
    # the header wins over the query, and both are kept from the upstream
    ctx = FakeExchange([("X-Key", "k-bob-old")], query=f"?api_key={ALICE_KEY}".encode())
    assert run_request([gate], ctx) is None and ctx.consumer == "bob"
    assert ctx.query == b"" and ctx.removed == [b"x-key"]


def test_api_key_not_hidden_when_asked() -> None:
    ctx = FakeExchange([("X-API-Key", ALICE_KEY)], query=f"?api_key={ALICE_KEY}".encode())
    assert run_request([api_key(hide=False, query="api_key")], ctx) is None
    assert ctx.removed == [] and ctx.query == f"?api_key={ALICE_KEY}".encode()


@pytest.mark.parametrize(
    ("headers", "query", "message"),
    [
        ([], b"", "missing API key"),
        ([("X-API-Key", "")], b"", "missing API key"),
        ([], b"?api_key=" + ALICE_KEY.encode(), "missing API key"),  # query not enabled
        ([("X-API-Key", "k-mallory")], b"", "invalid API key"),
        ([("X-API-Key", hash_key(ALICE_KEY))], b"", "invalid API key"),  # the digest is not the key
    ],
)
def test_api_key_refusals(headers: list[tuple[str, str]], query: bytes, message: str) -> None:
    ctx = FakeExchange(headers, query=query)
    assert refused(run_request([api_key()], ctx)) == (message, 'ApiKey realm="fastgw"')
    assert ctx.consumer is None


def test_hash_key_is_sha256_hex_and_generated_keys_differ() -> None:
    assert hash_key("x") == "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert generate_key() != generate_key() and len(generate_key()) >= 43


def test_hash_cli_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastgw.cli", "hash-key"],
        input="x\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == hash_key("x")
    out = subprocess.run(
        [sys.executable, "-m", "fastgw.cli", "hash-password", "--pbkdf2"],
        input="pw\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert parse_password_hash(out.stdout.strip()).verify(b"pw")
    out = subprocess.run(
        [sys.executable, "-m", "fastgw.cli", "hash-key", "--generate"],
        capture_output=True,
        text=True,
        check=True,
    )
    key_line, digest_line = out.stdout.splitlines()
    assert digest_line.split()[-1] == hash_key(key_line.split()[-1])


# -- basic_auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), [("alice", "wonderland"), ("bob", "builder")])
def test_basic_auth_good_credentials(user: str, password: str) -> None:
    ctx = FakeExchange([basic_header(user, password)])
    assert run_request([basic()], ctx) is None
    assert ctx.consumer == user and ctx.removed == [b"authorization"]


CHALLENGE = 'Basic realm="fastgw", charset="UTF-8"'


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([], "missing credentials"),
        ([basic_header("alice", "wrong")], "invalid credentials"),
        ([basic_header("mallory", "wonderland")], "invalid credentials"),
        ([basic_header("alice", "")], "invalid credentials"),
        ([("Authorization", "Basic !!!")], "expected Basic credentials"),
        (
            [("Authorization", "Basic " + base64.b64encode(b"no-colon").decode())],
            "expected Basic credentials",
        ),
        ([("Authorization", "Bearer abc")], "expected Basic credentials"),
    ],
)
def test_basic_auth_refusals(headers: list[tuple[str, str]], message: str) -> None:
    ctx = FakeExchange(headers)
    assert refused(run_request([basic()], ctx)) == (message, CHALLENGE)
    assert ctx.consumer is None and ctx.removed == []


def test_basic_auth_passwords_may_hold_colons_and_utf8() -> None:
    gate = BasicAuth.compile({"users": {"zoë": hash_password("a:b:ç", **FAST)}}, PATH)
    header = "Basic " + base64.b64encode("zoë:a:b:ç".encode()).decode()
    ctx = FakeExchange([("Authorization", header.encode())])
    assert run_request([gate], ctx) is None and ctx.consumer == "zoë"


def count_kdf(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    verify = auth_basic.PasswordHash.verify

    def counting(self: auth_basic.PasswordHash, password: bytes) -> bool:
        calls.append(threading.current_thread().name)
        return verify(self, password)

    monkeypatch.setattr(auth_basic.PasswordHash, "verify", counting)
    return calls


def test_basic_auth_caches_successes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_kdf(monkeypatch)
    gate = basic()
    for _ in range(3):
        ctx = FakeExchange([basic_header("alice", "wonderland")])
        assert run_request([gate], ctx) is None and ctx.consumer == "alice"
    assert len(calls) == 1
    assert calls[0].startswith("fastgw-kdf")  # off the event loop
    for _ in range(2):
        refused(run_request([gate], FakeExchange([basic_header("alice", "nope")])))
    assert len(calls) == 3
    # an unknown user costs a KDF too (timing does not tell which users exist)
    refused(run_request([gate], FakeExchange([basic_header("mallory", "x")])))
    assert len(calls) == 4
    # nothing in the cache is a credential in clear
    assert gate.cache is not None  # type: ignore[attr-defined]
    (key,) = gate.cache.entries  # type: ignore[attr-defined]
    assert b"wonderland" not in key and len(key) == 16


def test_basic_auth_cache_off_and_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    calls = count_kdf(monkeypatch)
    gate = basic(cache=False)
    for _ in range(2):
        assert run_request([gate], FakeExchange([basic_header("alice", "wonderland")])) is None
    assert len(calls) == 2
    gate = basic(cache={"ttl": "100ms"})
    for _ in range(2):
        assert run_request([gate], FakeExchange([basic_header("alice", "wonderland")])) is None
    assert len(calls) == 3
    time.sleep(0.15)
    assert run_request([gate], FakeExchange([basic_header("alice", "wonderland")])) is None
    assert len(calls) == 4


def test_basic_auth_keeps_the_header_when_asked() -> None:
    ctx = FakeExchange([basic_header("alice", "wonderland")])
    assert run_request([basic(hide=False, realm="staff")], ctx) is None and ctx.removed == []
    assert (
        refused(run_request([basic(realm="staff")], FakeExchange()))[1]
        == 'Basic realm="staff", charset="UTF-8"'
    )


def test_basic_auth_sheds_load_beyond_the_pending_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = basic()
    gate.pending = auth_basic.MAX_PENDING  # type: ignore[attr-defined]
    response = run_request([gate], FakeExchange([basic_header("alice", "wonderland")]))
    assert refused(response, 503) == ("too many password checks in progress", None)
    assert response is not None and (b"Retry-After", b"1") in response.headers


def test_password_hash_formats() -> None:
    encoded = hash_password("pw", **FAST)
    assert encoded.startswith("$scrypt$ln=4,r=8,p=1$")
    parsed = parse_password_hash(encoded)
    assert parsed.verify(b"pw") and not parsed.verify(b"pW")
    assert parsed.render() == encoded
    default = hash_password("pw", scheme="pbkdf2-sha512", iterations=10)
    assert default.startswith("$pbkdf2-sha512$i=10$") and parse_password_hash(default).verify(b"pw")
    assert hash_password("pw").startswith("$scrypt$ln=14,r=8,p=5$")  # OWASP's scrypt parameters


# -- query helpers ---------------------------------------------------------------------------------


def test_query_helpers_decode_names_and_keep_other_bytes() -> None:
    query = b"?a=1&api%5Fkey=x%2By&b=&c&api_key=second"
    assert query_param(query, b"api_key") == b"x+y"
    assert query_param(query, b"b") == b"" and query_param(query, b"zz") is None
    assert without_query_params(query, {b"api_key"}) == b"?a=1&b=&c"
    assert without_query_params(b"?api_key=1", {b"api_key"}) == b""
    assert without_query_params(b"?a=1", {b"x"}) == b"?a=1" and without_query_params(b"", {b"x"}) == b""


# -- config errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("api_key", {}, f"{PATH}: missing required key 'consumers'"),
        (
            "api_key",
            {"consumers": {}},
            f"{PATH}.consumers: expected a non-empty mapping, found an empty mapping",
        ),
        (
            "api_key",
            {"consumers": {"alice": "plaintext-key"}},
            f"{PATH}.consumers.alice: expected a key digest: 'sha256:' and 64 hex digits (fastgw hash-key)",
        ),
        (
            "api_key",
            {"consumers": {"bob": []}},
            f"{PATH}.consumers.bob: expected a key digest or a non-empty list",
        ),
        (
            "api_key",
            {"consumers": {"a": hash_key("k"), "b": ["sha256:" + "0" * 64, hash_key("k")]}},
            f"{PATH}.consumers.b[1]: the same key is already given at {PATH}.consumers.a",
        ),
        (
            "api_key",
            {"consumers": {"a": hash_key("k")}, "header": "X Key"},
            f"{PATH}.header: expected a header name",
        ),
        (
            "api_key",
            {"consumers": {"a": hash_key("k")}, "hedaer": "X-Key"},
            f"{PATH}: unknown key 'hedaer'; expected one of: consumers, header, query, hide, realm;"
            " did you mean 'header'?",
        ),
        ("basic_auth", {"realm": "x"}, f"{PATH}: missing required key 'users'"),
        (
            "basic_auth",
            {"users": {"alice": "wonderland"}},
            f"{PATH}.users.alice: not a password hash like '$scrypt$ln=14,r=8,p=5$<salt>$<hash>'"
            " (fastgw hash-password)",
        ),
        (
            "basic_auth",
            {"users": {"alice": "$md5$i=1$c2FsdHNhbHQ$" + "A" * 22}},
            f"{PATH}.users.alice: unknown hash scheme 'md5'; expected scrypt, pbkdf2-sha256 or pbkdf2-sha512",
        ),
        (
            "basic_auth",
            {"users": {"alice": "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$" + "A" * 22}},
            f"{PATH}.users.alice: scrypt parameters out of range (ln 1-20, r 1-32, p 1-16)",
        ),
        (
            "basic_auth",
            {"users": {"a:b": USERS["alice"]}},
            f"{PATH}.users.a:b: a user name cannot contain ':'",
        ),
        ("basic_auth", {"users": USERS, "cache": "soon"}, f"{PATH}.cache: expected a mapping, found 'soon'"),
    ],
)
def test_config_errors(name: str, options: dict[str, Any], message: str) -> None:
    assert plugin_config_error(name, options).startswith(f"gw.yaml: {message}")
