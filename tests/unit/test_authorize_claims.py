"""authorize and claims on a fake exchange: 401 vs 403, scopes in every shape, claim rules, claims
copied into headers and the query, the client's forged copies removed, and config errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fastgw.hooks import Plugin, Response
from fastgw.plugins._auth import ClaimPath, claim_text
from fastgw.plugins.authorize import Authorize
from fastgw.plugins.claims import ClaimsToRequest
from tests.support.exchange import FakeExchange, run_request, upstream_headers
from tests.support.gateway import plugin_config_error

PATH = "routes[0].plugins[0]"


def authorize(**options: Any) -> Plugin:
    return Authorize.compile(options, PATH)


def identified(claims: dict[str, Any] | None = None, consumer: str | None = None, **kw: Any) -> FakeExchange:
    ctx = FakeExchange(**kw)
    ctx.claims = claims
    ctx.consumer = consumer
    return ctx


def answer(response: Response | None) -> tuple[int, str, str | None]:
    assert response is not None
    body = orjson.loads(response.body)
    assert body["request_id"] == "fake-00000001"
    challenge = dict(response.headers).get(b"WWW-Authenticate")
    return response.status, body["error"], challenge.decode() if challenge else None


# -- authorize ------------------------------------------------------------------------------------


def test_no_identity_is_401_and_a_wrong_one_403() -> None:
    gate = authorize(scopes=["orders:read"])
    assert answer(run_request([gate], identified())) == (
        401,
        "authentication required",
        'Bearer realm="fastgw"',
    )
    status, error, challenge = answer(run_request([gate], identified({"sub": "a", "scope": "orders:write"})))
    assert (status, error) == (403, "insufficient scope: missing orders:read")
    assert challenge == 'Bearer realm="fastgw", error="insufficient_scope", scope="orders:read"'
    # an API-key consumer has an identity but no claims: 403, not 401
    assert answer(run_request([gate], identified(consumer="alice")))[0] == 403


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": "orders:read orders:write"},
        {"scope": "  orders:write\torders:read "},
        {"scp": ["orders:write", "orders:read"]},
        {"scp": "orders:read orders:write"},
        {"scope": "orders:read", "scp": ["orders:write"]},
    ],
)
def test_scope_shapes(claims: dict[str, Any]) -> None:
    gate = authorize(scopes=["orders:read", "orders:write"])
    assert run_request([gate], identified(claims)) is None


def test_all_scopes_and_any_scopes() -> None:
    gate = authorize(scopes=["orders:read"], any_scopes=["admin", "orders:admin"])
    assert run_request([gate], identified({"scope": "orders:read orders:admin"})) is None
    status, error, _ = answer(run_request([gate], identified({"scope": "orders:read"})))
    assert (status, error) == (403, "insufficient scope: needs admin or orders:admin")
    status, error, _ = answer(run_request([gate], identified({"scope": "admin"})))
    assert (status, error) == (403, "insufficient scope: missing orders:read")
    custom = authorize(scopes=["read"], scope_claims=["permissions"])
    assert run_request([custom], identified({"permissions": ["read"]})) is None
    assert answer(run_request([custom], identified({"scope": "read"})))[0] == 403


def test_claim_rules_exact_any_of_lists_and_paths() -> None:
    gate = authorize(
        claims={
            "role": "admin",
            "tenant": ["acme", "globex"],
            "org.level": 3,
            "email_verified": True,
            "https://example.com/groups": "ops",
        }
    )
    good = {
        "role": "admin",
        "tenant": "globex",
        "org": {"level": 3},
        "email_verified": True,
        "https://example.com/groups": ["dev", "ops"],
    }
    assert run_request([gate], identified(good)) is None
    assert run_request([gate], identified({**good, "role": ["user", "admin"], "org": {"level": "3"}})) is None
    for name, value in [
        ("role", "user"),
        ("tenant", "initech"),
        ("org", {"level": 4}),
        ("org", 3),
        ("email_verified", "yes"),
        ("https://example.com/groups", ["dev"]),
        ("role", None),
    ]:
        bad = {**good, name: value}
        status, error, challenge = answer(run_request([gate], identified(bad)))
        assert status == 403 and challenge is None
        assert error == f"the '{'org.level' if name == 'org' else name}' claim does not allow this route"
    missing = dict(good)
    del missing["tenant"]
    assert (
        answer(run_request([gate], identified(missing)))[1] == "the 'tenant' claim does not allow this route"
    )


def test_consumers_rule() -> None:
    gate = authorize(consumers=["alice", "bob"])
    assert run_request([gate], identified(consumer="bob")) is None
    assert answer(run_request([gate], identified(consumer="carol")))[:2] == (
        403,
        "this consumer may not use this route",
    )
    assert answer(run_request([gate], identified({"sub": "alice"})))[0] == 403  # claims, no consumer


# -- claims ---------------------------------------------------------------------------------------

TOKEN_CLAIMS = {
    "sub": "alice",
    "org": {"tenant": "acme corp", "id": 42},
    "roles": ["admin", "dev"],
    "flags": {"beta": True},
    "bad": "x\r\nX-Injected: 1",
}


def claims_plugin(**options: Any) -> Plugin:
    return ClaimsToRequest.compile(options, PATH)


def test_claims_to_headers_strips_forged_copies_first() -> None:
    gate = claims_plugin(
        headers={
            "X-User-Id": "sub",
            "X-Tenant": "org.tenant",
            "X-Roles": "roles",
            "X-Flags": "flags",
            "X-Bad": "bad",
            "X-Missing": "nope",
        },
        consumer_header="X-Consumer",
    )
    ctx = identified(
        TOKEN_CLAIMS,
        consumer="alice",
        headers=[
            ("X-User-Id", "mallory"),
            ("x-missing", "forged"),
            ("X-Consumer", "root"),
            ("Accept", "*/*"),
        ],
    )
    assert run_request([gate], ctx) is None
    assert sorted(ctx.removed) == [b"x-consumer", b"x-missing", b"x-user-id"]
    assert ctx.headers == [(b"Accept", b"*/*")]
    assert upstream_headers([gate], ctx) == [
        (b"X-User-Id", b"alice"),
        (b"X-Tenant", b"acme corp"),
        (b"X-Roles", b"admin,dev"),
        (b"X-Flags", b'{"beta":true}'),
        (b"X-Consumer", b"alice"),
    ]  # X-Bad held CR LF: not sent; X-Missing: no such claim


def test_claims_to_query_replaces_forged_parameters() -> None:
    gate = claims_plugin(query={"tenant": "org.tenant", "org_id": "org.id", "user": "sub", "none": "nope"})
    ctx = identified(TOKEN_CLAIMS, query=b"?page=2&tenant=evil&user=root&none=x&q=a%20b")
    assert run_request([gate], ctx) is None
    assert ctx.query == b"?page=2&q=a%20b&tenant=acme%20corp&org_id=42&user=alice"
    ctx = identified(TOKEN_CLAIMS)
    assert run_request([gate], ctx) is None and ctx.query == b"?tenant=acme%20corp&org_id=42&user=alice"
    anonymous = identified(None, query=b"?tenant=evil")
    assert run_request([gate], anonymous) is None and anonymous.query == b""


def test_without_claims_only_the_stripping_happens() -> None:
    gate = claims_plugin(headers={"X-User-Id": "sub"})
    ctx = identified(None, consumer="key-user", headers=[("X-User-Id", "mallory")])
    assert run_request([gate], ctx) is None
    assert ctx.headers == [] and upstream_headers([gate], ctx) == []


def test_claim_paths_and_text() -> None:
    claims = {"a.b": "literal", "a": {"b": "nested", "c": {"d": [1, 2.5, False]}}}
    assert ClaimPath("a.b").find(claims) == "literal"  # the exact name wins
    assert claim_text(ClaimPath("a.c.d").find(claims)) == "1,2.5,false"
    assert ClaimPath("a.x").find(claims) is ClaimPath("zz").find(claims)


# -- config errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("authorize", {}, f"{PATH}: give at least one of scopes, any_scopes, claims or consumers"),
        ("authorize", {"scopes": []}, f"{PATH}.scopes: expected a non-empty list, found an empty list"),
        (
            "authorize",
            {"scopes": ["a b"]},
            f"{PATH}.scopes[0]: expected one scope without spaces, found 'a b'",
        ),
        ("authorize", {"claims": {"role": []}}, f"{PATH}.claims.role: expected a value or a non-empty list"),
        ("authorize", {"claims": {"role": {"x": 1}}}, f"{PATH}.claims.role: expected a string or a number"),
        (
            "authorize",
            {"scope": ["a"]},
            f"{PATH}: unknown key 'scope'; expected one of: scopes, any_scopes, claims, consumers,"
            " scope_claims, realm; did you mean 'scopes'?",
        ),
        ("claims", {}, f"{PATH}: give at least one of headers, query or consumer_header"),
        (
            "claims",
            {"headers": {"X-User": ""}},
            f"{PATH}.headers.X-User: expected a non-empty string, found ''",
        ),
        ("claims", {"headers": {"Bad Name": "sub"}}, f"{PATH}.headers.Bad Name: expected a header name"),
        ("claims", {"headers": {"Host": "sub"}}, f"{PATH}.headers.Host: Host is set by the gateway itself"),
        (
            "claims",
            {"headers": {"X-Forwarded-For": "sub"}},
            f"{PATH}.headers.X-Forwarded-For: X-Forwarded-For is set by the gateway itself",
        ),
        (
            "claims",
            {"consumer_header": "Content-Length"},
            f"{PATH}.consumer_header: Content-Length is set by the gateway itself",
        ),
        ("claims", {"query": []}, f"{PATH}.query: expected a non-empty mapping, found an empty list"),
    ],
)
def test_config_errors(name: str, options: dict[str, Any], message: str) -> None:
    assert plugin_config_error(name, options).startswith(f"gw.yaml: {message}")
