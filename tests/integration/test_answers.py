"""The gateway's own answers over HTTP/1.1 (a hook's ``Response``), byte for byte: the status
line, Content-Type and Content-Length (none for a 204), the hook's headers whether given as
tuples or lists, the fields an earlier plugin added, the request id, Date, no body for HEAD; and
a ``Response`` whose head was rendered once (``Response.head``, as a cache hit's) answers as the
same response rendered from its fields."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from fastgw import hooks
from fastgw.hooks import Plugin, Response, register_plugin
from fastgw.http.wire import render_answer_head
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]
STORED = [(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=60")]


class Answerer(Plugin):
    """Answers every request itself: ``/pairs`` with list pairs, ``/rendered`` with a head
    rendered once, ``/204`` with a 204 that was given a body; ``tag`` adds a field first."""

    name: ClassVar[str] = "test_answerer"

    def __init__(self, tag: bool) -> None:
        self.tag = tag
        self.rendered = render_answer_head(200, b"stored body", b"text/plain", STORED)

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls(bool(options.get("tag")))

    def on_request(self, ctx: Any) -> Response:
        if self.tag:
            ctx.add_response_headers = [(b"X-Tag", b"earlier")]
        if ctx.path == b"/pairs":
            return Response(201, b'{"ok":1}', [[b"X-List", b"one"], (b"X-Tuple", b"two")])  # type: ignore[list-item]
        if ctx.path == b"/204":
            return Response(204, b"dropped", [(b"X-Empty", b"yes")])
        extra = [(b"Age", b"3")]
        if ctx.path == b"/rendered":
            return Response(200, b"stored body", [*STORED, *extra], b"text/plain", self.rendered, len(STORED))
        return Response(200, b"stored body", [*STORED, *extra], b"text/plain")


@pytest.fixture(autouse=True)
def answerer() -> Iterator[None]:
    register_plugin(Answerer)
    yield
    hooks._REGISTRY.pop(Answerer.name, None)


def gateway(make_gateway: Make, upstream: int, tag: bool = False) -> RunningGateway:
    plugin = {"name": "test_answerer", **({"tag": True} if tag else {})}
    return make_gateway(
        gateway_config(upstream, routes=[{"path": "/{*rest}", "upstream": "up", "plugins": [plugin]}])
    )


def exchange(gw: RunningGateway, path: str, method: str = "GET") -> bytes:
    """The response's exact bytes, Date's value and the request id's blanked out."""
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, path))
        raw = read_response(sock, head=method == "HEAD").raw
    raw = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: <date>", raw)
    return re.sub(rb"\r\nX-Request-Id: [^\r]*", b"\r\nX-Request-Id: <x-request-id>", raw)


def test_an_answer_with_list_pairs_and_an_earlier_plugins_field(make_gateway: Make, upstream: int) -> None:
    gw = gateway(make_gateway, upstream, tag=True)
    assert exchange(gw, "/pairs") == (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n"
        b"X-List: one\r\nX-Tuple: two\r\nDate: <date>\r\nX-Tag: earlier\r\nX-Request-Id: <x-request-id>\r\n"
        b'\r\n{"ok":1}'
    )


def test_a_204_has_no_length_no_type_and_no_body(make_gateway: Make, upstream: int) -> None:
    gw = gateway(make_gateway, upstream)
    assert exchange(gw, "/204") == (
        b"HTTP/1.1 204 No Content\r\nX-Empty: yes\r\nDate: <date>\r\nX-Request-Id: <x-request-id>\r\n\r\n"
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_head_rendered_once_answers_as_the_fields_do(
    make_gateway: Make, upstream: int, method: str
) -> None:
    gw = gateway(make_gateway, upstream)
    rendered = exchange(gw, "/rendered", method)
    assert rendered == exchange(gw, "/fields", method)
    assert rendered.startswith(
        b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nETag: "v1"\r\n'
        b"Cache-Control: max-age=60\r\nAge: 3\r\nDate: <date>\r\nX-Request-Id: <x-request-id>\r\n\r\n"
    )
    assert rendered.endswith(b"\r\n\r\nstored body" if method == "GET" else b"\r\n\r\n")
