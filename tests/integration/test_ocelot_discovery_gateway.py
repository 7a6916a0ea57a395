"""Gateways started from translated Ocelot configurations that need upstream TLS and service
discovery (tests/data/ocelot: tls.json, discovery-consul.json, dynamic-routing.json), against real
TLS upstream processes (certificates from the ``pki`` fixture) and the protocol-faithful Consul
double of ``tests/support/registry_doubles.py``: requests go where Ocelot's docs say those files
send them, verified as Ocelot verifies, to the instances Consul lists."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.support.certs import Pki
from tests.support.gateway import RunningGateway
from tests.support.ocelot_files import echoed, ocelot_gateway, request, upstream_ports
from tests.support.procs import ProcessReaper, reaper
from tests.support.registry_doubles import ConsulDouble, ConsulEntry
from tests.support.upstream_server import start_upstream_process

Make = Callable[..., RunningGateway]
__all__ = ["upstream_ports"]  # the fixture, used by name


@pytest.fixture
def processes() -> Iterator[ProcessReaper]:
    with reaper() as procs:
        yield procs


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    server = ConsulDouble(token="my-token")  # discovery-consul.json's Token
    server.start()
    yield server
    server.stop()


def test_https_downstream_scheme_against_real_tls_upstreams(
    make_gateway: Make, processes: ProcessReaper, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system's CA store is the tests' CA: what `tls: true` trusts, as HttpClient trusts the machine's
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)
    trusted = pki.issue("localhost", "127.0.0.1")
    self_signed = pki.issue("localhost", "127.0.0.1", ca=pki.other_ca)  # a CA nobody here trusts
    ports = {
        51001: start_upstream_process(processes=processes, tls=(trusted.cert, trusted.key))[1],
        51002: start_upstream_process(processes=processes, tls=(self_signed.cert, self_signed.key))[1],
        51003: start_upstream_process(processes=processes, tls=(trusted.cert, trusted.key))[1],
    }
    gw = ocelot_gateway(make_gateway, "tls.json", ports, tmp_path)
    # https: verified, SNI the host, round robin over both hosts
    seen = set()
    for _ in range(2):
        answer = request(gw, "GET", "/posts/7")
        port, path, _ = echoed(answer)
        assert path == "/echo/api/posts/7"
        assert answer.json()["tls"]["server_name"] == "localhost"
        seen.add(port)
    assert seen == {ports[51001], ports[51003]}
    # DangerousAcceptAnyServerCertificateValidator: the untrusted certificate is accepted
    insecure = request(gw, "GET", "/self-signed/x")
    assert echoed(insecure)[:2] == (ports[51002], "/echo/self-signed/x") and "tls" in insecure.json()
    # the same upstream without it is refused, as Ocelot refuses it
    refused = request(gw, "GET", "/checked/x")
    assert refused.status == 502
    assert json.loads(refused.body)["error"].endswith(": TLS certificate verification failed")


def entry(entry_id: str, service: str, port: int) -> ConsulEntry:
    return ConsulEntry(entry_id, service, f"node-{entry_id}", "127.0.0.1", port)


def test_consul_service_discovery(
    make_gateway: Make, upstream_ports: dict[int, int], consul: ConsulDouble, tmp_path: Path
) -> None:
    a, b, c = (upstream_ports[port] for port in (51001, 51002, 51003))
    consul.register(entry("product-1", "product", a))
    consul.register(entry("product-2", "product", b))
    consul.register(entry("orders-1", "orders", b))
    gw = ocelot_gateway(
        make_gateway, "discovery-consul.json", {**upstream_ports, 51009: consul.port}, tmp_path
    )
    # ServiceName with RoundRobin: both instances Consul lists
    assert {echoed(request(gw, "GET", "/products/items/1"))[:2] for _ in range(2)} == {
        (a, "/echo/api/products/items/1"),
        (b, "/echo/api/products/items/1"),
    }
    # ServiceName wins over the listed host (c): Consul's instance gets the request
    assert echoed(request(gw, "GET", "/orders/7"))[:2] == (b, "/echo/api/orders/7")
    assert echoed(request(gw, "GET", "/plain/x"))[:2] == (c, "/echo/plain/x")
    # asked as Ocelot asks: passing instances, no tag, with the ACL token
    asked = consul.seen("/v1/health/service/orders")[0]
    assert "passing" in asked.query and "tag" not in asked.query
    assert asked.headers["X-Consul-Token"] == "my-token"
    # the instances follow Consul
    consul.register(entry("orders-2", "orders", a))
    consul.deregister("orders-1")
    wait_for(
        lambda: echoed(request(gw, "GET", "/orders/7"))[0] == a, 10, "orders to move to its new instance"
    )


def test_dynamic_routing(
    make_gateway: Make, upstream_ports: dict[int, int], consul: ConsulDouble, tmp_path: Path
) -> None:
    consul.token = None
    a, b, c = (upstream_ports[port] for port in (51001, 51002, 51003))
    consul.register(entry("product-1", "product", a))
    consul.register(entry("notification-1", "notification", b))
    consul.register(entry("notification-2", "notification", c))
    gw = ocelot_gateway(make_gateway, "dynamic-routing.json", {51009: consul.port}, tmp_path)
    client = [("Oc-DynamicRouting-Client", "app-1")]
    # the first segment names the service; the rest of the path and the query go to its instance
    assert echoed(request(gw, "GET", "/product/echo/items?page=2", client))[:2] == (a, "/echo/items?page=2")
    assert echoed(request(gw, "DELETE", "/product/echo/items/9", client))[:2] == (a, "/echo/items/9")
    # product's own rate limit (2 per minute per client) over the global one; StatusCode, QuotaMessage
    refused = request(gw, "GET", "/product/echo/items", client)
    assert (refused.status, refused.body) == (499, b"No Quota!")
    assert echoed(request(gw, "GET", "/product/echo/items", [("Oc-DynamicRouting-Client", "app-2")]))[0] == a
    # notification: RoundRobin over its instances, no rate limit
    assert {echoed(request(gw, "GET", "/notification/echo/n", client))[0] for _ in range(4)} == {b, c}
    # a service DynamicRoutes does not name has no route (Ocelot would ask Consul for it)
    assert request(gw, "GET", "/search/echo/q").status == 404
