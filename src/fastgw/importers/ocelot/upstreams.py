"""Where a route's requests go: scheme, hosts or service, balancer, circuit breaker, timeouts,
connection options.

Ocelot keeps these per route; fastgw per named upstream, shared by the routes that name it. A
route's scheme, hosts (or service), balancer, breaker and pool options make its upstream; routes
with the same ones share one (named after the service, else the first host: ``localhost-5001``).

- ``DownstreamScheme`` ``https`` -> ``tls: true`` (verified against the system's CA store, as
  .NET's HttpClient verifies); with ``DangerousAcceptAnyServerCertificateValidator``,
  ``tls: {insecure_skip_verify: true}``. ``ws`` and ``wss`` make WebSocket routes
  (``websocket: true``) to a plain or a TLS upstream, the same way.
- ``DownstreamHostAndPorts`` (``DownstreamHost``/``DownstreamPort`` in Ocelot's oldest files):
  the targets, unless the route has a ``ServiceName`` (``discovery``: its instances come from the
  registry). Without ``LoadBalancerOptions`` (or with ``NoLoadBalancer``) Ocelot sends every
  request to the first host: so does the translation, and the report names the others; with a
  registry Ocelot takes the first instance listed, which fastgw cannot name: it balances them.
- ``LoadBalancerOptions.Type`` (the oldest files: ``LoadBalancer``): ``RoundRobin`` ->
  ``round_robin``, ``LeastConnection`` -> ``least_conn``, ``CookieStickySessions`` (``Key``, the
  session cookie) -> ``{hash: "cookie:KEY"}``: the cookie's value picks the target consistently,
  in every worker and instance, with no session table to expire (``Expiry``).
- ``QoSOptions``: ``MinimumThroughput`` (formerly ``ExceptionsAllowedBeforeBreaking``) failures in
  a row open the breaker, or ``FailureRatio`` of at least that many requests in
  ``SamplingDuration`` (ms); it stays open ``BreakDuration`` (formerly ``DurationOfBreak``, ms;
  500 ms or less means 5 s since Ocelot 23.3). ``Timeout`` (formerly ``TimeoutValue``, ms) wins
  over the route's ``Timeout`` (seconds), which wins over the global one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from fastgw.importers.ocelot.discovery import ServiceDiscovery
from fastgw.importers.ocelot.global_config import GlobalConfiguration, Layered
from fastgw.importers.ocelot.reading import OcelotObject, Registry, is_host
from fastgw.importers.ocelot.report import Report

__all__ = ["DownstreamScheme", "UpstreamRegistry", "downstream_scheme", "route_timeouts", "upstream_of"]

_BALANCERS = {"roundrobin": "round_robin", "leastconnection": "least_conn"}
_SESSION_COOKIE = ".AspNetCore.Session"  # CookieStickySessions' default Key
_MAX_INT = 2_147_483_647


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:g}s"


class UpstreamRegistry:
    """The upstreams made so far, by content: a route naming the same targets and options shares."""

    __slots__ = ("by_content", "upstreams")

    def __init__(self) -> None:
        self.upstreams: dict[str, dict[str, Any]] = {}
        self.by_content: dict[bytes, str] = {}

    def name_for(self, upstream: dict[str, Any]) -> str:
        content = orjson.dumps(upstream, option=orjson.OPT_SORT_KEYS)
        name = self.by_content.get(content)
        if name is None:
            discovery = upstream.get("discovery")
            # named after the service it discovers, else after its first target (localhost-5001)
            first = (discovery.get("service") or discovery["app"]) if discovery else upstream["targets"][0]
            base = re.sub(r"[^A-Za-z0-9._-]+", "-", first.replace("]:", "-").strip("[]").replace(":", "-"))
            name, n = base, 2
            while name in self.upstreams:
                name, n = f"{base}-{n}", n + 1
            self.upstreams[name] = upstream
            self.by_content[content] = name
        return name


def _targets(route: OcelotObject, registry: Registry, report: Report) -> list[str]:
    """``host:port`` of each listed host, in order."""
    found: list[str] = []
    for entry in route.children("DownstreamHostAndPorts", registry):
        host, port = entry.text("Host"), entry.integer("Port")
        if not host or not is_host(host):
            raise entry.error("Host", "a host name or IP address", entry.raw("Host"))
        if port is None or not 1 <= port <= 65535:
            raise entry.error("Port", "a port from 1 to 65535", entry.raw("Port"))
        found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if route.has("DownstreamHost"):  # Ocelot 1.x and 2.x: one host
        host, port = route.text("DownstreamHost"), route.integer("DownstreamPort") or 80
        if not host or not is_host(host):
            raise route.error("DownstreamHost", "a host name or IP address", route.raw("DownstreamHost"))
        found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        report.mapped(
            route.file, route.at("DownstreamHost"), f"{found[-1]} (Ocelot 1.x/2.x spelling of one host)"
        )
        if route.has("DownstreamPort"):
            report.mapped(route.file, route.at("DownstreamPort"), f"{port}: the port of {host}")
    else:
        route.raw("DownstreamPort")
    return found


def _balance(
    route: OcelotObject, options: Layered, targets: list[str] | None, report: Report
) -> tuple[list[str], object | None]:
    """The listed targets to use and the fastgw ``balance`` (None: the default, or a single
    target); ``targets`` is None for a route whose instances come from a registry."""
    kind = options.text("Type") if options else None
    at = route.at("LoadBalancerOptions") + options.where()
    if kind is None and route.has("LoadBalancer"):
        kind, at = route.text("LoadBalancer"), route.at("LoadBalancer")
    else:
        route.raw("LoadBalancer")
    key, expiry = options.text("Key"), options.integer("Expiry")
    lowered = (kind or "").lower()
    if lowered in ("", "noloadbalancer"):
        if options and not kind:
            report.mapped(route.file, at, "no Type: no balancer")
        if targets is None:
            report.approximated(
                route.file,
                at if kind else route.at("LoadBalancerOptions"),
                f"{kind or 'absent'}: Ocelot sends every request to the first instance the registry lists;"
                " fastgw balances round robin over the instances (the order a registry lists them in is no"
                " choice of one)",
            )
            return [], None
        if len(targets) > 1:
            report.mapped(
                route.file,
                route.at("DownstreamHostAndPorts"),
                f"{kind or 'no balancer'}: every request goes to the first host, {targets[0]}, as in Ocelot"
                f" ({', '.join(targets[1:])} unused; set LoadBalancerOptions to use them)",
            )
        if kind:
            report.mapped(route.file, at, f"{kind}: the first host only")
        return targets[:1], None
    if targets is not None and len(targets) == 1:
        report.mapped(route.file, at, f"{kind} over one host: nothing to balance")
        return targets, None
    targets = targets or []
    if lowered in _BALANCERS:
        report.mapped(route.file, at, f"{kind} -> balance: {_BALANCERS[lowered]}")
        return targets, _BALANCERS[lowered]
    if lowered == "cookiestickysessions":
        cookie = key or _SESSION_COOKIE
        report.approximated(
            route.file,
            at,
            f"{kind} on cookie {cookie!r} -> balance: {{hash: cookie:{cookie}}}: the cookie's value picks the"
            " host by consistent hashing, the same in every worker and instance, instead of an in-memory"
            f" session table kept {_seconds(expiry if expiry is not None else 1_200_000)} (Expiry); requests"
            " without the cookie go round robin (Ocelot sent them all to one host)",
        )
        return targets, {"hash": f"cookie:{cookie}"}
    report.approximated(
        route.file,
        at,
        f"{kind!r} is a custom C# balancer; fastgw balances round robin here (balance: round_robin)",
    )
    return targets, "round_robin"


def _breaker(route: OcelotObject, qos: Layered, report: Report) -> dict[str, Any] | None:
    """The fastgw breaker of ``QoSOptions``, or None when it has none."""
    old_failures, failures = qos.integer("ExceptionsAllowedBeforeBreaking"), qos.integer("MinimumThroughput")
    threshold = old_failures if old_failures is not None else failures
    old_break, new_break = qos.integer("DurationOfBreak"), qos.integer("BreakDuration")
    duration = old_break if old_break is not None else new_break
    ratio, sampling = qos.number("FailureRatio"), qos.integer("SamplingDuration")
    at = route.at("QoSOptions") + qos.where()
    if threshold is None or threshold <= 0:
        if qos:
            report.mapped(route.file, at, "no MinimumThroughput: no circuit breaker")
        return None
    breaker: dict[str, Any] = {}
    if duration is None:
        duration_note = "5s (Ocelot's default BreakDuration)"
        duration = 5000
    elif duration <= 500:
        duration_note = f"5s ({duration} ms is at most 500 ms, which Ocelot 23.3 and later turn into 5 s)"
        duration = 5000
    else:
        duration_note = _seconds(duration)
    breaker["open_for"] = _seconds(duration)
    if ratio is not None and sampling is not None and 0 < ratio <= 1:
        breaker.update(
            failures=1000, failure_ratio=ratio, window=_seconds(max(sampling, 501)), min_requests=threshold
        )
        how = f"opens when {ratio:g} of at least {threshold} requests in {_seconds(sampling)} failed"
    else:
        breaker["failures"] = min(threshold, 1000)
        how = f"opens after {threshold} failures in a row"
    report.approximated(
        route.file,
        at,
        f"breaker: {how}, stays open {duration_note}, then lets one trial request through; fastgw keeps a"
        " breaker per target, so one failing host of several is taken out alone (Ocelot's is per route),"
        " and an open circuit answers 503 with Retry-After",
    )
    return breaker


def route_timeouts(
    route: OcelotObject, qos: Layered, glob: GlobalConfiguration, report: Report
) -> dict[str, str] | None:
    """The route's ``timeouts``: how long the upstream may take to answer (connect and head)."""
    qos_ms = qos.integer("TimeoutValue")
    if qos_ms is None:
        qos_ms = qos.integer("Timeout")
    owner, name = glob.scalar(route, "Timeout")
    seconds = owner.integer(name) if owner is not None else None
    if qos_ms is not None and qos_ms > 0:
        value, at = _seconds(qos_ms), route.at("QoSOptions") + qos.where()
        if seconds:
            report.mapped(
                route.file, route.at("Timeout"), f"{seconds}s: the QoSOptions timeout wins, as in Ocelot"
            )
    elif seconds is not None and seconds > 0:
        value = f"{seconds}s"
        at = route.at("Timeout") + ("" if owner is route else " (from GlobalConfiguration)")
    else:
        return None
    timeouts = {"head": value}
    if float(value[:-1]) < 5:
        timeouts["connect"] = value
    report.approximated(
        route.file,
        at,
        f"{value}: the upstream must answer (its response head) within it -> timeouts.head; a timeout answers"
        " 504 Gateway Timeout, the status for it (Ocelot answers 503)",
    )
    return timeouts


