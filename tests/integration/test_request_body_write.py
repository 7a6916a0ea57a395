"""A request head and the body piece that came in the same read go upstream in one write.

Seen through a TLS upstream: each write of the gateway's upstream side becomes its own TLS
record, and one SSL read returns at most one record, so the upstream's first read holding the
head and the body is the proof that both left in one write. Over cleartext the same path is one
sendmsg(); there the bytes must arrive exactly, whatever the split of the client's writes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.certs import Pki
from tests.support.gateway import RunningGateway
from tests.support.rawhttp import build_request, connect, read_response

MakeGateway = Callable[[dict[str, Any]], RunningGateway]
BODY = bytes(range(256)) * 16  # 4 KiB, every byte value
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class RecordingUpstream:
    """Answers every request with an empty 200, keeping its connections alive, and keeps what
    each read of each request returned."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[list[bytes]] = []  # per request, its reads in order
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            conn.settimeout(5)
            # The socket served, kept for close(): wrap_socket detaches conn (shutting it down
            # would do nothing, and the thread would wait out its receive timeout).
            sock = self.tls.wrap_socket(conn, server_side=True) if self.tls else conn
            self.connections.append(sock)
            with sock:
                self.serve_connection(sock)

    def serve_connection(self, sock: socket.socket) -> None:
        while True:  # one request at a time: the gateway sends the next after the answer
            reads: list[bytes] = []
            while not complete(b"".join(reads)):
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                reads.append(data)
            self.requests.append(reads)
            sock.sendall(ANSWER)

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:  # the gateway may still hold them in its pool
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)


def complete(request: bytes) -> bool:
    head, found, body = request.partition(b"\r\n\r\n")
    if not found:
        return False
    lengths = [
        line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    return len(body) >= (int(lengths[0]) if lengths else 0)


@pytest.fixture
def tls_upstream(pki: Pki) -> Iterator[RecordingUpstream]:
    issued = pki.issue("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    upstream = RecordingUpstream(context)
    yield upstream
    upstream.close()


@pytest.fixture
def plain_upstream() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream(None)
    yield upstream
    upstream.close()


def config(port: int, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": [f"127.0.0.1:{port}"], **({"tls": tls} if tls else {})}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def post(gw: RunningGateway, pieces: list[bytes]) -> int:
    with connect(gw.port) as sock:
        for piece in pieces:
            sock.sendall(piece)
        return read_response(sock).status


def test_head_and_body_of_one_read_leave_in_one_write(
    make_gateway: MakeGateway, tls_upstream: RecordingUpstream, pki: Pki
) -> None:
    gw = make_gateway(config(tls_upstream.port, {"ca": pki.ca_file}))
    # The first request opens the upstream connection (its body waits for it); the second finds
    # it idle in the pool while the client's read is still being parsed.
    assert post(gw, [build_request("POST", "/items", body=BODY)]) == 200
    assert post(gw, [build_request("POST", "/items", body=BODY)]) == 200
    [_, reads] = tls_upstream.requests
    head, _, body = reads[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /items HTTP/1.1\r\n") and b"\r\nContent-Length: 4096" in head
    assert body == BODY  # the first record carried the whole body with the head


@pytest.mark.parametrize("split", [10, 40, 62, 63, 64, 65, 100, 2000, 4150])
def test_a_body_split_anywhere_arrives_exactly(
    make_gateway: MakeGateway, plain_upstream: RecordingUpstream, split: int
) -> None:
    """The client's bytes in two writes, split before, at or after the end of the head (64
    bytes): the head may be held for the body piece only within one read; the upstream gets
    the head once and the body exactly."""
    request = build_request("POST", "/items", body=BODY)
    assert request.index(b"\r\n\r\n") + 4 == 64
    gw = make_gateway(config(plain_upstream.port))
    for _ in range(2):  # on a new upstream connection, then on the pooled one
        assert post(gw, [request[:split], request[split:]]) == 200
    for reads in plain_upstream.requests:
        head, _, body = b"".join(reads).partition(b"\r\n\r\n")
        assert head.startswith(b"POST /items HTTP/1.1\r\n") and head.count(b"POST") == 1
        assert body == BODY
    assert len(plain_upstream.requests) == 2
