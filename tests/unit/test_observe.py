"""Metrics rendering and merging, the counters plugins declare, the ops config keys."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastgw._proxy import LATENCY_BOUNDS, RequestIds, RequestStats
from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.observe.counters import CounterRegistry
from fastgw.observe.metrics import Family, collect_gateway, counters_of, label_worker, merge, render
from fastgw.plan import compile_plan

_DOC: dict[str, Any] = {
    "listeners": [{"bind": "127.0.0.1:0"}],
    "upstreams": {"up": {"targets": ["127.0.0.1:9", "127.0.0.1:10"]}},
    "routes": [{"id": "items", "path": "/items/{id}", "upstream": "up"}],
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_request_stats_render_as_parsable_prometheus_text() -> None:
    plan = compile_plan(parse_config(_DOC, "gw.yaml"))
    stats = plan.routes[0].stats
    stats.record("GET", 200, 0.002, 0.001)
    stats.record("GET", 204, 0.7, 0.6)
    stats.record("POST", 429, 0.0001)
    stats.record("BREW", 0, 0.01)  # an unknown method, and the client left: no response
    samples = _samples(render(collect_gateway(plan, [])))
    assert samples[("fastgw_requests_total", (("method", "GET"), ("route", "items"), ("status", "2xx")))] == 2
    assert (
        samples[("fastgw_requests_total", (("method", "POST"), ("route", "items"), ("status", "4xx")))] == 1
    )
    assert (
        samples[("fastgw_requests_total", (("method", "other"), ("route", "items"), ("status", "none")))] == 1
    )
    assert samples[("fastgw_requests_denied_total", (("route", "items"), ("status", "429")))] == 1
    bucket = "fastgw_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.0025"), ("route", "items")))] == 2  # 0.0001, 0.002
    assert samples[(bucket, (("le", "0.5"), ("route", "items")))] == 3
    assert samples[(bucket, (("le", "+Inf"), ("route", "items")))] == 4
    assert samples[("fastgw_request_duration_seconds_count", (("route", "items"),))] == 4
    assert samples[("fastgw_upstream_duration_seconds_count", (("route", "items"),))] == 2
    assert samples[("fastgw_request_duration_seconds_sum", (("route", "items"),))] == pytest.approx(0.7121)
    assert samples[("fastgw_upstream_target_up", (("target", "127.0.0.1:9"), ("upstream", "up")))] == 1


def test_latency_buckets_are_cumulative_and_bounded() -> None:
    stats = RequestStats()
    for bound in LATENCY_BOUNDS:
        stats.record("GET", 200, bound)  # on a bound: in that bucket (le is "less or equal")
    stats.record("GET", 200, 1e6)
    buckets, total = stats.snapshot()["total"]
    assert buckets == [1] * (len(LATENCY_BOUNDS) + 1)
    assert total == pytest.approx(sum(LATENCY_BOUNDS) + 1e6)


def test_route_counters_survive_a_reload_by_route_id() -> None:
    first = compile_plan(parse_config(_DOC, "gw.yaml"))
    first.routes[0].stats.record("GET", 200)
    renamed = {**_DOC, "routes": [{"id": "other", "path": "/items/{id}", "upstream": "up"}]}
    assert compile_plan(parse_config(_DOC, "gw.yaml"), first).routes[0].stats is first.routes[0].stats
    assert compile_plan(parse_config(renamed, "gw.yaml"), first).routes[0].stats is not first.routes[0].stats


def test_merge_sums_counters_and_takes_the_minimum_of_up() -> None:
    def worker(requests: float, up: float) -> dict[str, Family]:
        counter = Family("counter", "c")
        counter.add((("route", "r"),), requests)
        gauge = Family("gauge", "g", "min")
        gauge.add((("target", "t"),), up)
        return {"c_total": counter, "up": gauge}

    merged = merge([worker(3, 1), worker(4, 0)])
    assert merged["c_total"].samples == {("", (("route", "r"),)): 7}
    assert merged["up"].samples == {("", (("target", "t"),)): 0}


def test_merge_keeps_per_worker_states_apart_and_a_per_worker_limit_as_it_is() -> None:
    def worker(state: str, limit: float) -> dict[str, Family]:
        breaker = Family("gauge", "b", "worker")
        for each in ("closed", "open"):
            breaker.add((("target", "t"), ("state", each)), 1.0 if each == state else 0.0)
        per_worker = Family("gauge", "l", "max")
        per_worker.add((("limit", "x"),), limit)
        return {"breaker": breaker, "limit": per_worker, "c_total": Family("counter", "c")}

    merged = merge([label_worker(worker("closed", 5), 0), label_worker(worker("open", 5), 1)])
    assert merged["breaker"].samples == {
        ("", (("target", "t"), ("state", "closed"), ("worker", "0"))): 1,
        ("", (("target", "t"), ("state", "open"), ("worker", "0"))): 0,
        ("", (("target", "t"), ("state", "closed"), ("worker", "1"))): 0,
        ("", (("target", "t"), ("state", "open"), ("worker", "1"))): 1,
    }
    assert merged["limit"].samples == {("", (("limit", "x"),)): 5}  # not 10: each worker's own
    assert sorted(counters_of(worker("open", 5))) == ["c_total"]  # what a worker gone leaves


def test_label_values_are_escaped() -> None:
    family = Family("counter", 'help with \\ and "quotes"')
    family.add((("route", 'a"b\\c\nd'),), 1)
    samples = _samples(render({"x_total": family}))
    assert samples[("x_total", (("route", 'a"b\\c\nd'),))] == 1


def test_plugin_counters_are_declared_once_and_counted() -> None:
    registry = CounterRegistry()
    hits = registry.declare("fastgw_cache_requests_total", "Cache lookups.", ("route", "result"))
    assert registry.declare("fastgw_cache_requests_total", "Cache lookups.", ("route", "result")) is hits
    hits.labels("items", "hit").inc()
    hits.labels("items", "hit").inc(2)
    assert hits.labels("items", "hit").value == 3
    with pytest.raises(ValueError, match="already declared"):
        registry.declare("fastgw_cache_requests_total", "Cache lookups.", ("route",))
    with pytest.raises(ValueError, match="_total"):
        registry.declare("fastgw_cache", "no suffix")
    with pytest.raises(ValueError, match="labels"):
        hits.labels("items")


def test_trace_and_span_ids_are_well_spread() -> None:
    values = RequestIds(b"x").random_ids(10_000)
    assert len(set(values)) == 10_000
    assert sum(v >> 63 for v in values) == pytest.approx(5_000, abs=500)  # the top bit is fair


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            {"admin": {"bind": "0.0.0.0:9901"}},
            "gw.yaml: admin.token: required when admin.bind is not a loopback",
        ),
        ({"admin": {"bind": "localhost"}}, "gw.yaml: admin.bind: expected host:port"),
        ({"admin": {"port": 1}}, "gw.yaml: admin: unknown key 'port'"),
        (
            {"access_log": {"fields": ["status", "colour"]}},
            "gw.yaml: access_log.fields[1]: expected the name of",
        ),
        ({"access_log": {"sample": 0}}, "gw.yaml: access_log.sample: expected a fraction"),
        (
            {"access_log": {"flush_interval": "soon"}},
            "gw.yaml: access_log.flush_interval: expected a duration",
        ),
        (
            {"listeners": [{"bind": "127.0.0.1:0", "trace_context": "yes"}]},
            "gw.yaml: listeners[0].trace_context: expected",
        ),
    ],
)
def test_ops_config_errors_name_the_key_path(ops: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**_DOC, **ops}, "gw.yaml")
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("admin", "listeners", "message"),
    [
        (
            {"bind": "127.0.0.1:8080"},
            ["127.0.0.1:8080"],
            "127.0.0.1:8080 overlaps listeners[0].bind (127.0.0.1:8080)",
        ),
        (
            {"bind": "0.0.0.0:8080", "token": "t"},
            ["127.0.0.1:9000", "127.0.0.1:8080"],
            "0.0.0.0:8080 overlaps listeners[1].bind (127.0.0.1:8080)",
        ),
        (
            {"bind": "127.0.0.1:9901"},
            ["0.0.0.0:9901"],
            "127.0.0.1:9901 overlaps listeners[0].bind (0.0.0.0:9901)",
        ),
        ({}, ["0.0.0.0:9901"], "127.0.0.1:9901 overlaps listeners[0].bind (0.0.0.0:9901)"),  # the default
        ({"bind": "[::1]:8080"}, ["[::]:8080"], "[::1]:8080 overlaps listeners[0].bind ([::]:8080)"),
        ({"bind": "localhost:8080"}, ["127.0.0.1:8080"], "localhost:8080 overlaps listeners[0].bind"),
    ],
)
def test_admin_bind_overlapping_a_listener_is_a_config_error(
    admin: dict[str, str], listeners: list[str], message: str
) -> None:
    # Two sockets on one port: the second fails to bind when the gateway starts, or, with
    # --workers (SO_REUSEPORT), the admin API and the listener share the port's connections.
    doc = {**_DOC, "listeners": [{"bind": bind} for bind in listeners], "admin": admin}
    with pytest.raises(ConfigError) as raised:
        parse_config(doc, "gw.yaml")
    assert str(raised.value).startswith(f"gw.yaml: admin.bind: {message}")


@pytest.mark.parametrize(
    ("admin", "listener"),
    [
        ("127.0.0.1:9901", "127.0.0.1:8080"),  # another port
        ("127.0.0.1:8080", "127.0.0.2:8080"),  # another address on the port
        ("127.0.0.1:0", "127.0.0.1:0"),  # any free port: never the same one
        ("[::1]:8080", "0.0.0.0:8080"),  # IPv6 and the IPv4 wildcard (sockets are IPv6-only)
        ("[::]:8080", "127.0.0.1:8080"),
    ],
)
def test_admin_bind_beside_a_listener_is_accepted(admin: str, listener: str) -> None:
    doc = {**_DOC, "listeners": [{"bind": listener}], "admin": {"bind": admin, "token": "t"}}
    config = parse_config(doc, "gw.yaml")
    assert config.admin is not None and config.admin.port == int(admin.rsplit(":", 1)[1])


def test_ops_config_defaults_and_values() -> None:
    config = parse_config(
        {**_DOC, "admin": {"bind": "0.0.0.0:9901", "token": "s3cret"}, "access_log": {"sample": 0.5}},
        "gw.yaml",
    )
    assert config.admin is not None and (config.admin.host, config.admin.port) == ("0.0.0.0", 9901)
    assert config.access_log is not None and config.access_log.sink == "stdout"
    assert config.access_log.sample == 0.5
    assert config.listeners[0].trace_context is True
    plain = parse_config(_DOC, "gw.yaml")
    assert plain.admin is None and plain.access_log is None