def _pool(route: OcelotObject, handler: Layered, report: Report) -> dict[str, Any] | None:
    if not handler:
        return None
    at = route.at("HttpHandlerOptions") + handler.where()
    report.mapped(route.file, at, "fastgw keeps pooled keep-alive connections to each target (upstream pool)")
    if handler.flag("AllowAutoRedirect"):
        report.unsupported(
            route.file,
            at + ".AllowAutoRedirect",
            "true: fastgw passes redirects to the client, never follows them",
        )
    if handler.flag("UseCookieContainer"):
        report.approximated(
            route.file,
            at + ".UseCookieContainer",
            "true: fastgw keeps no cookie jar; cookies travel between client and upstream (Ocelot's jar"
            " shares"
            " one client's cookies with every other, its issue 274)",
        )
    if handler.flag("UseProxy"):
        report.unsupported(route.file, at + ".UseProxy", "true: fastgw connects to the targets directly")
    if handler.flag("UseTracing"):
        report.mapped(
            route.file,
            at + ".UseTracing",
            "true: fastgw continues or starts a W3C traceparent on every request (spans: tracing.otlp)",
        )
    lifetime = handler.integer("PooledConnectionLifetimeSeconds")
    if lifetime is not None:
        report.approximated(
            route.file,
            at + ".PooledConnectionLifetimeSeconds",
            f"{lifetime}: fastgw closes pooled connections idle for pool.idle_timeout (50s by default) and"
            " does"
            " not bound how long a busy one lives",
        )
    handler.flag("UseDefaultCredentials")
    most = handler.integer("MaxConnectionsPerServer")
    if most is None or most >= _MAX_INT or most <= 0:
        return None
    pool = {"max_connections": min(most, 100_000)}
    report.mapped(route.file, at + ".MaxConnectionsPerServer", f"{most} -> pool.max_connections per target")
    return pool


