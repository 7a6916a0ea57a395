"""Discovery from DNS, against a real DNS server on loopback (``tests/support/dns_server.py``,
dnslib) whose records change while the gateway runs: A records re-resolved as their TTL runs out,
SRV records with priority (only the lowest is used), weight and port."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import UPSTREAM_SCRIPT
from tests.e2e.conftest import wait_for
from tests.support.dns_server import DnsServer
from tests.support.gateway import RunningGateway
from tests.support.ports import free_port
from tests.support.procs import Proc, start_process

Make = Callable[..., RunningGateway]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


def upstream_at(host: str, port: int) -> Proc:
    return start_process(
        [sys.executable, UPSTREAM_SCRIPT, "--host", host, "--port", str(port)], ready_line="listening"
    )


def document(dns: DnsServer, discovery: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "registries": {"dns": {"nameservers": [f"127.0.0.1:{dns.port}"], "timeout": "2s"}},
        "upstreams": {"up": {"discovery": {"provider": "dns", **discovery}}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def labels(gw: RunningGateway) -> list[tuple[str, int, int]]:
    return sorted(
        gw.call(lambda: [(t.host, t.port, t.weight) for t in gw.gateway.plan.upstreams["up"].targets])
    )


def status(gw: RunningGateway, path: str = "/echo/x") -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_records_are_resolved_again_when_their_ttl_runs_out(make_gateway: Make, dns: DnsServer) -> None:
    port = free_port()
    first, second = upstream_at("127.0.0.2", port), upstream_at("127.0.0.3", port)
    try:
        dns.set_a("catalog.test", ["127.0.0.2"], ttl=1)
        gw = make_gateway(document(dns, {"name": "catalog.test", "port": port}))
        assert labels(gw) == [("127.0.0.2", port, 1)]
        assert status(gw) == 200
        asked = dns.queries[("catalog.test", "A")]
        wait_for(lambda: dns.queries[("catalog.test", "A")] > asked, 10, "the name asked again after its TTL")
        dns.set_a("catalog.test", ["127.0.0.2", "127.0.0.3"], ttl=1)
        wait_for(lambda: len(labels(gw)) == 2, 10, "the second address")
        dns.set_a("catalog.test", ["127.0.0.3"], ttl=1)
        wait_for(lambda: labels(gw) == [("127.0.0.3", port, 1)], 10, "the first address to leave")
        assert status(gw) == 200
        dns.set_a("catalog.test", [], ttl=1)  # the name answers no address: the floor keeps the last
        feed = next(iter(gw.gateway.plan.feeds.values()))
        wait_for(lambda: feed.answers["below_floor"] > 0, 10, "the empty answer")
        assert labels(gw) == [("127.0.0.3", port, 1)] and status(gw) == 200
    finally:
        first.stop()
        second.stop()


def test_srv_records_give_ports_and_weights_of_the_lowest_priority(
    make_gateway: Make, dns: DnsServer
) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    dns.set_a("n1.catalog.test", ["127.0.0.1"])
    dns.set_a("n2.catalog.test", ["127.0.0.1"])
    dns.set_a("backup.catalog.test", ["127.0.0.1"])
    dns.set_srv(
        "_http._tcp.catalog.test",
        [
            (10, 10, p1, "n1.catalog.test."),
            (10, 30, p2, "n2.catalog.test."),
            (20, 50, p3, "backup.catalog.test."),
        ],
    )
    gw = make_gateway(document(dns, {"name": "_http._tcp.catalog.test", "type": "SRV"}))
    assert labels(gw) == sorted([("127.0.0.1", p1, 10), ("127.0.0.1", p2, 30)])
    dns.set_srv(
        "_http._tcp.catalog.test", [(10, 0, p2, "n2.catalog.test."), (20, 50, p3, "backup.catalog.test.")]
    )
    wait_for(lambda: labels(gw) == [("127.0.0.1", p2, 1)], 10, "n1 to leave (weight 0 counts as 1)")
    dns.set_srv("_http._tcp.catalog.test", [(20, 50, p3, "backup.catalog.test.")])
    wait_for(lambda: labels(gw) == [("127.0.0.1", p3, 50)], 10, "the fallback priority, now the lowest")


def test_an_unreachable_nameserver_is_an_error_and_the_upstream_answers_503(make_gateway: Make) -> None:
    silent = free_port()  # nothing answers there
    doc = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "registries": {"dns": {"nameservers": [f"127.0.0.1:{silent}"], "timeout": "200ms"}},
        "upstreams": {"up": {"discovery": {"provider": "dns", "name": "catalog.test", "port": 80}}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }
    gw = make_gateway(doc)
    feed = next(iter(gw.gateway.plan.feeds.values()))
    wait_for(lambda: feed.errors > 0, 10, "the failed question")
    assert not feed.healthy and feed.instances is None
    assert "catalog.test" in (feed.last_error or "")
    assert status(gw) == 503
