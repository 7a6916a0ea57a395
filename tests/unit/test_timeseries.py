"""The status page's time series: points made from metric families, quantiles from bucket
differences, counter restarts, the ring's window, the busiest routes kept."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.observe.metrics import collect_gateway, merge
from fastgw.observe.timeseries import Sampler, quantile
from fastgw.plan import Plan, compile_plan

_DOC: dict[str, Any] = {
    "listeners": [{"bind": "127.0.0.1:0"}],
    "upstreams": {"up": {"targets": ["127.0.0.1:9"]}},
    "routes": [
        {"id": "a", "path": "/a", "upstream": "up"},
        {"id": "b", "path": "/b", "upstream": "up"},
        {"id": "c", "path": "/c", "upstream": "up"},
    ],
}


def _plan() -> Plan:
    return compile_plan(parse_config(_DOC, "gw.yaml"))


def _route(plan: Plan, route_id: str) -> Any:
    return next(route for route in plan.routes if route.id == route_id)


async def _no_source() -> Any:
    raise AssertionError("these tests feed the sampler themselves")


# -- quantiles: Prometheus's histogram_quantile ----------------------------------------------------


def test_quantile_interpolates_inside_the_bucket_where_the_rank_falls() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, math.inf: 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert quantile(0.95, buckets) == pytest.approx(0.19)  # rank 19: 9 of the second bucket's 10
    assert quantile(0.25, buckets) == pytest.approx(0.05)  # the first bucket starts at 0


def test_quantile_in_the_unbounded_bucket_is_the_last_bound_and_nothing_counted_is_none() -> None:
    assert quantile(0.99, {0.1: 1.0, 0.5: 1.0, math.inf: 10.0}) == pytest.approx(0.5)
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {}) is None


# -- points ----------------------------------------------------------------------------------------


def test_a_point_counts_what_the_counters_grew_by_per_route_and_overall() -> None:
    plan = _plan()
    sampler = Sampler(_no_source)
    sampler.add(collect_gateway(plan, [], connections={"main": 3}), 1000.0)  # where counting starts
    for _ in range(8):
        _route(plan, "a").stats.record("GET", 200, 0.002, 0.001)
    _route(plan, "a").stats.record("GET", 503, 0.3, 0.29)
    _route(plan, "b").stats.record("POST", 429, 0.0001)
    _route(plan, "b").stats.record("GET", 0, 0.01)  # the client left
    sampler.add(collect_gateway(plan, [], connections={"main": 5}), 1002.0)
    [point] = sampler.points
    assert (point["t"], point["dt"], point["connections"]) == (1002.0, 2.0, 5)
    total: Any = point["total"]
    assert (total["n"], total["n4"], total["n5"], total["aborts"]) == (11, 1, 1, 1)
    routes: Any = point["routes"]
    assert set(routes) == {"a", "b"}  # c saw nothing: no entry
    assert (routes["a"]["n"], routes["a"]["n5"], routes["b"]["n4"]) == (9, 1, 1)
    assert point["limited"] == 1 and point["denied"] == 0
    # 8 of a's 9 requests took 2 ms (the 2.5 ms bucket): its median lies in (1 ms, 2.5 ms]; its
    # 99th percentile is the 0.3 s request's bucket, (0.25 s, 0.5 s].
    assert 1.0 < routes["a"]["p50"] <= 2.5
    assert 250.0 < routes["a"]["p99"] <= 500.0
    # No cache looked anything up (the cache counters are the process's: another test's may exist).
    assert point["cache"] in (None, {"lookups": 0, "hits": 0})


def test_nothing_new_makes_a_point_of_zeros_and_counters_that_went_down_started_over() -> None:
    plan = _plan()
    sampler = Sampler(_no_source)
    for _ in range(5):
        _route(plan, "a").stats.record("GET", 200, 0.002)
    sampler.add(collect_gateway(plan, []), 10.0)
    sampler.add(collect_gateway(plan, []), 11.0)
    renewed = _plan()  # a's counters start again from zero, as after a reload that dropped it
    _route(renewed, "a").stats.record("GET", 200, 0.002)
    _route(renewed, "a").stats.record("GET", 200, 0.002)
    sampler.add(collect_gateway(renewed, []), 12.0)
    quiet, restarted = sampler.points
    assert quiet["total"] == {"n": 0, "n4": 0, "n5": 0, "aborts": 0, "p50": None, "p95": None, "p99": None}
    assert restarted["routes"]["a"]["n"] == 2  # type: ignore[index]


def test_workers_summed_by_merge_give_one_point() -> None:
    plans = [_plan(), _plan()]
    sampler = Sampler(_no_source)
    sampler.add(merge([collect_gateway(plan, []) for plan in plans]), 0.5)
    _route(plans[0], "a").stats.record("GET", 200, 0.002)
    for _ in range(3):
        _route(plans[1], "a").stats.record("GET", 502, 0.002)
    sampler.add(merge([collect_gateway(plan, []) for plan in plans]), 1.5)
    routes: Any = sampler.points[0]["routes"]
    assert (routes["a"]["n"], routes["a"]["n5"]) == (4, 3)


def test_only_the_busiest_routes_get_an_entry_and_the_total_counts_them_all() -> None:
    plan = _plan()
    sampler = Sampler(_no_source, kept=2)
    sampler.add(collect_gateway(plan, []), 0.0)
    for route_id, count in (("a", 1), ("b", 3), ("c", 2)):
        for _ in range(count):
            _route(plan, route_id).stats.record("GET", 200, 0.001)
    sampler.add(collect_gateway(plan, []), 1.0)
    point = sampler.points[0]
    assert set(point["routes"]) == {"b", "c"}  # type: ignore[arg-type]
    assert point["total"]["n"] == 6  # type: ignore[index]


def test_the_ring_keeps_the_window_and_since_returns_what_is_newer() -> None:
    plan = _plan()
    sampler = Sampler(_no_source, window=10.0)
    for second in range(30):
        sampler.add(collect_gateway(plan, []), 100.0 + second)
    assert [p["t"] for p in sampler.points] == [120.0 + s for s in range(10)]
    assert [p["t"] for p in sampler.since(127.0)] == [128.0, 129.0]
    assert sampler.since(129.0) == []


_CACHED = "cached-in-the-timeseries-test"  # the cache's counters are the process's: a name of its own


def test_a_cache_shows_lookups_and_hits_once_a_route_has_one() -> None:
    document = {
        **_DOC,
        "routes": [
            {"id": _CACHED, "path": "/a", "upstream": "up", "plugins": [{"name": "cache", "ttl": "10s"}]}
        ],
    }
    plan = compile_plan(parse_config(document, "gw.yaml"))
    from fastgw.plugins.cache.plugin import REQUESTS

    sampler = Sampler(_no_source)
    sampler.add(collect_gateway(plan, []), 0.0)
    REQUESTS.labels(_CACHED, "hit").inc(3)
    REQUESTS.labels(_CACHED, "miss").inc(1)
    REQUESTS.labels(_CACHED, "bypass").inc(5)  # not cacheable: not a lookup
    sampler.add(collect_gateway(plan, []), 1.0)
    assert sampler.points[0]["cache"] == {"lookups": 4, "hits": 3}


def test_sampling_stretches_its_period_to_stay_under_two_percent_of_a_core(monkeypatch: Any) -> None:
    """A sample costing 0.1 s of CPU (thousands of routes) is taken every 5 s, not every second;
    one costing 2 s, once a minute at most."""
    import asyncio

    from fastgw.observe import timeseries

    plan = _plan()
    costs = iter([0.0, 0.1, 0.0, 2.0])  # process_time around each of two samples
    monkeypatch.setattr(timeseries.time, "process_time", lambda: next(costs))
    spacings: list[float] = []

    async def source() -> Any:
        return collect_gateway(plan, [])

    sampler = Sampler(source)

    async def sleep(seconds: float) -> None:
        spacings.append(sampler.spacing)
        if len(spacings) == 2:
            raise asyncio.CancelledError

    monkeypatch.setattr(timeseries.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(sampler.run())
    assert spacings == [pytest.approx(5.0), 60.0]
