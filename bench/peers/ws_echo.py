"""The WebSocket upstream of the bench: the handshake answered (RFC 6455 4.2.2), then every byte
echoed as it came, by uvloop. ``python ws_echo.py PORT``.

It does not unmask the client's frames: it sends them back as they are (masked frames, which a
strict client would refuse). The proxies in front of it pass bytes through after the 101
whatever they are, and the bench's driver only counts them, so the upstream costs next to
nothing and the figures are the proxies'.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import sys
from typing import cast

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.head = bytearray()
        self.switched = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.switched:
            self.transport.write(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        key = b""
        for line in bytes(self.head[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        rest = bytes(self.head[end + 4 :])
        self.switched = True
        self.head.clear()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + rest
        )


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(int(sys.argv[1])))
