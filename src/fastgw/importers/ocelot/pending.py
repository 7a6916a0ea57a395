"""PENDING MAPPINGS: the Ocelot keys whose fastgw counterpart does not exist yet.

Everything the translation cannot map *today* but will once fastgw has the feature lives here, so
that completing it is one file:

- upstream TLS (``DownstreamScheme: https``/``wss``, ``DangerousAcceptAnyServerCertificateValidator``,
  which is to become the explicit ``unsafe_`` insecure-upstream-TLS option): a route to an https
  upstream is left out, never sent in plain text;
- service discovery (``ServiceName``, ``ServiceNamespace``, ``GlobalConfiguration.
  ServiceDiscoveryProvider`` with Consul, Eureka, Kubernetes..., and ``DynamicRoutes``): a route
  with no listed hosts is left out; one with hosts keeps them (Ocelot would ask the provider).

Each function reports what it decided (status "not supported yet", with why) and tells the route
translation whether it can go on.
"""

from __future__ import annotations

from fastgw.importers.ocelot.reading import OcelotObject
from fastgw.importers.ocelot.report import Report

__all__ = [
    "check_dangerous_certificates",
    "check_discovery",
    "check_scheme",
    "report_dynamic_routes",
    "report_service_discovery_provider",
]

_TLS = (
    "fastgw does not speak TLS to upstreams yet; the route is left out rather than sent in plain text"
    " (until then, point it at the service's plain-HTTP port with DownstreamScheme http)"
)
_DISCOVERY = "fastgw has no service discovery yet (Consul, Eureka, Kubernetes...)"


def check_scheme(scheme: str, where: OcelotObject, key: str, report: Report) -> bool:
    """``DownstreamScheme``: True when fastgw can send the route's requests that way."""
    lowered = scheme.lower()
    if lowered == "http":
        report.mapped(where.file, where.at(key), "http: fastgw's upstream connections are plain HTTP/1.1")
        return True
    if lowered in ("https", "wss"):
        report.pending(where.file, where.at(key), f"{scheme}: {_TLS}")
        return False
    if lowered == "ws":
        report.unsupported(
            where.file, where.at(key), "ws: fastgw does not proxy WebSocket upgrades; the route is left out"
        )
        return False
    report.unsupported(
        where.file, where.at(key), f"{scheme!r} is not a scheme Ocelot sends; the route is left out"
    )
    return False


def check_dangerous_certificates(route: OcelotObject, scheme: str, report: Report) -> None:
    """``DangerousAcceptAnyServerCertificateValidator``: meaningful only with TLS upstreams."""
    if not route.flag("DangerousAcceptAnyServerCertificateValidator"):
        return
    key = route.at("DangerousAcceptAnyServerCertificateValidator")
    if scheme.lower() in ("https", "wss"):
        report.pending(
            route.file,
            key,
            "true: it is to become fastgw's explicit unsafe_ option for upstream TLS; " + _TLS,
        )
    else:
        report.mapped(
            route.file, key, f"true, with DownstreamScheme {scheme}: there is no certificate to check"
        )


def check_discovery(
    route: OcelotObject, provider: OcelotObject | None, has_hosts: bool, report: Report
) -> bool:
    """``ServiceName``/``ServiceNamespace`` (with the global ``ServiceDiscoveryProvider``): True
    when the route's listed ``DownstreamHostAndPorts`` can stand in for the provider."""
    service = route.text("ServiceName")
    namespace = route.text("ServiceNamespace")
    if namespace:
        report.pending(route.file, route.at("ServiceNamespace"), f"{namespace!r}: {_DISCOVERY}")
    if not service:
        return True
    kind = (provider.text("Type") if provider is not None else None) or "no ServiceDiscoveryProvider"
    if has_hosts:
        report.pending(
            route.file,
            route.at("ServiceName"),
            f"{service!r} ({kind}): {_DISCOVERY}; the route's DownstreamHostAndPorts are used instead",
        )
        return True
    report.pending(
        route.file,
        route.at("ServiceName"),
        f"{service!r} ({kind}): {_DISCOVERY}; the route has no DownstreamHostAndPorts and is left out"
        " (list the service's addresses there to translate it now)",
    )
    return False


def report_service_discovery_provider(provider: OcelotObject, report: Report) -> None:
    """``GlobalConfiguration.ServiceDiscoveryProvider``: every key of it waits for discovery."""
    kind = provider.text("Type")
    for key in ("Scheme", "Host", "Port", "Token", "ConfigurationKey", "PollingInterval", "Namespace"):
        provider.raw(key)
    if kind or provider.has("Host") or provider.integer("Port"):
        report.pending(provider.file, provider.path, f"{kind or 'a provider'}: {_DISCOVERY}")
    else:
        report.mapped(provider.file, provider.path, "empty: no service discovery")


def report_dynamic_routes(routes: list[OcelotObject], report: Report) -> None:
    """``DynamicRoutes`` route by service name through the discovery provider."""
    for route in routes:
        for key in route.unread():
            route.raw(key)
        report.pending(route.file, route.path, f"dynamic routing: {_DISCOVERY}; left out")
