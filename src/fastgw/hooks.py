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

``plan.compile_plan`` builds one ``HookChain`` per route holding only the hooks a plugin
overrides, so a route with no plugins runs no plugin code at all (the hot path tests
``if chain.on_request:`` and nothing else).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from fastgw.errors import ConfigError


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


HookResult = Response | None | Awaitable[Response | None]
Hook = Callable[[Any], Any]


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

    def on_request(self, ctx: Any) -> HookResult:
        return None

    def on_upstream_request(self, ctx: Any) -> None:
        return None

    def on_response(self, ctx: Any) -> Response | None:
        return None

    def on_complete(self, ctx: Any) -> None:
        return None


class HookChain(NamedTuple):
    on_request: tuple[Hook, ...] = ()
    on_upstream_request: tuple[Hook, ...] = ()
    on_response: tuple[Hook, ...] = ()
    on_complete: tuple[Hook, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.on_request or self.on_upstream_request or self.on_response or self.on_complete)


EMPTY_CHAIN = HookChain()

_HOOK_NAMES = ("on_request", "on_upstream_request", "on_response", "on_complete")


def build_chain(plugins: list[Plugin]) -> HookChain:
    """Keep, per hook, the bound methods of plugins that override it (in plugin order)."""
    hooks: list[tuple[Hook, ...]] = []
    for hook_name in _HOOK_NAMES:
        base = getattr(Plugin, hook_name)
        hooks.append(tuple(getattr(p, hook_name) for p in plugins if getattr(type(p), hook_name) is not base))
    return HookChain(*hooks)


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
