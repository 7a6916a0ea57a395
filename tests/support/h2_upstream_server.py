"""A real HTTP/2 upstream for the gateway's tests, on the ``h2`` library (frames and flow control
as a conforming server does them), cleartext with prior knowledge (h2c) or TLS with ALPN h2.

In-process on its own loop in a thread: ``with running_h2_upstream() as server:`` then
``server.port``; its counters are read from the test thread (``server.stats``).

Theory of operation: one ``H2ServerConnection`` per socket feeds reads to an ``h2`` server
connection; each request stream gets a task (its handler) once its headers arrive. The request
body is acknowledged (WINDOW_UPDATE) as it is read, unless the path says not to; response DATA
waits for the stream's and the connection's windows (``send``), so a slow gateway holds this
server back exactly as HTTP/2 says.

Behaviour by path (every response carries ``x-conn-id``):

- ``/echo...``: 200 JSON {method, path, authority, scheme, headers ([[name, value]] as received),
  body_len, body_sha256, conn_id, stream_id}, once the request body has ended
- ``/slow/{ms}...``: the same after ms
- ``/barrier/{n}...``: the same once n ``/barrier/{n}`` streams are open on the server at once
  (however many connections carry them)
- ``/bytes/{n}``: n bytes of ``pattern`` with content-length, under flow control
- ``/stream/{n}/{ms}``: n lines ``piece {i}\\n``, ms apart, no content-length
- ``/sink``: reads the body, then JSON {body_len, body_sha256}; ``/sink-stalled``: reads it but
  never acknowledges it (the window closes on the sender) and never answers
- ``/trailers``: a body, then trailers grpc-status: 0, grpc-message: done, x-body-len
- ``/early-hints``: 103 with a link field, then the echo answer
- ``/rst-mid-body``: a head announcing 100000 bytes, 1000 of them, then RST_STREAM
  INTERNAL_ERROR
- ``/refuse``: RST_STREAM REFUSED_STREAM at once (counted in ``refused``)
- ``/goaway/{n}``: waits until n such streams are open on the connection, then GOAWAY naming
  the first as the last processed, answers it (echo) and leaves the others unprocessed; later
  connections answer them at once (the server said GOAWAY once)
- ``/hang``: never answers (a reset is recorded in ``resets``)
- ``/status/{code}``: that status, body ``status {code}``
- anything else: 404
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from tests.support.upstream_server import pattern_chunks

__all__ = ["H2Upstream", "H2UpstreamStats", "h2_server_tls", "running_h2_upstream"]


@dataclass
class H2UpstreamStats:
    connections_opened: int = 0
    streams: int = 0  # request streams received
    answered: int = 0  # requests answered with a head (on any connection)
    peak_streams: int = 0  # most streams open at once on one connection
    refused: int = 0
    goaway_sent: bool = False
    resets: list[tuple[str, int]] = field(default_factory=list)  # (path, error code) the client reset
    unacknowledged: int = 0  # /sink-stalled bytes held without a WINDOW_UPDATE
    data_sent: int = 0  # response DATA bytes sent, all streams


class Stream:
    __slots__ = ("body", "body_len", "ended", "headers", "path", "task", "wake")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.path = dict(headers).get(b":path", b"/").decode("latin-1")
        self.body = hashlib.sha256()
        self.body_len = 0
        self.ended = asyncio.Event()
        self.wake = asyncio.Event()  # the window opened (or the stream ended)
        self.task: asyncio.Task[None] | None = None


class H2ServerConnection(asyncio.Protocol):
    def __init__(self, server: H2Upstream) -> None:
        self.server = server
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.streams: dict[int, Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.goaway_waiting: list[int] = []  # /goaway/{n} streams held until n are open
        self.goaway_ready = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()

    # -- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.server.stats
        stats.connections_opened += 1
        self.conn_id = stats.connections_opened
        self.server.connections.add(self)
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.server.window,
            }
        )
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
            stream.wake.set()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self.handle(event)
        self.flush()

    # -- events ---------------------------------------------------------------------------------
    def handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            stream = self.streams[event.stream_id] = Stream(list(event.headers or ()))
            self.server.stats.streams += 1
            self.server.stats.peak_streams = max(self.server.stats.peak_streams, len(self.streams))
            if event.stream_ended is not None:
                stream.ended.set()
            stream.task = asyncio.get_running_loop().create_task(self.serve(event.stream_id, stream))
        elif isinstance(event, h2.events.DataReceived):
            stream_data = self.streams.get(event.stream_id)
            if stream_data is None:
                return
            stream_data.body.update(event.data or b"")
            stream_data.body_len += len(event.data or b"")
            if stream_data.path.startswith("/sink-stalled"):
                self.server.stats.unacknowledged += event.flow_controlled_length or 0
            else:
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            if event.stream_ended is not None:
                stream_data.ended.set()
        elif isinstance(event, h2.events.StreamEnded):
            if (s := self.streams.get(event.stream_id)) is not None:
                s.ended.set()
        elif isinstance(event, h2.events.StreamReset):
            s = self.streams.pop(event.stream_id, None)
            if s is not None:
                self.server.stats.resets.append((s.path, int(event.error_code or 0)))
                if s.task is not None:
                    s.task.cancel()
        elif isinstance(event, h2.events.WindowUpdated):
            for s in self.streams.values():
                s.wake.set()
        elif isinstance(event, h2.events.ConnectionTerminated) and self.transport is not None:
            self.transport.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- sending --------------------------------------------------------------------------------
    def respond(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]], end: bool = False
    ) -> None:
        fields = [(b":status", str(status).encode()), (b"x-conn-id", str(self.conn_id).encode()), *headers]
        self.h2.send_headers(stream_id, fields, end_stream=end)
        if status >= 200:
            self.server.stats.answered += 1
        self.flush()

    async def send(self, stream_id: int, stream: Stream, data: bytes, end: bool) -> None:
        """DATA as the windows allow (and the transport drains)."""
        view = memoryview(data)
        while True:
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0 and view:
                stream.wake.clear()
                await stream.wake.wait()
                if stream_id not in self.streams:
                    raise asyncio.CancelledError
                continue
            piece, view = view[:window], view[window:]
            self.h2.send_data(stream_id, bytes(piece), end_stream=end and not view)
            self.server.stats.data_sent += len(piece)
            self.flush()
            await self.drained.wait()
            if not view:
                return

    def finish(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    # -- handlers -------------------------------------------------------------------------------
    async def serve(self, stream_id: int, stream: Stream) -> None:
        try:
            await self.route(stream_id, stream, stream.path.split("?", 1)[0])
        except asyncio.CancelledError:
            pass
        except h2.exceptions.StreamClosedError:
            pass
        finally:
            self.finish(stream_id)
            self.flush()

    async def route(self, stream_id: int, stream: Stream, path: str) -> None:
        parts = path.strip("/").split("/")
        head = parts[0]
        if head == "echo":
            await self.echo(stream_id, stream)
        elif head == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            await self.echo(stream_id, stream)
        elif head == "barrier":
            await self.server.barrier(int(parts[1]))
            await self.echo(stream_id, stream)
        elif head == "bytes":
            n = int(parts[1])
            await stream.ended.wait()
            self.respond(stream_id, 200, [(b"content-length", str(n).encode())], end=n == 0)
            for chunk in pattern_chunks(n):
                await self.send(stream_id, stream, chunk, end=False)
            if n:
                self.h2.end_stream(stream_id)
        elif head == "stream":
            count, pause = int(parts[1]), int(parts[2]) / 1000
            self.respond(stream_id, 200, [(b"content-type", b"text/plain")])
            for i in range(count):
                await self.send(stream_id, stream, f"piece {i}\n".encode(), end=i == count - 1)
                if i < count - 1:
                    await asyncio.sleep(pause)
        elif head == "sink":
            await stream.ended.wait()
            body = json.dumps({"body_len": stream.body_len, "body_sha256": stream.body.hexdigest()}).encode()
            self.respond(stream_id, 200, [(b"content-type", b"application/json")])
            await self.send(stream_id, stream, body, end=True)
        elif head == "sink-stalled":
            await asyncio.Event().wait()
        elif head == "trailers":
            await stream.ended.wait()
            body = b"message body"
            self.respond(stream_id, 200, [(b"content-type", b"application/grpc")])
            await self.send(stream_id, stream, body, end=False)
            trailers = [
                (b"grpc-status", b"0"),
                (b"grpc-message", b"done"),
                (b"x-body-len", str(stream.body_len).encode()),
            ]
            self.h2.send_headers(stream_id, trailers, end_stream=True)
        elif head == "early-hints":
            self.respond(stream_id, 103, [(b"link", b"</app.css>; rel=preload")])
            await self.echo(stream_id, stream)
        elif head == "rst-mid-body":
            self.respond(stream_id, 200, [(b"content-length", b"100000")])
            await self.send(stream_id, stream, bytes(1000), end=False)
            await asyncio.sleep(0.05)
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif head == "refuse":
            self.server.stats.refused += 1
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif head == "goaway":
            await self.goaway(stream_id, stream, int(parts[1]))
        elif head == "hang":
            await asyncio.Event().wait()
        elif head == "status":
            code = int(parts[1])
            await stream.ended.wait()
            body = f"status {code}".encode()
            self.respond(stream_id, code, [(b"content-length", str(len(body)).encode())])
            await self.send(stream_id, stream, body, end=True)
        else:
            self.respond(stream_id, 404, [(b"content-length", b"0")], end=True)

    async def echo(self, stream_id: int, stream: Stream) -> None:
        await stream.ended.wait()
        fields = dict(stream.headers)
        answer = {
            "method": fields.get(b":method", b"").decode(),
            "path": fields.get(b":path", b"").decode("latin-1"),
            "authority": fields.get(b":authority", b"").decode("latin-1"),
            "scheme": fields.get(b":scheme", b"").decode(),
            "headers": [
                [n.decode("latin-1"), v.decode("latin-1")]
                for n, v in stream.headers
                if not n.startswith(b":")
            ],
            "body_len": stream.body_len,
            "body_sha256": stream.body.hexdigest(),
            "conn_id": self.conn_id,
            "stream_id": stream_id,
        }
        body = json.dumps(answer).encode()
        self.respond(
            stream_id,
            200,
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        )
        await self.send(stream_id, stream, body, end=True)

    async def goaway(self, stream_id: int, stream: Stream, wanted: int) -> None:
        if self.server.stats.goaway_sent:
            await self.echo(stream_id, stream)
            return
        self.goaway_waiting.append(stream_id)
        if len(self.goaway_waiting) >= wanted:
            self.goaway_ready.set()
        await self.goaway_ready.wait()
        first = min(self.goaway_waiting)
        if stream_id != first:
            return  # never processed: the GOAWAY below tells the client so
        self.server.stats.goaway_sent = True
        # Written by hand: the h2 library sends nothing more after its own GOAWAY, and this one
        # must leave the first stream in flight, answered after it (RFC 9113 6.8).
        self.flush()
        assert self.transport is not None
        self.transport.write(GoAwayFrame(0, last_stream_id=first, error_code=0).serialize())
        await asyncio.sleep(0.05)
        await self.echo(stream_id, stream)


class H2Upstream:
    """The server on a thread of its own: ``start()`` / ``stop()``, or ``running_h2_upstream``."""

    def __init__(
        self, tls: ssl.SSLContext | None = None, max_streams: int = 100, window: int = 65535
    ) -> None:
        self.tls = tls
        self.max_streams = max_streams
        self.window = window
        self.stats = H2UpstreamStats()
        self.connections: set[H2ServerConnection] = set()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="h2-upstream", daemon=True)
        self.server: asyncio.Server | None = None
        self.barriers: dict[int, tuple[list[int], asyncio.Event]] = {}

    async def barrier(self, wanted: int) -> None:
        """Wait until ``wanted`` streams wait here at once (then all go on)."""
        count, ready = self.barriers.setdefault(wanted, ([0], asyncio.Event()))
        count[0] += 1
        if count[0] >= wanted:
            ready.set()
        await ready.wait()

    def start(self) -> H2Upstream:
        self.thread.start()
        self.server = self.call(
            self.loop.create_server(lambda: H2ServerConnection(self), "127.0.0.1", 0, ssl=self.tls)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def open_connections(self) -> int:
        async def count() -> int:
            return len(self.connections)

        return int(self.call(count()))

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def h2_server_tls(cert: str, key: str, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """A server context offering ``alpn`` (("http/1.1",) for a target that will not speak HTTP/2)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(list(alpn))
    return context


@contextlib.contextmanager
def running_h2_upstream(**options: Any) -> Iterator[H2Upstream]:
    server = H2Upstream(**options).start()
    try:
        yield server
    finally:
        server.stop()
