"""The WebSocket parts of ``python -m bench``: the upstream, what each proxy needs to pass an
Upgrade, the message driver, and tunnels held open.

The upstream (``peers/ws_echo.py``) answers the handshake and echoes every byte. The driver opens
``connections`` WebSocket connections through the proxy and keeps ``WINDOW`` small messages
(``PAYLOAD`` bytes, one masked frame each, as a client sends them) in flight on each: a message
counts when its echo has come back whole. Reported: messages per second, the round trip of each
message (p50, p99), and, as for every scenario, the proxy's CPU per message from ``/proc``.
``open_tunnels`` makes idle ones, for the resident memory a thousand of them cost.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections import deque
from typing import cast

import uvloop

PAYLOAD = 125  # bytes per message: the largest with a one-byte length (a chat line, an event)
WINDOW = 16  # messages in flight per connection
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
FRAME = bytes((0x82, 0x80 | PAYLOAD)) + b"\x01\x02\x03\x04" + bytes(PAYLOAD)


def handshake(port: int, path: str = "/ws") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# What nginx needs to pass an Upgrade (it drops hop-by-hop headers, Upgrade included, by default).
NGINX_UPGRADE = (
    'proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; proxy_read_timeout 1h;'
)


class _Pinger(asyncio.Protocol):
    """One connection: the handshake, then ``WINDOW`` messages in flight until ``stop``."""

    def __init__(self, port: int, tally: _Tally) -> None:
        self.port = port
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.switched = False
        self.pending = 0  # bytes of an echo not yet whole
        self.sent_at: deque[float] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self.transport.write(handshake(self.port))

    def data_received(self, data: bytes) -> None:
        if not self.switched:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.tally.errors += 1
                self.close()
                return
            self.switched = True
            data = self.head[end + 4 :]
            self.send(WINDOW)
        self.pending += len(data)
        whole, self.pending = divmod(self.pending, len(FRAME))
        if whole:
            now = time.monotonic()
            for _ in range(whole):
                self.tally.round_trips.append(now - self.sent_at.popleft())
            self.tally.messages += whole
            if not self.tally.stopped:
                self.send(whole)

    def send(self, count: int) -> None:
        assert self.transport is not None
        self.sent_at.extend([time.monotonic()] * count)
        self.transport.write(FRAME * count)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.tally.stopped:
            self.tally.errors += 1


class _Tally:
    def __init__(self) -> None:
        self.messages = 0
        self.errors = 0
        self.stopped = False
        self.round_trips: list[float] = []


async def _drive(port: int, connections: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    tally = _Tally()
    pingers = []
    for _ in range(connections):
        _, pinger = await loop.create_connection(lambda: _Pinger(port, tally), "127.0.0.1", port)
        pingers.append(pinger)
    await asyncio.sleep(0.2)  # every handshake done, every window full
    tally.messages, tally.round_trips = 0, []
    started = time.monotonic()
    await asyncio.sleep(seconds)
    count, elapsed, trips = tally.messages, time.monotonic() - started, sorted(tally.round_trips)
    tally.stopped = True
    for pinger in pingers:
        pinger.close()
    return {
        "requests": count,
        "rps": count / elapsed,
        "p50": statistics.median(trips) * 1e3 if trips else float("nan"),
        "p99": trips[int(len(trips) * 0.99)] * 1e3 if trips else float("nan"),
        "errors": tally.errors,
    }


def drive(port: int, connections: int, seconds: float) -> dict[str, float]:
    """Messages through the proxy at ``port`` for ``seconds``: the same keys as a wrk run
    (``requests`` are messages, ``rps`` messages per second)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_drive(port, connections, seconds))


def open_tunnels(port: int, count: int) -> list[socket.socket]:
    """``count`` WebSocket connections through the proxy, each switched (101) and left idle."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(handshake(port))
        socks.append(sock)
    for sock in socks:
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("a tunnel was closed before its 101")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"a tunnel was answered {head[:40]!r}")
    return socks
