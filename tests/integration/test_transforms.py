"""Request and response transforms on real requests: header and query edits as the upstream saw
them (its ``/echo`` JSON), templates filled from params, claims and the client address, values
that would inject a header line refused, redirects pointing back at the gateway, and JSON field
filtering (objects, lists, nested paths, non-JSON, over the limit, encoded bodies)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import orjson
import pytest

from fastgw import hooks
from fastgw.hooks import Plugin, register_plugin
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]


class FakeLogin(Plugin):
    """Stands for an authentication plugin: claims (JSON) and consumer from request headers."""

    name: ClassVar[str] = "test_login"

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls()

    def on_request(self, ctx: Any) -> None:
        claims = ctx.header(b"x-test-claims")
        if claims is not None:
            ctx.claims = json.loads(claims)
        consumer = ctx.header(b"x-test-consumer")
        if consumer is not None:
            ctx.consumer = consumer.decode("latin-1")  # as rawhttp.build_request encodes it


@pytest.fixture(autouse=True)
def login() -> Iterator[None]:
    register_plugin(FakeLogin)
    yield
    hooks._REGISTRY.pop(FakeLogin.name, None)


def route(path: str, *plugins: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": path,
        "path": path,
        "upstream": "up",
        "plugins": [{"name": "test_login"}, *plugins],
        **extra,
    }


def call(
    gw: RunningGateway,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    body: bytes = b"",
) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, target, headers or [], body=body))
        return read_response(sock, head=method == "HEAD")


def echoed_headers(r: RawResponse) -> list[tuple[str, str]]:
    return [(n.lower(), v) for n, v in r.json()["headers"]]


# -- headers ---------------------------------------------------------------------------------------

HEADERS = {
    "name": "headers",
    "request": {
        "set": {"X-User": "{claim.org.id}/{consumer}", "X-Item": "item-{param.id}"},
        "add": {"X-Via": "gw {method} {path} from {client_ip} to {upstream_host}", "X-Rid": "{request_id}"},
        "remove": ["X-Debug"],
    },
    "response": {"set": {"X-Conn-Id": "hidden"}, "add": {"X-Host": "{host}"}, "remove": "Content-Type"},
}


def test_header_edits_reach_the_upstream_and_the_client(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=[route("/echo/{id}", HEADERS)]))
    claims = json.dumps({"org": {"id": "acme"}})
    r = call(
        gw,
        "/echo/42",
        [("X-Test-Claims", claims), ("X-Test-Consumer", "alice"), ("X-User", "forged"), ("X-Debug", "1")],
    )
    seen = echoed_headers(r)
    assert [v for n, v in seen if n == "x-user"] == ["acme/alice"]  # the client's copy is gone
    assert ("x-item", "item-42") in seen
    assert ("x-via", f"gw GET /echo/42 from 127.0.0.1 to 127.0.0.1:{upstream}") in seen
    assert dict(seen)["x-rid"] == dict(seen)["x-request-id"]
    assert not [n for n, _ in seen if n == "x-debug"]
    assert r.header_values("X-Conn-Id") == ["hidden"] and r.header("X-Host") == "test.local"
    assert r.header("Content-Type") is None


def test_values_that_would_inject_a_header_line_are_not_sent(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=[route("/echo/{id}", HEADERS)]))
    claims = json.dumps({"org": {"id": "acme\r\nX-Evil: 1"}})
    seen = echoed_headers(call(gw, "/echo/1", [("X-Test-Claims", claims), ("X-User", "forged")]))
    assert not [n for n, _ in seen if n in ("x-user", "x-evil")]  # neither forged nor injected
    assert ("x-item", "item-1") in seen


def test_a_missing_variable_sets_nothing(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, routes=[route("/echo/{id}", HEADERS)]))
    seen = echoed_headers(call(gw, "/echo/1", [("X-User", "forged")]))  # no claims, no consumer
    assert not [n for n, _ in seen if n == "x-user"]


def test_rename_moves_request_and_response_headers_keeping_their_values(
    make_gateway: Make, upstream: int
) -> None:
    renames = {
        "name": "headers",
        "request": {"rename": {"X-Api-Version": "X-Version"}, "set": {"X-Tenant": "{header.X-Org}"}},
        "response": {
            "rename": {"X-Upstream-Time": "X-Backend-Time"},
            "add": {"X-Org-Seen": "<{header.X-Org}>"},
        },
    }
    gw = make_gateway(gateway_config(upstream, routes=[route("/{*rest}", renames)]))
    sent = [("X-Api-Version", "1"), ("X-Version", "forged"), ("X-Org", "acme"), ("x-api-version", "2")]
    r = call(gw, "/echo/1", sent)
    seen = echoed_headers(r)
    assert [v for n, v in seen if n == "x-version"] == ["1", "2"]  # both values, in order; no forgery
    assert not [n for n, _ in seen if n == "x-api-version"]
    assert [v for n, v in seen if n == "x-tenant"] == ["acme"] and r.header("X-Org-Seen") == "<acme>"
    # {header.NAME} of a header the request does not have is empty
    assert [v for n, v in echoed_headers(call(gw, "/echo/2")) if n == "x-tenant"] == [""]
    upstream_sets = [("X-Respond-X-Upstream-Time", "5"), ("X-Respond-X-Backend-Time", "old")]
    upstream_sets.append(("X-Respond-x-upstream-time", "6"))
    r = call(gw, "/respond/200", upstream_sets)
    assert r.header_values("X-Backend-Time") == ["5", "6"] and r.header("X-Upstream-Time") is None


@pytest.fixture
def hanging_up() -> Iterator[tuple[int, list[int]]]:
    """A target that accepts, reads a request and closes without answering: (port, [accepted])."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            accepted[0] += 1
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
    listener.close()
    thread.join(5)


