"""The per-request path: client protocol, exchange and upstream connection (see _proxy.pyx)."""

import asyncio
from collections import deque
from typing import Any, ClassVar, final

from fastgw.errors import HttpFault
from fastgw.plan import ListenerPlan, RoutePlan
from fastgw.server.listener import ListenerServer
from fastgw.upstream.group import Target
from fastgw.upstream.pool import TargetPool

IDEMPOTENT: frozenset[bytes]

def chunk_header(size: int) -> bytes:
    """The chunk-size line for ``size`` bytes of data (lower-case hex, as ``wire.chunk_header``)."""

@final
class RequestIds:
    """Request ids: a per-process random prefix and a counter, formatted in C."""

    def __init__(self, prefix: bytes) -> None: ...
    @property
    def prefix(self) -> bytes: ...
    @property
    def number(self) -> int:
        """How many ids were made."""
    def next(self) -> bytes:
        """``prefix`` followed by the next counter value in lower-case hex, at least 8 digits."""

@final
class ClientProtocol(asyncio.Protocol):  # by duck typing at run time: a cdef class
    """One accepted client connection, driven by httptools (an asyncio protocol by duck typing)."""

    PAUSE_UPSTREAM: ClassVar[int]
    PAUSE_BUFFER: ClassVar[int]
    PAUSE_PIPELINE: ClassVar[int]
    PAUSE_CLIENT_WRITE: ClassVar[int]

    server: ListenerServer
    listener: ListenerPlan
    transport: Any
    parser: Any
    peer_ip: bytes
    trusted: bool
    url: bytes | None
    headers: list[tuple[bytes, bytes]]
    in_head: bool
    head_bytes: int
    active: Exchange | None
    parsing: Exchange | None
    queue: deque[Exchange]
    paused: int
    write_paused: bool
    deadline: float
    draining: bool
    closed: bool

    def __init__(self, server: ListenerServer) -> None: ...
    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    # httptools callbacks
    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...
    # for the listener and the clock
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def start_draining(self) -> None:
        """Graceful shutdown: finish what is in flight, close idle keep-alive connections now."""
    def check_deadline(self, now: float) -> None: ...

@final
class Exchange:
    """One request/response exchange: the ``ctx`` every hook receives."""

    client: ClientProtocol
    listener: ListenerPlan
    method: bytes
    path: bytes
    """Normalized: what was matched and what is forwarded."""
    query: bytes
    """``b""`` or ``b"?..."`` as received."""
    http_10: bool
    keep_alive: bool
    headers: list[tuple[bytes, bytes]]
    """Request headers as received."""
    host: bytes
    """Lower-cased, without port: what routing used."""
    host_header: bytes
    content_length: int
    """-1 when absent."""
    chunked: bool
    expect_continue: bool
    request_id: bytes
    pass_block: bytes
    route: RoutePlan | None
    params: tuple[bytes, ...]
    request_done: bool
    body_received: int
    pending: list[bytes] | None
    pending_size: int
    target: Target | None
    conn: UpstreamConnection | None
    acquiring: asyncio.Future[UpstreamConnection] | None
    retried: bool
    response_status: int
    response_headers: list[tuple[bytes, bytes]] | None
    """The response headers an ``on_response`` hook may edit or replace."""
    response_started: bool
    rechunk: bool
    close_after: bool
    out: list[bytes]
    finished: bool
    upstream_headers: list[tuple[bytes, bytes]] | None
    """Extra request headers an ``on_upstream_request`` hook appends."""
    started_at: float

    def fail(self, fault: HttpFault) -> None:
        """A failure at any point: an error response if nothing went out yet, else a close."""
    def header(self, name: bytes) -> bytes | None:
        """First value of a request header (name lower-case); for plugins, not the hot path."""
    def param(self, name: str) -> bytes | None:
        """A route parameter's value by name, or None."""

@final
class UpstreamConnection(asyncio.Protocol):  # by duck typing at run time: a cdef class
    """One keep-alive HTTP/1.1 connection to an upstream target."""

    pool: TargetPool
    transport: Any
    exchange: Exchange | None
    parser: Any
    headers: list[tuple[bytes, bytes]]
    reason: bytes
    status: int
    served: int
    received: bool
    closed: bool
    deadline: float
    read_timeout: float
    send_timeout: float
    sending: bool
    reading_paused: bool
    idle_deadline: float
    head_only: bool
    reusable: bool
    close_delimited: bool
    served_head_only: bool

    def __init__(self, pool: TargetPool) -> None: ...
    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    # httptools callbacks
    def on_message_begin(self) -> None: ...
    def on_status(self, reason: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...
    # for the exchange, the pool and the clock
    def pause_reading(self) -> None:
        """Backpressure from a slow client: the upstream is not stalled, so no read deadline."""
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def check_deadline(self, now: float) -> None: ...
