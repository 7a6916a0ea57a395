"""A stand-in for ``fastgw._proxy.Exchange`` as plugins see it (``hooks.RequestContext``), for hook
tests without sockets; mypy checks that it is one (``tests/typing/contexts.py``).

The client is ``peer``, believed about X-Forwarded-* only when it is one of ``trusted_proxies``
(exact addresses), by the gateway's own rule (``fastgw.http.forwarded``). ``run_request`` runs
plugins' ``on_request`` hooks in order as the core does (stopping at the first Response, awaiting
an awaitable one), and ``upstream_headers`` what their ``on_upstream_request`` hooks add.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastgw.errors import HttpFault
from fastgw.hooks import BodyFilter, Plugin, Response, RouteInfo, TargetInfo
from fastgw.http import forwarded, limits
from fastgw.tls.server import ClientCertificate

__all__ = ["FakeExchange", "FakeRoute", "FakeTarget", "run_request", "run_request_async", "upstream_headers"]


@dataclass(frozen=True)
class FakeRoute:
    """A matched route as plugins see it (``hooks.RouteInfo``)."""

    id: str = "r"
    methods: tuple[str, ...] | None = None
    param_names: tuple[str, ...] = ()
    preserve_host: bool = False
    strip_prefix: bytes | None = None
    rewrite: object | None = None


@dataclass(frozen=True)
class FakeTarget:
    """An upstream server as plugins see it (``hooks.TargetInfo``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    host_header: bytes = b"127.0.0.1:8080"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class FakeExchange:
    def __init__(
        self,
        headers: Sequence[tuple[str | bytes, str | bytes]] = (),
        query: bytes = b"",
        path: bytes = b"/",
        method: bytes = b"GET",
        *,
        host_header: bytes = b"gw.test",
        peer: bytes = b"192.0.2.1",
        trusted_proxies: Collection[str] = (),
        scheme: bytes = b"http",
        client_certificate: ClientCertificate | None = None,
        params: Mapping[str, bytes] | None = None,
        route: RouteInfo | None = None,
        target: TargetInfo | None = None,
    ) -> None:
        self.headers = [(_bytes(n), _bytes(v)) for n, v in headers]
        self.query = query
        self.path = path
        self.method = method
        self.host_header = host_header
        self.host = limits.check_host(host_header) if host_header else b""
        self.peer = peer
        self.trusted_proxies = frozenset(trusted_proxies)
        self.scheme = scheme
        self.client_certificate = client_certificate
        self.params = tuple((params or {}).values())
        self.route = route if route is not None else FakeRoute(param_names=tuple(params or {}))
        self.target = target
        self.request_id = b"fake-00000001"
        self.traceparent: bytes | None = None
        self.consumer: str | None = None
        self.claims: dict[str, Any] | None = None
        self.upstream_headers: list[tuple[bytes, bytes]] | None = None
        self.response_status = 0
        self.response_headers: list[tuple[bytes, bytes]] | None = None
        self.add_response_headers: list[tuple[bytes, bytes]] | None = None
        self.body_filters: list[BodyFilter] | None = None
        self.finished = False
        self.failure: HttpFault | None = None  # what fail() was called with
        self.removed: list[bytes] = []
        self.added: list[tuple[bytes, bytes]] = []  # add_request_header's lines: forwarded, not in headers

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def header_count(self, name: bytes) -> int:
        return sum(1 for n, _ in self.headers if n.lower() == name)

    def param(self, name: str) -> bytes | None:
        names = self.route.param_names if self.route is not None else ()
        return self.params[names.index(name)] if name in names else None

    # -- the client, by the gateway's rule ------------------------------------------------------
    @property
    def via_trusted_proxy(self) -> bool:
        return self.peer.decode() in self.trusted_proxies

    def _forwarded(self) -> forwarded.Forwarded:
        return forwarded.resolve(
            self.peer,
            self.via_trusted_proxy,
            self.headers,
            self.host_header,
            self.trusted_proxies.__contains__,
            self.scheme,
        )

    @property
    def client_ip(self) -> str:
        return self._forwarded().client_ip

    @property
    def client_address(self) -> bytes:
        return self._forwarded().client_address

    @property
    def forwarded_proto(self) -> bytes:
        return self._forwarded().proto

    @property
    def forwarded_host(self) -> bytes:
        return self._forwarded().host

    @property
    def forwarded_for(self) -> bytes:
        return self._forwarded().forwarded_for

    # -- acting on the request and the response ---------------------------------------------------
    def remove_request_header(self, name: bytes) -> None:
        self.removed.append(name)
        self.headers = [(n, v) for n, v in self.headers if n.lower() != name]
        self.added = [(n, v) for n, v in self.added if n.lower() != name]

    def add_request_header(self, name: bytes, value: bytes) -> None:
        self.added.append((name, value))

    def fail(self, fault: HttpFault) -> None:
        self.failure = fault
        self.finished = True


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
    extra: list[tuple[bytes, bytes]] = []
    ctx.upstream_headers = extra
    for plugin in plugins:
        plugin.on_upstream_request(ctx)
    return extra
