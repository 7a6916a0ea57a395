"""The fixed extension interface: plugins, direct responses, and per-route hook chains.

A plugin overrides any of four hooks, called in this order for one request:

1. ``on_request(ctx)`` after the route matched, before an upstream is chosen. Returns None to go
   on, a ``Response`` to answer directly, or an awaitable of either (only then does the request
   leave the synchronous fast path).
2. ``on_upstream_request(ctx)`` just before the head is written upstream; may add headers to
   ``ctx.upstream_headers``. Synchronous.
3. ``on_response(ctx)`` when the upstream's response head arrived; may edit
   ``ctx.response_headers`` (a list of (name, value) bytes pairs) or return a ``Response`` to
   replace it. Synchronous. To see or change the body of this response, it appends a
   ``BodyFilter`` to ``ctx.body_filters`` (create the list if None); a filter that changes the
   body's length removes ``Content-Length`` from ``ctx.response_headers``, and the body is then
   re-framed (chunked, or close-delimited for an HTTP/1.0 client).
4. ``on_complete(ctx)`` after the last byte went out, or after the error was answered.

Every hook receives the request's context, a ``RequestContext``: what a plugin may read of the
request, its route and its client, and the few slots and methods through which it acts. Nothing
else of the exchange behind it is for plugins.

``plan.compile_plan`` builds one ``HookChain`` per route holding only the hooks a plugin
overrides, so a route with no plugins runs no plugin code at all (the hot path tests
``if chain.on_request:`` and nothing else).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from fastgw.errors import ConfigError, HttpFault


@dataclass(slots=True)
class Response:
    """A response made by the gateway itself (a hook's answer)."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"application/json"


class BodyFilter(Protocol):
    """Sees a proxied response body piece by piece, in order, and returns what goes on (b"" to
    hold it back); ``end`` returns what it held back when the body is complete. Not called when
    the response fails mid-body: then nothing must be stored or reported as complete. A filter
    that cannot go on (a body it cannot bound or parse) calls ``ctx.fail(fault)`` from ``feed``
    or ``end`` and returns b"": the head went out, so the client sees the response cut."""

    def feed(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...


class RouteInfo(Protocol):
    """What a plugin reads of the route its request matched (the compiled route behind it is the
    gateway's own)."""

    @property
    def id(self) -> str: ...
    @property
    def methods(self) -> tuple[str, ...] | None:
        """The methods the route was configured for; None: any."""

    @property
    def param_names(self) -> tuple[str, ...]:
        """Its path parameters, in the order of ``RequestContext.params``."""

    @property
    def preserve_host(self) -> bool:
        """The client's Host goes upstream instead of the target's."""

    @property
    def strip_prefix(self) -> bytes | None:
        """The path prefix taken off before the request goes upstream, if any."""

    @property
    def rewrite(self) -> object | None:
        """The template the upstream path is rewritten to (opaque to plugins), or None."""


class TargetInfo(Protocol):
    """What a plugin reads of the upstream server a request was sent to."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def label(self) -> str:
        """``host:port``, as logs and metrics name it."""

    @property
    def host_header(self) -> bytes:
        """The Host value sent to it (unless the route preserves the client's)."""


class ClientCertificateInfo(Protocol):
    """What a verified client certificate says (``tls.server.ClientCertificate``)."""

    @property
    def subject(self) -> str:
        """RFC 4514, e.g. ``CN=alice,O=Example``."""

    @property
    def sans(self) -> tuple[str, ...]:
        """Subject alternative names: ``DNS:...``, ``email:...``, ``URI:...``, ``IP:...``."""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, lower-case hex."""


class RequestContext(Protocol):
    """The ``ctx`` every hook receives: what plugins read and write of one request/response.

    The client's address, scheme and host follow the listener's ``trusted_proxies`` by one rule
    (``fastgw.http.forwarded``): plugins read the results, never X-Forwarded-* themselves.
    """

    # -- the request, as received (``path`` normalized) ------------------------------------------
    @property
    def method(self) -> bytes: ...
    @property
    def path(self) -> bytes:
        """Normalized: what was matched and what is forwarded (before any rewrite)."""

    query: bytes
    """``b""`` or ``b"?..."``; a plugin may replace it (what goes upstream)."""

    @property
    def host(self) -> bytes:
        """The Host header lower-cased, without port: what routing used."""

    @property
    def host_header(self) -> bytes:
        """The Host header as received (``b""`` when there was none)."""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Request headers as received, less those a plugin removed; (name, value) pairs."""

    def header(self, name: bytes) -> bytes | None:
        """The first value of a request header (name lower-case), or None."""

    def header_count(self, name: bytes) -> int:
        """How many lines of a request header (name lower-case) ``headers`` holds."""

    @property
    def request_id(self) -> bytes: ...
    @property
    def traceparent(self) -> bytes | None:
        """The W3C traceparent sent upstream (the gateway's span), or None without tracing."""

    # -- the route and the upstream ---------------------------------------------------------------
    @property
    def route(self) -> RouteInfo | None:
        """The matched route: hooks only run on a matched one, so they never see None."""

    @property
    def params(self) -> tuple[bytes, ...]:
        """The route parameters' values, in the order of ``route.param_names``."""

    def param(self, name: str) -> bytes | None:
        """A route parameter's value by name, or None."""

    @property
    def target(self) -> TargetInfo | None:
        """The upstream server the request went to; None before one is chosen."""

    # -- the client ---------------------------------------------------------------------------
    @property
    def client_ip(self) -> str:
        """The TCP peer, or the nearest untrusted X-Forwarded-For hop behind a trusted proxy."""

    @property
    def client_address(self) -> bytes:
        """``client_ip`` as bytes."""

    @property
    def via_trusted_proxy(self) -> bool:
        """Is the TCP peer one of the listener's trusted proxies (its X-Forwarded-* believed)?"""

    @property
    def client_certificate(self) -> ClientCertificateInfo | None:
        """The client's TLS certificate, verified against the listener's CAs (mTLS), or None."""

    @property
    def forwarded_proto(self) -> bytes:
        """``b"http"`` or ``b"https"``: the scheme the client used, as a trusted proxy tells."""

    @property
    def forwarded_host(self) -> bytes:
        """The host the client used: a trusted proxy's X-Forwarded-Host, else the Host header
        (``b""`` when a trusted proxy forwarded a malformed one)."""

    @property
    def forwarded_for(self) -> bytes:
        """The X-Forwarded-For value the gateway sends on: a trusted proxy's chain and the peer."""

    # -- what authentication learned ----------------------------------------------------------------
    consumer: str | None
    """Who the request is from, set by an authentication plugin."""
    claims: dict[str, Any] | None
    """The verified token's claims, set by an authentication plugin."""

    # -- the request going upstream -----------------------------------------------------------------
    def remove_request_header(self, name: bytes) -> None:
        """Keep a client's request header (name lower-case) from the upstream."""

    def add_request_header(self, name: bytes, value: bytes) -> None:
        """Send one more header line upstream on every attempt (for an ``on_request`` hook);
        ValueError if the name or value could break the header block."""

    upstream_headers: list[tuple[bytes, bytes]] | None
    """Extra request headers ``on_upstream_request`` hooks append (a list from then on)."""

    # -- the response -------------------------------------------------------------------------------
    @property
    def response_status(self) -> int:
        """The upstream's status, from ``on_response`` on (0 before)."""

    response_headers: list[tuple[bytes, bytes]] | None
    """The proxied response's headers, which ``on_response`` hooks edit (a list from then on)."""
    add_response_headers: list[tuple[bytes, bytes]] | None
    """Headers added to whatever response the client gets (create the list if None), set by the
    hooks before ``on_response``; an ``on_response`` hook edits ``response_headers`` instead."""
    body_filters: list[BodyFilter] | None
    """Filters the proxied response body runs through (create the list if None)."""

    @property
    def finished(self) -> bool:
        """The exchange ended (the client left while a hook awaited): register nothing more."""

    def fail(self, fault: HttpFault) -> None:
        """End the exchange with ``fault``: its error response if nothing went out yet, else a close."""


HookResult = Response | None | Awaitable[Response | None]
RequestHook = Callable[[RequestContext], HookResult]
UpstreamRequestHook = Callable[[RequestContext], None]
ResponseHook = Callable[[RequestContext], Response | None]
CompleteHook = Callable[[RequestContext], None]


class Plugin:
    """Base class. Subclasses set ``name``, implement ``compile`` and override only the hooks
    they need; the ones left as the base's are never called."""

    name: ClassVar[str] = ""
    # Methods the plugin answers itself on any route it is on (CORS preflights: OPTIONS). A route
    # that lists ``methods`` lets these through too, so the router's 405 does not hide them.
    answers_methods: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        """Validate options once and return the plugin instance shared by every request."""
        if options:
            raise ConfigError(key_path, f"plugin '{cls.name}' takes no options")
        return cls()

    def check_route(self, param_names: tuple[str, ...], route: str) -> None:
        """Called at compile time for each route the plugin is on, once its parameters are known
        (``route`` names it for messages); raise ConfigError for what the route cannot serve."""
        return None

    def on_request(self, ctx: RequestContext) -> HookResult:
        return None

    def on_upstream_request(self, ctx: RequestContext) -> None:
        return None

    def on_response(self, ctx: RequestContext) -> Response | None:
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        return None


class HookChain(NamedTuple):
    on_request: tuple[RequestHook, ...] = ()
    on_upstream_request: tuple[UpstreamRequestHook, ...] = ()
    on_response: tuple[ResponseHook, ...] = ()
    on_complete: tuple[CompleteHook, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.on_request or self.on_upstream_request or self.on_response or self.on_complete)


EMPTY_CHAIN = HookChain()


def build_chain(plugins: list[Plugin]) -> HookChain:
    """Keep, per hook, the bound methods of plugins that override it (in plugin order)."""

    def overriding(hook_name: str) -> tuple[Any, ...]:
        base = getattr(Plugin, hook_name)
        return tuple(getattr(p, hook_name) for p in plugins if getattr(type(p), hook_name) is not base)

    return HookChain(
        overriding("on_request"),
        overriding("on_upstream_request"),
        overriding("on_response"),
        overriding("on_complete"),
    )


_REGISTRY: dict[str, type[Plugin]] = {}


def register_plugin(cls: type[Plugin]) -> type[Plugin]:
    """Make a plugin class available to configs by its ``name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def find_plugin(name: str) -> type[Plugin] | None:
    if name not in _REGISTRY:
        _load_entry_points()
    return _REGISTRY.get(name)


def known_plugins() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


_entry_points_loaded = False


def _load_entry_points() -> None:
    """Third-party plugins register under the ``fastgw.plugins`` entry-point group."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="fastgw.plugins"):
        cls = ep.load()
        if isinstance(cls, type) and issubclass(cls, Plugin):
            _REGISTRY.setdefault(cls.name or ep.name, cls)
