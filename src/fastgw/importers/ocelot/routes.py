"""One Ocelot route (``Routes[i]``, ``ReRoutes[i]`` before 16.0) as fastgw routes.

A route becomes one fastgw route per path variant (``paths``): same upstream, methods, host and
plugins, each with its own rewrite. Plugins run in Ocelot's middleware order: IP security, rate
limiting, authentication, authorization, claims transforms, query and header edits, Location
rewriting, then the cache.

A route is left out (and the report says why) when fastgw cannot send its requests where Ocelot
would, or cannot keep its access rules: a service in a registry fastgw cannot ask (Kubernetes,
Service Fabric), a path template with no fastgw form, a claims requirement fastgw cannot check, a
WebSocket route (``ws``, ``wss``) no handshake can reach. Everything else is translated, with what
differs said in the report; a WebSocket route gets ``websocket: true``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastgw.importers.ocelot.discovery import ServiceDiscovery
from fastgw.importers.ocelot.global_config import GlobalConfiguration
from fastgw.importers.ocelot.headers import transform_plugins
from fastgw.importers.ocelot.paths import Downstream, UpstreamTemplate, parse_upstream, translate_downstream
from fastgw.importers.ocelot.policies import auth_plugins, cache_plugin, claim_edits, ip_filter_plugin
from fastgw.importers.ocelot.ratelimit import rate_limit_plugin
from fastgw.importers.ocelot.reading import OcelotObject, Registry
from fastgw.importers.ocelot.report import Report
from fastgw.importers.ocelot.upstreams import (
    UpstreamRegistry,
    downstream_scheme,
    route_timeouts,
    upstream_of,
)

__all__ = [
    "Context",
    "RouteDraft",
    "header_predicates",
    "read_host",
    "read_methods",
    "read_priority",
    "required_template",
    "route_ident",
    "translate_route",
]

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


@dataclass
class Context:
    """What every route's translation shares."""

    glob: GlobalConfiguration
    registry: Registry
    report: Report
    upstreams: UpstreamRegistry
    discovery: ServiceDiscovery
    ids: set[str] = field(default_factory=set)


@dataclass
class RouteDraft:
    """A translated route, before the ordering analysis gives its variants their priorities."""

    obj: OcelotObject
    ident: str
    key: str | None
    order: int  # position in Ocelot's file order (routes, then aggregates)
    priority: int  # Ocelot's effective priority
    host: str | None
    methods: tuple[str, ...] | None
    template: UpstreamTemplate
    predicates: bool  # header or query predicates: matches only some requests of its paths
    routes: list[dict[str, Any]]  # the fastgw routes, one per variant
    upstream: str = ""
    downstream: str = ""  # DownstreamPathTemplate, for aggregates
    auth: list[dict[str, Any]] = field(default_factory=list)  # jwt/authorize, for aggregates
    left_out: bool = False
    websocket: bool = False  # DownstreamScheme ws or wss: not a part an aggregate can call

    @property
    def label(self) -> str:
        methods = ",".join(self.methods) if self.methods else "*"
        host = f" (host {self.host})" if self.host else ""
        return f"{methods} {self.template.template}{host}"


def route_ident(obj: OcelotObject, template: str, key: str | None, ids: set[str]) -> str:
    """A unique fastgw route id: the Ocelot Key, else words of the template."""
    base = key or "-".join(re.findall(r"[A-Za-z0-9]+", template.partition("?")[0])) or "root"
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-").lower() or "route"
    ident, n = base, 2
    while ident in ids:
        ident, n = f"{base}-{n}", n + 1
    ids.add(ident)
    return ident


def read_methods(obj: OcelotObject, report: Report) -> tuple[str, ...] | None:
    methods = obj.strings("UpstreamHttpMethod")
    for method in methods:
        if not _METHOD.fullmatch(method):
            raise obj.error("UpstreamHttpMethod", "HTTP method names like 'Get'", method)
    upper = tuple(dict.fromkeys(method.upper() for method in methods))
    if obj.has("UpstreamHttpMethod"):
        detail = f"methods {', '.join(upper)}" if upper else "empty: any method"
        if isinstance(obj.raw("UpstreamHttpMethod"), str):
            detail += " (a bare string: Ocelot 1.x's spelling)"
        report.mapped(obj.file, obj.at("UpstreamHttpMethod"), detail)
    return upper or None