@dataclass(frozen=True, slots=True)
class DownstreamScheme:
    """What a route's ``DownstreamScheme`` makes of it: the upstream's ``tls`` (None: plain) and
    whether the route is a WebSocket route (``ws``, ``wss``)."""

    tls: object
    websocket: bool


_VERIFIED = (
    "the upstream's certificate is verified against the system's CA store and must name the host connected"
    " to (sent as SNI), as .NET's {} checks it"
)
_SCHEMES = {  # scheme -> (encrypted, WebSocket, what the report says it maps to)
    "http": (False, False, "http: plain HTTP/1.1 to the upstream"),
    "https": (True, False, "https -> tls: " + _VERIFIED.format("HttpClient")),
    "ws": (
        False,
        True,
        "ws -> websocket: true, to a plain upstream: the handshake is routed like any request, then the two"
        " connections are spliced byte for byte",
    ),
    "wss": (True, True, "wss -> websocket: true, with tls: " + _VERIFIED.format("ClientWebSocket")),
}
_WEBSOCKET_DIFFERENCES = (
    "Ocelot ends each WebSocket itself and pings both sides, so a quiet connection stays open; fastgw passes"
    " the bytes through and closes a tunnel with no byte either way for tunnel.idle_timeout (5m by"
    " default: set it on the route if neither side pings more often). A plain request to the route goes"
    " to the upstream over HTTP, where Ocelot fails it (its HTTP client cannot send to a ws URL)"
)


