"""Every error fastgw raises, and whose fault it is.

Config errors are the operator's: they render as ``file: key.path: message`` and stop the
process (or a reload) before any traffic sees the bad config. Client and upstream faults are
values on the wire (``fastgw.http.faults``, re-exported here): each carries the status to answer
with, and ``fastgw.http.wire.render_error`` is the one function that turns them into bytes. Two
routes that would answer the same request raise the router's own ``RouteConflict``
(``fastgw._router``, which imports nothing of fastgw).
"""

from __future__ import annotations

from fastgw.http.faults import ClientFault, ConnectFault, HttpFault, UnavailableFault, UpstreamFault

__all__ = [
    "ClientFault",
    "ConfigError",
    "ConnectFault",
    "FastgwError",
    "HttpFault",
    "UnavailableFault",
    "UpstreamFault",
]


class FastgwError(Exception):
    """Base class of the errors fastgw raises on purpose outside the wire (configuration)."""


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
