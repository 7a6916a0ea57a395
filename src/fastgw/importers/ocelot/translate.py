"""An Ocelot configuration (one file, or ``ocelot.*.json`` files merged) as one fastgw document.

The steps: read the files (``reading``) and merge them as Ocelot's ``AddOcelot`` does
(``ocelot.*.json`` in a folder, the environment's file skipped; ``Routes``, ``Aggregates`` and
``DynamicRoutes`` concatenated; ``GlobalConfiguration`` only from ``ocelot.global.json``); read
``GlobalConfiguration`` and its service discovery provider; translate each route, then each
aggregate, then the services ``DynamicRoutes`` names when Ocelot routes dynamically; keep Ocelot's
route choice (``ordering``); then report every key nobody read (Ocelot ignores unknown keys too).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from fastgw.errors import ConfigError
from fastgw.importers.ocelot.aggregates import translate_aggregate
from fastgw.importers.ocelot.discovery import ServiceDiscovery
from fastgw.importers.ocelot.dynamic import translate_dynamic_routes
from fastgw.importers.ocelot.global_config import GlobalConfiguration
from fastgw.importers.ocelot.ordering import order_routes
from fastgw.importers.ocelot.ratelimit import is_modern_rate_limiting
from fastgw.importers.ocelot.reading import OcelotObject, Registry, parse_jsonc, read_text_file
from fastgw.importers.ocelot.report import Report
from fastgw.importers.ocelot.routes import Context, RouteDraft, translate_route
from fastgw.importers.ocelot.upstreams import UpstreamRegistry

__all__ = ["Translation", "is_ocelot_document", "translate_files"]

_SUB_CONFIG = re.compile(r"ocelot\.(.*?)\.json", re.IGNORECASE)
# The settings the translation makes (JWT keys, Eureka's address) stay ${...} references.
_ENV_REFERENCE = re.compile(r"^\$\{FASTGW_(?:JWT_[A-Z0-9_]+|EUREKA_URL):-[^}]*\}$")

# Every key of Ocelot's file schema, any version (FileConfiguration and the classes it holds).
# A key the translation did not read is reported only when it is not one of these: known keys
# are covered by the entry of the block they belong to.
_KNOWN_KEYS = frozenset(
    key.casefold()
    for key in """
    Routes ReRoutes DynamicRoutes DynamicReRoutes Aggregates GlobalConfiguration AddClaimsToRequest
    AddHeadersToRequest AddQueriesToRequest AuthenticationOptions ChangeDownstreamPathTemplate
    DangerousAcceptAnyServerCertificateValidator DelegatingHandlers DownstreamHeaderTransform
    DownstreamHostAndPorts DownstreamHttpMethod DownstreamHttpVersion DownstreamHttpVersionPolicy
    DownstreamPathTemplate DownstreamScheme CacheOptions FileCacheOptions HttpHandlerOptions Key
    LoadBalancerOptions Metadata Priority QoSOptions RateLimitOptions RateLimiting RateLimitRule
    RequestIdKey RouteClaimsRequirement RouteIsCaseSensitive ReRouteIsCaseSensitive SecurityOptions
    ServiceName ServiceNamespace Timeout UpstreamHeaderTemplates UpstreamHeaderTransform UpstreamHost
    UpstreamHttpMethod UpstreamPathTemplate DownstreamHost DownstreamPort LoadBalancer
    UseServiceDiscovery Aggregator RouteKeys ReRouteKeys RouteKeysConfig ReRouteKeysConfig RouteKey
    ReRouteKey JsonPath Parameter BaseUrl MetadataOptions ServiceDiscoveryProvider Scheme Host Port Type
    Token ConfigurationKey PollingInterval Namespace Expiry BreakDuration DurationOfBreak
    MinimumThroughput ExceptionsAllowedBeforeBreaking FailureRatio SamplingDuration TimeoutValue
    ClientIdHeader ClientWhitelist EnableRateLimiting EnableHeaders Limit Period Wait PeriodTimespan
    StatusCode HttpStatusCode QuotaMessage QuotaExceededMessage KeyPrefix RateLimitCounterPrefix
    DisableRateLimitHeaders AllowAnonymous AllowedScopes AuthenticationProviderKey
    AuthenticationProviderKeys Provider ProviderRootUrl ApiName ApiSecret RequireHttps TtlSeconds Region
    Header EnableContentHashing AllowAutoRedirect MaxConnectionsPerServer
    PooledConnectionLifetimeSeconds UseCookieContainer UseProxy UseTracing UseDefaultCredentials
    IPAllowedList IPBlockedList ExcludeAllowedFromBlocked
    """.split()  # noqa: SIM905 (a list of 150 names, one per line, is no easier to read)
)


def is_ocelot_document(data: object) -> bool:
    """Is this JSON document an Ocelot configuration: its top level has ``Routes`` or ``ReRoutes``
    (any case), and no ``listeners`` (a fastgw document)?"""
    if not isinstance(data, dict):
        return False
    keys = {str(key).casefold() for key in data}
    return bool(keys & {"routes", "reroutes"}) and "listeners" not in keys


@dataclass
class Translation:
    """The fastgw document and the report of how it was made."""

    document: dict[str, Any]
    report: Report
    origins: dict[str, str]  # fastgw route id -> "file: Routes[3]", the Ocelot object it came from

    def require_routes(self) -> None:
        """Raise ``ConfigError`` when no route could be translated (the report says why)."""
        if not self.document["routes"]:
            raise ConfigError(
                "Routes",
                "no route could be translated (see the report for each route's reason)",
                self.report.files[0],
            )

    def checked_yaml(self) -> str:
        """``yaml()``, once it is known to load as a fastgw configuration (``fastgw check``)."""
        from fastgw.config import parse_config
        from fastgw.plan import compile_plan

        self.require_routes()
        text = self.yaml()
        compile_plan(parse_config(yaml.safe_load(text), self.report.files[0]))
        return text

    def yaml(self) -> str:
        """The document as YAML, with a comment naming the source and what needs attention."""
        lines = [
            "# fastgw configuration translated from Ocelot's"
            f" {', '.join(os.path.basename(f) for f in self.report.files)}",
            "# by `fastgw import ocelot`. What differs from Ocelot (the full report lists every key):",
            "#",
        ]
        lines += [f"# {line}".rstrip() for line in self.report.render(full=False).splitlines()]
        body = yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True, width=110)
        return "\n".join(lines) + "\n\n" + body


def expand(paths: Sequence[str], environment: str) -> list[str]:
    """Files to read: a folder stands for its ``ocelot.*.json`` files (sorted by name) without
    ``ocelot.<environment>.json``, and without ``ocelot.json`` when there are others (Ocelot writes
    the merged result there)."""
    found: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            found.append(path)
            continue
        names = sorted(
            name
            for name in os.listdir(path)
            if _SUB_CONFIG.fullmatch(name) and name.lower() != f"ocelot.{environment.lower()}.json"
        )
        if not names:
            raise ConfigError("", "no ocelot.*.json file in this folder", path)
        found += [os.path.join(path, name) for name in names]
    if len(found) > 1:
        found = [f for f in found if os.path.basename(f).lower() != "ocelot.json"] or found
    return found


def _sections(
    files: list[str], registry: Registry, report: Report
) -> tuple[list[tuple[str, list[OcelotObject]]], list[OcelotObject], list[OcelotObject], OcelotObject | None]:
    """(file, routes) per file, the aggregates, the dynamic routes and the global section."""
    routes: list[tuple[str, list[OcelotObject]]] = []
    aggregates: list[OcelotObject] = []
    dynamic: list[OcelotObject] = []
    glob: OcelotObject | None = None
    eras: set[str] = set()
    for file in files:
        try:
            data = parse_jsonc(read_text_file(file))
        except ConfigError as error:
            raise error if error.file else error.with_file(file) from None
        top = OcelotObject.of(data, file, "", registry)
        name = "Routes" if top.has("Routes") or not top.has("ReRoutes") else "ReRoutes"
        if name == "Routes" and top.has("ReRoutes"):
            top.raw("ReRoutes")
            report.ignored(
                file, top.at("ReRoutes"), "the file has Routes too: Ocelot 16.0 and later read Routes only"
            )
        if top.has(name):
            eras.add(name)
        routes.append((file, top.children(name, registry)))
        aggregates += top.children("Aggregates", registry)
        dynamic += top.children("DynamicRoutes" if top.has("DynamicRoutes") else "DynamicReRoutes", registry)
        merged = len(files) > 1
        if not merged or os.path.basename(file).lower() == "ocelot.global.json":
            glob = top.child("GlobalConfiguration", registry) or glob
        elif top.raw("GlobalConfiguration"):
            report.ignored(
                file, "GlobalConfiguration", "Ocelot merges GlobalConfiguration from ocelot.global.json only"
            )
    era = " and ".join(
        f"{name} ({'Ocelot 16.0 and later' if name == 'Routes' else 'Ocelot before 16.0'})"
        for name in sorted(eras)
    )
    report.notes.append(
        f"read as: {era or 'no routes'}"
        + ("; files merged as Ocelot merges ocelot.*.json" if len(files) > 1 else "")
    )
    return routes, aggregates, dynamic, glob


def translate_files(
    paths: Sequence[str], *, environment: str = "Development", bind: str | None = None
) -> Translation:
    """Translate Ocelot files (merged when several, or a folder's ``ocelot.*.json``)."""
    files = expand(paths, environment)
    report = Report(files)
    registry = Registry()
    route_lists, aggregates, dynamic, glob_obj = _sections(files, registry, report)
    glob = GlobalConfiguration(glob_obj, registry)
    listener = glob.listener(bind, report)
    glob.report_keys(report)
    discovery = ServiceDiscovery(glob.section("ServiceDiscoveryProvider"))
    discovery.report(report)
    context = Context(glob, registry, report, UpstreamRegistry(), discovery)
    drafts: list[RouteDraft] = []
    order = 0
    modern_by_file: dict[str, bool] = {}
    for file, routes in route_lists:
        limited = routes + [entry for entry in dynamic if entry.file == file]
        modern, why = is_modern_rate_limiting(limited, glob_obj)
        modern_by_file[file] = modern
        if any(route.peek("RateLimitOptions") or route.peek("RateLimitRule") for route in limited) or (
            glob_obj and glob_obj.peek("RateLimitOptions")
        ):
            report.notes.append(f"rate limiting in {os.path.basename(file)} read {why}")
        for route in routes:
            draft = translate_route(route, order, modern, context)
            order += 1
            if draft is not None:
                drafts.append(draft)
    by_key: dict[str, RouteDraft] = {}
    for draft in drafts:
        if draft.key is not None:
            by_key.setdefault(draft.key, draft)
    for aggregate in aggregates:
        draft = translate_aggregate(aggregate, order, by_key, context)
        order += 1
        if draft is not None:
            drafts.append(draft)
    routed_statically = bool(aggregates) or any(routes for _, routes in route_lists)
    drafts += translate_dynamic_routes(dynamic, routed_statically, order, modern_by_file, context)
    order_routes(drafts, report)
    report.notes.append(
        "fastgw answers 405 with Allow for a known path asked with another method (Ocelot: 404), and 404 for"
        " no route"
    )
    _report_unread(registry, report)
    kept = [route for draft in drafts if not draft.left_out for route in draft.routes]
    used = {route["upstream"] for route in kept if "upstream" in route}
    used |= {b["upstream"] for route in kept for b in route.get("aggregate", {}).get("backends", [])}
    upstreams = {name: up for name, up in context.upstreams.upstreams.items() if name in used}
    document: dict[str, Any] = {"listeners": [listener]}
    if any("discovery" in upstream for upstream in upstreams.values()) and discovery.provider:
        document["registries"] = {discovery.provider: discovery.registry}
    document.update(upstreams=upstreams, routes=kept)
    origins = {
        route["id"]: f"{draft.obj.file}: {draft.obj.path}"
        for draft in drafts
        if not draft.left_out
        for route in draft.routes
    }
    return Translation(_escape(document), report, origins)


def _report_unread(registry: Registry, report: Report) -> None:
    for obj in registry.objects:
        for key in obj.unread():
            if key.casefold() not in _KNOWN_KEYS:
                report.ignored(obj.file, obj.at(key), "not an Ocelot key (Ocelot ignores it too)")


def _escape(node: Any) -> Any:
    """Every ``$`` doubled (fastgw substitutes ``${VAR}``), but for the JWT settings it made."""
    if isinstance(node, str):
        return node if _ENV_REFERENCE.match(node) else node.replace("$", "$$")
    if isinstance(node, dict):
        return {key: _escape(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_escape(value) for value in node]
    return node
