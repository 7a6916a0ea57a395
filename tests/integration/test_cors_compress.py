"""CORS (preflights answered at the gateway, headers on actual responses, disallowed origins,
credentials) and response compression (gzip and brotli decoded equal to the original, q-values,
thresholds, types, ranges, HEAD, 204/304) on real requests."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import brotli
import pytest

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.upstream_server import pattern

Make = Callable[..., RunningGateway]
APP = "https://app.example.com"


def call(
    gw: RunningGateway,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, target, headers or [], body=body))
        return read_response(sock, head=method == "HEAD")


# -- CORS ------------------------------------------------------------------------------------------

CORS = {
    "name": "cors",
    "origins": [APP, "https://*.example.org"],
    "headers": ["Content-Type", "X-Token"],
    "expose_headers": ["X-Conn-Id"],
    "credentials": True,
    "max_age": "10m",
}


def cors_doc(upstream: int, cors: dict[str, Any] = CORS) -> dict[str, Any]:
    # The route lists its methods without OPTIONS: preflights still reach the plugin.
    routes = [{"id": "r", "path": "/{*rest}", "upstream": "up", "methods": ["GET", "PUT"], "plugins": [cors]}]
    return gateway_config(upstream, routes=routes)


def preflight(
    gw: RunningGateway, origin: str, method: str = "PUT", headers: str = "content-type"
) -> RawResponse:
    asked = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers:
        asked.append(("Access-Control-Request-Headers", headers))
    return call(gw, "OPTIONS", "/echo", asked)


def test_preflight_is_answered_at_the_gateway(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(cors_doc(upstream))
    for origin in (APP, "https://a.b.example.org"):
        r = preflight(gw, origin, headers="content-type, x-token")
        assert r.status == 204 and r.body == b"" and r.header("Content-Length") is None
        assert r.header("Access-Control-Allow-Origin") == origin
        assert r.header("Access-Control-Allow-Methods") == "GET, PUT"
        assert r.header("Access-Control-Allow-Headers") == "content-type, x-token"
        assert r.header("Access-Control-Allow-Credentials") == "true"
        assert r.header("Access-Control-Max-Age") == "600" and r.header("Vary") == "Origin"
        assert r.header("X-Conn-Id") is None  # never reached the upstream


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.example.com", "PUT", ""),
        ("https://example.org", "PUT", ""),  # the pattern needs a label before .example.org
        (APP, "DELETE", ""),
        (APP, "PUT", "x-other"),
    ],
)
def test_a_preflight_not_allowed_gets_403_without_cors_headers(
    make_gateway: Make, upstream: int, origin: str, method: str, headers: str
) -> None:
    r = preflight(make_gateway(cors_doc(upstream)), origin, method, headers)
    assert r.status == 403 and r.header("Access-Control-Allow-Origin") is None
    assert r.json()["error"].startswith("CORS:")


def test_actual_requests_get_the_headers_only_for_allowed_origins(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(cors_doc(upstream))
    r = call(gw, "GET", "/echo", [("Origin", APP)])
    assert r.status == 200 and r.header("Access-Control-Allow-Origin") == APP
    assert r.header("Access-Control-Allow-Credentials") == "true"
    assert r.header("Access-Control-Expose-Headers") == "X-Conn-Id" and r.header("Vary") == "Origin"
    denied = call(gw, "GET", "/echo", [("Origin", "https://evil.example.com")])
    assert denied.status == 200 and denied.header("Access-Control-Allow-Origin") is None
    assert denied.header("Vary") == "Origin"
    # A plain OPTIONS (no preflight) still gets the route's 405; other methods too.
    plain = call(gw, "OPTIONS", "/echo")
    assert plain.status == 405 and plain.header("Allow") == "GET, PUT"
    assert call(gw, "POST", "/echo").status == 405


def test_wildcard_origin_without_credentials(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(cors_doc(upstream, {"name": "cors", "origins": "*", "headers": "*"}))
    r = preflight(gw, "https://anyone.test", headers="x-anything")
    assert r.status == 204 and r.header("Access-Control-Allow-Origin") == "*"
    assert r.header("Access-Control-Allow-Headers") == "x-anything"
    actual = call(gw, "GET", "/echo", [("Origin", "https://anyone.test")])
    assert actual.header("Access-Control-Allow-Origin") == "*" and actual.header("Vary") is None


# -- compression -----------------------------------------------------------------------------------

TEXT = b"".join(b"line %d of a text body that compresses well\n" % i for i in range(2000))


def compress_doc(upstream: int, **options: Any) -> dict[str, Any]:
    plugin = {"name": "compress", "min_bytes": 1000, **options}
    return gateway_config(
        upstream, routes=[{"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [plugin]}]
    )


def respond(
    gw: RunningGateway,
    accept: str | None,
    body: bytes = TEXT,
    status: int = 200,
    method: str = "POST",
    **headers: str,
) -> RawResponse:
    headers.setdefault("Content_Type", "text/plain; charset=utf-8")
    asked = [(f"X-Respond-{name.replace('_', '-')}", value) for name, value in headers.items()]
    if accept is not None:
        asked.append(("Accept-Encoding", accept))
    return call(gw, method, f"/respond/{status}", asked, body)


def decoded(r: RawResponse) -> bytes:
    coding = r.header("Content-Encoding")
    if coding == "gzip":
        return gzip.decompress(r.body)
    if coding == "br":
        return bytes(brotli.decompress(r.body))
    return r.body


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.8", "gzip"),
        ("*", "br"),
        ("*;q=0.3, br;q=0", "gzip"),
        ("gzip;q=0, br;q=0", None),
        ("identity", None),
        (None, None),
    ],
)
def test_the_coding_follows_accept_encoding(
    make_gateway: Make, upstream: int, accept: str, coding: str
) -> None:
    gw = make_gateway(compress_doc(upstream))
    r = respond(gw, accept, ETag='"v1"', Accept_Ranges="bytes")
    assert r.status == 200 and r.header("Content-Encoding") == coding and decoded(r) == TEXT
    assert r.header("Vary") == "Accept-Encoding"  # whether compressed or not: caches must know
    if coding:
        assert r.header("ETag") == 'W/"v1"' and r.header("Accept-Ranges") is None
        assert r.header("Content-Length") is None and len(r.body) < len(TEXT) // 5
    else:
        assert r.header("ETag") == '"v1"' and r.header("Content-Length") == str(len(TEXT))


@pytest.mark.parametrize("source", ["bytes", "chunked"])
def test_large_streamed_bodies_compress_piece_by_piece(
    make_gateway: Make, upstream: int, source: str
) -> None:
    gw = make_gateway(compress_doc(upstream, types=["application/octet-stream"], encodings=["gzip"]))
    r = call(gw, "GET", f"/{source}/3000000", [("Accept-Encoding", "gzip")])
    assert r.complete and r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == pattern(3000000)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content_Type": "image/png"},
        {"Content_Encoding": "zstd"},
        {"Cache_Control": "public, no-transform"},
        {"Content_Range": "bytes 0-99999/200000"},
    ],
)
def test_skipped_types_encodings_and_ranges(
    make_gateway: Make, upstream: int, headers: dict[str, str]
) -> None:
    gw = make_gateway(compress_doc(upstream))
    r = respond(gw, "gzip, br", **headers)
    assert r.header("Content-Encoding") == headers.get("Content_Encoding") and r.body == TEXT
    assert r.header("Vary") is None


def test_threshold_statuses_and_head(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(compress_doc(upstream))
    small = respond(gw, "gzip", body=TEXT[:999])
    assert small.header("Content-Encoding") is None and small.body == TEXT[:999]
    assert respond(gw, "gzip", body=TEXT[:1000]).header("Content-Encoding") == "gzip"
    unknown_length = respond(gw, "gzip", body=TEXT[:10], Transfer_Encoding="chunked")
    assert unknown_length.header("Content-Encoding") == "gzip" and decoded(unknown_length) == TEXT[:10]
    for status in (204, 304, 206):
        r = respond(gw, "gzip", status=status)
        assert r.status == status and r.header("Content-Encoding") is None
    head = call(gw, "HEAD", "/bytes/5000", [("Accept-Encoding", "gzip")])
    assert head.status == 200 and head.body == b"" and head.header("Content-Encoding") is None  # octet-stream
    gw2 = make_gateway(compress_doc(upstream, types=["application/octet-stream"]))
    head = call(gw2, "HEAD", "/bytes/5000", [("Accept-Encoding", "gzip")])
    assert head.header("Content-Encoding") == "gzip" and head.header("Content-Length") is None


def test_json_fields_before_a_global_compress(make_gateway: Make, upstream: int) -> None:
    doc = compress_doc(upstream)
    doc["plugins"] = doc["routes"][0].pop("plugins")  # compress for every route, so it runs first
    doc["routes"][0]["plugins"] = [{"name": "json_fields", "deny": ["secret"]}]
    gw = make_gateway(doc)
    body = b'{"secret": "s", "text": "%s"}' % (b"x" * 5000)
    r = respond(gw, "gzip", body=body, Content_Type="application/json")
    assert r.header("Content-Encoding") == "gzip" and decoded(r) == b'{"text":"%s"}' % (b"x" * 5000)
