"""Response body filters (``hooks.BodyFilter``) on real responses: a filter sees every piece in
order and its held-back tail at the end, a length-changing filter's response is re-framed
(chunked for HTTP/1.1, close-delimited for HTTP/1.0) whatever the upstream's framing was, filters
chain in plugin order, and bodiless responses are not filtered."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from fastgw import hooks
from fastgw.hooks import Plugin, register_plugin
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.upstream_server import pattern

Make = Callable[..., RunningGateway]


class Upper:
    """Same length: upper-cases every piece."""

    def feed(self, data: bytes) -> bytes:
        return data.upper()

    def end(self) -> bytes:
        return b""


class Digest:
    """Holds the whole body back and answers its SHA-256 and length instead (a new length)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        self.hash.update(data)
        self.size += len(data)
        return b""

    def end(self) -> bytes:
        return b"%d %s" % (self.size, self.hash.hexdigest().encode())


class Filtering(Plugin):
    name: ClassVar[str] = "test_body_filter"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls(str(options["kind"]))

    def on_response(self, ctx: Any) -> None:
        if ctx.body_filters is None:
            ctx.body_filters = []
        if self.kind == "upper":
            ctx.body_filters.append(Upper())
        else:
            ctx.body_filters.append(Digest())
            ctx.response_headers[:] = [
                (n, v) for n, v in ctx.response_headers if n.lower() != b"content-length"
            ]


@pytest.fixture(autouse=True)
def filtering() -> Iterator[None]:
    register_plugin(Filtering)
    yield
    hooks._REGISTRY.pop(Filtering.name, None)


def doc(upstream: int, *kinds: str) -> dict[str, Any]:
    plugins = [{"name": "test_body_filter", "kind": kind} for kind in kinds]
    return gateway_config(
        upstream, routes=[{"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": plugins}]
    )


def get(gw: RunningGateway, target: str, version: str = "HTTP/1.1", method: str = "GET") -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, target, version=version))
        return read_response(sock, head=method == "HEAD")


def digest_of(data: bytes) -> bytes:
    return b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())


@pytest.mark.parametrize("source", ["bytes", "chunked", "until-close"])
def test_same_length_filter_keeps_the_framing(make_gateway: Make, upstream: int, source: str) -> None:
    gw = make_gateway(doc(upstream, "upper"))
    r = get(gw, f"/{source}/200000")
    assert r.status == 200 and r.complete
    assert r.body == pattern(200000).upper()
    if source == "bytes":
        assert r.header("Content-Length") == "200000"


@pytest.mark.parametrize("source", ["bytes", "chunked", "until-close"])
def test_a_new_length_is_rechunked(make_gateway: Make, upstream: int, source: str) -> None:
    gw = make_gateway(doc(upstream, "digest"))
    r = get(gw, f"/{source}/300000")
    assert r.status == 200 and r.complete
    assert r.header("Content-Length") is None and r.header("Transfer-Encoding") == "chunked"
    assert r.body == digest_of(pattern(300000))


def test_a_new_length_for_http_10_is_close_delimited(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, "digest"))
    r = get(gw, "/bytes/5000", version="HTTP/1.0")
    assert r.status == 200 and r.header("Connection") == "close"
    assert r.body == digest_of(pattern(5000))


def test_filters_chain_in_plugin_order(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, "upper", "digest"))
    assert get(gw, "/bytes/70000").body == digest_of(pattern(70000).upper())


def test_keep_alive_goes_on_after_a_filtered_response(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, "digest"))
    with connect(gw.port) as sock:
        for size in (10, 100000, 0):
            sock.sendall(build_request("GET", f"/bytes/{size}"))
            assert read_response(sock).body == digest_of(pattern(size))


@pytest.mark.parametrize(("method", "target"), [("HEAD", "/bytes/100"), ("GET", "/status/204")])
def test_bodiless_responses_are_not_filtered(
    make_gateway: Make, upstream: int, method: str, target: str
) -> None:
    gw = make_gateway(doc(upstream, "digest"))
    r = get(gw, target, method=method)
    assert r.body == b""