def read_host(obj: OcelotObject, report: Report) -> tuple[str | None, bool]:
    """The fastgw host of ``UpstreamHost``, and whether the route can be translated at all."""
    host = obj.text("UpstreamHost")
    if not host:
        return None, True
    at = obj.at("UpstreamHost")
    name, colon, _ = host.partition(":")
    lowered = name.strip().lower()
    if not _HOST.fullmatch(lowered):
        report.unsupported(obj.file, at, f"{host!r} is no host name fastgw can match; left out")
        return None, False
    if colon:
        report.approximated(
            obj.file,
            at,
            f"{host!r} -> host {lowered}: Ocelot 20.0 and later compare the Host without its port"
            f" (so {host!r} matched only before 20.0); fastgw too",
        )
    else:
        report.mapped(
            obj.file, at, f"host {lowered} (exact; it wins over routes without a host, as in Ocelot)"
        )
    return lowered, True


def required_template(obj: OcelotObject, name: str) -> str:
    """A path template Ocelot requires (its validator refuses to start without one)."""
    text = obj.text(name)
    if not text:
        raise obj.error(name, "a path template like '/api/{everything}'", obj.raw(name))
    return text


def read_priority(obj: OcelotObject, template: UpstreamTemplate, report: Report) -> int:
    """The priority Ocelot orders the route by: ``Priority`` (default 1), 0 for ``/{x}``."""
    priority = obj.integer("Priority")
    if priority is not None:
        report.mapped(
            obj.file, obj.at("Priority"), f"{priority}: Ocelot's order is kept where fastgw needs it"
        )
    if template.forced_priority is not None:
        return template.forced_priority
    return 1 if priority is None else priority


def _report_case(obj: OcelotObject, template: UpstreamTemplate, report: Report) -> None:
    sensitive = obj.flag("RouteIsCaseSensitive")
    old = obj.flag("ReRouteIsCaseSensitive")
    name = "RouteIsCaseSensitive" if sensitive is not None or old is None else "ReRouteIsCaseSensitive"
    sensitive = sensitive if sensitive is not None else old
    if sensitive:
        report.mapped(obj.file, obj.at(name), "true: matched case-sensitively, as fastgw always matches")
    elif template.case_matters:
        report.approximated(
            obj.file,
            obj.at(name),
            f"{'false' if sensitive is False else 'absent (false)'}: fastgw's router compares path text"
            " exactly,"
            f" so requests must spell {template.template} as written (Ocelot also took other cases:"
            f" {template.template.upper()})",
        )


def _report_paths(obj: OcelotObject, template: UpstreamTemplate, report: Report) -> None:
    paths = [variant.path for variant in template.variants]
    detail = f"path {paths[0]}"
    if template.catch_all is not None:
        detail += f" ({{{template.catch_all}}} is last: it takes the rest of the path, possibly empty)"
    if len(paths) > 1:
        detail += f", and {paths[1]} (Ocelot's expression matches it too)"
    if template.forced_priority is not None:
        detail += "; matches every path, after all other routes (Ocelot forces priority 0)"
    if template.query_required:
        wanted = ", ".join(f"{name}={value or '...'}" for name, value in template.query_required)
        detail += (
            f"; the query must have {wanted} (Ocelot wants it first in the query string, fastgw anywhere)"
        )
    report.mapped(obj.file, obj.at("UpstreamPathTemplate"), detail)


def header_predicates(obj: OcelotObject, report: Report) -> dict[str, str] | None:
    """``UpstreamHeaderTemplates`` as header predicates; None when one holds a placeholder."""
    templates = obj.table("UpstreamHeaderTemplates")
    for header, value in templates.items():
        if "{" in value:
            report.unsupported(
                obj.file,
                f"{obj.at('UpstreamHeaderTemplates')}.{header}",
                f"{value!r}: header placeholders have no fastgw form; left out",
            )
            return None
    if templates:
        report.mapped(
            obj.file, obj.at("UpstreamHeaderTemplates"), "-> headers: exact values the request must carry"
        )
    return templates


