"""Where a translated route's requests go when Ocelot's file says more than hosts: the scheme
(``https`` -> verified upstream TLS, the dangerous validator -> ``insecure_skip_verify``, ``ws`` and
``wss`` -> WebSocket routes to a plain or a TLS upstream), ``ServiceName`` with the
``ServiceDiscoveryProvider`` (Consul, PollConsul, Eureka -> ``registries`` and ``discovery``;
Kubernetes, Service Fabric and custom providers left out), and ``DynamicRoutes`` (one route per
service named, only when Ocelot routes dynamically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw._router import RouteMatch
from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.importers.ocelot import Status, Translation
from fastgw.plan import Plan, compile_plan
from tests.support.exchange import FakeExchange
from tests.support.ocelot_files import entries, ocelot_route, plugin, route_by_id, translate

CONSUL = {"Scheme": "https", "Host": "consul.internal", "Port": 8501, "Type": "Consul", "Token": "t0k$n"}


def compiled(translation: Translation, env: dict[str, str] | None = None) -> Plan:
    """What ``fastgw check`` does with the YAML the translation writes."""
    return compile_plan(
        parse_config(yaml.safe_load(translation.checked_yaml()), "gateway.yaml", env=env or {})
    )


def upstream_of(translation: Translation, route_id: str) -> dict[str, Any]:
    found: dict[str, Any] = translation.document["upstreams"][route_by_id(translation, route_id)["upstream"]]
    return found


def detail(translation: Translation, status: Status, key: str) -> str:
    (entry,) = [e for e in entries(translation, status) if e.key_path == key]
    return entry.detail


# -- DownstreamScheme and upstream TLS --------------------------------------------------------------


def test_an_https_upstream_is_verified_tls_and_not_shared_with_plain_http(tmp_path: Path) -> None:
    document = {"Routes": [ocelot_route("/tls", DownstreamScheme="https"), ocelot_route("/plain")]}
    translation = translate(tmp_path, document)
    assert upstream_of(translation, "tls") == {"targets": ["localhost:51001"], "tls": True}
    assert upstream_of(translation, "plain") == {"targets": ["localhost:51001"]}  # another upstream
    assert "verified against the system's CA store" in detail(
        translation, Status.MAPPED, "Routes[0].DownstreamScheme"
    )
    tls = compiled(translation).upstreams[route_by_id(translation, "tls")["upstream"]].config.tls
    assert tls is not None and not tls.insecure_skip_verify and tls.ca is None


def test_the_dangerous_validator_is_the_explicit_insecure_option_and_says_what_to_do(tmp_path: Path) -> None:
    route = ocelot_route("/tls", DownstreamScheme="https", DangerousAcceptAnyServerCertificateValidator=True)
    translation = translate(tmp_path, {"Routes": [route]})
    assert upstream_of(translation, "tls")["tls"] == {"insecure_skip_verify": True}
    why = detail(translation, Status.APPROXIMATED, "Routes[0].DangerousAcceptAnyServerCertificateValidator")
    assert "NOT checked" in why and "pose as the upstream" in why and "tls: {ca: " in why
    tls = compiled(translation).upstreams[route_by_id(translation, "tls")["upstream"]].config.tls
    assert tls is not None and tls.insecure_skip_verify
    # with plain http there is nothing to check, and nothing is made insecure
    plain = translate(tmp_path, {"Routes": [ocelot_route(DangerousAcceptAnyServerCertificateValidator=True)]})
    assert "tls" not in plain.document["upstreams"]["localhost-51001"]
    assert entries(plain, Status.MAPPED, "Routes[0].DangerousAcceptAnyServerCertificateValidator")


def test_a_global_https_scheme_applies_to_the_routes_without_their_own(tmp_path: Path) -> None:
    document = {
        "Routes": [ocelot_route("/a", DownstreamScheme=None), ocelot_route("/b")],
        "GlobalConfiguration": {"DownstreamScheme": "https"},
    }
    translation = translate(tmp_path, document)
    assert upstream_of(translation, "a")["tls"] is True
    assert "tls" not in upstream_of(translation, "b")
    assert entries(translation, Status.MAPPED, "Routes[0].DownstreamScheme (from GlobalConfiguration)")


@pytest.mark.parametrize(("scheme", "tls"), [("ws", None), ("wss", True), ("WSS", True)])
def test_websocket_routes_go_to_a_plain_or_a_tls_upstream(tmp_path: Path, scheme: str, tls: object) -> None:
    document = {"Routes": [ocelot_route("/ws", DownstreamScheme=scheme), ocelot_route("/plain")]}
    translation = translate(tmp_path, document)
    assert route_by_id(translation, "ws")["websocket"] is True
    assert "websocket" not in route_by_id(translation, "plain")
    assert upstream_of(translation, "ws").get("tls") == tls
    mapped = detail(translation, Status.MAPPED, "Routes[0].DownstreamScheme")
    assert mapped.startswith(f"{scheme.lower()} -> websocket: true")
    differs = detail(translation, Status.APPROXIMATED, "Routes[0].DownstreamScheme")
    assert "tunnel.idle_timeout (5m by default" in differs and "Ocelot fails it" in differs
    routes = {route.id: route for route in compiled(translation).routes}
    assert routes["ws"].config.upgrade == ("websocket",) and routes["plain"].config.upgrade == ()


def test_the_dangerous_validator_on_websocket_routes(tmp_path: Path) -> None:
    dangerous = {"DangerousAcceptAnyServerCertificateValidator": True}
    document = {
        "Routes": [
            ocelot_route("/wss", DownstreamScheme="wss", **dangerous),
            ocelot_route("/ws", DownstreamScheme="ws", **dangerous),
        ]
    }
    translation = translate(tmp_path, document)
    assert upstream_of(translation, "wss")["tls"] == {"insecure_skip_verify": True}
    assert "NOT checked" in detail(
        translation, Status.APPROXIMATED, "Routes[0].DangerousAcceptAnyServerCertificateValidator"
    )
    assert "tls" not in upstream_of(translation, "ws")
    assert "no certificate to check" in detail(
        translation, Status.MAPPED, "Routes[1].DangerousAcceptAnyServerCertificateValidator"
    )


def test_a_websocket_route_without_get_is_left_out(tmp_path: Path) -> None:
    route = ocelot_route("/ws", DownstreamScheme="ws", UpstreamHttpMethod=["Post"])
    translation = translate(tmp_path, {"Routes": [route, ocelot_route("/plain")]})
    assert [r["path"] for r in translation.document["routes"]] == ["/plain"]
    why = detail(translation, Status.UNSUPPORTED, "Routes[0].UpstreamHttpMethod")
    assert "a WebSocket handshake is a GET request" in why and "left out" in why


def test_a_websocket_routes_options_guard_its_handshake_and_nothing_is_cached(tmp_path: Path) -> None:
    route = ocelot_route(
        "/ws",
        DownstreamScheme="ws",
        SecurityOptions={"IPBlockedList": ["10.0.0.1"]},
        RateLimitOptions={"EnableRateLimiting": True, "Period": "1s", "PeriodTimespan": 1, "Limit": 3},
        FileCacheOptions={"TtlSeconds": 30},
    )
    translation = translate(tmp_path, {"Routes": [route]})
    ws = route_by_id(translation, "ws")
    assert plugin(ws, "ip_filter") is not None and plugin(ws, "rate_limit") is not None
    assert plugin(ws, "cache") is None  # a cached answer must never stand in for a handshake
    (guarded,) = [
        e.detail
        for e in entries(translation, Status.APPROXIMATED, "Routes[0].DownstreamScheme")
        if "WebSocket pipeline" in e.detail
    ]
    assert "plugins (ip_filter, rate_limit) on the handshake" in guarded
    assert "Ocelot caches nothing on it" in detail(translation, Status.IGNORED, "Routes[0].FileCacheOptions")


def test_an_aggregate_does_not_call_a_websocket_route(tmp_path: Path) -> None:
    document = {
        "Routes": [ocelot_route("/a", Key="a"), ocelot_route("/live", DownstreamScheme="ws", Key="live")],
        "Aggregates": [{"UpstreamPathTemplate": "/both", "RouteKeys": ["a", "live"]}],
    }
    translation = translate(tmp_path, document)
    (aggregate,) = [route for route in translation.document["routes"] if "aggregate" in route]
    assert [backend["key"] for backend in aggregate["aggregate"]["backends"]] == ["a"]
    assert any(
        e.detail.startswith("live: a WebSocket route")
        for e in entries(translation, Status.UNSUPPORTED, "Aggregates[0].RouteKeys")
    )


# -- ServiceName with Consul ------------------------------------------------------------------------


def test_a_service_name_asks_consul_and_the_listed_hosts_are_not_used(tmp_path: Path) -> None:
    route = ocelot_route(
        "/orders/{everything}", ServiceName="orders", LoadBalancerOptions={"Type": "RoundRobin"}
    )
    translation = translate(
        tmp_path, {"Routes": [route], "GlobalConfiguration": {"ServiceDiscoveryProvider": CONSUL}}
    )
    document = translation.document
    assert list(document) == ["listeners", "registries", "upstreams", "routes"]
    # Scheme://Host:Port, and the ACL token (its $ kept literal through fastgw's ${VAR} substitution)
    assert document["registries"] == {
        "consul": {"address": "https://consul.internal:8501", "token": "t0k$$n"}
    }
    # Ocelot asks for the passing instances with no tag filter: no tags, no datacenter
    assert upstream_of(translation, "orders-everything") == {
        "discovery": {"provider": "consul", "service": "orders"},
        "balance": "round_robin",
    }
    assert route_by_id(translation, "orders-everything")["upstream"] == "orders"  # named after the service
    unused = detail(translation, Status.MAPPED, "Routes[0].DownstreamHostAndPorts")
    assert unused.startswith("localhost:51001 unused: with a ServiceName Ocelot asks the registry")
    provider = detail(translation, Status.APPROXIMATED, "GlobalConfiguration.ServiceDiscoveryProvider")
    assert "blocking queries" in provider and "node's name" in provider and "min_targets: 0" in provider
    plan = compiled(translation)
    discovery = plan.upstreams["orders"].config.discovery
    assert discovery is not None and (discovery.provider, discovery.service, discovery.tags) == (
        "consul",
        "orders",
        (),
    )
    assert not plan.upstreams["orders"].config.targets
    registry = discovery.registry
    assert (registry.address, registry.token) == ("https://consul.internal:8501", "t0k$n")  # type: ignore[union-attr]


def test_consul_defaults_are_ocelots(tmp_path: Path) -> None:
    route = ocelot_route(ServiceName="orders", DownstreamHostAndPorts=[])
    globs: list[dict[str, Any]] = [
        {},
        {"ServiceDiscoveryProvider": {}},
        {"ServiceDiscoveryProvider": {"Port": 0}},
    ]
    for glob in globs:
        translation = translate(tmp_path, {"Routes": [route], "GlobalConfiguration": glob})
        assert translation.document["registries"] == {"consul": {"address": "http://localhost:8500"}}
    assert "no ServiceDiscoveryProvider: Ocelot's default, Consul" in detail(
        translate(tmp_path, {"Routes": [route]}), Status.MAPPED, "Routes[0].ServiceName"
    )


def test_poll_consul_its_interval_and_the_keys_that_name_no_service(tmp_path: Path) -> None:
    provider = {
        "Host": "10.0.0.5",
        "Port": 8500,
        "Type": "PollConsul",
        "PollingInterval": 250,
        "ConfigurationKey": "Ocelot_A",
        "Namespace": "prod",
    }
    route = ocelot_route(ServiceName="orders", ServiceNamespace="prod", UseServiceDiscovery=True)
    translation = translate(
        tmp_path, {"Routes": [route], "GlobalConfiguration": {"ServiceDiscoveryProvider": provider}}
    )
    assert translation.document["registries"] == {"consul": {"address": "http://10.0.0.5:8500"}}
    at = "GlobalConfiguration.ServiceDiscoveryProvider"
    assert "Ocelot asked every 250 ms" in detail(translation, Status.APPROXIMATED, at)
    assert "needs no interval" in detail(translation, Status.APPROXIMATED, f"{at}.PollingInterval")
    assert "--etcd" in detail(translation, Status.UNSUPPORTED, f"{at}.ConfigurationKey")
    assert "Kubernetes" in detail(translation, Status.IGNORED, f"{at}.Namespace")
    assert "Kubernetes providers only" in detail(translation, Status.IGNORED, "Routes[0].ServiceNamespace")
    assert "obsolete since Ocelot 11.0" in detail(translation, Status.MAPPED, "Routes[0].UseServiceDiscovery")
    # false, in a file from before 11.0: the listed hosts were used then; 11.0 asks the registry
    older = translate(tmp_path, {"Routes": [ocelot_route(ServiceName="orders", UseServiceDiscovery=False)]})
    assert "upstreams" in older.document and "orders" in older.document["upstreams"]
    assert "before Ocelot 11.0" in detail(older, Status.APPROXIMATED, "Routes[0].UseServiceDiscovery")


def test_balancers_over_discovered_instances(tmp_path: Path) -> None:
    glob = {"ServiceDiscoveryProvider": {"Type": "Consul"}}

    def balance(**keys: Any) -> tuple[object, Translation]:
        route = ocelot_route(ServiceName="orders", DownstreamHostAndPorts=[], **keys)
        translation = translate(tmp_path, {"Routes": [route], "GlobalConfiguration": glob})
        return translation.document["upstreams"]["orders"].get("balance"), translation

    assert balance(LoadBalancerOptions={"Type": "LeastConnection"})[0] == "least_conn"
    assert balance(LoadBalancerOptions={"Type": "CookieStickySessions", "Key": "sid"})[0] == {
        "hash": "cookie:sid"
    }
    # Ocelot's NoLoadBalancer takes the first instance the registry lists: fastgw balances them
    for keys in ({}, {"LoadBalancerOptions": {"Type": "NoLoadBalancer"}}):
        chosen, translation = balance(**keys)
        assert chosen is None
        why = detail(translation, Status.APPROXIMATED, "Routes[0].LoadBalancerOptions")
        assert "first instance the registry lists" in why


def test_routes_of_one_service_share_its_upstream(tmp_path: Path) -> None:
    routes = [ocelot_route("/a", ServiceName="orders"), ocelot_route("/b", ServiceName="orders")]
    translation = translate(tmp_path, {"Routes": routes})
    assert list(translation.document["upstreams"]) == ["orders"]


def test_a_bad_provider_value_is_an_error_naming_it(tmp_path: Path) -> None:
    route = ocelot_route(ServiceName="orders")
    for provider, key in (
        ({"Scheme": "ftp"}, "Scheme"),
        ({"Host": "a b"}, "Host"),
        ({"Port": 70000}, "Port"),
    ):
        with pytest.raises(
            ConfigError, match=rf"GlobalConfiguration\.ServiceDiscoveryProvider\.{key}: expected"
        ):
            translate(
                tmp_path, {"Routes": [route], "GlobalConfiguration": {"ServiceDiscoveryProvider": provider}}
            )


# -- Eureka, and the providers fastgw has no counterpart for ---------------------------------------


def test_eureka_takes_its_address_from_a_setting(tmp_path: Path) -> None:
    provider = {"Host": "localhost", "Port": 8761, "Type": "Eureka"}
    route = ocelot_route(ServiceName="ordering", DownstreamHostAndPorts=[])
    translation = translate(
        tmp_path, {"Routes": [route], "GlobalConfiguration": {"ServiceDiscoveryProvider": provider}}
    )
    assert translation.document["registries"] == {
        "eureka": {"url": "${FASTGW_EUREKA_URL:-http://localhost:8761/eureka}"}
    }
    assert translation.document["upstreams"]["ordering"] == {
        "discovery": {"provider": "eureka", "app": "ordering"}
    }
    at = "GlobalConfiguration.ServiceDiscoveryProvider"
    assert "appsettings.json (eureka:client:serviceUrl)" in detail(translation, Status.APPROXIMATED, at)
    assert entries(translation, Status.IGNORED, f"{at}.Host") and entries(
        translation, Status.IGNORED, f"{at}.Port"
    )
    default = compiled(translation).upstreams["ordering"].config.discovery
    assert default is not None and default.registry.url == "http://localhost:8761/eureka"  # type: ignore[union-attr]
    assert default.service == "ordering"
    given = compiled(translation, {"FASTGW_EUREKA_URL": "http://eureka.internal:8761/eureka"})
    discovery = given.upstreams["ordering"].config.discovery
    assert discovery is not None and discovery.registry.url == "http://eureka.internal:8761/eureka"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("Kube", "provider: dns"),
        ("PollKube", "provider: dns"),
        ("WatchKube", "provider: dns"),
        ("ServiceFabric", "reverse proxy"),
        ("MyServiceDiscoveryProvider", "custom C# provider"),
    ],
)
def test_providers_fastgw_cannot_ask_leave_their_routes_out(tmp_path: Path, kind: str, words: str) -> None:
    document = {
        "Routes": [ocelot_route("/svc", ServiceName="orders"), ocelot_route("/plain")],
        "GlobalConfiguration": {
            "ServiceDiscoveryProvider": {"Host": "localhost", "Port": 8080, "Type": kind}
        },
    }
    translation = translate(tmp_path, document)
    # the listed host is not a stand-in: Ocelot would not use it either
    assert [r["path"] for r in translation.document["routes"]] == ["/plain"]
    assert "registries" not in translation.document
    why = detail(translation, Status.UNSUPPORTED, "Routes[0].ServiceName")
    assert words in why and "the route is left out" in why
    assert words in detail(translation, Status.UNSUPPORTED, "GlobalConfiguration.ServiceDiscoveryProvider")


# -- DynamicRoutes ----------------------------------------------------------------------------------


def chosen(plan: Plan, path: str, method: str = "GET") -> str | None:
    exchange = FakeExchange([], b"", path.encode(), method.encode())
    found = plan.listeners["public"].router.match(method.encode(), b"gw.test", path.encode(), exchange)
    return found.route.id if isinstance(found, RouteMatch) else None  # type: ignore[attr-defined]


DYNAMIC = {
    "Routes": [],
    "DynamicRoutes": [
        {"ServiceName": "product", "RateLimitOptions": {"Limit": 5, "Period": "1s", "Wait": "1.5s"}},
        {"ServiceName": "notification", "LoadBalancerOptions": {"Type": "RoundRobin"}},
    ],
    "GlobalConfiguration": {
        "DownstreamScheme": "https",
        "ServiceDiscoveryProvider": {"Host": "localhost", "Port": 8500, "Type": "Consul"},
        "LoadBalancerOptions": {"Type": "LeastConnection"},
    },
}


def test_dynamic_routing_routes_each_named_service_by_its_first_segment(tmp_path: Path) -> None:
    translation = translate(tmp_path, DYNAMIC)
    routes = translation.document["routes"]
    assert [(r["id"], r["path"], r["rewrite"], r["upstream"]) for r in routes] == [
        ("product-everything", "/product/{*everything}", "/{everything}", "product"),
        ("product-everything.2", "/product", "/", "product"),
        ("notification-everything", "/notification/{*everything}", "/{everything}", "notification"),
        ("notification-everything.2", "/notification", "/", "notification"),
    ]
    assert all("methods" not in r for r in routes)  # any method
    upstreams = translation.document["upstreams"]
    # the entry's own options over the global ones, the global scheme
    assert upstreams["product"] == {
        "discovery": {"provider": "consul", "service": "product"},
        "balance": "least_conn",
        "tls": True,
    }
    assert upstreams["notification"]["balance"] == "round_robin"
    limit = plugin(route_by_id(translation, "product-everything"), "rate_limit")
    assert limit is not None and limit["limit"] == 5
    assert plugin(route_by_id(translation, "notification-everything"), "rate_limit") is None
    plan = compiled(translation)
    assert chosen(plan, "/product/items/7") == "product-everything"
    assert chosen(plan, "/product", "DELETE") == "product-everything.2"
    assert chosen(plan, "/search/items") is None  # a service no entry names: Ocelot would route it
    why = detail(translation, Status.APPROXIMATED, "DynamicRoutes")
    assert "/product/..., /notification/..." in why and "answers 404" in why
    # the keys the translation made up are not reported as if the file had them
    made = {"UpstreamPathTemplate", "DownstreamPathTemplate", "RouteIsCaseSensitive"}
    assert not [e for e in translation.report.entries if e.key_path.rpartition(".")[2] in made]
    said = [e.detail for e in entries(translation, Status.MAPPED, "DynamicRoutes[0].ServiceName")]
    assert any(
        d.startswith("dynamic routing: requests to /product/... and /product, any method") for d in said
    )


def test_dynamic_routes_are_unused_beside_static_routes_or_without_a_port(tmp_path: Path) -> None:
    beside = dict(DYNAMIC, Routes=[ocelot_route("/plain")])
    translation = translate(tmp_path, beside)
    assert [r["path"] for r in translation.document["routes"]] == ["/plain"]
    assert "static routes: never used" in detail(translation, Status.IGNORED, "DynamicRoutes[0]")
    no_port = dict(DYNAMIC, GlobalConfiguration={"ServiceDiscoveryProvider": {"Type": "Consul"}})
    translation = translate(tmp_path, no_port)
    assert not translation.document["routes"]
    assert "names no Port: never used" in detail(translation, Status.IGNORED, "DynamicRoutes[1]")


def test_a_dynamic_routes_rate_limit_rule_wins_as_before_24_1(tmp_path: Path) -> None:
    rule = {"EnableRateLimiting": True, "Period": "1s", "PeriodTimespan": 1, "Limit": 3}
    entry = {
        "ServiceName": "product",
        "RateLimitRule": rule,
        "RateLimitOptions": {"EnableRateLimiting": False},
    }
    document = dict(DYNAMIC, DynamicRoutes=[entry])
    translation = translate(tmp_path, document)
    limit = plugin(route_by_id(translation, "product-everything"), "rate_limit")
    assert limit is not None and (limit["limit"], limit["window"]) == (3, "1s")
    assert "read as RateLimitOptions" in detail(translation, Status.MAPPED, "DynamicRoutes[0].RateLimitRule")


def test_dynamic_routing_with_no_service_named_routes_nothing_and_says_why(tmp_path: Path) -> None:
    translation = translate(tmp_path, dict(DYNAMIC, DynamicRoutes=[]))
    assert "none is: add an entry" in detail(translation, Status.UNSUPPORTED, "DynamicRoutes")
    with pytest.raises(ConfigError, match="no route could be translated"):
        translation.require_routes()
