"""``fastgw routes --match``: which route a request would take, and why.

The request is the method, the URL (its host, path and query) and the headers given with ``-H``,
curl-style; a ``Host`` header stands for the URL's host, as it does for curl. Header and query
predicates are evaluated on exactly these, so a route that needs ``X-Version: 2`` is taken only
when that header is given. Routes whose path, method and host fit but whose predicates did not
pass are listed after the answer with the predicate that failed, so a reader sees why they were
passed over.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastgw._router import MethodNotAllowed, RouteMatch, Router
from fastgw.discovery import Instance, make_resolver, resolve_once
from fastgw.http import limits
from fastgw.plan import Plan, RoutePlan

Discovered = Mapping[str, "Sequence[Instance] | str"]  # upstream -> its instances, or the error

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name


class _Probe:
    """Stands in for an exchange where predicates look at headers and the query."""

    def __init__(self, query: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.query = query
        self.headers = headers

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


def parse_header(text: str) -> tuple[bytes, bytes]:
    """``"Name: value"`` as curl's ``-H`` takes it; ValueError naming what is wrong."""
    name, colon, value = text.partition(":")
    raw_name = name.encode("latin-1", "replace")
    if not colon or not _TOKEN.fullmatch(raw_name):
        raise ValueError(f'expected a header as "Name: value", e.g. "X-Version: 2", got {text!r}')
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name!r}: a value cannot hold CR, LF or NUL")
    return raw_name, value.strip(" \t").encode("latin-1", "replace")


def resolve_discovered(plan: Plan, timeout: float = 5.0) -> dict[str, Sequence[Instance] | str]:
    """Ask each discovery upstream's registry once (on a loop of its own): its instances, or what
    went wrong."""
    from fastgw.control_http import close_control_session

    async def resolve_all() -> dict[str, Sequence[Instance] | str]:
        found: dict[str, Sequence[Instance] | str] = {}
        try:
            for name, group in plan.upstreams.items():
                discovery = group.config.discovery
                if discovery is None:
                    continue
                try:
                    found[name] = await resolve_once(make_resolver(discovery), timeout)
                except Exception as exc:  # the registry's error, whatever it is, is the answer
                    found[name] = f"{discovery.describe()}: {exc or type(exc).__name__}"
        finally:
            await close_control_session()
        return found

    return asyncio.run(resolve_all())


def explain_match(
    plan: Plan,
    request: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    discovered: Discovered | None = None,
) -> tuple[list[str], bool]:
    """Explain ``"METHOD URL"`` sent with ``headers``; returns (lines to print, whether a route
    matched). ``discovered``: what ``resolve_discovered`` found."""
    method, _, url = request.strip().partition(" ")
    if not url:
        raise ValueError('expected "METHOD URL", e.g. "GET http://localhost/items/1"')
    parts = urlsplit(url.strip())
    probe = _Probe(b"?" + parts.query.encode() if parts.query else b"", list(headers or []))
    host_header = probe.header(b"host")
    authority = host_header if host_header is not None else parts.netloc.encode()
    host = limits.check_host(authority) if authority else b""
    path = limits.normalize_path((parts.path or "/").encode())
    verb = method.upper().encode()
    lines: list[str] = []
    found = False
    for name, listener in plan.listeners.items():
        result: Any = listener.router.match(verb, host, path, probe)
        prefix = f"listener {name}:"
        taken = result.route if isinstance(result, RouteMatch) else None
        if result is None:
            lines.append(f"{prefix} no route matches {method.upper()} {path.decode()} (404)")
        elif isinstance(result, MethodNotAllowed):
            lines.append(f"{prefix} path matches but not the method (405, Allow: {result.allow.decode()})")
        else:
            found = True
            lines += _route_lines(prefix, result, path, probe, discovered or {})
        lines += [
            f"  passed over: route {route.id} ({route.config.key_path}): {why}"
            for route, why in _failed_predicates(listener.routes, taken, verb, host, path, probe)
        ]
    return lines, found


