"""Ocelot's own route choice, written out from its source for the importer's tests.

``pattern`` follows ``UpstreamTemplatePatternCreator.Create`` (the regular expression Ocelot makes
of an ``UpstreamPathTemplate``, its "/{x}" hack, the query part, the empty-placeholder and
trailing-slash forms) and ``choose`` follows ``DownstreamRouteFinder.Get``: the routes of the
request's method and host (or none), in ``Priority`` order (a stable sort: file order within a
priority, routes before aggregates), the first whose expression matches; a match with an
``UpstreamHost`` beats host-less ones. Only the tests use it: the translation must make fastgw's
router choose as this does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["OcelotRoute", "choose", "pattern", "routes_of"]


@dataclass(frozen=True)
class OcelotRoute:
    where: str  # "routing.json: Routes[3]"
    regex: re.Pattern[str]
    priority: int
    contains_query: bool
    methods: frozenset[str]  # empty: any
    host: str | None
    headers: tuple[tuple[str, str], ...]


def pattern(template: str, case_sensitive: bool, priority: int) -> tuple[re.Pattern[str], int, bool]:
    """(expression, priority, whether it matches the query string too) of a template."""
    placeholders: list[str] = []
    for index, char in enumerate(template):
        if char == "{":
            close = template.index("}", index)
            placeholders.append(template[index : close + 1])
            if template[:2] == "/{" and len(placeholders) == 1 and len(template) == close + 1:
                return re.compile(r"^/.*", re.DOTALL), 0, False
    contains_query = "?" in template
    if contains_query:
        template = template.replace("/?" if "/?" in template else "?", r"(/$|/\?|\?|$)")
    for placeholder in placeholders:
        at = template.index(placeholder)
        next_slash = template.find("/", at)
        if next_slash < at or (contains_query and template.index("?") < template.index(placeholder)):
            template = template.replace(placeholder, ".*")
        else:
            template = template.replace(placeholder, "[^/]+")
    if template == "/":
        return re.compile("^/$"), priority, contains_query
    last = template.rfind("/")
    if last < len(template) - 1 and template[last + 1] == ".":
        template = template[:last] + "(?:|/" + template[last + 1 :] + ")"
    if template.endswith("/"):
        template = template[:-1] + "(/|)"
    flags = re.DOTALL if case_sensitive else re.DOTALL | re.IGNORECASE
    return re.compile(f"^{template}$", flags), priority, contains_query


def _lookup(obj: dict[str, Any], name: str) -> Any:
    for key, value in obj.items():
        if key.casefold() == name.casefold():
            return value
    return None


def routes_of(document: dict[str, Any], file: str) -> list[OcelotRoute]:
    """Ocelot's routes of one (already parsed) file: Routes (or ReRoutes), then Aggregates."""
    found = []
    section = "Routes" if _lookup(document, "Routes") is not None else "ReRoutes"
    entries = [(f"{section}[{i}]", r) for i, r in enumerate(_lookup(document, section) or [])]
    entries += [(f"Aggregates[{i}]", a) for i, a in enumerate(_lookup(document, "Aggregates") or [])]
    for where, route in entries:
        sensitive = bool(_lookup(route, "RouteIsCaseSensitive") or _lookup(route, "ReRouteIsCaseSensitive"))
        priority = _lookup(route, "Priority")
        regex, effective, contains_query = pattern(
            _lookup(route, "UpstreamPathTemplate"), sensitive, 1 if priority is None else int(priority)
        )
        methods = _lookup(route, "UpstreamHttpMethod") or []
        if isinstance(methods, str):
            methods = [methods]
        if where.startswith("Aggregates") and not methods:
            methods = ["Get"]
        headers = tuple((k.lower(), v) for k, v in (_lookup(route, "UpstreamHeaderTemplates") or {}).items())
        found.append(
            OcelotRoute(
                f"{file}: {where}",
                regex,
                effective,
                contains_query,
                frozenset(m.upper() for m in methods),
                _lookup(route, "UpstreamHost") or None,
                headers,
            )
        )
    return found


def choose(
    routes: list[OcelotRoute],
    method: str,
    host: str,
    path: str,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> str | None:
    """Where Ocelot sends ``method host path?query`` (``query`` with its "?"), or None (404)."""
    sent = {k.lower(): v for k, v in (headers or {}).items()}
    applicable = [
        r for r in routes if (not r.methods or method in r.methods) and (r.host is None or r.host == host)
    ]
    applicable.sort(key=lambda r: -r.priority)
    matched = [
        r
        for r in applicable
        if r.regex.search(path + query if r.contains_query else path)
        and all(sent.get(name) == value for name, value in r.headers)
    ]
    with_host = [r for r in matched if r.host]
    chosen = (with_host or matched or [None])[0]
    return chosen.where if chosen is not None else None