def downstream_scheme(
    route: OcelotObject, glob: GlobalConfiguration, report: Report
) -> DownstreamScheme | None:
    """``DownstreamScheme`` (the route's, else the global one) and
    ``DangerousAcceptAnyServerCertificateValidator``: how fastgw sends the route's requests, or
    None when it cannot (the route is left out)."""
    owner, name = glob.scalar(route, "DownstreamScheme")
    scheme = (owner.text(name) if owner is not None else None) or "http"
    lowered = scheme.lower()
    dangerous = route.flag("DangerousAcceptAnyServerCertificateValidator")
    where = None if owner is None else (route.file, route.at(name))
    if owner is not None and owner is not route:
        where = (route.file, route.at(name) + " (from GlobalConfiguration)")
    known = _SCHEMES.get(lowered)
    if known is None:
        if where is not None:
            report.unsupported(*where, f"{scheme!r} is not a scheme Ocelot sends; the route is left out")
        return None
    encrypted, websocket, detail = known
    if where is not None:
        report.mapped(*where, detail)
        if websocket:
            report.approximated(*where, _WEBSOCKET_DIFFERENCES)
    if dangerous:
        _report_dangerous(route, encrypted, report)
    tls: object = ({"insecure_skip_verify": True} if dangerous else True) if encrypted else None
    return DownstreamScheme(tls, websocket)


def _report_dangerous(route: OcelotObject, encrypted: bool, report: Report) -> None:
    at = route.at("DangerousAcceptAnyServerCertificateValidator")
    if not encrypted:
        report.mapped(route.file, at, "true, with a plain DownstreamScheme: there is no certificate to check")
        return
    report.approximated(
        route.file,
        at,
        "true -> tls: {insecure_skip_verify: true}: the upstream's certificate is NOT checked, as in Ocelot,"
        " so anyone on the network path can pose as the upstream and read the traffic (fastgw warns about it"
        " at every start and reload, and fastgw check lists the upstream as NOT VERIFIED). Instead trust the"
        " CA that signed the upstream's certificate: tls: {ca: upstream-ca.pem} (a self-signed certificate"
        " is its own CA), with server_name when the certificate names another host",
    )


def upstream_of(
    route: OcelotObject,
    route_key: str | None,
    glob: GlobalConfiguration,
    registry: Registry,
    upstreams: UpstreamRegistry,
    report: Report,
    *,
    discovery: ServiceDiscovery,
    tls: object,
) -> tuple[str | None, Layered]:
    """The name of the route's fastgw upstream (None when it has nowhere to send), and its QoS
    block (for the timeouts). ``tls`` is what ``downstream_scheme`` made of the route's scheme."""
    targets = _targets(route, registry, report)
    qos = glob.options(route, "QoSOptions", route_key)
    balancer = glob.options(route, "LoadBalancerOptions", route_key)
    handler = glob.options(route, "HttpHandlerOptions", route_key)
    usable, discovered = discovery.route_discovery(route, targets, report)
    if not usable:
        return None, qos
    upstream: dict[str, Any]
    if discovered is not None:
        chosen, balance = _balance(route, balancer, None, report)
        upstream = {"discovery": discovered}
    elif targets:
        chosen, balance = _balance(route, balancer, targets, report)
        if len(chosen) == 1 and len(targets) == 1:
            report.mapped(route.file, route.at("DownstreamHostAndPorts"), f"target {chosen[0]}")
        elif balance is not None:
            report.mapped(route.file, route.at("DownstreamHostAndPorts"), f"targets {', '.join(chosen)}")
        upstream = {"targets": chosen}
    else:
        report.unsupported(
            route.file,
            route.at("DownstreamHostAndPorts"),
            "no hosts and no service: nowhere to send; left out",
        )
        return None, qos
    if balance is not None:
        upstream["balance"] = balance
    if tls is not None:
        upstream["tls"] = tls
    breaker = _breaker(route, qos, report)
    if breaker is not None:
        upstream["breaker"] = breaker
    pool = _pool(route, handler, report)
    if pool is not None:
        upstream["pool"] = pool
    return upstreams.name_for(upstream), qos
