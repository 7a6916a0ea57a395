"""Discovery from Consul, against a protocol-faithful double of its HTTP API
(``tests/support/registry_doubles.py``: Consul cannot be installed here): health-passing instances
of a service with every tag asked, in the datacenter asked, followed by blocking queries on
``X-Consul-Index``, weights from service meta, the ACL token from the environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastgw.discovery.consul import next_index
from tests.e2e.conftest import wait_for
from tests.support.gateway import RunningGateway
from tests.support.registry_doubles import ConsulDouble, ConsulEntry

Make = Callable[..., RunningGateway]


@pytest.fixture
def consul(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsulDouble]:
    monkeypatch.setenv("CONSUL_TOKEN_FOR_TEST", "s3cret-token")
    server = ConsulDouble(token="s3cret-token")
    server.start()
    yield server
    server.stop()


def document(consul: ConsulDouble, **discovery: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "registries": {
            "consul": {
                "address": consul.url,
                "token": "${CONSUL_TOKEN_FOR_TEST}",
                "wait": "2s",
                "timeout": "2s",
            }
        },
        "upstreams": {"up": {"discovery": {"provider": "consul", "service": "catalog", **discovery}}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def targets(gw: RunningGateway) -> list[tuple[int, int]]:
    return sorted(gw.call(lambda: [(t.port, t.weight) for t in gw.gateway.plan.upstreams["up"].targets]))


def entry(entry_id: str, port: int, **fields: Any) -> ConsulEntry:
    return ConsulEntry(entry_id, "catalog", f"node-{entry_id}", "127.0.0.1", port, **fields)


def test_passing_tagged_instances_of_the_datacenter_followed_by_blocking_queries(
    make_gateway: Make, consul: ConsulDouble, upstream: int
) -> None:
    consul.register(entry("a", upstream, tags=["v2", "http"], meta={"weight": "3"}))
    consul.register(entry("b", 9001, tags=["v2"], meta={"weight": "1"}, status="critical"))
    consul.register(entry("c", 9002, tags=["v1"]))
    consul.register(entry("d", 9003, tags=["v2"], datacenter="dc2"))
    gw = make_gateway(document(consul, tags=["v2"], datacenter="dc1", weight_meta="weight"))
    assert targets(gw) == [(upstream, 3)]  # passing, tagged v2, in dc1, weight from meta
    queries = consul.seen("/v1/health/service/catalog")
    assert queries[0].query.getall("tag") == ["v2"] and queries[0].query["dc"] == "dc1"
    assert "passing" in queries[0].query and queries[0].headers["X-Consul-Token"] == "s3cret-token"
    wait_for(lambda: any("index" in q.query for q in consul.seen("/v1/health")), 10, "a blocking query")
    blocking = next(q for q in consul.seen("/v1/health") if "index" in q.query)
    assert blocking.query["index"] == str(consul.service_index["catalog"]) and blocking.query["wait"] == "2s"
    consul.set_status("b", "passing")  # its check passes now: it joins at once (the query returns)
    wait_for(lambda: targets(gw) == sorted([(9001, 1), (upstream, 3)]), 10, "b to pass")
    consul.deregister("a")
    wait_for(lambda: targets(gw) == [(9001, 1)], 10, "a to leave")
    feed = next(iter(gw.gateway.plan.feeds.values()))
    assert feed.errors == 0 and feed.healthy


def test_an_index_that_goes_backwards_starts_over(
    make_gateway: Make, consul: ConsulDouble, upstream: int
) -> None:
    consul.register(entry("a", upstream))
    gw = make_gateway(document(consul))
    wait_for(lambda: any("index" in q.query for q in consul.seen("/v1/health")), 10, "a blocking query")
    consul.restore_snapshot(3)  # below every index the gateway has seen
    consul.register(entry("b", 9001))  # index 4
    wait_for(lambda: targets(gw) == sorted([(9001, 1), (upstream, 1)]), 10, "b after the restore")
    assert next_index(500, 4) == 1 and next_index(0, 0) == 1 and next_index(3, 7) == 7


def test_a_wrong_token_is_an_error_and_the_last_set_stays(
    make_gateway: Make, consul: ConsulDouble, upstream: int
) -> None:
    consul.register(entry("a", upstream))
    gw = make_gateway(document(consul))
    assert targets(gw) == [(upstream, 1)]
    consul.token = "rotated"  # the ACL token was rotated: our queries get 403
    consul.register(entry("b", 9001))  # the pending blocking query returns, the next one is refused
    feed = next(iter(gw.gateway.plan.feeds.values()))
    wait_for(lambda: feed.errors > 0, 10, "the refused query")
    assert "status 403" in (feed.last_error or "") and not feed.healthy
    assert (upstream, 1) in targets(gw)
