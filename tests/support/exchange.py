"""A stand-in for ``fastgw._proxy.Exchange`` where plugins look, for hook tests without sockets.

``run_request`` runs plugins' ``on_request`` hooks in order as the core does (stopping at the
first Response, awaiting an awaitable one), and ``upstream_headers`` what their
``on_upstream_request`` hooks add.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from fastgw.hooks import Plugin, Response

__all__ = ["FakeExchange", "run_request", "run_request_async", "upstream_headers"]


class FakeExchange:
    def __init__(
        self,
        headers: Sequence[tuple[str | bytes, str | bytes]] = (),
        query: bytes = b"",
        path: bytes = b"/",
        method: bytes = b"GET",
    ) -> None:
        self.headers = [(_bytes(n), _bytes(v)) for n, v in headers]
        self.query = query
        self.path = path
        self.method = method
        self.request_id = b"fake-00000001"
        self.consumer: str | None = None
        self.claims: dict[str, Any] | None = None
        self.upstream_headers: list[tuple[bytes, bytes]] | None = None
        self.removed: list[bytes] = []
        self.added: list[tuple[bytes, bytes]] = []  # add_request_header's lines: forwarded, not in headers

    @property
    def pass_block(self) -> bytes:
        """The header lines forwarded upstream: here every one the exchange has, then the added
        ones (no hop-by-hop filtering, no X-Forwarded-* lines)."""
        return b"".join(n + b": " + v + b"\r\n" for n, v in (*self.headers, *self.added))

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def remove_request_header(self, name: bytes) -> None:
        self.removed.append(name)
        self.headers = [(n, v) for n, v in self.headers if n.lower() != name]
        self.added = [(n, v) for n, v in self.added if n.lower() != name]

    def add_request_header(self, name: bytes, value: bytes) -> None:
        self.added.append((name, value))


def _bytes(text: str | bytes) -> bytes:
    return text.encode("latin-1") if isinstance(text, str) else text


async def run_request_async(plugins: Sequence[Plugin], ctx: FakeExchange) -> Response | None:
    for plugin in plugins:
        result = plugin.on_request(ctx)
        if inspect.isawaitable(result):
            result = await result
        if result is not None:
            return result
    return None


def run_request(plugins: Sequence[Plugin], ctx: FakeExchange) -> Response | None:
    return asyncio.run(run_request_async(plugins, ctx))


def upstream_headers(plugins: Sequence[Plugin], ctx: FakeExchange) -> list[tuple[bytes, bytes]]:
    ctx.upstream_headers = []
    for plugin in plugins:
        plugin.on_upstream_request(ctx)
    return ctx.upstream_headers