def _report_downstream_options(obj: OcelotObject, glob: GlobalConfiguration, report: Report) -> None:
    for name in ("DownstreamHttpVersion", "DownstreamHttpVersionPolicy"):
        owner, key = glob.scalar(obj, name)
        value = owner.text(key) if owner is not None else None
        if not value or owner is not obj:
            continue
        if value in ("1.0", "1.1") or (name.endswith("Policy") and "Lower" in value):
            report.mapped(obj.file, obj.at(name), f"{value}: fastgw speaks HTTP/1.1 to upstreams")
        else:
            report.approximated(obj.file, obj.at(name), f"{value}: fastgw speaks HTTP/1.1 to upstreams")
    method = obj.text("DownstreamHttpMethod")
    if method:
        report.unsupported(
            obj.file, obj.at("DownstreamHttpMethod"), f"{method}: fastgw sends the client's method upstream"
        )
    handlers = obj.strings("DelegatingHandlers")
    if handlers:
        report.unsupported(
            obj.file,
            obj.at("DelegatingHandlers"),
            f"{', '.join(handlers)}: C# handlers; write a fastgw plugin",
        )
    if obj.raw("Metadata"):
        report.ignored(
            obj.file, obj.at("Metadata"), "metadata is read by custom C# middleware; fastgw has none"
        )


def _report_websocket_plugins(obj: OcelotObject, plugins: list[dict[str, Any]], report: Report) -> None:
    """Ocelot sends a WebSocket handshake down a pipeline of its own, without the route's security,
    rate limiting, authentication, authorization, claims or header transforms; fastgw runs the
    route's plugins on it, as on any request (a stricter gateway, never a looser one)."""
    if plugins:
        names = ", ".join(dict.fromkeys(plugin["name"] for plugin in plugins))
        report.approximated(
            obj.file,
            obj.at("DownstreamScheme"),
            f"Ocelot checks none of this route's options on a WebSocket handshake (its WebSocket pipeline"
            f" skips them); fastgw runs the route's plugins ({names}) on the handshake as on any request,"
            " so a client they refuse gets its 401, 403 or 429 and no WebSocket",
        )


def _report_no_cache(obj: OcelotObject, report: Report) -> None:
    """A WebSocket route gets no cache: Ocelot caches nothing on it (its WebSocket pipeline has no
    cache, its plain requests fail), and a cached answer must never stand in for a handshake."""
    for name in ("CacheOptions", "FileCacheOptions"):
        if obj.raw(name):
            report.ignored(obj.file, obj.at(name), "a WebSocket route: Ocelot caches nothing on it; no cache")


