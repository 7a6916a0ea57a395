"""Failures answered on the wire, and whose fault they are: each carries the status to answer
with (h11's ``error_status_hint``); ``fastgw.http.wire.render_error`` is the one function that
turns one into bytes. Part of the leaf package: imports nothing of fastgw (``fastgw.errors``
re-exports these beside the configuration errors).
"""

from __future__ import annotations

import copy
import math


class HttpFault(Exception):
    """A failure answered with one HTTP status; ``close`` says the connection cannot continue.

    ``message`` is what the client reads: it names an upstream or service by its configured
    name, never an address. ``detail`` is for the log only (the host and port that failed):
    ``str(fault)`` gives both, as the access log and the error log write them."""

    status: int = 500
    close: bool = True
    headers: list[tuple[bytes, bytes]] | None = None  # extra response header lines (Retry-After)

    def __init__(self, message: str, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message

    def naming(self, who: str) -> HttpFault:
        """The same fault (same class, status, detail), its message led by what failed."""
        fault = copy.copy(self)
        fault.message = f"{who}: {self.message}"
        fault.args = (fault.message,)
        return fault


class ClientFault(HttpFault):
    """The client sent something we refuse (400, 413, 414, 431, ...)."""

    status = 400


class UpstreamFault(HttpFault):
    """The upstream failed before a response head reached the client (502, 503, 504)."""

    status = 502
    close = False


class UnavailableFault(UpstreamFault):
    """No target of an upstream may take the request now (health, open circuit breakers): 503,
    with ``Retry-After`` when it is known when one will be tried again."""

    status = 503

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            # RFC 9110 10.2.3: whole seconds; never 0, which invites an immediate retry storm.
            self.headers = [(b"Retry-After", str(max(1, math.ceil(retry_after))).encode("ascii"))]


class ConnectFault(UpstreamFault):
    """Opening a connection to an upstream target failed or timed out (502, 504)."""
