"""``GlobalConfiguration``: the listener, and the options every route inherits.

Since Ocelot 24.1 most global option blocks apply to static routes: a route in the block's group
(``RouteKeys`` absent, empty, or naming the route's ``Key``) takes each option it does not set
itself from the global block (``QoSOptionsCreator.Merge`` and its siblings). ``Layered`` reads a
route's block over the global one that way. Scalars (``DownstreamScheme``, ``Timeout``,
``RequestIdKey``, ``DownstreamHttpVersion``) fall back to the global value the same way.

Ocelot's own listening address is not in ``ocelot.json`` (it is ASP.NET's ``urls`` setting): the
fastgw listener binds the port of ``BaseUrl`` when it names one, else 5000 (Kestrel's default), on
127.0.0.1 when ``BaseUrl`` is a loopback address and on every address otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from fastgw.importers.ocelot.reading import OcelotObject, Registry
from fastgw.importers.ocelot.report import Report

__all__ = ["DEFAULT_BASE_URL", "GlobalConfiguration", "Layered"]

DEFAULT_BASE_URL = "http://localhost:5000"  # Ocelot's BaseUrlFinder falls back to it
_GROUPED = ("AuthenticationOptions", "CacheOptions", "LoadBalancerOptions", "QoSOptions", "RateLimitOptions")
_APPLIED = {
    "AuthenticationOptions": "authentication for the routes that set none (Ocelot 24.1 and later)",
    "CacheOptions": "caching for the routes in its group (Ocelot 23.3 and later)",
    "LoadBalancerOptions": "the balancer of the routes in its group (Ocelot 24.1 and later)",
    "QoSOptions": "breaker and timeout of the routes in its group (Ocelot 24.1 and later)",
    "RateLimitOptions": "rate limiting of the routes, as each route says",
    "SecurityOptions": "the IP lists of the routes that set none (Ocelot 23.4.1 and later)",
    "HttpHandlerOptions": "the connection options of the routes that set none",
    "DownstreamScheme": "the scheme of the routes that set none",
    "DownstreamHttpVersion": "the HTTP version of the routes that set none",
    "DownstreamHttpVersionPolicy": "the HTTP version policy of the routes that set none",
    "Timeout": "the timeout of the routes that set none",
    "RequestIdKey": "the request id header of the routes that set none",
    "UpstreamHeaderTransform": "request header transforms of every route (Ocelot 24.1 and later)",
    "DownstreamHeaderTransform": "response header transforms of every route (Ocelot 24.1 and later)",
}


class Layered:
    """A route's options block over the global one: a key the route sets wins."""

    __slots__ = ("glob", "route")

    def __init__(self, route: OcelotObject | None, glob: OcelotObject | None) -> None:
        self.route = route
        self.glob = glob

    def __bool__(self) -> bool:
        return self.route is not None or self.glob is not None

    def source(self, name: str) -> OcelotObject | None:
        """The block whose value of ``name`` applies (marking the route's key as read)."""
        if self.route is not None:
            self.route.raw(name)
            if self.route.has(name):
                return self.route
        if self.glob is not None and self.glob.has(name):
            return self.glob
        return None

    def has(self, name: str) -> bool:
        return self.source(name) is not None

    def text(self, name: str) -> str | None:
        found = self.source(name)
        return found.text(name) if found is not None else None

    def integer(self, name: str) -> int | None:
        found = self.source(name)
        return found.integer(name) if found is not None else None

    def number(self, name: str) -> float | None:
        found = self.source(name)
        return found.number(name) if found is not None else None

    def flag(self, name: str) -> bool | None:
        found = self.source(name)
        return found.flag(name) if found is not None else None

    def strings(self, name: str) -> list[str]:
        found = self.source(name)
        return found.strings(name) if found is not None else []

    def where(self) -> str:
        """How the block is made up, for the report."""
        if self.route is not None and self.glob is not None:
            return " (with GlobalConfiguration's)"
        return " (from GlobalConfiguration)" if self.route is None else ""


