"""One keep-alive HTTP/1.1 connection to an upstream target.

States: connecting -> idle (in its pool) -> busy (``exchange`` set) -> idle ... -> closed.
While busy, httptools' response parser drives the exchange: ``on_upstream_head`` with the parsed
head, ``on_upstream_body`` per body piece, ``on_upstream_complete`` at the end; after each
``data_received`` the exchange flushes what it gathered to the client in one write.

A connection goes back to its pool only when the exchange says request and response both ended
cleanly with known framing. Bytes arriving on an idle connection, or a close, make it unusable;
the pool skips it. A fresh response parser is made per response because httptools cannot be told
that a response answers HEAD (it would wait for a body).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httptools

from fastgw.errors import UpstreamFault
from fastgw.server.clock import CLOCK

log = logging.getLogger("fastgw")

if TYPE_CHECKING:
    from fastgw.config.schema import UpstreamTimeouts
    from fastgw.server.exchange import Exchange
    from fastgw.upstream.pool import TargetPool


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "close_delimited",
        "closed",
        "deadline",
        "exchange",
        "head_only",
        "headers",
        "idle_deadline",
        "parser",
        "pool",
        "read_timeout",
        "reading_paused",
        "reason",
        "received",
        "reusable",
        "send_timeout",
        "sending",
        "served",
        "served_head_only",
        "transport",
    )

    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser: Any = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.served = 0  # responses completed on this connection (0 = fresh)
        self.received = False  # any byte of the current response arrived
        self.closed = False
        # Deadline of the current exchange, 0 = none: the send timeout while the request body is
        # still streaming up (refreshed by progress), then the read timeout (refreshed by each
        # read); suspended while the gateway itself paused reading for a slow client.
        self.deadline = 0.0
        self.read_timeout = 60.0
        self.send_timeout = 60.0
        self.sending = False
        self.reading_paused = False
        self.idle_deadline = 0.0
        self.head_only = False
        self.reusable = False  # set by detach(): may the pool keep it after this response
        self.close_delimited = False  # the current response's body ends when the upstream closes
        self.served_head_only = False  # the parser saw a HEAD response it was not told about

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        CLOCK.watched.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        CLOCK.watched.discard(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost(self, exc)
        self.pool.forget(self)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle connection must be silent; anything else means it is out of sync.
            self.close()
            return
        self.received = True
        if not self.sending and not self.reading_paused:
            self.deadline = CLOCK.now + self.read_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # Not the upstream's fault: our own callback raised. Log it and answer 500.
            log.error("internal error handling an upstream response", exc_info=exc.__context__)
            if self.exchange is exchange:
                self.exchange = None
                self.abort()
                exchange.conn = None
                self.pool.release(self)
                exchange.fail(UpstreamFault("internal error", 500))
            return
        except httptools.HttpParserError as exc:
            if self.exchange is exchange:
                exchange.on_upstream_malformed(self, exc)
                return
            self.reusable = False  # garbage after a complete response
        exchange.flush_to_client()
        if self.exchange is None:
            # The response ended inside this feed. Releasing only now, after the parser returned,
            # means no other exchange can be handed this connection while its old parser runs.
            self.pool.release(self)

    def eof_received(self) -> bool:
        exchange = self.exchange
        if exchange is not None and self.close_delimited:
            # httptools has no end-of-input call: a body framed by the close ends here.
            exchange.on_upstream_complete(self, False)
            exchange.flush_to_client()
            self.pool.release(self)
        return False

    def pause_reading(self) -> None:
        """Backpressure from a slow client: the upstream is not stalled, so no read deadline."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.reading_paused = True
            self.deadline = 0.0

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_reading():
            self.transport.resume_reading()
        if self.reading_paused:
            self.reading_paused = False
            self.arm()

    def arm(self) -> None:
        """Set the deadline that applies now (see ``__init__``)."""
        if self.exchange is None or self.reading_paused:
            self.deadline = 0.0
        else:
            self.deadline = CLOCK.now + (self.send_timeout if self.sending else self.read_timeout)

    def request_sent(self) -> None:
        """The whole request went upstream: from now on the read timeout applies."""
        self.sending = False
        self.arm()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.exchange is None:
            self.reusable = False  # a second response nobody asked for

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.exchange is None:
            return
        headers = self.headers
        self.headers = []
        parser = self.parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            return  # interim 1xx: the gateway answered Expect itself; wait for the final head
        exchange = self.exchange
        exchange.on_upstream_head(status, self.reason, headers, parser.should_keep_alive())
        if self.head_only and self.exchange is exchange:
            # httptools cannot be told this response answers HEAD; end it at the head.
            self.served_head_only = True
            exchange.on_upstream_complete(self, parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_body(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        if self.exchange is None:
            return
        status = parser.get_status_code()
        if status < 200 and status != 101:
            return
        self.exchange.on_upstream_complete(self, parser.should_keep_alive())

    # -- used by the exchange and the pool ---------------------------------------------------
    def begin(self, exchange: Exchange, head_only: bool, timeouts: UpstreamTimeouts, sending: bool) -> None:
        """Bind to an exchange for one request/response; ``sending``: a body is still to come."""
        self.exchange = exchange
        self.received = False
        self.close_delimited = False
        self.head_only = head_only
        self.reason = b""
        if self.parser is None or self.served_head_only:
            # PERF: a parser is reused across responses; only one ended early at a HEAD
            # response's head is left expecting a body, and is replaced.
            self.parser = httptools.HttpResponseParser(self)
            self.served_head_only = False
        self.read_timeout = timeouts.read
        self.send_timeout = timeouts.send
        self.sending = sending
        self.reading_paused = False
        self.arm()

    def detach(self, reusable: bool) -> None:
        """Unbind from the exchange. Called from inside a parser callback, the pool takes the
        connection back when ``data_received`` returns; elsewhere, at once."""
        self.exchange = None
        self.deadline = 0.0
        self.served += 1
        self.reusable = reusable and not self.closed
        if reusable:
            self.resume_reading()  # so an idle connection still notices the upstream closing

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def check_deadline(self, now: float) -> None:
        if self.exchange is not None:
            if self.deadline and now >= self.deadline:
                exchange = self.exchange
                self.exchange = None
                exchange.on_upstream_timeout(self)
                self.abort()
        elif self.idle_deadline and now >= self.idle_deadline:
            self.close()
