"""Every error fastgw raises, and whose fault it is.

Config errors are the operator's: they render as ``file: key.path: message`` and stop the
process (or a reload) before any traffic sees the bad config. Client and upstream faults are
values on the wire: each carries the status to answer with (h11's ``error_status_hint``), and
``server.wire.render_error`` is the one function that turns them into bytes.
"""

from __future__ import annotations

import copy
import math


class FastgwError(Exception):
    """Base class of every error fastgw raises on purpose."""


class ConfigError(FastgwError):
    """The configuration is invalid at ``path`` (a dotted key path, e.g. ``routes[2].path``)."""

    def __init__(self, path: str, message: str, file: str | None = None) -> None:
        super().__init__(path, message, file)
        self.path = path
        self.message = message
        self.file = file

    def with_file(self, file: str) -> ConfigError:
        return ConfigError(self.path, self.message, file)

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        prefix = f"{self.file}: " if self.file else ""
        return f"{prefix}{where}{self.message}"


class RouteConflict(ValueError):
    """Two routes would answer the same request: same host, path shape, method and priority."""


class HttpFault(FastgwError):
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
