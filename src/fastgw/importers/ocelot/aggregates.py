"""``Aggregates``: one request answered by several routes, merged as ``{Key: body, ...}``.

Ocelot calls each route named in ``RouteKeys`` with the aggregate's placeholders, in parallel, and
answers 200 with the raw bodies under the routes' keys (``SimpleJsonResponseAggregator``): a part
that answered 404 or 500 has its error body spliced in, and a part that could not be called at
all (connection refused) fails the whole aggregate. ``RouteKeysConfig`` chains: the first route is
called first, ``JsonPath`` picks values from its body, and the route of ``RouteKey`` is called once
per value with it as ``{Parameter}``.

fastgw's aggregate route (``aggregate.by_key``) gives the same body for parts that answer 2xx JSON.
Each backend is ``required: false``: a failed part is left out and named in
``X-Aggregate-Partial`` while the answer stays 200, the closest to what Ocelot's clients rely on;
``required: true`` makes fastgw answer 502 naming the part instead (the report says so). A
``JsonPath`` to one value (``$.user.id``) becomes a chained path (``{comments.user.id}``); one that
fans out over a list (``$[*].id``, ``$..id``) has no fastgw form and that part is left out.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.importers.ocelot.paths import UpstreamTemplate, parse_upstream
from fastgw.importers.ocelot.reading import OcelotObject, Registry
from fastgw.importers.ocelot.report import Report
from fastgw.importers.ocelot.routes import (
    Context,
    RouteDraft,
    header_predicates,
    read_host,
    read_methods,
    read_priority,
    required_template,
    route_ident,
)

__all__ = ["translate_aggregate"]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_BACKEND_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SIMPLE_PATH = re.compile(r"\$((?:\.[A-Za-z0-9_$@-]+)+)")
_PASSED_HEADERS = ["authorization", "cookie"]


def _chains(obj: OcelotObject, registry: Registry, report: Report, first: str) -> dict[str, tuple[str, str]]:
    """RouteKey -> (Parameter, fastgw reference to the first route's field), for the chainable."""
    chains: dict[str, tuple[str, str]] = {}
    name = "RouteKeysConfig" if obj.has("RouteKeysConfig") else "ReRouteKeysConfig"
    for config in obj.children(name, registry):
        key = config.text("RouteKey") or config.text("ReRouteKey") or ""
        json_path = config.text("JsonPath") or ""
        parameter = config.text("Parameter") or ""
        match = _SIMPLE_PATH.fullmatch(json_path.strip())
        if match is None:
            report.unsupported(
                config.file,
                config.path,
                f"{key}: JsonPath {json_path!r} fans out over a list (one call per value); fastgw chains one"
                " value into one call: this part is left out",
            )
            chains[key] = (parameter, "")
            continue
        chains[key] = (parameter, f"{{{first}{match[1]}}}")
        report.mapped(
            config.file,
            config.path,
            f"{key}: {{{parameter}}} from {json_path} of {first}'s answer -> path {{{first}{match[1]}}}",
        )
    return chains


def _backend_path(
    downstream: str, template: UpstreamTemplate, empty: tuple[str, ...], chain: tuple[str, str] | None
) -> str | None:
    problem = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal problem
        name = match[1]
        if chain is not None and name == chain[0]:
            return chain[1]
        if name in empty:
            return ""
        if name in template.names:
            return f"{{{template.names[name]}}}"
        problem = True
        return ""

    path = _PLACEHOLDER.sub(substitute, downstream)
    return None if problem or not path.startswith("/") else path


def translate_aggregate(
    obj: OcelotObject, order: int, drafts: dict[str, RouteDraft], context: Context
) -> RouteDraft | None:
    """The fastgw aggregate route(s) of one Ocelot aggregate; None when none of it can be kept."""
    report = context.report
    text = required_template(obj, "UpstreamPathTemplate")
    parsed = parse_upstream(text)
    keys_name = "RouteKeys" if obj.has("RouteKeys") else "ReRouteKeys"
    keys = obj.strings(keys_name)
    ident = route_ident(obj, text, "aggregate-" + "-".join(keys) if keys else None, context.ids)
    if isinstance(parsed, str):
        report.unsupported(obj.file, obj.at("UpstreamPathTemplate"), f"{text!r}: {parsed}; left out")
        return None
    methods = read_methods(obj, report)
    if methods and methods != ("GET",):
        report.approximated(
            obj.file, obj.at("UpstreamHttpMethod"), "aggregates answer GET only (in Ocelot too)"
        )
    host, usable = read_host(obj, report)
    if not usable or not keys:
        if not keys:
            report.unsupported(obj.file, obj.at(keys_name), "no route keys: nothing to aggregate; left out")
        return None
    obj.flag("RouteIsCaseSensitive")
    obj.flag("ReRouteIsCaseSensitive")
    paths = " and ".join(variant.path for variant in parsed.variants)
    report.mapped(obj.file, obj.at("UpstreamPathTemplate"), f"path {paths}, answering GET")
    effective = read_priority(obj, parsed, report)
    headers = header_predicates(obj, report)
    if headers is None:
        return None
    aggregator = obj.text("Aggregator")
    if aggregator:
        report.unsupported(
            obj.file,
            obj.at("Aggregator"),
            f"{aggregator!r} is C# code; merged by key instead (a fastgw aggregator is a Python callable:"
            " aggregate.aggregator)",
        )
    chains = _chains(obj, context.registry, report, keys[0])
    parts: list[tuple[str, RouteDraft]] = []
    for key in keys:
        draft = drafts.get(key)
        at = f"{obj.at(keys_name)}"
        if draft is None:
            report.unsupported(
                obj.file, at, f"{key}: no translated route has this Key; this part is left out"
            )
        elif draft.websocket:
            report.unsupported(
                obj.file,
                at,
                f"{key}: a WebSocket route (DownstreamScheme ws or wss), which Ocelot's aggregation cannot"
                " call either (its HTTP client has no ws scheme); this part is left out",
            )
        elif not _BACKEND_KEY.fullmatch(key):
            report.unsupported(
                obj.file, at, f"{key}: fastgw names a part with letters, digits, '_' and '-'; left out"
            )
        elif key in chains and (not chains[key][1] or key == keys[0] or keys[0] not in drafts):
            if chains[key][1]:
                report.unsupported(obj.file, at, f"{key}: chained to {keys[0]}, not called; left out")
            continue
        else:
            parts.append((key, draft))
    if not parts:
        report.unsupported(obj.file, obj.path, "no part can be called; left out")
        return None
    auth: list[dict[str, Any]] = []
    for _, draft in parts:
        for plugin in draft.auth:
            if plugin not in auth:
                auth.append(plugin)
    routes: list[dict[str, Any]] = []
    for index, variant in enumerate(parsed.variants):
        backends = []
        for key, draft in parts:
            path = _backend_path(draft.downstream, parsed, variant.empty, chains.get(key))
            if path is None:
                if index == 0:
                    report.unsupported(
                        obj.file,
                        obj.at(keys_name),
                        f"{key}: its DownstreamPathTemplate {draft.downstream!r} uses a placeholder the"
                        " aggregate's"
                        " template does not have; this part is left out",
                    )
                continue
            backends.append(
                {
                    "key": key,
                    "upstream": draft.upstream,
                    "path": path,
                    "headers": _PASSED_HEADERS,
                    "required": False,
                }
            )
        if not backends:
            return None
        route: dict[str, Any] = {"id": ident if index == 0 else f"{ident}.{index + 1}", "path": variant.path}
        route["methods"] = ["GET"]
        if host:
            route["host"] = host
        if headers:
            route["headers"] = headers
        route["aggregate"] = {"merge": "by_key", "backends": backends}
        if auth:
            route["plugins"] = auth
        routes.append(route)
    report.approximated(
        obj.file,
        obj.at(keys_name),
        f"{', '.join(k for k, _ in parts)} -> aggregate (merge: by_key): the parts' JSON bodies under"
        " their keys, as"
        " Ocelot's; a part that fails (an error status, a body that is not JSON, no answer) is left out and"
        " named in X-Aggregate-Partial with the answer still 200 (Ocelot spliced an error body in, and"
        " failed the"
        " whole aggregate when a part could not be called); set required: true on a backend to answer 502"
        " naming"
        " it instead. Each part gets the client's Authorization and Cookie headers (Ocelot copied them all);"
        " the parts' own rate limits, transforms and caches apply to their routes, not here",
    )
    if auth:
        report.mapped(obj.file, obj.path, "the parts' authentication and authorization guard the aggregate")
    report.head(
        obj.file,
        obj.path.split(".", 1)[0],
        f"GET {text} -> route{'s' if len(routes) > 1 else ''} {', '.join(r['id'] for r in routes)}",
    )
    return RouteDraft(
        obj=obj,
        ident=ident,
        key=None,
        order=order,
        priority=effective,
        host=host,
        methods=("GET",),
        template=parsed,
        predicates=bool(headers),
        routes=routes,
    )
