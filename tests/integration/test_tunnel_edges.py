"""Protocol upgrades at the byte level: a scripted upstream on a raw socket and a raw client, so
every stage of a tunnel's life can be cut from either side with a FIN or a reset, and the 101's
head can be anything an upstream might send.

The rules (RFC 9110 7.8, RFC 6455, and what a proxy owes both sides): nothing the client sends
after an upgrade request reaches the upstream before its 101 (else an upstream that refused
the upgrade reads it as a request: smuggling); a 101 is passed with its end-to-end headers as
they came (its Sec-WebSocket-Accept is the client's to check) and the hop-by-hop ones replaced;
a FIN from one side becomes a FIN to the other, a reset a reset."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import rawhttp
from tests.support.gateway import RunningGateway
from tests.support.rawhttp import build_request, read_response
from tests.support.rawhttp import connect as raw_connect

MakeGateway = Callable[[dict[str, Any]], RunningGateway]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


class RawUpstream:
    """A listening socket; the test accepts and plays the upstream's side by hand."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def accept(self) -> socket.socket:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        return conn

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_up() -> Iterator[RawUpstream]:
    up = RawUpstream()
    yield up
    up.close()


def doc_for(port: int) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0", "timeouts": {"linger": "2s"}}],
        "upstreams": {"up": {"targets": [f"127.0.0.1:{port}"]}},
        "routes": [
            {"id": "ws", "path": "/ws/{*rest}", "upstream": "up", "websocket": True},
            {"id": "plain", "path": "/plain/{*rest}", "upstream": "up"},
        ],
    }


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """A request or response head off ``sock``, and what came after it in the same reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed inside a head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def recv_exactly(sock: socket.socket, n: int, first: bytes = b"") -> bytes:
    left = rawhttp._LEFTOVERS.get(sock)
    data = first
    if left:
        data += bytes(left)
        left.clear()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"closed after {len(data)} of {n} bytes: {data!r}"
        data += chunk
    return data


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def ends(sock: socket.socket) -> str:
    """How the other side ended the connection: "fin" or "reset"."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "fin"


@contextlib.contextmanager
def asked(
    gw: RunningGateway, raw_up: RawUpstream, after: bytes = b""
) -> Iterator[tuple[socket.socket, socket.socket, bytes]]:
    """A client that sent an upgrade request (and ``after`` in the same write), the upstream
    connection it reached, and what the upstream read: the head and whatever came with it."""
    with raw_connect(gw.port) as client:
        client.sendall(build_request("GET", "/ws/t", UPGRADE) + after)
        with raw_up.accept() as upstream:
            head, extra = read_head(upstream)
            yield client, upstream, head + extra


def tunnel(gw: RunningGateway, raw_up: RawUpstream) -> tuple[socket.socket, socket.socket]:
    """A client and an upstream socket spliced by the gateway (the 101 read by the client)."""
    client = raw_connect(gw.port)
    client.sendall(build_request("GET", "/ws/t", UPGRADE))
    upstream = raw_up.accept()
    read_head(upstream)
    upstream.sendall(SWITCH)
    assert read_response(client).status == 101
    return client, upstream


# -- what crosses, and when --------------------------------------------------------------------------


