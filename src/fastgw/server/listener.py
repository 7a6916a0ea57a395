"""A listening socket and the connections it accepted, bound to the listener's current plan.

``connections`` holds the client connections open, and the tunnels that took some of them over
(an upgraded connection spliced to its upstream: WebSocket), so a drain waits for both."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastgw._proxy import (
    ClientProtocol,
    Observers,
    RequestIds,
    RequestStats,
    TLSLink,
    Tunnel,
    enable_tls_link,
)
from fastgw.tls.libraries import LIBSSL_PATH

if TYPE_CHECKING:
    from fastgw.plan import ListenerPlan


class ListenerServer:
    def __init__(self, plan: ListenerPlan) -> None:
        self.plan = plan  # new connections use the plan current when they are accepted
        # A dict used as a set (values None). PERF: memory: for 10,000 connections a set's table
        # has 32,768 slots of 16 bytes (512 KB), a dict's entries and index about 300 KB.
        self.connections: dict[ClientProtocol | Tunnel, None] = {}
        self.server: asyncio.base_events.Server | None = None
        # Requests that matched no route (404/405) or were refused before routing (400, 431, ...).
        self.unrouted = RequestStats()
        # Shared by every connection: those counters and the request ids (made here, in the
        # worker process after fork, so they stay unique across workers); the gateway sets its
        # access log, span export and recent errors (None, the default, costs the hot path one
        # pointer test).
        self.observers = Observers(self.unrouted, RequestIds(os.urandom(6).hex().encode()))
        # TLS handshakes completed, by (version, cipher, resumed): fastgw_tls_handshakes_total.
        self.handshakes: dict[tuple[str | None, str | None, bool], int] = {}
        # TLS handshakes that failed, by reason: fastgw_tls_handshake_failures_total.
        self.handshake_failures: dict[str, int] = {}
        # HTTP/2 defences that acted, by kind: fastgw_http2_refusals_total.
        self.h2_events: dict[str, int] = {}
        # Client connections cut by the send timeout, by state: fastgw_client_send_timeouts_total.
        self.send_timeouts: dict[str, int] = {}

    def count_handshake(self, version: str | None, cipher: str | None, resumed: bool) -> None:
        key = (version, cipher, resumed)
        self.handshakes[key] = self.handshakes.get(key, 0) + 1

    def count_handshake_failure(self, reason: str) -> None:
        self.handshake_failures[reason] = self.handshake_failures.get(reason, 0) + 1

    def count_h2(self, kind: str) -> None:
        """An HTTP/2 defence acted (a stream or connection refused or cut, by kind: rapid_reset,
        flood, continuation_flood, header_list_too_large, stream_send_stalled...)."""
        self.h2_events[kind] = self.h2_events.get(kind, 0) + 1

    def count_send_timeout(self, state: str) -> None:
        """A client took nothing for a whole send timeout and was cut: ``responding`` (its
        response cut short) or ``closing`` (the response handed over, the connection closing)."""
        self.send_timeouts[state] = self.send_timeouts.get(state, 0) + 1

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        plan = self.plan
        front = plan.tls_front
        ssl_context = None
        if front is not None and not enable_tls_link(os.fsencode(LIBSSL_PATH)):
            ssl_context = front.context  # an interpreter whose ssl objects we cannot read
        try:
            self.server = await loop.create_server(
                self._protocol_factory(ssl_context is None),
                plan.host,
                plan.port,
                reuse_port=reuse_port or None,
                backlog=4096,
                ssl=ssl_context,
                ssl_handshake_timeout=plan.head_timeout if ssl_context is not None else None,
            )
        except OSError as exc:
            raise OSError(exc.errno, f"listener {plan.name} on {plan.bind}: {exc.strerror or exc}") from None

    def _protocol_factory(self, own_tls: bool) -> Callable[[], asyncio.BaseProtocol]:
        """What each accepted connection speaks to: the client protocol, under the compiled TLS
        layer (``own_tls``) on a TLS listener."""
        front = self.plan.tls_front
        if front is None or not own_tls:
            return lambda: ClientProtocol(self)
        # The socket's context for its life: a reload changes what it hands handshakes. A
        # handshake that does not finish is a slowloris: the head timeout bounds it.
        context, timeout, failed = front.context, self.plan.head_timeout, self.count_handshake_failure
        return lambda: TLSLink(ClientProtocol(self), context, True, None, timeout, None, failed)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self.server is None:
            return []
        return [
            s.getsockname()[:2] for s in self.server.sockets if s.family in (socket.AF_INET, socket.AF_INET6)
        ]

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def start_draining(self) -> None:
        for conn in list(self.connections):
            conn.start_draining()

    def close_tunnels(self) -> int:
        """The drain timeout passed: each open tunnel closes with a WebSocket close frame 1001
        (going away) both ways, then its connections (a tunnel of another protocol: a FIN).
        Returns how many were open."""
        tunnels = [conn for conn in self.connections if isinstance(conn, Tunnel)]
        for tunnel in tunnels:
            tunnel.close_for_drain()
        return len(tunnels)

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()