def _route_lines(
    prefix: str, result: RouteMatch, path: bytes, probe: _Probe, discovered: Discovered
) -> list[str]:
    route: Any = result.route
    rc = route.config
    params = dict(zip(route.param_names, (p.decode() for p in result.params), strict=True))
    why = [f"path template {rc.path}"]
    if rc.methods:
        why.append(f"methods {','.join(rc.methods)}")
    if rc.hosts:
        why.append(f"hosts {','.join(rc.hosts)}")
    why += [f"header {n}: {v}" for n, v in rc.headers]
    why += [f"query {k}={v}" if v else f"query {k} present" for k, v in rc.query]
    if rc.priority:
        why.append(f"priority {rc.priority}")
    plugins = ", ".join(type(p).name for p in route.plugins) or "none"
    return [
        f"{prefix} route {rc.id} ({rc.key_path})",
        f"  because:  {'; '.join(why)}",
        f"  params:   {params or '{}'}",
        *_upstream_lines(route, path, result.params, probe.query, discovered),
        f"  plugins:  {plugins}",
    ]


def _failed_predicates(
    routes: list[RoutePlan], taken: object, method: bytes, host: bytes, path: bytes, probe: _Probe
) -> list[tuple[RoutePlan, str]]:
    """Routes with predicates, other than the one taken, that fit the method, host and path but
    whose predicates said no; with the first predicate that failed."""
    failed = []
    for route in routes:
        if route is taken or not (route.header_predicates or route.query_predicates):
            continue
        alone = Router()
        alone.add(route, route.config.path, route.config.methods, route.config.hosts)
        if isinstance(alone.match(method, host, path), RouteMatch):
            reason = _first_failure(route, probe)
            if reason is not None:
                failed.append((route, reason))
    return failed


def _first_failure(route: RoutePlan, probe: _Probe) -> str | None:
    """What ``route.accepts`` found missing in the probe, in words; None if it passes."""
    for name, value in route.header_predicates:
        sent = probe.header(name)
        if sent != value:
            got = "not sent" if sent is None else f"sent {sent.decode('latin-1')!r}"
            return f"needs header {name.decode()}: {value.decode()} ({got})"
    query = dict(parse_qsl(probe.query[1:].decode("latin-1"), keep_blank_values=True))
    for key, expected in route.query_predicates:
        got_value = query.get(key)
        if got_value is None:
            return f"needs query parameter {key!r} (not in the URL)"
        if expected and got_value != expected:
            return f"needs query {key}={expected} (the URL has {key}={got_value})"
    return None


def _upstream_lines(
    route: Any, path: bytes, params: tuple[bytes, ...], query: bytes, discovered: Discovered
) -> list[str]:
    rc = route.config
    if rc.aggregate is not None:
        calls = ", ".join(f"{b.key}: {b.upstream} {b.method} {b.path}" for b in rc.aggregate.backends)
        return [f"  aggregate: {calls}"]
    group = route.upstream
    targets = [(t.label, "static") for t in group.targets]
    discovery = group.config.discovery
    found = discovered.get(rc.upstream) if discovery is not None else None
    error = found if isinstance(found, str) else None
    if discovery is not None and not isinstance(found, str):
        static = {label for label, _ in targets}
        targets += [
            (i.label, f"{discovery.describe()}: {i.origin}" if i.origin else discovery.describe())
            for i in found or ()
            if i.label not in static
        ]
    upstream_path = route.upstream_path(path, params).decode() + query.decode()
    scheme = "https" if group.config.tls is not None else "http"
    first = f"{scheme}://{targets[0][0]}{upstream_path}" if targets else f"(no target){upstream_path}"
    lines = [f"  upstream: {rc.upstream} -> {first}"]
    if discovery is not None or len(targets) > 1:
        listed = "; ".join(f"{label} ({where})" for label, where in targets) or "none"
        lines.append(f"  targets:  {listed}")
    if error is not None:
        lines.append(f"  registry: {error} (targets unknown until it answers)")
    elif discovery is not None and found is None:
        lines.append(f"  registry: {discovery.describe()} (not asked)")
    return lines