def test_renamed_request_headers_go_with_a_retried_attempt(
    make_gateway: Make, upstream: int, hanging_up: tuple[int, list[int]]
) -> None:
    port, accepted = hanging_up
    renames = {"name": "headers", "request": {"rename": {"X-Api-Version": "X-Version"}}}
    doc = gateway_config(
        upstream, routes=[route("/{*rest}", renames, retry={"attempts": 2, "when": ["reset"], "backoff": 0})]
    )
    doc["upstreams"]["up"]["targets"] = [f"127.0.0.1:{port}", f"127.0.0.1:{upstream}"]
    gw = make_gateway(doc)
    for i in range(4):  # round robin: some go to the target that hangs up, then to the other one
        seen = echoed_headers(call(gw, f"/echo/{i}", [("X-Api-Version", "1"), ("X-Api-Version", "2")]))
        assert [(n, v) for n, v in seen if n in ("x-version", "x-api-version")] == [
            ("x-version", "1"),
            ("x-version", "2"),
        ]
    assert accepted[0] >= 1


# -- query -----------------------------------------------------------------------------------------

QUERY = {
    "name": "query",
    "remove": ["debug"],
    "rename": {"q": "search term"},
    "set": {"tenant": "{claim.org}"},
    "add": {"who": "{consumer} & co/{param.id}"},
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "?tenant=a%20b&who=al%C3%AFce%20%26%20co%2F9"),
        (
            "?q=caf%C3%A9+au+lait&debug=1&x=%2F%zz&%74enant=forged&keep=&q=2",
            "?search%20term=caf%C3%A9+au+lait&x=%2F%zz&keep=&search%20term=2&tenant=a%20b&who=al%C3%AFce%20%26%20co%2F9",
        ),
    ],
)
def test_query_edits_keep_the_rest_byte_for_byte(
    make_gateway: Make, upstream: int, query: str, expected: str
) -> None:
    gw = make_gateway(gateway_config(upstream, routes=[route("/echo/{id}", QUERY)]))
    claims = json.dumps({"org": "a b"})
    r = call(gw, f"/echo/9{query}", [("X-Test-Claims", claims), ("X-Test-Consumer", "alïce")])
    assert r.json()["path"] == f"/echo/9{expected}"


# -- Location --------------------------------------------------------------------------------------


def redirect(gw: RunningGateway, location: str, headers: list[tuple[str, str]] | None = None) -> RawResponse:
    asked = [
        ("X-Respond-Location", location),
        ("X-Respond-Content-Location", location),
        ("X-Respond-Refresh", f"3; url={location}"),
        *(headers or []),
    ]
    return call(gw, "/api/respond/302", asked, method="POST", body=b"moved")


def location_doc(upstream: int, trusted: bool = False, **options: Any) -> dict[str, Any]:
    plugin = {"name": "rewrite_location", "headers": ["Location", "Refresh"], **options}
    doc = gateway_config(upstream, routes=[route("/api/{*rest}", plugin, strip_prefix="/api")])
    if trusted:
        doc["listeners"][0]["trusted_proxies"] = ["127.0.0.0/8"]
    return doc


def test_location_at_the_upstream_points_at_the_gateway_with_the_prefix(
    make_gateway: Make, upstream: int
) -> None:
    gw = make_gateway(location_doc(upstream))
    r = redirect(gw, f"http://127.0.0.1:{upstream}/items/7?x=1")
    assert r.status == 302 and r.body == b"moved"
    assert r.header("Location") == "http://test.local/api/items/7?x=1"
    assert r.header("Refresh") == "3; url=http://test.local/api/items/7?x=1"
    # not listed in headers: left as the upstream wrote it
    assert r.header("Content-Location") == f"http://127.0.0.1:{upstream}/items/7?x=1"
    assert redirect(gw, "/items/8").header("Location") == "/api/items/8"  # path-absolute
    assert redirect(gw, "items/9").header("Location") == "items/9"  # relative: right already
    assert redirect(gw, "https://elsewhere.example/x").header("Location") == "https://elsewhere.example/x"


