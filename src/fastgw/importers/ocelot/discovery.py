"""``ServiceName`` with ``GlobalConfiguration.ServiceDiscoveryProvider``: a route's instances from a
registry, as fastgw's ``registries`` and an upstream's ``discovery``.

Ocelot's rules (``ServiceDiscoveryProviderFactory``, ``ServiceProviderConfigurationCreator`` and
its Consul and Eureka providers):

- A route with a ``ServiceName`` asks the provider for the service's instances and never uses its
  ``DownstreamHostAndPorts`` (since 11.0 the name alone turns discovery on; before it,
  ``UseServiceDiscovery: true`` did too).
- There is one provider, in ``GlobalConfiguration``. ``Type`` defaults to Consul, and so does a
  route with a ``ServiceName`` in a file with no provider at all. ``Consul`` asks on every
  request, ``PollConsul`` every ``PollingInterval`` ms; both ask ``/v1/health/service/<name>``
  for the passing instances, with no tag, at ``Scheme://Host:Port`` (``http``, ``localhost``,
  8500 by default), with ``Token`` as the ACL token. fastgw asks the same question and then
  follows the answer with blocking queries.
- ``Eureka`` finds the registry through Steeltoe's settings in appsettings.json
  (``eureka:client:serviceUrl``, ``http://localhost:8761/eureka/`` by default), not through this
  file: the translation makes the address a setting, ``${FASTGW_EUREKA_URL:-...}``.
- Kubernetes (``Kube``, ``PollKube``, ``WatchKube``), ``ServiceFabric`` and custom C# providers
  have no fastgw counterpart: their routes are left out (they do not use listed hosts either).
- ``ServiceNamespace`` and the provider's ``Namespace`` are read by the Kubernetes providers only;
  ``ConfigurationKey`` names the configuration kept in Consul's KV store, not a service.
"""

from __future__ import annotations

import re
from typing import Any

from fastgw.importers.ocelot.reading import OcelotObject, is_host
from fastgw.importers.ocelot.report import Report

__all__ = ["EUREKA_URL_SETTING", "ServiceDiscovery"]

EUREKA_URL_SETTING = "${FASTGW_EUREKA_URL:-http://localhost:8761/eureka}"  # Steeltoe's default
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")  # what fastgw's consul and eureka accept
_KUBERNETES = ("kube", "pollkube", "watchkube")
_KEYS = ("Type", "Scheme", "Host", "Port", "Token", "ConfigurationKey", "PollingInterval", "Namespace")


