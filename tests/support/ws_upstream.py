"""A real WebSocket upstream for the gateway's tests, built on the ``websockets`` package.

Run it: ``python tests/support/ws_upstream.py --port N [--tls-cert F --tls-key F]`` (port 0
picks one); it prints ``listening <port>`` when ready and stops on SIGTERM. In-process:
``with ws_upstream_thread() as server: server.port``.

By path (any query is ignored):

- ``/echo...``: every message back as it came (text as text, binary as binary); commands in a
  text message starting with ``!``: ``!close CODE REASON`` closes with that code; ``!ping``
  pings the client and answers ``pong`` once its pong came; ``!send N`` sends one binary message
  of N pattern bytes; ``!flood N`` sends N binary messages of 1 MiB as fast as the connection
  takes them; ``!fragments N TEXT`` sends TEXT as one message in N fragments.
- ``/headers...``: first a text message, JSON {path, headers: [[name, value], ...]} of the
  handshake request as it arrived, then as ``/echo``.
- ``/broadcast/ROOM``: every message to every connection in ROOM (the sender too).
- ``/refuse/STATUS``: the handshake is answered STATUS (no upgrade), body ``refused``.
- ``/stats`` (plain HTTP GET): JSON {open, closed: [[code, reason], ...], flooded}: the
  connections open and, for each that ended, the close code and reason the client side sent
  (1006: none); the bytes of ``!flood`` messages sent so far.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MiB = 1024 * 1024
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern(n: int) -> bytes:
    """``n`` bytes of the repeating 0..255 pattern."""
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


@dataclass
class WsState:
    open: int = 0
    closed: list[tuple[int | None, str]] = field(default_factory=list)
    flooded: int = 0  # bytes of ``!flood`` messages handed to the connection so far
    rooms: dict[str, set[ServerConnection]] = field(default_factory=dict)


def _plain(status: int, body: bytes, content_type: str = "text/plain") -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status, HTTPStatus(status).phrase, headers, body)


async def _command(ws: ServerConnection, text: str, state: WsState) -> None:
    verb, _, rest = text[1:].partition(" ")
    if verb == "close":
        code, _, reason = rest.partition(" ")
        await ws.close(int(code), reason)
    elif verb == "ping":
        waiter = await ws.ping()
        await waiter
        await ws.send("pong")
    elif verb == "send":
        await ws.send(pattern(int(rest)))
    elif verb == "flood":
        for _ in range(int(rest)):
            await ws.send(PATTERN)
            state.flooded += len(PATTERN)
    elif verb == "fragments":
        count, _, message = rest.partition(" ")
        size = max(1, -(-len(message) // int(count)))
        await ws.send([message[i : i + size] for i in range(0, len(message), size)])


def make_handler(state: WsState):  # type: ignore[no-untyped-def]
    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        state.open += 1
        room = None
        try:
            if path.startswith("/headers"):
                assert ws.request is not None
                await ws.send(json.dumps({"path": path, "headers": list(ws.request.headers.raw_items())}))
            if path.startswith("/broadcast/"):
                room = state.rooms.setdefault(path.split("?")[0], set())
                room.add(ws)
            async for message in ws:
                if room is not None:
                    for other in list(room):
                        with contextlib.suppress(ConnectionClosed):
                            await other.send(message)
                elif isinstance(message, str) and message.startswith("!"):
                    await _command(ws, message, state)
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            if room is not None:
                room.discard(ws)
            state.open -= 1
            received = ws.protocol.close_rcvd
            state.closed.append((received.code, received.reason) if received else (1006, ""))

    return handler


def make_process_request(state: WsState):  # type: ignore[no-untyped-def]
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/stats":
            body = json.dumps({"open": state.open, "closed": state.closed, "flooded": state.flooded}).encode()
            return _plain(200, body, "application/json")
        if request.path.startswith("/refuse/"):
            return _plain(int(request.path.split("/")[2]), b"refused")
        return None

    return process_request


async def start_ws_upstream(port: int = 0, tls: ssl.SSLContext | None = None) -> tuple[Server, WsState]:
    state = WsState()
    server = await serve(
        make_handler(state),
        "127.0.0.1",
        port,
        process_request=make_process_request(state),
        max_size=None,  # 64 MiB messages and more
        ssl=tls,
        compression=None,
    )
    return server, state


@dataclass
class WsUpstream:
    port: int
    state: WsState
    loop: asyncio.AbstractEventLoop

    def stats(self) -> dict[str, object]:
        """The server's state, read on its own loop."""

        async def read() -> dict[str, object]:
            return {"open": self.state.open, "closed": list(self.state.closed), "flooded": self.state.flooded}

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)


@contextlib.contextmanager
def ws_upstream_thread(tls: ssl.SSLContext | None = None) -> Iterator[WsUpstream]:
    """The server on its own loop in a thread, for in-process tests."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: list[tuple[Server, WsState]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        box.append(loop.run_until_complete(start_ws_upstream(0, tls)))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="ws-upstream", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the WebSocket upstream did not start")
    server, state = box[0]
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield WsUpstream(port, state, loop)
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _main(port: int, tls: ssl.SSLContext | None) -> None:
    server, _ = await start_ws_upstream(port, tls)
    print(f"listening {next(iter(server.sockets)).getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    asyncio.run(_main(args.port, tls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