def translate_route(
    obj: OcelotObject, order: int, modern_limits: bool, context: Context
) -> RouteDraft | None:
    """The fastgw routes of one Ocelot route; None when it is left out (the report says why)."""
    report = context.report
    template_text = required_template(obj, "UpstreamPathTemplate")
    key = obj.text("Key") or None
    ident = route_ident(obj, template_text, key, context.ids)
    parsed = parse_upstream(template_text)
    if isinstance(parsed, str):
        report.unsupported(obj.file, obj.at("UpstreamPathTemplate"), f"{template_text!r}: {parsed}; left out")
        return None
    template = parsed
    methods = read_methods(obj, report)
    host, usable = read_host(obj, report)
    if not usable:
        return None
    report.head(
        obj.file, obj.path.split(".", 1)[0], f"{','.join(methods) if methods else '*'} {template_text}"
    )
    _report_paths(obj, template, report)
    effective = read_priority(obj, template, report)
    if key:
        report.mapped(obj.file, obj.at("Key"), f"route id {ident} (aggregates name the route by it)")
    headers = header_predicates(obj, report)
    if headers is None:
        return None
    downstream_text = required_template(obj, "DownstreamPathTemplate")
    change = obj.table("ChangeDownstreamPathTemplate")
    if change:
        report.unsupported(
            obj.file,
            obj.at("ChangeDownstreamPathTemplate"),
            f"claims into the path ({', '.join(change)}): fastgw rewrites paths from path parameters only;"
            " left out",
        )
        return None
    downstreams: list[Downstream] = []
    for variant in template.variants:
        result = translate_downstream(downstream_text, template, variant)
        if isinstance(result, str):
            report.unsupported(
                obj.file, obj.at("DownstreamPathTemplate"), f"{downstream_text!r}: {result}; left out"
            )
            return None
        downstreams.append(result)
    rewrite = downstreams[0].rewrite
    report.mapped(
        obj.file,
        obj.at("DownstreamPathTemplate"),
        f"rewrite {rewrite}" if rewrite else "the path goes upstream as it came",
    )
    scheme = downstream_scheme(obj, context.glob, report)
    if scheme is None:
        return None
    if scheme.websocket and methods and "GET" not in methods:
        report.unsupported(
            obj.file,
            obj.at("UpstreamHttpMethod"),
            "a WebSocket route without GET: a WebSocket handshake is a GET request, so none reaches the route"
            " (in Ocelot neither); left out",
        )
        return None
    upstream, qos = upstream_of(
        obj,
        key,
        context.glob,
        context.registry,
        context.upstreams,
        report,
        discovery=context.discovery,
        tls=scheme.tls,
    )
    if upstream is None:
        return None
    timeouts = route_timeouts(obj, qos, context.glob, report)
    _report_downstream_options(obj, context.glob, report)
    edits = claim_edits(obj, report)
    auth = auth_plugins(obj, key, context.glob, edits.made, report)
    if auth is None:
        return None
    _report_case(obj, template, report)
    plugins: list[dict[str, Any]] = []
    ip_filter = ip_filter_plugin(obj, context.glob, context.registry, report)
    if ip_filter is not None:
        plugins.append(ip_filter)
    limit = rate_limit_plugin(obj, key, ident, modern_limits, context.glob, context.registry, report)
    if limit is not None:
        plugins.append(limit)
        if len(template.variants) > 1:
            paths = " and ".join(variant.path for variant in template.variants)
            report.approximated(
                obj.file, obj.at("RateLimitOptions"), f"{paths} are two fastgw routes: each counts on its own"
            )
    plugins += auth
    claims = edits.plugin()
    if claims is not None:
        plugins.append(claims)
    if scheme.websocket:
        _report_websocket_plugins(obj, plugins, report)
        _report_no_cache(obj, report)
        cache = None
    else:
        cache = cache_plugin(obj, key, bool(auth), context.glob, report)
    routes: list[dict[str, Any]] = []
    for index, (variant, downstream) in enumerate(zip(template.variants, downstreams, strict=True)):
        route: dict[str, Any] = {"id": ident if index == 0 else f"{ident}.{index + 1}", "path": variant.path}
        if methods:
            route["methods"] = list(methods)
        if host:
            route["host"] = host
        if headers:
            route["headers"] = headers
        if template.query_required:
            route["query"] = dict(template.query_required)
        route["upstream"] = upstream
        if downstream.rewrite:
            route["rewrite"] = downstream.rewrite
        if scheme.websocket:
            route["websocket"] = True
        if timeouts:
            route["timeouts"] = timeouts
        variant_plugins = plugins + transform_plugins(
            obj, context.glob, edits, downstream, _quiet(report, index)
        )
        if cache is not None:
            variant_plugins.append(cache)
        if variant_plugins:
            route["plugins"] = variant_plugins
        routes.append(route)
    report.head(
        obj.file,
        obj.path.split(".", 1)[0],
        f"{','.join(methods) if methods else '*'} {template_text} -> route{'s' if len(routes) > 1 else ''}"
        f" {', '.join(r['id'] for r in routes)} (upstream {upstream})",
    )
    return RouteDraft(
        obj=obj,
        ident=ident,
        key=key,
        order=order,
        priority=effective,
        host=host,
        methods=methods,
        template=template,
        predicates=bool(headers or template.query_required),
        routes=routes,
        upstream=upstream,
        downstream=downstream_text,
        auth=auth,
        websocket=scheme.websocket,
    )


def _quiet(report: Report, index: int) -> Report:
    """The report for a variant's transforms: only the first variant's are reported."""
    return report if index == 0 else Report([])
