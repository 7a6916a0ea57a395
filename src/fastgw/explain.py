"""``fastgw routes --match``: which route a request would take, and why."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastgw._router import MethodNotAllowed
from fastgw.plan import Plan
from fastgw.server import limits


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


def explain_match(
    plan: Plan, request: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[list[str], bool]:
    """Explain ``"METHOD URL"``; returns (lines to print, whether a route matched)."""
    method, _, url = request.strip().partition(" ")
    if not url:
        raise ValueError('expected "METHOD URL", e.g. "GET http://localhost/items/1"')
    parts = urlsplit(url.strip())
    host = limits.check_host(parts.netloc.encode()) if parts.netloc else b""
    path = limits.normalize_path((parts.path or "/").encode())
    query = b"?" + parts.query.encode() if parts.query else b""
    lines: list[str] = []
    found = False
    for name, listener in plan.listeners.items():
        result: Any = listener.router.match(method.upper().encode(), host, path, _Probe(query, headers or []))
        prefix = f"listener {name}:"
        if result is None:
            lines.append(f"{prefix} no route matches {method.upper()} {path.decode()} (404)")
            continue
        if isinstance(result, MethodNotAllowed):
            lines.append(f"{prefix} path matches but not the method (405, Allow: {result.allow.decode()})")
            continue
        found = True
        route = result.route
        rc = route.config
        params = dict(zip(route.param_names, (p.decode() for p in result.params), strict=True))
        why = [f"path template {rc.path}"]
        if rc.methods:
            why.append(f"methods {','.join(rc.methods)}")
        if rc.hosts:
            why.append(f"hosts {','.join(rc.hosts)}")
        if rc.headers or rc.query:
            why.append("header/query predicates passed")
        if rc.priority:
            why.append(f"priority {rc.priority}")
        plugins = ", ".join(type(p).name for p in route.plugins) or "none"
        lines += [
            f"{prefix} route {rc.id} ({rc.key_path})",
            f"  because:  {'; '.join(why)}",
            f"  params:   {params or '{}'}",
            _upstream_line(route, path, result.params, query),
            f"  plugins:  {plugins}",
        ]
    return lines, found


def _upstream_line(route: Any, path: bytes, params: tuple[bytes, ...], query: bytes) -> str:
    rc = route.config
    if rc.aggregate is not None:
        calls = ", ".join(f"{b.key}: {b.upstream} {b.method} {b.path}" for b in rc.aggregate.backends)
        return f"  aggregate: {calls}"
    target = route.upstream.targets[0]
    upstream_path = route.upstream_path(path, params).decode()
    return f"  upstream: {rc.upstream} -> http://{target.label}{upstream_path}{query.decode()}"
