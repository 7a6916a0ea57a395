"""Raw-socket HTTP/1.1 for exact-bytes tests: send precise bytes, parse responses off the wire.

``send_raw`` writes bytes (optionally in pieces with pauses, to hit every split point) and returns
everything the server sent until it closed or went quiet. ``read_response`` parses exactly one
response off a connected socket, leaving any following bytes for the next call, so a test can
pipeline requests and read the answers in order. ``parse_responses`` does the same for bytes
already received.

Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; otherwise chunked,
Content-Length, or until the connection closes. Interim 1xx responses (except 101) are returned
inside the final one (``interim``). A body cut short by a close or reset is returned with
``complete=False``, since that is exactly what tests of truncation need to see.

These are blocking calls: from a test running an event loop, use the ``*_async`` wrappers (a
thread) so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NoResponse",
    "RawResponse",
    "build_request",
    "connect",
    "encode_chunked",
    "parse_responses",
    "read_response",
    "read_response_async",
    "send_raw",
    "send_raw_async",
]

HOST = "127.0.0.1"


class NoResponse(ConnectionError):
    """The connection ended before the first byte of a response."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked
    raw: bytes  # this response's exact bytes (head and body as framed on the wire)
    version: str = "HTTP/1.1"
    interim: list[RawResponse] = field(default_factory=list)  # 1xx responses before this one
    complete: bool = True  # False: the connection ended before the framing said the body ends
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def json(self) -> Any:
        return json.loads(self.body)


# -- parsing -------------------------------------------------------------------------------------


class _Reader:
    """Bytes from ``recv`` (b"" at the end), consumed from the front, recording what was taken."""

    def __init__(self, buffer: bytearray, recv: Callable[[], bytes]) -> None:
        self.buffer = buffer
        self.recv = recv
        self.raw = bytearray()
        self.eof = False
        self.reset = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.recv()
        except ConnectionResetError:
            data, self.reset = b"", True
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        self.raw += data
        return data

    def until(self, separator: bytes) -> bytes | None:
        """Through ``separator`` (returned without it), or None at the end of the input."""
        start = 0
        while (at := self.buffer.find(separator, start)) < 0:
            start = max(0, len(self.buffer) - len(separator) + 1)
            if not self._fill():
                return None
        return self.take(at + len(separator))[: -len(separator)]

    def exactly(self, n: int) -> bytes:
        """``n`` bytes, or fewer when the input ends first."""
        while len(self.buffer) < n and self._fill():
            pass
        return self.take(min(n, len(self.buffer)))

    def rest(self) -> bytes:
        while self._fill():
            pass
        return self.take(len(self.buffer))


def _parse_head(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"malformed status line {lines[0]!r}")
    return version, int(code), reason, _parse_fields(lines[1:])


def _parse_fields(lines: Sequence[str]) -> list[tuple[str, str]]:
    fields = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed header line {line!r}")
        fields.append((name, value.strip(" \t")))
    return fields


def _read_chunked(reader: _Reader) -> tuple[bytes, bool, list[tuple[str, str]]]:
    """(body, complete, trailers) of a chunked body."""
    body = bytearray()
    while True:
        line = reader.until(b"\r\n")
        if line is None:
            return bytes(body), False, []
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            trailer_lines = []
            while (trailer := reader.until(b"\r\n")) is not None and trailer:
                trailer_lines.append(trailer.decode("latin-1"))
            return bytes(body), trailer is not None, _parse_fields(trailer_lines)
        data = reader.exactly(size)
        body += data
        if len(data) < size or reader.exactly(2) != b"\r\n":
            return bytes(body), False, []


