"""``DynamicRoutes``: Ocelot's dynamic routing, as one fastgw route per service the file names.

Ocelot routes dynamically when the configuration has no static route (nor aggregate) and its
``ServiceDiscoveryProvider`` names a ``Port`` (``DownstreamRouteProviderFactory``). The first
segment of a request's path names the service (``/product/items?x=1``: ``product``); the rest of
the path (``/items``, or ``/`` when nothing is left) goes to one of its instances with the query,
whatever the method (``DiscoveryDownstreamRouteFinder``). The ``DynamicRoutes`` entry naming the
service brings options (rate limiting, balancer, QoS, cache, HTTP handler, authentication,
scheme, timeout: the keys of a static route) over the global ones; other services get the global
ones. ``RateLimitRule``, the entries' rate limit before 24.1, wins over ``RateLimitOptions``.

fastgw's routes are written out: each entry becomes what the static route ``/{service}/{everything}``
-> ``/{everything}`` with that ``ServiceName`` becomes (routes ``/product/{*everything}`` and
``/product``, to an upstream discovering ``product``). A service no entry names has no route: the
report says so and how to add one. With static routes, Ocelot never reads ``DynamicRoutes``: the
entries are reported as unused.
"""

from __future__ import annotations

from dataclasses import replace

from fastgw.importers.ocelot.reading import OcelotObject
from fastgw.importers.ocelot.report import Report, Status
from fastgw.importers.ocelot.routes import Context, RouteDraft, translate_route

__all__ = ["translate_dynamic_routes"]

# The keys that make an entry a static route; their own report entries would name keys the file
# does not have, so a mapping of them is said once, on ServiceName.
_MADE = ("UpstreamPathTemplate", "DownstreamPathTemplate", "RouteIsCaseSensitive")


def translate_dynamic_routes(
    entries: list[OcelotObject],
    routed_statically: bool,
    order: int,
    modern_by_file: dict[str, bool],
    context: Context,
) -> list[RouteDraft]:
    """The drafts of the services ``DynamicRoutes`` names, when Ocelot routes dynamically
    (``modern_by_file``: which files' rate limiting reads as Ocelot 24.1)."""
    report, discovery = context.report, context.discovery
    if routed_statically or not discovery.dynamic_routing:
        why = "the configuration has static routes" if routed_statically else "it names no Port"
        for entry in entries:
            for key in entry.unread():
                entry.raw(key)
            report.ignored(
                entry.file,
                entry.path,
                "Ocelot routes by DynamicRoutes only when there is no static route and"
                f" ServiceDiscoveryProvider names a Port; {why}: never used",
            )
        return []
    routes = [route for entry in entries if (route := _as_static_route(entry, context)) is not None]
    drafts: list[RouteDraft] = []
    for index, route in enumerate(routes):
        draft = _translate(route, order + index, modern_by_file[route.file], context)
        if draft is not None:
            drafts.append(draft)
    _report_dynamic_routing(entries, routes, discovery.obj, report)
    return drafts


def _as_static_route(entry: OcelotObject, context: Context) -> OcelotObject | None:
    """The entry as the static route Ocelot's dynamic routing makes of it."""
    service = entry.text("ServiceName")
    if not service:
        for key in entry.unread():
            entry.raw(key)
        context.report.unsupported(entry.file, entry.path, "no ServiceName: no service to route to; left out")
        return None
    made = {name.casefold() for name in _MADE}
    data = {key: value for key, value in entry.items().items() if key.casefold() not in made}
    rule = next((key for key in data if key.casefold() == "ratelimitrule"), None)
    if rule is not None:
        value = data.pop(rule)
        for key in [key for key in data if key.casefold() == "ratelimitoptions"]:
            del data[key]
        if value is not None:
            data["RateLimitOptions"] = value
            context.report.mapped(
                entry.file,
                entry.at(rule),
                "read as RateLimitOptions (its name before Ocelot 24.1), over the entry's own as Ocelot"
                " reads it",
            )
    for key in entry.unread():
        entry.raw(key)  # the copy below is the one read
    data.update(
        UpstreamPathTemplate=f"/{service}/{{everything}}",
        DownstreamPathTemplate="/{everything}",
        RouteIsCaseSensitive=True,  # the service name is compared as written
    )
    return OcelotObject(data, entry.file, entry.path, context.registry)


def _translate(route: OcelotObject, order: int, modern: bool, context: Context) -> RouteDraft | None:
    report = context.report
    service = route.text("ServiceName")
    report.mapped(
        route.file,
        route.at("ServiceName"),
        f"dynamic routing: requests to /{service}/... and /{service}, any method, go to the service's"
        " instances with the rest of the path (/ when nothing is left) and the query, as Ocelot sends them",
    )
    own = Report(report.files)
    draft = translate_route(route, order, modern, replace(context, report=own))
    made = {route.at(name) for name in _MADE}
    for entry in own.entries:
        if entry.key_path not in made or entry.status not in (Status.MAPPED, Status.APPROXIMATED):
            report.add(entry.file, entry.key_path, entry.status, entry.detail)
    report.headings.update(own.headings)
    return draft


def _report_dynamic_routing(
    entries: list[OcelotObject], routes: list[OcelotObject], provider: OcelotObject | None, report: Report
) -> None:
    file = entries[0].file if entries else (provider.file if provider is not None else report.files[0])
    names = ", ".join(f"/{route.text('ServiceName')}/..." for route in routes)
    if names:
        report.approximated(
            file,
            "DynamicRoutes",
            f"dynamic routing: Ocelot sends /<service>/... to any service the registry knows; fastgw routes"
            f" the services named here ({names}), and a request naming another answers 404: add an entry"
            " (a ServiceName is enough) for each service to route",
        )
    else:
        report.unsupported(
            file,
            "DynamicRoutes",
            "dynamic routing (no static route, and a ServiceDiscoveryProvider with a Port): Ocelot sends"
            " /<service>/... to any service the registry knows; fastgw routes only the services named in"
            " DynamicRoutes, and none is: add an entry (a ServiceName is enough) for each service to route",
        )