class ServiceDiscovery:
    """The global provider, read once: the fastgw registry it becomes, or why there is none."""

    __slots__ = ("address", "kind", "obj", "provider", "refusal", "registry")

    def __init__(self, obj: OcelotObject | None) -> None:
        self.obj = obj
        self.kind = (obj.text("Type") if obj is not None else None) or "Consul"  # Ocelot's default
        lowered = self.kind.lower()
        self.provider: str | None = None  # the fastgw provider: consul or eureka
        self.registry: dict[str, Any] = {}
        self.address = ""  # where the registry is, for the report
        self.refusal: str | None = None  # why a route with a ServiceName cannot be translated
        if lowered in ("consul", "pollconsul"):
            self.provider = "consul"
            self.registry = self._consul()
        elif lowered == "eureka":
            self.provider = "eureka"
            self.registry = {"url": EUREKA_URL_SETTING}
            self.address = "FASTGW_EUREKA_URL"
        elif lowered in _KUBERNETES:
            self.refusal = (
                "fastgw has no Kubernetes provider; inside the cluster a headless Service's DNS"
                " records list its pods: an upstream with discovery: {provider: dns, name:"
                " <service>.<namespace>.svc.cluster.local, port: <port>} (or type: SRV) follows them"
            )
        elif lowered == "servicefabric":
            self.refusal = (
                "fastgw has no Service Fabric provider; Ocelot sends these requests to the reverse proxy at"
                " Host:Port with /ServiceName in front of the path: list that proxy under"
                " DownstreamHostAndPorts and put /ServiceName in DownstreamPathTemplate instead"
            )
        else:
            self.refusal = f"{self.kind!r} is a custom C# provider; fastgw has Consul, Eureka, etcd and DNS"

    @property
    def dynamic_routing(self) -> bool:
        """Ocelot routes by service name when there is no static route and the provider names a
        Port (``DownstreamRouteProviderFactory``: Host and Type have defaults, Port has not)."""
        return self.obj is not None and (self.obj.integer("Port") or 0) > 0

    def _consul(self) -> dict[str, Any]:
        obj = self.obj
        if obj is None:
            self.address = "http://localhost:8500"
            return {"address": self.address}
        scheme = (obj.text("Scheme") or "http").lower()
        if scheme not in ("http", "https"):
            raise obj.error("Scheme", "http or https (how to reach Consul)", obj.raw("Scheme"))
        host = obj.text("Host") or "localhost"
        if not is_host(host):
            raise obj.error("Host", "a host name or IP address", obj.raw("Host"))
        port = obj.integer("Port") or 0
        if port > 65535 or port < 0:
            raise obj.error("Port", "a port from 1 to 65535", obj.raw("Port"))
        self.address = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port or 8500}"
        registry: dict[str, Any] = {"address": self.address}
        token = obj.text("Token")
        if token:
            registry["token"] = token
        return registry

    # -- the report of the provider's keys ---------------------------------------------------------

    def report(self, report: Report) -> None:
        """One entry for the provider, and one for each key that needs a word of its own."""
        obj = self.obj
        if obj is None:
            return
        for key in _KEYS:
            obj.raw(key)
        if self.refusal is not None:
            report.unsupported(
                obj.file, obj.path, f"{self.kind}: {self.refusal}; the routes with a ServiceName are left out"
            )
        elif self.provider == "consul":
            self._report_consul(obj, report)
        else:
            self._report_eureka(obj, report)
        if obj.text("ConfigurationKey"):
            report.unsupported(
                obj.file,
                obj.at("ConfigurationKey"),
                f"{obj.text('ConfigurationKey')!r}: Ocelot's configuration kept in Consul's KV store under"
                " this key; fastgw reads its configuration from a file or from etcd (fastgw run --etcd URL"
                " --key KEY, fed by fastgw config push)",
            )
        if obj.text("Namespace") and self.kind.lower() not in _KUBERNETES:
            report.ignored(obj.file, obj.at("Namespace"), "read by Ocelot's Kubernetes providers only")

    def _report_consul(self, obj: OcelotObject, report: Report) -> None:
        polled = self.kind.lower() == "pollconsul"
        interval = obj.integer("PollingInterval")
        asked = f"every {interval} ms" if polled and interval else "on every request"
        report.approximated(
            obj.file,
            obj.path,
            f"{self.kind} at {self.address} -> registries.consul: fastgw asks for the passing instances"
            " of each service as Ocelot does, then follows them with blocking queries, so a change"
            f" applies as soon as Consul has it (Ocelot asked {asked}); while Consul is unreachable or"
            " answers no instance, the last instances known keep serving (Ocelot failed the requests;"
            " discovery.min_targets: 0 follows Consul down to none). Each instance is reached at its"
            " service Address (its node's address when it has none), where Ocelot's default service"
            " builder used the node's name",
        )
        if obj.text("Token"):
            report.mapped(
                obj.file,
                obj.at("Token"),
                "-> registries.consul.token (sent as X-Consul-Token), written into the YAML as it is here;"
                ' better take it from the environment: token: "${CONSUL_HTTP_TOKEN}"',
            )
        if interval and polled:
            report.approximated(
                obj.file,
                obj.at("PollingInterval"),
                f"{interval} ms: fastgw needs no interval (a blocking query returns when the service"
                " changes)",
            )

    def _report_eureka(self, obj: OcelotObject, report: Report) -> None:
        report.approximated(
            obj.file,
            obj.path,
            f"{self.kind} -> registries.eureka with url {EUREKA_URL_SETTING}: Ocelot finds Eureka through"
            " appsettings.json (eureka:client:serviceUrl), which this file does not hold: set"
            " FASTGW_EUREKA_URL to it (or edit registries.eureka.url). fastgw fetches the registry every"
            " 30s with deltas, as Steeltoe's client does, and reaches each UP instance at its port"
            " (securePort is not used)",
        )
        for key in ("Scheme", "Host", "Port"):
            if obj.has(key):
                report.ignored(
                    obj.file,
                    obj.at(key),
                    "Ocelot's Eureka provider takes the registry's address from Steeltoe",
                )

    # -- a route's discovery -----------------------------------------------------------------------

    def route_discovery(
        self, route: OcelotObject, listed: list[str], report: Report
    ) -> tuple[bool, dict[str, Any] | None]:
        """``ServiceName`` (and its companions): whether the route can be translated, and its
        upstream's ``discovery`` (None: no service, the listed hosts are the targets)."""
        service = route.text("ServiceName")
        namespace = route.text("ServiceNamespace")
        flag = route.flag("UseServiceDiscovery")
        if flag is not None and service:
            at = route.at("UseServiceDiscovery")
            if flag:
                report.mapped(
                    route.file, at, "true: obsolete since Ocelot 11.0 (ServiceName alone turns discovery on)"
                )
            else:
                report.approximated(
                    route.file,
                    at,
                    "false: before Ocelot 11.0 this route used its DownstreamHostAndPorts; since 11.0 a"
                    " ServiceName alone turns discovery on, and so does the translation",
                )
        if not service:
            if namespace:
                report.ignored(
                    route.file, route.at("ServiceNamespace"), "without a ServiceName it names nothing"
                )
            return True, None
        at = route.at("ServiceName")
        if self.refusal is not None:
            report.unsupported(
                route.file,
                at,
                f"{service!r} ({self.kind}): {self.refusal}; the route is left out (Ocelot does not use"
                " DownstreamHostAndPorts for it either)",
            )
            return False, None
        if not _SERVICE.fullmatch(service):
            report.unsupported(
                route.file,
                at,
                f"{service!r}: fastgw asks a registry for names of letters, digits, '_', '.', ':' and '-'"
                " (a ServiceName placeholder is Service Fabric's); the route is left out",
            )
            return False, None
        assert self.provider is not None  # no refusal: consul or eureka
        key = "service" if self.provider == "consul" else "app"
        where = "" if self.obj is not None else " (no ServiceDiscoveryProvider: Ocelot's default, Consul)"
        report.mapped(
            route.file,
            at,
            f"{service!r} -> discovery: {{provider: {self.provider}, {key}: {service}}}{where}: the targets"
            " are the service's instances as the registry lists them",
        )
        if listed:
            report.mapped(
                route.file,
                route.at("DownstreamHostAndPorts"),
                f"{', '.join(listed)} unused: with a ServiceName Ocelot asks the registry, not these hosts",
            )
        if namespace:
            report.ignored(
                route.file,
                route.at("ServiceNamespace"),
                f"{namespace!r}: read by Ocelot's Kubernetes providers only ({self.kind} does not use it)",
            )
        return True, {"provider": self.provider, key: service}
