"""Routing, rewrites, params, predicates and keep-alive through the real gateway."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]


def get(
    gw: RunningGateway,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    host: str = "test.local",
    method: str = "GET",
):  # type: ignore[no-untyped-def]
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, target, headers or [], host=host))
        return read_response(sock, head=method == "HEAD")


def routes_doc(upstream: int) -> dict:  # type: ignore[type-arg]
    return gateway_config(
        upstream,
        routes=[
            {
                "id": "item",
                "path": "/api/items/{id:int}",
                "upstream": "up",
                "methods": ["GET"],
                "rewrite": "/echo/items/{id}",
            },
            {
                "id": "item-any",
                "path": "/api/items/{slug}",
                "upstream": "up",
                "rewrite": "/echo/by-slug/{slug}",
            },
            {"id": "files", "path": "/files/{*rest}", "upstream": "up", "rewrite": "/echo/f/{rest}"},
            {"id": "strip", "path": "/svc/echo/{*rest}", "upstream": "up", "strip_prefix": "/svc"},
            {
                "id": "v2",
                "path": "/ver",
                "upstream": "up",
                "headers": {"X-Version": "2"},
                "rewrite": "/echo/v2",
            },
            {"id": "v1", "path": "/ver", "upstream": "up", "rewrite": "/echo/v1"},
            {"id": "host", "path": "/h", "upstream": "up", "host": "*.example.com", "rewrite": "/echo/wild"},
            {"id": "host-any", "path": "/h", "upstream": "up", "rewrite": "/echo/any"},
            {
                "id": "posts",
                "path": "/posts",
                "upstream": "up",
                "methods": ["POST"],
                "rewrite": "/echo/posts",
            },
        ],
    )


def test_params_rewrite_and_constraints(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(routes_doc(upstream))
    r = get(gw, "/api/items/42?x=1&y=2")
    assert r.status == 200
    assert r.json()["path"] == "/echo/items/42?x=1&y=2"
    # not digits: the constrained route does not match, the plain param does
    assert get(gw, "/api/items/abc").json()["path"] == "/echo/by-slug/abc"
    # the int route only allows GET: a POST to a digits path falls through to item-any
    assert get(gw, "/api/items/7", method="POST").json()["path"] == "/echo/by-slug/7"


def test_catch_all_and_strip_prefix(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(routes_doc(upstream))
    assert get(gw, "/files/a/b/c.txt").json()["path"] == "/echo/f/a/b/c.txt"
    assert get(gw, "/svc/echo/deep/path?q=1").json()["path"] == "/echo/deep/path?q=1"


def test_header_predicate_and_host_matching(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(routes_doc(upstream))
    assert get(gw, "/ver", [("X-Version", "2")]).json()["path"] == "/echo/v2"
    assert get(gw, "/ver").json()["path"] == "/echo/v1"
    assert get(gw, "/h", host="shop.example.com:8080").json()["path"] == "/echo/wild"
    assert get(gw, "/h", host="example.com").json()["path"] == "/echo/any"


def test_404_and_405_are_json_with_request_id(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(routes_doc(upstream))
    r = get(gw, "/nothing/here")
    assert r.status == 404
    assert r.json()["error"] == "no route matches this request"
    assert r.json()["request_id"] == r.header("X-Request-Id")
    r = get(gw, "/posts")
    assert r.status == 405
    assert r.header("Allow") == "POST"


def test_upstream_status_and_body_pass_through(gateway: RunningGateway) -> None:
    r = get(gateway, "/status/418")
    assert (r.status, r.body) == (418, b"status 418")
    r = get(gateway, "/status/204")
    assert r.status == 204 and r.body == b""
    r = get(gateway, "/bytes/100000")
    assert r.body == bytes(i % 251 for i in range(100000))


def test_keep_alive_reuses_one_upstream_connection(gateway: RunningGateway) -> None:
    with connect(gateway.port) as sock:
        conn_ids = set()
        for i in range(20):
            sock.sendall(build_request("GET", f"/echo/{i}"))
            r = read_response(sock)
            assert r.json()["path"] == f"/echo/{i}"
            conn_ids.add(r.json()["conn_id"])
    assert len(conn_ids) == 1


def test_pipelined_requests_answered_in_order(gateway: RunningGateway) -> None:
    batch = b"".join(
        [
            build_request("GET", "/slow/200"),
            build_request("POST", "/echo/second", body=b"x" * 1000),
            build_request("HEAD", "/echo/third"),
            build_request("GET", "/echo/fourth"),
        ]
    )
    with connect(gateway.port) as sock:
        sock.sendall(batch)
        first = read_response(sock)
        second = read_response(sock)
        third = read_response(sock, head=True)
        fourth = read_response(sock)
    assert first.status == 200
    assert second.json()["path"] == "/echo/second" and second.json()["body_len"] == 1000
    assert third.status == 200 and third.body == b""
    assert fourth.json()["path"] == "/echo/fourth"


def test_head_gets_no_body_and_connection_stays_usable(gateway: RunningGateway) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(build_request("HEAD", "/bytes/5000"))
        r = read_response(sock, head=True)
        assert r.status == 200 and r.header("Content-Length") == "5000" and r.body == b""
        sock.sendall(build_request("GET", "/echo/after-head"))
        assert read_response(sock).json()["path"] == "/echo/after-head"


def test_chunked_request_and_response_bodies(gateway: RunningGateway) -> None:
    import hashlib

    pieces = [b"a" * 10, b"b" * 70000, b"c"]
    body = b"".join(pieces)
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with connect(gateway.port) as sock:
        sock.sendall(build_request("POST", "/sink", [("Transfer-Encoding", "chunked")]) + chunked)
        r = read_response(sock)
        assert r.json() == {"body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        sock.sendall(build_request("GET", "/chunked/300000"))
        r = read_response(sock)
        assert r.header("Transfer-Encoding") == "chunked"
        assert r.body == bytes(i % 251 for i in range(300000))


def test_http10_client_gets_close_delimited_body(gateway: RunningGateway) -> None:
    from tests.support.rawhttp import parse_responses, send_raw

    data = send_raw(gateway.port, build_request("GET", "/chunked/1000", version="HTTP/1.0", host=None))
    (r,) = parse_responses(data)
    assert r.status == 200 and r.header("Transfer-Encoding") is None
    assert r.body == bytes(i % 251 for i in range(1000))


def test_close_delimited_upstream_body_is_rechunked_complete(gateway: RunningGateway) -> None:
    # The upstream frames its body by closing; an HTTP/1.1 client gets it chunked, complete,
    # and keeps its own connection.
    with connect(gateway.port) as sock:
        sock.sendall(build_request("GET", "/until-close/70000"))
        r = read_response(sock)
        assert r.complete and r.header("Transfer-Encoding") == "chunked"
        assert r.body == bytes(i % 251 for i in range(70000))
        sock.sendall(build_request("GET", "/echo/again"))
        assert read_response(sock).json()["path"] == "/echo/again"


def test_interim_1xx_from_the_upstream_is_forwarded(gateway: RunningGateway) -> None:
    """RFC 9110 15.2: a proxy forwards 1xx responses it did not ask for itself. The upstream sends
    a "100 Continue" nobody asked for: an HTTP/1.1 client may parse it, so it is passed on."""
    with connect(gateway.port) as sock:
        sock.sendall(build_request("GET", "/continue"))
        r = read_response(sock)
        assert r.status == 200 and [i.status for i in r.interim] == [100]
        assert r.json()["path"] == "/continue"
