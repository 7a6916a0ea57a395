"""A small blocking HTTP/2 client for tests, on the ``h2`` package (the reference Python stack):
real frames over a real socket (cleartext prior knowledge, or TLS with ALPN h2), with the knobs
conformance and abuse tests need: outbound header validation off, raw bytes, resets, windows
that never open, and every event kept for inspection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

__all__ = ["PREFACE", "H2Client", "H2Response", "frame", "read_frames", "settings_frame"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Frame = tuple[int, int, int, bytes]  # kind, flags, stream id, payload


@dataclass
class H2Response:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    interim: list[int] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM from the gateway

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


class H2Client:
    def __init__(
        self,
        port: int,
        tls: ssl.SSLContext | None = None,
        sni: str = "gw.test",
        settings: dict[int, int] | None = None,
        auto_window: bool = True,
        validate: bool = True,
        timeout: float = 10.0,
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            raw = tls.wrap_socket(raw, server_hostname=sni)
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.sock = raw
        self.timeout = timeout
        self.auto_window = auto_window
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=True,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.responses: dict[int, H2Response] = {}
        self.events: list[Any] = []
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    # -- sending -------------------------------------------------------------------------------------
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        path: str = "/echo",
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        authority: str = "gw.test",
        end: bool = True,
    ) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
        fields += headers or []
        self.responses[stream_id] = H2Response()
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        if body:
            self.send_data(stream_id, body, end)
        self.flush()
        return stream_id

    def raw_request(self, fields: list[tuple[str, str]], end: bool = True) -> int:
        """HEADERS with exactly ``fields`` (validation off: malformed on purpose)."""
        stream_id: int = self.conn.get_next_available_stream_id()
        self.responses[stream_id] = H2Response()
        self.conn.send_headers(stream_id, fields, end_stream=end)
        self.flush()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end: bool = True) -> None:
        """Send ``data`` as the windows allow, reading (window updates) while they are closed."""
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_once()
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(stream_id)
        self.flush()

    def reset(self, stream_id: int, code: int = 8) -> None:
        self.conn.reset_stream(stream_id, error_code=code)
        self.flush()

    # -- receiving -------------------------------------------------------------------------------------
    def read_once(self, timeout: float | None = None) -> bool:
        """One read; False when the connection ended."""
        if self.closed:
            return False
        self.sock.settimeout(timeout or self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self.events.append(event)
            self.handle(event)
        self.flush()
        return True

    def handle(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        response = self.responses.setdefault(sid, H2Response()) if sid else None
        if isinstance(event, h2.events.InformationalResponseReceived):
            assert response is not None
            response.interim.append(int(dict(event.headers)[":status"]))
        elif isinstance(event, h2.events.ResponseReceived):
            assert response is not None
            response.headers = list(event.headers)
            response.status = int(dict(event.headers)[":status"])
        elif isinstance(event, h2.events.DataReceived):
            assert response is not None
            response.body += event.data
            if self.auto_window and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            assert response is not None
            response.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            assert response is not None
            response.ended = True
        elif isinstance(event, h2.events.StreamReset):
            assert response is not None
            response.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event

    def read_until(self, done: Any, timeout: float | None = None) -> None:
        """Read until ``done()`` holds (TimeoutError if it never does, or the connection ends)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_once(left):
                raise TimeoutError("what the test waited for never came")

    def wait(self, stream_id: int, timeout: float | None = None) -> H2Response:
        """Read until the stream ends or is reset (or the connection ends)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        response = self.responses[stream_id]
        while not (response.ended or response.reset is not None):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"stream {stream_id} did not end")
            if not self.read_once(left):
                break
        return response

    def wait_closed(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the connection did not end")
            try:
                self.read_once(left)
            except h2.exceptions.ProtocolError:
                self.closed = True

    def get(self, path: str = "/echo", **kwargs: Any) -> H2Response:
        return self.wait(self.request(path, **kwargs))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- raw frames (conformance and abuse tests write what no client library would) --


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def settings_frame(**values: int) -> bytes:
    ids = {"header_table_size": 1, "max_concurrent_streams": 3, "initial_window_size": 4}
    return frame(4, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def read_frames(sock: socket.socket, until: Callable[[list[Frame]], bool]) -> list[Frame]:
    """Read server frames (kind, flags, stream id, payload) until ``until`` holds or it closes."""
    data = b""
    frames: list[Frame] = []
    sock.settimeout(10)
    while not until(frames):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            length = int.from_bytes(data[:3], "big")
            frames.append(
                (data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9 : 9 + length])
            )
            data = data[9 + length :]
    return frames
