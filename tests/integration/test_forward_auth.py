"""forward_auth against a real auth service process (tests/support/auth_servers.py): what it is
sent, allow with header copying (client forgeries dropped), refusals passed through, a service
that hangs or is not there, the optional cache of allow decisions, and option errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from tests.support.auth_servers import BIG_BODY, Control, start_auth_server
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.identity_probe import PROBE, identity_probe
from tests.support.ports import free_port
from tests.support.procs import reaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

ROOT = Path(__file__).resolve().parents[2]

Make = Callable[..., RunningGateway]


@pytest.fixture(scope="module")
def auth_service() -> Iterator[Control]:
    with reaper(report=False) as processes:
        yield start_auth_server(processes, "forward")


@pytest.fixture
def auth(auth_service: Control) -> Control:
    auth_service.reset()
    return auth_service


@pytest.fixture(autouse=True)
def probe() -> Iterator[None]:
    with identity_probe():
        yield


def doc(upstream: int, **options: Any) -> dict[str, Any]:
    plugin = {"name": "forward_auth", **options}
    return gateway_config(
        upstream, routes=[{"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [plugin, PROBE]}]
    )


def verify_url(auth: Control, path: str = "/verify") -> str:
    return f"http://127.0.0.1:{auth.port}{path}"


def get(gw: RunningGateway, target: str, headers: list[tuple[str, str]]) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target, headers))
        return read_response(sock)


def upstream_saw(r: RawResponse) -> dict[str, list[str]]:
    """The request headers the recording upstream received, by lower-case name."""
    assert r.status == 200, r.body
    seen: dict[str, list[str]] = {}
    for name, value in r.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def test_allowed_request_carries_the_auth_answer_not_the_client_forgeries(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    gw = make_gateway(
        doc(
            upstream,
            url=verify_url(auth),
            upstream_headers=["X-Auth-User", "X-Auth-Roles", "X-Auth-Groups"],
            consumer_header="X-Auth-User",
        )
    )
    forged = [("X-Auth-User", "mallory"), ("X-Auth-Roles", "root"), ("X-Auth-Groups", "admins")]
    r = get(gw, "/echo/a?q=1", [("Authorization", "Bearer allow-alice"), *forged])
    seen = upstream_saw(r)
    assert seen["x-auth-user"] == ["alice"]
    assert seen["x-auth-roles"] == ["reader"]
    assert "x-auth-groups" not in seen  # the client's copy is gone although the answer has none
    assert "x-unlisted" not in seen  # only the listed answer headers are copied
    assert seen["x-seen-consumer"] == ["alice"]
    assert auth.stats()["calls"] == 1


def test_auth_service_is_told_about_the_request(make_gateway: Make, upstream: int, auth: Control) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth)))
    spoofed = [("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-Uri", "/public"), ("Cookie", "s=1")]
    # The gateway asks for the codings its own client decodes, never the client's.
    spoofed.append(("Accept-Encoding", "x-private-coding"))
    r = get(gw, "/echo/b?x=2", [("Authorization", "Bearer allow-bob"), *spoofed])
    assert r.status == 200
    sent = {name.lower(): value for name, value in auth.stats()["last_headers"]}
    assert sent["authorization"] == "Bearer allow-bob"
    assert sent["cookie"] == "s=1"
    # What it sends instead is what docs/policies.md says (aiohttp adds zstd where it can decode it).
    documented = re.search(
        r"sends its own, `Accept-Encoding: ([^`]+)`",
        " ".join((ROOT / "docs" / "policies.md").read_text().split()),
    )
    assert documented is not None, "docs/policies.md no longer says which Accept-Encoding is sent"
    assert sent["accept-encoding"] in (documented.group(1), documented.group(1) + ", zstd")
    assert sent["x-forwarded-method"] == "GET"
    assert sent["x-forwarded-uri"] == "/echo/b?x=2"
    assert sent["x-forwarded-host"] == "test.local"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-for"] == "127.0.0.1"  # the peer: it is not a trusted proxy
    assert [sent["x-request-id"]] == upstream_saw(r)["x-request-id"]  # one id for both


def test_behind_a_trusted_proxy_the_auth_service_is_told_what_the_client_used(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    # The context's one reading of X-Forwarded-* (fastgw.http.forwarded), as rewrite_location
    # and ip_filter read it: the first element of -Proto and -Host, checked, not the raw line.
    document = doc(upstream, url=verify_url(auth))
    document["listeners"][0]["trusted_proxies"] = ["127.0.0.0/8"]
    gw = make_gateway(document)
    forwarded = [
        ("X-Forwarded-For", "198.51.100.1, 203.0.113.9"),
        ("X-Forwarded-Proto", "HTTPS, http"),
        ("X-Forwarded-Host", "api.example.com, internal.local"),
    ]
    assert get(gw, "/echo/b", [("Authorization", "Bearer allow-bob"), *forwarded]).status == 200
    sent = {name.lower(): value for name, value in auth.stats()["last_headers"]}
    assert (sent["x-forwarded-proto"], sent["x-forwarded-host"]) == ("https", "api.example.com")
    assert sent["x-forwarded-for"] == "203.0.113.9"  # the nearest untrusted hop
    forwarded[2] = ("X-Forwarded-Host", "api.example.com/evil")
    assert get(gw, "/echo/b", [("Authorization", "Bearer allow-bob"), *forwarded]).status == 200
    sent = {name.lower(): value for name, value in auth.stats()["last_headers"]}
    assert sent["x-forwarded-host"] == ""  # malformed: no host is known, none is made up


def test_request_headers_limits_what_the_auth_service_sees(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth), request_headers=["authorization"]))
    r = get(gw, "/echo/c", [("Authorization", "Bearer allow-carol"), ("Cookie", "s=1"), ("X-Other", "1")])
    assert r.status == 200
    sent = {name.lower() for name, _ in auth.stats()["last_headers"]}
    assert "authorization" in sent and "x-forwarded-uri" in sent
    assert not sent & {"cookie", "x-other"}


def test_refusal_is_passed_to_the_client_as_the_auth_service_gave_it(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth)))
    r = get(gw, "/echo/d", [("Authorization", "Bearer nope")])
    assert r.status == 401
    assert r.header("WWW-Authenticate") == 'Bearer realm="test"'
    assert r.header("Content-Type") == "application/json; charset=utf-8"
    assert r.json() == {"reason": "no valid credentials"}
    assert r.header("X-Internal") is None  # not a deny header
    assert r.header("X-Request-Id")


def test_redirect_to_login_keeps_location_and_every_cookie(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth)))
    r = get(gw, "/echo/e", [("Authorization", "Bearer redirect")])
    assert r.status == 302
    assert r.header("Location") == "https://login.example/?next=/echo/e"
    assert r.header_values("Set-Cookie") == ["state=abc; HttpOnly", "flow=login"]


def test_refusal_body_is_cut_at_max_body(make_gateway: Make, upstream: int, auth: Control) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth), max_body="1KiB"))
    r = get(gw, "/echo/f", [("Authorization", "Bearer big")])
    assert r.status == 403 and BIG_BODY > 1024
    assert r.body == b"x" * 1024
    # the connection the gateway keeps to its client is still good
    assert get(gw, "/echo/g", [("Authorization", "Bearer allow-dan")]).status == 200


def test_auth_service_that_does_not_answer_is_a_504_naming_it(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth, "/hang"), timeout="300ms"))
    r = get(gw, "/echo/h", [("Authorization", "Bearer allow-erin")])
    assert r.status == 504
    assert r.json() == {
        "error": "auth service did not answer within 0.3s",
        "request_id": r.header("X-Request-Id"),
    }


def test_unreachable_auth_service_is_a_502_naming_it(make_gateway: Make, upstream: int) -> None:
    port = free_port()  # nothing listens there
    gw = make_gateway(doc(upstream, url=f"http://127.0.0.1:{port}/verify"))
    r = get(gw, "/echo/i", [("Authorization", "Bearer allow-frank")])
    assert r.status == 502
    assert r.json()["error"] == "auth service is unreachable"


def test_auth_service_closing_without_an_answer_is_a_502(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth, "/hang-up")))
    r = get(gw, "/echo/i", [("Authorization", "Bearer allow-frank")])
    assert r.status == 502
    assert r.json()["error"] == "auth service gave no usable answer"


def test_fail_open_lets_the_request_through_without_identity(make_gateway: Make, upstream: int) -> None:
    url = f"http://127.0.0.1:{free_port()}/verify"
    gw = make_gateway(doc(upstream, url=url, unsafe_fail_open=True, upstream_headers=["X-Auth-User"]))
    seen = upstream_saw(get(gw, "/echo/j", [("X-Auth-User", "mallory")]))
    assert "x-auth-user" not in seen
    assert seen["x-seen-consumer"] == ["-"]


def test_cached_allow_decisions_skip_the_auth_service(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    cache = {"ttl": "1m", "key_headers": ["authorization"]}
    gw = make_gateway(
        doc(
            upstream,
            url=verify_url(auth),
            cache=cache,
            upstream_headers=["X-Auth-User"],
            consumer_header="X-Auth-User",
        )
    )
    for _ in range(3):
        seen = upstream_saw(
            get(gw, "/echo/k", [("Authorization", "Bearer allow-gina"), ("X-Auth-User", "eve")])
        )
        assert seen["x-auth-user"] == ["gina"] and seen["x-seen-consumer"] == ["gina"]
    assert auth.stats()["calls"] == 1
    upstream_saw(get(gw, "/echo/k", [("Authorization", "Bearer allow-hank")]))  # another key
    assert auth.stats()["calls"] == 2
    for _ in range(2):  # refusals are never cached
        assert get(gw, "/echo/k", [("Authorization", "Bearer nope")]).status == 401
    assert auth.stats()["calls"] == 4


# RFC 9110 5.3: Authorization is a singleton field. With two, the auth service might judge one
# (or, from the cache, neither) while the upstream reads the other: refused before any call.
def test_two_authorization_headers_are_refused_without_asking(
    make_gateway: Make, upstream: int, auth: Control
) -> None:
    cache = {"ttl": "1m", "key_headers": ["authorization"]}
    gw = make_gateway(doc(upstream, url=verify_url(auth), cache=cache))
    allowed = ("Authorization", "Bearer allow-gina")
    assert get(gw, "/echo/k", [allowed]).status == 200  # now an allow decision in the cache
    r = get(gw, "/echo/k", [allowed, ("Authorization", "Bearer forged")])
    assert r.status == 400
    assert r.json() == {"error": "more than one Authorization header", "request_id": r.header("X-Request-Id")}
    assert auth.stats()["calls"] == 1


def test_without_cache_every_request_asks(make_gateway: Make, upstream: int, auth: Control) -> None:
    gw = make_gateway(doc(upstream, url=verify_url(auth)))
    for _ in range(2):
        assert get(gw, "/echo/l", [("Authorization", "Bearer allow-ivy")]).status == 200
    assert auth.stats()["calls"] == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, ": missing required key 'url'"),
        (
            {"url": "ftp://x/"},
            ".url: expected an http:// or https:// URL, found 'ftp://x/'",
        ),
        (
            {"url": "http://a/", "upstream_headers": ["X-Ok", "bad name"]},
            ".upstream_headers[1]: expected a header name like 'X-Auth-User', found 'bad name'",
        ),
        (
            {"url": "http://a/", "deny_headers": ["Content-Length"]},
            ".deny_headers[0]: expected a header the gateway does not write itself, found 'Content-Length'",
        ),
        (
            {"url": "http://a/", "timeout": "soon"},
            ".timeout: expected a duration like 30, '250ms', '1.5s', '2m' or '1h', found 'soon'",
        ),
        (
            {"url": "http://a/", "cache": {"ttl": "10s"}},
            ".cache: missing required key 'key_headers'",
        ),
        (
            {"url": "http://a/", "cache": {"ttl": 0, "key_headers": "authorization"}},
            ".cache.ttl: expected a duration greater than 0, found 0",
        ),
        (
            {"url": "http://a/", "upstream_header": ["X-A"]},
            ": unknown key 'upstream_header'; expected one of: url, timeout, request_headers, "
            "upstream_headers, consumer_header, deny_headers, max_body, unsafe_fail_open, cache; "
            "did you mean 'upstream_headers'?",
        ),
    ],
)
def test_option_errors_name_the_key_path(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_plan(parse_config(doc(1, **options), "gw.yaml"))
    assert str(err.value) == f"gw.yaml: routes[0].plugins[0]{message}"
