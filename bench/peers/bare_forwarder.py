"""The floor of a Python proxy on uvloop: one upstream connection per client connection, bytes
relayed both ways as they come, no routing, no header handling, no parsing of responses.

Not a gateway (it cannot reuse upstream connections, route or check anything): the bench runs it
to show how much of a proxied request's CPU uvloop and the kernel take before any gateway work.
``python bare_forwarder.py LISTEN_PORT UPSTREAM_PORT [CERT KEY]``: with a certificate it
terminates TLS in uvloop's TLS layer (a context made once, tickets on), the floor of a TLS
proxy in Python.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from typing import Any

import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_address = upstream
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: Any) -> None:  # uvloop's, not an asyncio.Transport
        self.transport = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(lambda: Upstream(self), *self.upstream_address)
        upstream.writelines(self.pending)
        self.upstream = upstream

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(port: int, upstream_port: int, tls: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    upstream = ("127.0.0.1", upstream_port)
    await loop.create_server(lambda: Client(upstream), "127.0.0.1", port, backlog=8192, ssl=tls)
    await asyncio.Event().wait()


def server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


if __name__ == "__main__":
    tls = server_context(sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2]), tls))