def _read_one(reader: _Reader, head_request: bool) -> RawResponse:
    interim: list[RawResponse] = []
    while True:
        reader.raw.clear()
        head = reader.until(b"\r\n\r\n")
        if head is None:
            if not reader.raw and not reader.buffer and not interim:
                raise NoResponse("the connection ended before a response")
            partial = bytes(reader.raw + reader.buffer)
            raise ValueError(f"the connection ended inside a response head: {partial!r}")
        version, status, reason, headers = _parse_head(head)
        if 100 <= status < 200 and status != 101:
            interim.append(RawResponse(status, reason, headers, b"", bytes(reader.raw), version))
            continue
        break
    trailers: list[tuple[str, str]] = []
    complete = True
    names = {name.lower(): value for name, value in headers}
    encoding = names.get("transfer-encoding", "").lower()
    if head_request or status < 200 or status in (204, 304):
        body = b""
    elif encoding.replace(" ", "").endswith("chunked"):
        body, complete, trailers = _read_chunked(reader)
    elif "content-length" in names:
        length = int(names["content-length"])
        body = reader.exactly(length)
        complete = len(body) == length
    else:
        body = reader.rest()
        complete = not reader.reset
    return RawResponse(status, reason, headers, body, bytes(reader.raw), version, interim, complete, trailers)


def parse_responses(data: bytes, head: bool = False) -> list[RawResponse]:
    """Every response in ``data`` (as returned by ``send_raw``), in order."""
    reader = _Reader(bytearray(data), lambda: b"")
    responses = []
    while reader.buffer:
        responses.append(_read_one(reader, head))
    return responses


# -- sockets -------------------------------------------------------------------------------------

# Bytes read past the end of one response belong to the next: kept per socket between calls.
_LEFTOVERS: weakref.WeakKeyDictionary[socket.socket, bytearray] = weakref.WeakKeyDictionary()


def connect(port: int, timeout: float = 10.0, host: str = HOST) -> socket.socket:
    """A connected TCP socket with Nagle off, so each send goes out as it is."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, head: bool = False, timeout: float = 10.0) -> RawResponse:
    """Parse the next response off ``sock``; ``head=True`` when it answers a HEAD request.

    Raises NoResponse if the connection ends before any byte, TimeoutError if the response is
    not complete within ``timeout`` seconds, ValueError for a malformed head.
    """
    deadline = time.monotonic() + timeout

    def recv() -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response within {timeout}s")
        sock.settimeout(remaining)
        return sock.recv(65536)

    buffer = _LEFTOVERS.setdefault(sock, bytearray())
    return _read_one(_Reader(buffer, recv), head)


def send_raw(
    port: int,
    data: bytes | Sequence[bytes],
    delay: float = 0,
    timeout: float = 5.0,
    host: str = HOST,
) -> bytes:
    """Send ``data`` (pieces with ``delay`` seconds between them), return all that comes back.

    Reading stops when the server closes (FIN or RST) or sends nothing for ``timeout`` seconds.
    If the server closes while we are still sending, the rest is dropped and we keep reading.
    """
    pieces = [data] if isinstance(data, bytes) else list(data)
    received = bytearray()
    with connect(port, timeout, host) as sock:
        try:
            for index, piece in enumerate(pieces):
                if index and delay:
                    time.sleep(delay)
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(timeout)
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


async def send_raw_async(
    port: int, data: bytes | Sequence[bytes], delay: float = 0, timeout: float = 5.0
) -> bytes:
    """``send_raw`` in a thread, for tests whose event loop runs the server."""
    return await asyncio.to_thread(send_raw, port, data, delay, timeout)


async def read_response_async(sock: socket.socket, head: bool = False, timeout: float = 10.0) -> RawResponse:
    """``read_response`` in a thread, for tests whose event loop runs the server."""
    return await asyncio.to_thread(read_response, sock, head, timeout)


# -- building requests ---------------------------------------------------------------------------


def build_request(
    method: str = "GET",
    target: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    host: str | None = "test.local",
    version: str = "HTTP/1.1",
) -> bytes:
    """A request's bytes; adds Host (unless ``host`` is None or one is given) and, for a body
    without Content-Length or Transfer-Encoding, Content-Length."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} {version}"]
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def encode_chunked(pieces: Sequence[bytes], trailers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A chunked body: one chunk per non-empty piece, the last chunk, the trailers."""
    out = bytearray()
    for piece in pieces:
        if piece:
            out += b"%x\r\n%b\r\n" % (len(piece), piece)
    out += b"0\r\n"
    for name, value in trailers:
        out += f"{name}: {value}\r\n".encode("latin-1")
    return bytes(out + b"\r\n")


@contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server on a thread that passes each accepted connection to ``handle``, one
    at a time, and closes it after; yields the port, and stops when the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