def test_bytes_sent_with_either_head_arrive_after_the_switch_in_order(
    make_gateway: MakeGateway, raw_up: RawUpstream
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    with asked(gw, raw_up, b"EARLY-FROM-CLIENT") as (client, upstream, received):
        assert received.startswith(b"GET /ws/t HTTP/1.1\r\n")
        assert received.endswith(b"\r\n\r\n")  # the rest is held by the gateway until the switch
        upstream.sendall(SWITCH + b"TAIL-FROM-UPSTREAM")
        assert recv_exactly(upstream, 17) == b"EARLY-FROM-CLIENT"
        assert read_response(client).status == 101
        assert recv_exactly(client, 18) == b"TAIL-FROM-UPSTREAM"
        for i in range(20):  # arbitrary bytes (not even WebSocket frames) pass as they are
            client.sendall(bytes([i]) * (i * 997 + 1))
            assert recv_exactly(upstream, i * 997 + 1) == bytes([i]) * (i * 997 + 1)
            upstream.sendall(bytes([255 - i]) * (i * 1009 + 1))
            assert recv_exactly(client, i * 1009 + 1) == bytes([255 - i]) * (i * 1009 + 1)


def test_bytes_after_an_upgrade_never_reach_an_upstream_that_refused_it(
    make_gateway: MakeGateway, raw_up: RawUpstream
) -> None:
    # Smuggling: had the gateway forwarded what followed the upgrade request, the upstream,
    # having answered 403 and kept HTTP, would read "GET /admin" as a request of its own,
    # one the gateway never routed.
    gw = make_gateway(doc_for(raw_up.port))
    smuggled = b"GET /admin HTTP/1.1\r\nHost: up\r\n\r\n"
    with asked(gw, raw_up, smuggled) as (client, upstream, received):
        assert b"/admin" not in received
        upstream.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nno way")
        answer = read_response(client)
        assert (answer.status, answer.body, answer.header("connection")) == (403, b"no way", "close")
        assert ends(client) == "fin"
        with raw_connect(gw.port) as other:  # the pooled upstream connection's next request
            other.sendall(build_request("GET", "/plain/next"))
            head, extra = read_head(upstream)  # the next request it reads is the gateway's
            assert head.startswith(b"GET /plain/next HTTP/1.1\r\n") and extra == b""
            upstream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            assert read_response(other).status == 200


def test_a_client_sending_before_the_switch_is_held_within_the_buffer(
    make_gateway: MakeGateway, raw_up: RawUpstream
) -> None:
    doc = doc_for(raw_up.port)
    doc["listeners"][0]["buffer_bytes"] = "64KiB"
    gw = make_gateway(doc)
    early = bytes(range(256)) * 4096 * 32  # 32 MiB before the upstream answers: reading pauses
    with raw_connect(gw.port) as client:
        client.sendall(build_request("GET", "/ws/t", UPGRADE))
        upstream = raw_up.accept()
        with upstream:
            read_head(upstream)
            client.setblocking(False)
            sent = 0
            try:
                while sent < len(early):
                    sent += client.send(early[sent:])
            except BlockingIOError:
                pass  # the gateway stopped reading: the kernel's buffers are full
            client.setblocking(True)
            client.settimeout(10)
            assert 0 < sent < len(early)
            held = gw.call(lambda: [sum(map(len, c.early)) for c in gw.gateway.listeners["main"].connections])
            assert held and max(held) <= 64 * 1024 + 256 * 1024  # the buffer, and one read past it
            upstream.sendall(SWITCH)
            received: list[bytes] = []
            reader = threading.Thread(target=lambda: received.append(recv_exactly(upstream, len(early))))
            reader.start()
            client.sendall(early[sent:])
            reader.join(30)
            assert received == [early]
            assert read_response(client).status == 101


def test_a_101_is_spliced_whatever_its_accept_and_its_hop_by_hop_lines_are_the_gateways(
    make_gateway: MakeGateway, raw_up: RawUpstream
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    with asked(gw, raw_up) as (client, upstream, _):
        upstream.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade, X-Secret\r\n"
            b"X-Secret: hop\r\nKeep-Alive: timeout=5\r\nSec-WebSocket-Accept: not-the-right-one\r\n"
            b"Sec-WebSocket-Protocol: chat\r\nX-Custom: kept\r\n\r\n"
        )
        answer = read_response(client)
        assert answer.status == 101 and answer.reason == "Switching Protocols"
        assert answer.header("sec-websocket-accept") == "not-the-right-one"  # the client's to check
        assert answer.header("sec-websocket-protocol") == "chat"
        assert answer.header("x-custom") == "kept"
        assert answer.header_values("upgrade") == ["WebSocket"]
        assert answer.header_values("connection") == ["Upgrade"]
        assert answer.header("x-secret") is None and answer.header("keep-alive") is None
        assert answer.header("x-request-id")
        client.sendall(b"\x81\x85abcd" + bytes(c ^ b"abcd"[i % 4] for i, c in enumerate(b"hello")))
        assert recv_exactly(upstream, 11)[6:] == bytes(c ^ b"abcd"[i % 4] for i, c in enumerate(b"hello"))


@pytest.mark.parametrize(
    "switch",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["another-protocol", "no-upgrade-header"],
)
def test_a_101_to_a_protocol_not_offered_is_a_502(
    make_gateway: MakeGateway, raw_up: RawUpstream, switch: bytes
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    with asked(gw, raw_up) as (client, upstream, _):
        upstream.sendall(switch)
        answer = read_response(client)
        assert answer.status == 502
        assert "upstream 'up' switched to a protocol it was not offered" in answer.body.decode()
        assert ends(upstream) in ("fin", "reset")  # that connection is given up


def test_a_pipelined_request_before_an_upgrade_is_answered_first(
    make_gateway: MakeGateway, raw_up: RawUpstream
) -> None:
    doc = doc_for(raw_up.port)
    doc["upstreams"]["up"]["pool"] = {"max_idle": 0}  # each request on a connection of its own
    gw = make_gateway(doc)
    with raw_connect(gw.port) as client:
        client.sendall(build_request("GET", "/plain/first") + build_request("GET", "/ws/t", UPGRADE))
        with raw_up.accept() as first:
            head, extra = read_head(first)
            assert head.startswith(b"GET /plain/first ") and extra == b""
            first.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            with raw_up.accept() as second:
                head, _ = read_head(second)
                assert head.startswith(b"GET /ws/t ") and b"Upgrade: websocket\r\n" in head
                second.sendall(SWITCH + b"spliced")
                assert read_response(client).body == b"first"
                assert read_response(client).status == 101
                assert recv_exactly(client, 7) == b"spliced"


# -- FIN and reset, from either side, at every stage ----------------------------------------------


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_the_client_leaving_before_the_switch_gives_up_the_upstream_request(
    make_gateway: MakeGateway, raw_up: RawUpstream, how: str
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    client = raw_connect(gw.port)
    client.sendall(build_request("GET", "/ws/t", UPGRADE))
    upstream = raw_up.accept()
    with upstream:
        read_head(upstream)
        if how == "fin":
            client.shutdown(socket.SHUT_WR)
        else:
            reset(client)
        assert ends(upstream) in ("fin", "reset")
    client.close()


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_the_upstream_leaving_before_the_switch_is_a_502(
    make_gateway: MakeGateway, raw_up: RawUpstream, how: str
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    with raw_connect(gw.port) as client:
        client.sendall(build_request("GET", "/ws/t", UPGRADE))
        upstream = raw_up.accept()
        read_head(upstream)
        if how == "fin":
            upstream.close()
        else:
            reset(upstream)
        answer = read_response(client)
        assert answer.status == 502 and "upstream 'up'" in answer.body.decode()
        assert ends(client) == "fin"


@pytest.mark.parametrize("side", ["client", "upstream"])
def test_a_fin_in_the_tunnel_passes_on_and_the_other_direction_goes_on(
    make_gateway: MakeGateway, raw_up: RawUpstream, side: str
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    client, upstream = tunnel(gw, raw_up)
    closing, other = (client, upstream) if side == "client" else (upstream, client)
    with client, upstream:
        closing.sendall(b"last words")
        closing.shutdown(socket.SHUT_WR)
        assert recv_exactly(other, 10) == b"last words"
        assert other.recv(1) == b""  # the FIN, passed on
        other.sendall(b"the reply still goes")  # half-closed: the other way is open
        assert recv_exactly(closing, 20) == b"the reply still goes"
        other.shutdown(socket.SHUT_WR)
        assert ends(closing) == "fin"
    gw_tunnels_end(gw, side)


@pytest.mark.parametrize("side", ["client", "upstream"])
def test_a_reset_in_the_tunnel_passes_on_as_a_reset(
    make_gateway: MakeGateway, raw_up: RawUpstream, side: str
) -> None:
    gw = make_gateway(doc_for(raw_up.port))
    client, upstream = tunnel(gw, raw_up)
    resetting, other = (client, upstream) if side == "client" else (upstream, client)
    with other:
        resetting.sendall(b"x")
        assert recv_exactly(other, 1) == b"x"
        reset(resetting)
        assert ends(other) == "reset"
    gw_tunnels_end(gw, "reset")


def gw_tunnels_end(gw: RunningGateway, cause: str) -> None:
    """The tunnel ended, counted with ``cause``, and left the listener's connections."""
    for _ in range(500):
        snap = gw.call(lambda: gw.gateway.plan.routes[0].tunnel.stats.snapshot())
        if snap["open"] == 0 and gw.connection_count() == 0:
            break
        socket.socket().close()  # a yield to the gateway's thread, no timing involved
    assert snap["open"] == 0 and gw.connection_count() == 0
    assert snap["ended"][cause] == 1
