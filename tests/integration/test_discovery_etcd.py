"""Discovery from a real etcd (Debian's etcd-server): instances register and deregister under a
key prefix while requests flow, and the gateway follows each watch event: no request is lost, a
removed target's request in flight completes, kept targets keep their state, the registry's
outage and an empty answer leave the last good set in place, and a joining target can be made to
pass a health check first."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastgw._proxy import Target
from fastgw.discovery import ServiceFeed
from tests.conftest import start_upstream
from tests.e2e.conftest import wait_for
from tests.support.etcd_server import EtcdServer
from tests.support.gateway import RunningGateway

Make = Callable[..., RunningGateway]
PREFIX = "/services/catalog/"


@pytest.fixture
def clean_prefix(etcd: EtcdServer) -> Iterator[EtcdServer]:
    yield etcd
    etcd.call("/v3/kv/deleterange", {"key": "Lw==", "range_end": "MA=="})  # every key under "/"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[int]]:
    started = [start_upstream() for _ in range(3)]
    yield [port for _, port in started]
    for proc, _ in started:
        proc.stop()


def document(etcd: EtcdServer, **upstream: Any) -> dict[str, Any]:
    discovery = {"provider": "etcd", "prefix": PREFIX, **upstream.pop("discovery", {})}
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "registries": {"etcd": {"endpoints": [etcd.url]}},
        "upstreams": {"up": {"discovery": discovery, **upstream}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def register(etcd: EtcdServer, name: str, port: int, weight: int = 1) -> int:
    return etcd.put(PREFIX + name, json.dumps({"host": "127.0.0.1", "port": port, "weight": weight}))


def targets(gw: RunningGateway) -> list[Target]:
    return list(gw.call(lambda: gw.gateway.plan.upstreams["up"].targets))


def ports(gw: RunningGateway) -> set[int]:
    return {t.port for t in targets(gw)}


def feed(gw: RunningGateway) -> ServiceFeed:
    (found,) = gw.gateway.plan.feeds.values()
    return found


def get(port: int, path: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


class Load:
    """A bounded loop of requests on keep-alive connections (a small wrk), in threads."""

    def __init__(self, port: int, threads: int = 2, limit: int = 20_000) -> None:
        self.port = port
        self.limit = limit
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set() and len(self.statuses) < self.limit:
            conn.request("GET", "/echo/load")
            response = conn.getresponse()
            response.read()
            self.statuses.append(response.status)
        conn.close()

    def stop(self) -> list[int]:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        return self.statuses


def served_by(upstream_port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
    try:
        conn.request("GET", "/stats")
        return int(json.loads(conn.getresponse().read())["requests"])
    finally:
        conn.close()


def test_targets_follow_registrations_under_load_without_losing_a_request(
    make_gateway: Make, clean_prefix: EtcdServer, upstreams: list[int]
) -> None:
    etcd = clean_prefix
    a, b, c = upstreams
    register(etcd, "a", a)
    gw = make_gateway(document(etcd))
    assert ports(gw) == {a}  # the gateway listened after the first answer
    (target_a,) = targets(gw)
    load = Load(gw.port)
    try:
        wait_for(lambda: len(load.statuses) > 50, 10, "requests flowing")
        changed = feed(gw).answers["changed"]
        register(etcd, "b", b)
        wait_for(lambda: ports(gw) == {a, b}, 10, "b to join")
        kept = next(t for t in targets(gw) if t.port == a)
        assert kept is target_a  # a kept its Target: pool, counters, balancer state
        assert feed(gw).answers["changed"] == changed + 1  # one watch event, one new set
        before_b = served_by(b)
        wait_for(lambda: served_by(b) > before_b + 10, 10, "b to get requests")
        register(etcd, "c", c)
        wait_for(lambda: ports(gw) == {a, b, c}, 10, "c to join")
        etcd.delete(PREFIX + "a")
        wait_for(lambda: ports(gw) == {b, c}, 10, "a to leave")
        left_a = served_by(a)
        wait_for(lambda: len(load.statuses) > 200, 10, "more requests after a left")
        assert served_by(a) == left_a  # no request went to a after it left
    finally:
        statuses = load.stop()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert feed(gw).errors == 0


def test_a_removed_targets_request_in_flight_completes(
    make_gateway: Make, clean_prefix: EtcdServer, upstreams: list[int]
) -> None:
    etcd = clean_prefix
    a, b, _ = upstreams
    register(etcd, "a", a)
    gw = make_gateway(document(etcd))
    (target_a,) = targets(gw)
    slow: list[int] = []
    thread = threading.Thread(target=lambda: slow.append(get(gw.port, "/slow/800")[0]))
    thread.start()
    wait_for(lambda: gw.call(lambda: target_a.in_flight) == 1, 10, "the slow request at a")
    register(etcd, "b", b)
    etcd.delete(PREFIX + "a")
    wait_for(lambda: ports(gw) == {b}, 10, "a to leave")
    assert get(gw.port, "/echo/x")[0] == 200  # served by b meanwhile
    thread.join(15)
    assert slow == [200]  # the request a had when it left finished there
    assert gw.call(lambda: target_a.in_flight) == 0
    assert target_a.pool.max_idle == 0 and not target_a.pool.idle  # its connections closed


def test_registry_outage_and_an_empty_answer_keep_the_last_set(
    make_gateway: Make, clean_prefix: EtcdServer, upstreams: list[int]
) -> None:
    etcd = clean_prefix
    a, b, _ = upstreams
    register(etcd, "a", a)
    register(etcd, "b", b)
    gw = make_gateway(document(etcd, discovery={"min_targets": 1, "retry": {"base": "50ms", "max": "200ms"}}))
    assert ports(gw) == {a, b}
    etcd.delete(PREFIX + "a")
    wait_for(lambda: ports(gw) == {b}, 10, "a to leave")
    etcd.delete(PREFIX + "b")  # the registry now lists nothing: below the floor of 1
    wait_for(lambda: feed(gw).answers["below_floor"] == 1, 10, "the empty answer")
    assert ports(gw) == {b} and get(gw.port, "/echo/x")[0] == 200
    assert not feed(gw).healthy and "below min_targets" in (feed(gw).last_error or "")
    register(etcd, "b", b)
    wait_for(lambda: feed(gw).healthy, 10, "the registry to list b again")
    etcd.kill()  # the registry goes away: the set stays, the feed turns stale
    try:
        wait_for(lambda: not feed(gw).healthy and feed(gw).errors > 0, 10, "the outage to be noticed")
        assert ports(gw) == {b} and get(gw.port, "/echo/x")[0] == 200
        wait_for(lambda: feed(gw).stale_seconds > 0, 10, "staleness to grow")
    finally:
        etcd.start()
    register(etcd, "a", a)
    wait_for(lambda: ports(gw) == {a, b} and feed(gw).healthy, 20, "the feed to recover and follow")
    assert feed(gw).stale_seconds == 0


def test_a_joining_target_must_pass_a_health_check_first(
    make_gateway: Make, clean_prefix: EtcdServer
) -> None:
    etcd = clean_prefix
    a_proc, a = start_upstream()
    sick_proc, sick = start_upstream()
    try:
        get(sick, "/health/set/503")
        assert get(sick, "/health")[0] == 503
        register(etcd, "a", a)
        doc = document(
            etcd, discovery={"require_health_check": True}, health={"path": "/health", "interval": "1h"}
        )
        gw = make_gateway(doc)
        register(etcd, "sick", sick)
        wait_for(lambda: sick in ports(gw), 10, "the sick instance to be listed")
        wait_for(lambda: _checks(sick) >= 1, 10, "its first probe")
        group = gw.gateway.plan.upstreams["up"]
        usable = gw.call(lambda: {t.port for t in group.usable})
        assert usable == {a}  # listed, probed, failed: it takes no traffic (the next round is in 1h)
        before = served_by(sick)
        for _ in range(10):
            assert get(gw.port, "/echo/x")[0] == 200
        assert served_by(sick) == before
        get(sick, "/health/set/200")
        etcd.delete(PREFIX + "sick")
        wait_for(lambda: sick not in ports(gw), 10, "the sick instance to leave")
        register(etcd, "sick", sick)  # joining again, now healthy: in after one passed probe
        wait_for(lambda: gw.call(lambda: {t.port for t in group.usable}) == {a, sick}, 10, "it to pass")
    finally:
        sick_proc.stop()
        a_proc.stop()


def _checks(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health/checks")
        return int(json.loads(conn.getresponse().read())["checks"])
    finally:
        conn.close()