class GlobalConfiguration:
    """The global section, read once; ``options`` gives a route its layered blocks."""

    __slots__ = ("_sections", "base_url", "obj", "registry")

    def __init__(self, obj: OcelotObject | None, registry: Registry) -> None:
        self.obj = obj
        self.registry = registry
        self._sections: dict[str, OcelotObject | None] = {}
        self.base_url = (obj.text("BaseUrl") if obj is not None else None) or None

    def section(self, name: str) -> OcelotObject | None:
        if self.obj is None:
            return None
        if name not in self._sections:
            self._sections[name] = self.obj.child(name, self.registry)
        return self._sections[name]

    def options(self, route: OcelotObject, name: str, route_key: str | None) -> Layered:
        """The route's ``name`` block over the global one, when the route is in its group."""
        own = route.child(name, self.registry)
        glob = self.section(name)
        if glob is not None:
            keys = glob.strings("RouteKeys")
            if keys and route_key not in keys:
                glob = None
        return Layered(own, glob)

    def scalar(self, route: OcelotObject, name: str) -> tuple[OcelotObject | None, str]:
        """Which object's ``name`` applies to the route (the route's, else the global one)."""
        route.raw(name)
        if route.has(name):
            return route, name
        if self.obj is not None and self.obj.has(name):
            return self.obj, name
        return None, name

    def table(self, name: str) -> dict[str, str]:
        return self.obj.table(name) if self.obj is not None else {}

    # -- the listener ----------------------------------------------------------------------------

    def listener(self, bind: str | None, report: Report) -> dict[str, Any]:
        """The one fastgw listener: ``bind`` when given, else from ``BaseUrl``."""
        if bind is not None:
            return {"name": "public", "bind": bind}
        url = urlsplit(self.base_url or DEFAULT_BASE_URL)
        try:
            port = url.port
        except ValueError:
            port = None
        host = url.hostname or "localhost"
        loopback = host == "localhost" or _is_loopback(host)
        address = f"{'127.0.0.1' if loopback else '0.0.0.0'}:{port if port is not None else 5000}"
        if self.obj is not None and self.base_url:
            detail = (
                f"{self.base_url}: the listener binds {address} (Ocelot's listening address is ASP.NET's urls"
                " setting, not in this file; change listeners[0].bind or pass --bind)"
            )
            if url.scheme == "https":
                detail += (
                    "; the listener serves plain HTTP: to serve HTTPS, give it the certificate Kestrel"
                    " used (listeners[0].tls: {certificates: [{cert: ..., key: ...}]}), or terminate TLS in"
                    " front of it"
                )
            report.mapped(self.obj.file, self.obj.at("BaseUrl"), detail)
        return {"name": "public", "bind": address}

    # -- the report of the global keys -----------------------------------------------------------

    def report_keys(self, report: Report) -> None:
        """One entry per global key: what it becomes (each route's entries say how it applied)."""
        obj = self.obj
        if obj is None:
            return
        for name, applied in _APPLIED.items():
            obj.raw(name)
            if not obj.has(name):
                continue
            value = obj.raw(name)
            if isinstance(value, (dict, list)) and not value:
                report.mapped(obj.file, obj.at(name), "empty: nothing to apply")
                continue
            section = self.section(name) if isinstance(value, dict) and name in _GROUPED else None
            if section is not None:
                keys = section.strings("RouteKeys")
                group = f"the routes with Key {', '.join(keys)}" if keys else "every route"
                applied = f"{applied}; group: {group}"
            report.mapped(obj.file, obj.at(name), f"applied as {applied}")
        for name in ("Metadata", "MetadataOptions"):
            if obj.raw(name):
                report.ignored(
                    obj.file, obj.at(name), "metadata is read by custom C# middleware; fastgw has none"
                )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
