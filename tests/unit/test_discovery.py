"""Discovery's pure parts: the feed (floor, diff of sets, staleness, backoff) on a recording
group, balancers over a changing target list, and the registries' answers read into instances."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from fastgw._proxy import PoolCore, Target
from fastgw.config import parse_config
from fastgw.config.schema import DiscoveryConfig, DnsRegistry, HashKey
from fastgw.discovery.consul import entry_instance, next_index
from fastgw.discovery.etcd import parse_instance
from fastgw.discovery.feed import Backoff, DiscoveryKey, Instance, ServiceFeed, normalized
from fastgw.discovery.static import StaticResolver
from fastgw.errors import ConfigError
from fastgw.etcd import KeyValue, prefix_end
from fastgw.upstream.balance import HashRing, RoundRobin, Sticky, key_reader


class RecordingGroup:
    name = "up"

    def __init__(self) -> None:
        self.sets: list[tuple[list[tuple[str, int, int]], bool]] = []

    def set_targets(self, addresses: Sequence[tuple[str, int, int]], joining: bool) -> None:
        self.sets.append((list(addresses), joining))


def feed_of(min_targets: int = 1) -> ServiceFeed:
    config = DiscoveryConfig("dns", "x.test", DnsRegistry(), port=80, min_targets=min_targets)
    return ServiceFeed(DiscoveryKey("up", config), StaticResolver([]))


def test_the_feed_applies_sets_as_they_change_and_refuses_one_below_the_floor() -> None:
    async def scenario() -> None:
        feed, group = feed_of(min_targets=2), RecordingGroup()
        feed.publish([Instance("10.0.0.1", 80), Instance("10.0.0.2", 80)])
        feed.serve(group)  # the first set is the start: not joining
        assert group.sets == [([("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1)], False)]
        feed.publish([Instance("10.0.0.2", 80), Instance("10.0.0.1", 80)])  # the same set, reordered
        assert len(group.sets) == 1 and feed.answers["unchanged"] == 1
        feed.publish([Instance("10.0.0.1", 80)])  # below the floor of 2 while 2 are known
        assert len(group.sets) == 1 and not feed.healthy and feed.answers["below_floor"] == 1
        assert "below min_targets (2)" in (feed.last_error or "") and feed.stale_seconds >= 0
        feed.publish([Instance("10.0.0.1", 80), Instance("10.0.0.3", 80, weight=5000)])
        assert group.sets[-1] == ([("10.0.0.1", 80, 1), ("10.0.0.3", 80, 1000)], True)
        assert feed.healthy and feed.stale_seconds == 0
        feed.stop()

    asyncio.run(scenario())


def test_normalized_sets_have_one_instance_per_address() -> None:
    found = normalized([Instance("b", 2, 3), Instance("a", 1, 0), Instance("b", 2, 7, "second")])
    assert found == (Instance("a", 1, 1), Instance("b", 2, 7))


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.5


def _targets(*ports: int, weight: int = 1) -> list[Target]:
    return [Target("10.0.0.1", port, weight, PoolCore(1, 1.0), b"h") for port in ports]


def test_smooth_round_robin_takes_a_new_target_in_its_turn_and_forgets_one_gone() -> None:
    a, b, c = _targets(1, 2, 3)
    rr = RoundRobin()
    assert [rr.pick([a, b], None).port for _ in range(4)] == [1, 2, 1, 2]
    rr.targets_changed([a, b, c])
    picks = [rr.pick([a, b, c], None).port for _ in range(6)]
    assert sorted(picks) == [1, 1, 2, 2, 3, 3]
    rr.targets_changed([b, c])
    # The two left share the turns: a target gone took its credit with it (a target that comes
    # back is a new Target, at 0).
    assert sorted(rr.pick([b, c], None).port for _ in range(4)) == [2, 2, 3, 3]


def test_a_rebuilt_ring_moves_only_the_keys_of_a_target_that_left() -> None:
    a, b, c = _targets(1, 2, 3)

    class Probe:
        def __init__(self, key: str) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.key = key.encode()

        def header(self, name: bytes) -> bytes:
            return self.key

    ring = HashRing(key_reader(HashKey("header", "x-user")), [a, b, c])
    keys = [Probe(f"user-{n}") for n in range(300)]
    before = {p.key: ring.pick([a, b, c], p) for p in keys}  # type: ignore[arg-type]
    ring.targets_changed([a, b])
    after = {p.key: ring.pick([a, b], p) for p in keys}  # type: ignore[arg-type]
    moved = [k for k in before if before[k] is not after[k]]
    assert moved and all(before[k] is c for k in moved)
    ring.targets_changed([a, b, c])
    assert {p.key: ring.pick([a, b, c], p) for p in keys} == before  # type: ignore[arg-type]
    empty = HashRing(key_reader(HashKey("ip")), [])  # a discovery group may start with none
    empty.targets_changed([a])


def test_sticky_forgets_the_ids_of_targets_gone() -> None:
    a, b = _targets(1, 2)
    sticky = Sticky("fgw")
    sticky._id(a), sticky._id(b)
    sticky.targets_changed([b])
    assert list(sticky._ids) == [b]


def test_registry_values_read_into_instances() -> None:
    kv = KeyValue(b"/svc/a", b'{"host": "10.0.0.1", "port": 8080, "weight": 2}', 5)
    assert parse_instance(kv) == Instance("10.0.0.1", 8080, 2, "/svc/a")
    assert parse_instance(KeyValue(b"/svc/b", b"10.0.0.2:81", 6)) == Instance("10.0.0.2", 81, 1, "/svc/b")
    for bad in (b"nonsense", b'{"host": "x"}', b'{"host": "x", "port": 70000}', b"{oops"):
        assert parse_instance(KeyValue(b"/svc/c", bad, 7)) is None
    assert prefix_end(b"/svc/") == b"/svc0" and prefix_end(b"\xff") == b"\0"
    entry: dict[str, Any] = {
        "Node": {"Node": "n1", "Address": "10.0.0.9"},
        "Service": {"ID": "s1", "Address": "", "Port": 80, "Weights": {"Passing": 4}, "Meta": {"w": "7"}},
    }
    assert entry_instance(entry, None) == Instance("10.0.0.9", 80, 4, "node n1, service id s1")
    assert entry_instance(entry, "w") == Instance("10.0.0.9", 80, 7, "node n1, service id s1")
    assert next_index(10, 12) == 12 and next_index(10, 5) == 1 and next_index(0, 0) == 1


_BASE = {
    "listeners": [{"name": "m", "bind": "127.0.0.1:0"}],
    "routes": [{"id": "r", "path": "/", "upstream": "up"}],
}


@pytest.mark.parametrize(
    ("registries", "upstream", "message"),
    [
        ({}, {"discovery": {"provider": "consul", "service": "c"}},
         "upstreams.up.discovery.provider: consul needs registries.consul (where the registry is)"),
        ({"consul": {}}, {"discovery": {"provider": "zookeeper"}},
         "upstreams.up.discovery.provider: expected the name of a discovery provider"
         " (dns, etcd, consul, eureka), found 'zookeeper'"),
        ({}, {"discovery": {"provider": "dns", "name": "a.test"}},
         "upstreams.up.discovery: missing required key 'port' (the targets' port for A records)"),
        ({"etcd": {"endpoints": "http://127.0.0.1:2379"}},
         {"discovery": {"provider": "etcd", "prefix": "svc"}},
         "upstreams.up.discovery.prefix: expected a key prefix starting with '/',"
         " like '/services/catalog/', found 'svc'"),
        ({"etcd": {"endpoints": ["http://u:p@h:2379"]}}, {"targets": ["127.0.0.1:1"]},
         "registries.etcd.endpoints[0]: expected a URL without credentials;"
         " give them as username and password"),
        ({"eureka": {"url": "http://h/eureka", "username": "u"}}, {"targets": ["127.0.0.1:1"]},
         "registries.eureka: expected username and password together"),
        ({"dns": {"nameservers": ["dns.example:53"]}}, {"targets": ["127.0.0.1:1"]},
         "registries.dns.nameservers[0]: expected an IP address with an optional :port,"
         " like '127.0.0.1:5353', found 'dns.example:53'"),
        ({}, {"discovery": {"provider": "dns", "name": "a.test", "port": 80, "require_health_check": True}},
         "upstreams.up.discovery.require_health_check: needs health: on the upstream"
         " (the check a joining target must pass)"),
        ({}, {"pool": {}}, "upstreams.up: missing required key 'targets' (or 'discovery')"),
    ],
)  # fmt: skip
def test_discovery_config_errors_name_the_key(registries: Any, upstream: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**_BASE, "registries": registries, "upstreams": {"up": upstream}}, "gw.yaml")
    assert str(caught.value) == f"gw.yaml: {message}"