def test_forwarded_proto_counts_only_from_a_trusted_proxy(make_gateway: Make, upstream: int) -> None:
    forwarded = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "api.example.com")]
    untrusting = make_gateway(location_doc(upstream))
    location = f"http://127.0.0.1:{upstream}/a"
    assert redirect(untrusting, location, forwarded).header("Location") == "http://test.local/api/a"
    trusting = make_gateway(location_doc(upstream, trusted=True))
    assert redirect(trusting, location, forwarded).header("Location") == "https://api.example.com/api/a"


def test_configured_public_and_internal_urls(make_gateway: Make, upstream: int) -> None:
    options = {"public_url": "https://api.example.com/v2/", "internal_urls": ["http://orders.internal/app"]}
    gw = make_gateway(location_doc(upstream, **options))
    assert (
        redirect(gw, "http://orders.internal/app/x").header("Location") == "https://api.example.com/v2/api/x"
    )
    assert redirect(gw, "http://orders.internal/other").header("Location") == "http://orders.internal/other"
    assert redirect(gw, "/y").header("Location") == "/v2/api/y"


# -- JSON fields -----------------------------------------------------------------------------------

DOCUMENT = {"id": 1, "name": "n", "secret": "s", "owner": {"id": 7, "email": "e", "name": "o"}, "tags": [1]}


def respond_json(
    gw: RunningGateway, document: Any, content_type: str = "application/json", **headers: str
) -> RawResponse:
    asked = [("X-Respond-Content-Type", content_type)]
    asked += [(f"X-Respond-{name.replace('_', '-')}", value) for name, value in headers.items()]
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return call(gw, "/respond/200", asked, method="POST", body=body)


def json_doc(upstream: int, **options: Any) -> dict[str, Any]:
    return gateway_config(upstream, routes=[route("/{*rest}", {"name": "json_fields", **options})])


def test_deny_list_on_objects_lists_and_nested_paths(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(json_doc(upstream, deny=["secret", "owner.email"]))
    expected = {"id": 1, "name": "n", "owner": {"id": 7, "name": "o"}, "tags": [1]}
    r = respond_json(gw, DOCUMENT)
    assert r.status == 200 and r.json() == expected
    assert r.header("Content-Length") is None and r.header("Transfer-Encoding") == "chunked"
    assert respond_json(gw, [DOCUMENT, DOCUMENT, 3], "application/problem+json").json() == [
        expected,
        expected,
        3,
    ]


def test_allow_list_keeps_only_the_listed_fields(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(json_doc(upstream, allow=["id", "owner.id", "missing"]))
    assert respond_json(gw, [DOCUMENT, {"name": "x"}]).json() == [{"id": 1, "owner": {"id": 7}}, {}]


def test_non_json_and_bodiless_responses_pass_as_they_are(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(json_doc(upstream, deny=["secret"]))
    text = orjson.dumps(DOCUMENT)
    r = respond_json(gw, text, "text/plain")
    assert r.body == text and r.header("Content-Length") == str(len(text))
    assert call(gw, "/status/204").status == 204


def test_an_encoded_upstream_body_is_decoded_and_filtered(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(json_doc(upstream, deny=["secret"]))
    r = respond_json(gw, gzip.compress(orjson.dumps(DOCUMENT)), Content_Encoding="gzip")
    assert r.header("Content-Encoding") is None and "secret" not in r.json()


def test_over_the_limit_with_a_known_length_is_a_502(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(json_doc(upstream, deny=["secret"], max_bytes=100))
    r = respond_json(gw, [DOCUMENT] * 10)
    assert r.status == 502 and r.json()["error"] == "upstream response too large to filter"
    assert respond_json(gw, {"secret": 1, "a": 2}).json() == {"a": 2}  # the gateway goes on


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (orjson.dumps([DOCUMENT] * 1000), "is over max_bytes (1000)"),
        (b'{"secret": "s", "broken', "is not valid JSON"),
    ],
)
def test_unknown_length_over_the_limit_or_not_json_is_a_502_naming_why(
    make_gateway: Make, upstream: int, body: bytes, why: str
) -> None:
    """The filter holds the whole body, so nothing has gone out when it gives up: the client gets
    one complete 502 that says why (before, the connection closed with no response at all), and
    no field the list hides goes out. The request counts as a 5xx."""
    gw = make_gateway(json_doc(upstream, deny=["secret"], max_bytes=1000))
    asked = [("X-Respond-Content-Type", "application/json"), ("X-Respond-Transfer-Encoding", "chunked")]
    with connect(gw.port) as sock:
        sock.sendall(build_request("POST", "/respond/200", asked, body=body))
        r = read_response(sock)
        assert r.status == 502 and r.complete
        assert r.json()["error"] == f"response body {why}"
        assert b"secret" not in r.raw
        sock.sendall(build_request("GET", "/echo/after"))  # the connection goes on
        assert read_response(sock).status == 200
    counts = gw.call(lambda: gw.gateway.plan.routes[0].stats.snapshot()["requests"])
    assert counts == {("POST", "5xx"): 1, ("GET", "2xx"): 1}
