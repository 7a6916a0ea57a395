"""upstream.client: raw response bytes in, exact results out, at every split point.

The client reads whole responses for aggregate routes. Each case feeds one response to a
``ClientConnection`` over a recording transport, once whole and once cut at every byte offset
(RFC 9112 framing must not depend on where reads end), and checks the response, whether the
connection may be reused, and that a refused response aborts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from fastgw.errors import UpstreamFault
from fastgw.upstream.client import ClientConnection, ClientResponse, ConnectionReset, render_request


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


def splits(data: bytes) -> Iterable[list[bytes]]:
    """``data`` whole, then in two pieces cut at every offset."""
    yield [data]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def run(pieces: list[bytes], *, max_body: int = 1 << 20, close: bool = False) -> tuple[Any, ClientConnection]:
    """Feed ``pieces`` after a request; the response or the exception, and the connection."""

    async def main() -> tuple[Any, ClientConnection]:
        conn = ClientConnection("t:1")
        transport = RecordingTransport()
        conn.connection_made(transport)
        future = conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", max_body)
        assert transport.written == [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"]
        for piece in pieces:
            conn.data_received(piece)
        if close:
            conn.connection_lost(None)
        try:
            return await asyncio.wait_for(future, 1), conn
        except UpstreamFault as fault:
            return fault, conn

    return asyncio.run(main())


def every_split(data: bytes, **options: Any) -> list[tuple[Any, ClientConnection]]:
    return [run(pieces, **options) for pieces in splits(data)]


def test_content_length_body() -> None:
    data = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
    for response, conn in every_split(data):
        assert response == ClientResponse(
            200, [(b"content-type", b"application/json"), (b"content-length", b"7")], b'{"a":1}'
        )
        assert response.header(b"content-type") == b"application/json"
        assert conn.reusable and conn.served == 1


def test_chunked_body_is_dechunked() -> None:
    # RFC 9112 7.1: chunk extensions are ignored, trailers end the message
    data = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{"a\r\n4\r\n":1}\r\n0\r\nT: v\r\n\r\n'
    )
    for response, conn in every_split(data):
        assert (response.status, response.body) == (200, b'{"a":1}')
        assert conn.reusable


def test_connection_close_is_not_reused() -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    for response, conn in every_split(data):
        assert response.body == b"{}"
        assert not conn.reusable


def test_body_delimited_by_close() -> None:
    # RFC 9112 6.3 (8): neither Content-Length nor chunked: the body runs to the close
    data = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[1, 2]"
    for response, conn in every_split(data, close=True):
        assert (response.status, response.body) == (200, b"[1, 2]")
        assert not conn.reusable


def test_interim_responses_are_skipped() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + (
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    )
    for response, conn in every_split(data):
        assert (response.status, response.headers, response.body) == (201, [(b"content-length", b"2")], b"{}")
        assert conn.reusable


def test_no_content_has_no_body() -> None:
    for response, conn in every_split(b"HTTP/1.1 204 No Content\r\n\r\n"):
        assert (response.status, response.body) == (204, b"")
        assert conn.reusable


def test_declared_length_over_the_limit_fails_at_the_head() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"  # no body needed: refused on the head
    for fault, conn in every_split(data, max_body=10):
        assert isinstance(fault, UpstreamFault)
        assert fault.message == "t:1 answered 11 bytes, over the limit of 10"
        assert conn.closed and conn.transport.aborted  # type: ignore[union-attr]


def test_chunked_body_over_the_limit_fails_on_the_read_that_passes_it() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n123456\r\n6\r\n789012\r\n"
    for fault, conn in every_split(data, max_body=10):
        assert isinstance(fault, UpstreamFault)
        assert fault.message == "t:1 answered more than the limit of 10 bytes"
        assert conn.closed
    response, _ = run([data + b"0\r\n\r\n"], max_body=12)
    assert response.body == b"123456789012"  # exactly the limit passes


def test_malformed_response() -> None:
    for fault, conn in every_split(b"HTTP/1.1 2x0 Bad\r\n\r\n"):
        assert isinstance(fault, UpstreamFault)
        assert fault.message.startswith("t:1 sent a malformed response (malformed: ")
        assert conn.closed


def test_close_before_any_byte_may_be_retried_but_not_a_cut_body() -> None:
    fault, _ = run([], close=True)
    assert type(fault) is ConnectionReset
    assert fault.message == "t:1 closed the connection before responding"
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"
    for pieces in splits(data):
        fault, _ = run(pieces, close=True)
        assert type(fault) is UpstreamFault
        assert fault.message == "t:1 closed the connection before the response completed"


def test_bytes_after_the_response_make_the_connection_unusable() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n"
    for response, conn in every_split(data):
        assert response.body == b"{}"
        assert conn.closed and not conn.reusable


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_render_request(method: str) -> None:
    head = render_request(
        method, b"/a?b=1", b"t:80", [(b"Accept", b"application/json"), (b"X-Request-Id", b"r1")]
    )
    assert head == (
        method.encode()
        + b" /a?b=1 HTTP/1.1\r\nHost: t:80\r\nAccept: application/json\r\nX-Request-Id: r1\r\n\r\n"
    )
