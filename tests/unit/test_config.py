"""Config loading: every rule of the document format, asserted on the exact rendered message.

Most cases start from a minimal valid document, set one key path to a value, and check either the
resulting record or the whole ``file: key.path: message`` text of the ``ConfigError``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from fastgw.config import Config
from fastgw.config.schema import (
    BalanceConfig,
    ClientTimeouts,
    HashKey,
    Limits,
    ListenerConfig,
    PluginConfig,
    PoolConfig,
    RouteConfig,
    TargetConfig,
    UpstreamConfig,
    UpstreamTimeouts,
)
from fastgw.errors import ConfigError
from tests.support.config_docs import MINIMAL, SOURCE, error_of, minimal, parse, with_value

# -- the minimal document and its defaults -------------------------------------------------------


def test_minimal_document_gets_every_default() -> None:
    assert parse(minimal()) == Config(
        source=SOURCE,
        listeners=(ListenerConfig(name="public", host="127.0.0.1", port=0),),
        upstreams={
            "catalog": UpstreamConfig(name="catalog", targets=(TargetConfig(host="127.0.0.1", port=9001),))
        },
        routes=(
            RouteConfig(
                id="route0",
                path="/catalog/items/{id:int}",
                upstream="catalog",
                key_path="routes[0]",
            ),
        ),
    )


def test_error_carries_path_message_and_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_value("routes[0].methods", ["GET", 5]))
    assert (info.value.file, info.value.path) == (SOURCE, "routes[0].methods[1]")
    assert info.value.message == "expected an HTTP method token like 'GET', found 5"


# -- the document as a whole ---------------------------------------------------------------------

_INT_KEY: dict[object, object] = {key: value for key, value in MINIMAL.items()}
_INT_KEY[5] = 1  # YAML allows any scalar as a key
_DOCUMENT_ERRORS: list[tuple[object, str]] = [
    (
        None,
        "gw.yaml: the document is empty; expected a mapping with listeners, upstreams and routes",
    ),
    ([], "gw.yaml: expected a mapping with listeners, upstreams and routes, found an empty list"),
    (
        "listeners",
        "gw.yaml: expected a mapping with listeners, upstreams and routes, found 'listeners'",
    ),
    (
        {**MINIMAL, "route": []},
        "gw.yaml: unknown key 'route'; expected one of: listeners, upstreams, routes, plugins, admin,"
        " access_log, tracing, registries; did you mean 'routes'?",
    ),
    (
        {**MINIMAL, "extra": 1},
        "gw.yaml: unknown key 'extra'; expected one of: listeners, upstreams, routes, plugins, admin,"
        " access_log, tracing, registries",
    ),
    (
        {k: v for k, v in MINIMAL.items() if k != "routes"},
        "gw.yaml: missing required key 'routes'",
    ),
    (_INT_KEY, "gw.yaml: expected non-empty string keys, found key 5"),
]


@pytest.mark.parametrize(("doc", "message"), _DOCUMENT_ERRORS)
def test_document_errors(doc: object, message: str) -> None:
    assert error_of(copy.deepcopy(doc)) == message


# -- names that must be unique -------------------------------------------------------------------


def test_duplicate_route_id_names_both_occurrences() -> None:
    route = {"path": "/a", "upstream": "catalog"}
    doc = with_value("routes", [route, {**route, "id": "x"}, route, {**route, "id": "x"}])
    assert error_of(doc) == "gw.yaml: routes[3].id: duplicate route id 'x' (first at routes[1])"


def test_default_route_id_collides_with_an_explicit_one() -> None:
    route = {"path": "/a", "upstream": "catalog"}
    doc = with_value("routes", [{**route, "id": "route1"}, route])
    assert error_of(doc) == "gw.yaml: routes[1].id: duplicate route id 'route1' (first at routes[0])"


def test_duplicate_listener_name() -> None:
    doc = with_value("listeners[1]", {"name": "public", "bind": "127.0.0.1:0"})
    assert (
        error_of(doc)
        == "gw.yaml: listeners[1].name: duplicate listener name 'public' (first at listeners[0])"
    )


def test_duplicate_bind_address_but_many_ephemeral_ports() -> None:
    doc = with_value("listeners", [{"bind": "[::1]:8080"}, {"bind": "127.0.0.1:0"}, {"bind": "[::1]:8080"}])
    assert (
        error_of(doc)
        == "gw.yaml: listeners[2].bind: duplicate bind address '[::1]:8080' (first at listeners[0])"
    )
    doc = with_value("listeners", [{"bind": "127.0.0.1:0"}, {"bind": "127.0.0.1:0"}])
    assert [listener.name for listener in parse(doc).listeners] == ["listener0", "listener1"]


# -- accepted values and what they become --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (10, 10.0),
        (2.5, 2.5),
        ("10", 10.0),
        ("0.5", 0.5),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse(with_value("listeners[0].timeouts.head", value)).listeners[0].timeouts.head == seconds


@pytest.mark.parametrize("value", [0, "0", "0s", 0.0])
def test_drain_may_be_zero(value: object) -> None:
    assert parse(with_value("listeners[0].timeouts.drain", value)).listeners[0].timeouts.drain == 0.0


def _failure_ratio(config: Config) -> float:
    breaker = config.upstreams["catalog"].breaker
    assert breaker is not None
    return breaker.failure_ratio


def _retry_budget(config: Config) -> float:
    retry = config.routes[0].retry
    assert retry is not None
    return retry.budget


def _access_log_sample(config: Config) -> float:
    assert config.access_log is not None
    return config.access_log.sample


# Three keys read by one fraction reader: only the retry budget may be 0 (no retries at all).
_FRACTIONS = [
    ("upstreams.catalog.breaker.failure_ratio", _failure_ratio, "greater than 0 and at most 1, like 0.5"),
    ("routes[0].retry.budget", _retry_budget, "from 0 to 1, like 0.2"),
    ("access_log.sample", _access_log_sample, "greater than 0 and at most 1, like 0.1"),
]


@pytest.mark.parametrize(("path", "read", "bounds"), _FRACTIONS)
@pytest.mark.parametrize("value", [1, 0.5, 0.001])
def test_fractions(path: str, read: Any, bounds: str, value: float) -> None:
    assert read(parse(with_value(path, value))) == value


def test_a_retry_budget_may_be_zero() -> None:
    assert _retry_budget(parse(with_value("routes[0].retry.budget", 0))) == 0.0


@pytest.mark.parametrize(("path", "read", "bounds"), [_FRACTIONS[0], _FRACTIONS[2]])
def test_other_fractions_may_not_be_zero(path: str, read: Any, bounds: str) -> None:
    assert error_of(with_value(path, 0)) == f"{SOURCE}: {path}: expected a fraction {bounds}, found 0"


@pytest.mark.parametrize(("path", "read", "bounds"), _FRACTIONS)
@pytest.mark.parametrize(
    ("value", "shown"), [(math.nan, "nan"), (1.5, "1.5"), (-0.1, "-0.1"), (True, "true"), ("0.5", "'0.5'")]
)
def test_fraction_errors(path: str, read: Any, bounds: str, value: object, shown: str) -> None:
    message = f"{SOURCE}: {path}: expected a fraction {bounds}, found {shown}"
    assert error_of(with_value(path, value)) == message


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1, 1),
        ("4096", 4096),
        ("512B", 512),
        ("16KiB", 16 * 1024),
        ("1MiB", 1024**2),
        ("1GiB", 1024**3),
        ("16KB", 16_000),
        ("1MB", 1_000_000),
        ("2GB", 2_000_000_000),
    ],
)
def test_sizes(value: object, size: int) -> None:
    assert parse(with_value("listeners[0].buffer_bytes", value)).listeners[0].buffer_bytes == size


def test_listener_fields() -> None:
    listener = {
        "bind": "[::1]:65535",
        "trusted_proxies": ["10.1.2.3/8", "::1", "192.168.0.1"],
        "limits": {"max_headers": "50", "max_body_bytes": "1MiB", "max_pipeline": 0},
        "timeouts": {"keepalive": "5s"},
    }
    parsed = parse(with_value("listeners[0]", listener)).listeners[0]
    assert parsed == ListenerConfig(
        name="listener0",
        host="::1",
        port=65535,
        trusted_proxies=("10.0.0.0/8", "::1/128", "192.168.0.1/32"),
        limits=Limits(max_headers=50, max_body_bytes=1024**2, max_pipeline=0),
        timeouts=ClientTimeouts(keepalive=5.0),
    )


@pytest.mark.parametrize(
    ("bind", "host", "port"),
    [("localhost:0", "localhost", 0), ("0.0.0.0:65535", "0.0.0.0", 65535), ("[::]:80", "::", 80)],
)
def test_bind_forms(bind: str, host: str, port: int) -> None:
    listener = parse(with_value("listeners[0].bind", bind)).listeners[0]
    assert (listener.host, listener.port) == (host, port)


def test_upstream_fields() -> None:
    upstream = {
        "targets": ["backend.internal:9001", {"address": "[::1]:9002", "weight": "3"}],
        "pool": {"max_connections": 64, "idle_timeout": "30s"},
        "timeouts": {"connect": "250ms"},
        "host_header": "catalog.internal:8080",
    }
    assert parse(with_value("upstreams.catalog", upstream)).upstreams["catalog"] == UpstreamConfig(
        name="catalog",
        targets=(TargetConfig("backend.internal", 9001), TargetConfig("::1", 9002, weight=3)),
        pool=PoolConfig(max_connections=64, max_idle=64, idle_timeout=30.0),  # default idle: all of them
        timeouts=UpstreamTimeouts(connect=0.25),
        host_header="catalog.internal:8080",
    )


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (None, (1024, 1024)),  # 1,000 clients on one target: every connection stays in the pool
        ({"max_connections": 4096}, (4096, 4096)),
        ({"max_connections": 64}, (64, 64)),
        ({"max_connections": 4096, "max_idle": 16}, (4096, 16)),  # written out: kept
    ],
)
def test_idle_connections_are_capped_only_by_max_connections_unless_told(
    pool: dict[str, int] | None, expected: tuple[int, int]
) -> None:
    """A max_idle below the concurrency churns: each release above it closes a connection the
    next request opens again. Left out, it is max_connections (idle_timeout closes the rest)."""
    doc = with_value("upstreams.catalog.pool", pool) if pool is not None else minimal()
    got = parse(doc).upstreams["catalog"].pool
    assert (got.max_connections, got.max_idle) == expected


@pytest.mark.parametrize(
    ("value", "balance"),
    [
        ("round_robin", BalanceConfig()),
        ("least_conn", BalanceConfig("least_conn")),
        ("p2c", BalanceConfig("p2c")),
        ("ewma", BalanceConfig("ewma")),
        ("sticky", BalanceConfig("sticky", cookie="fgw_sticky")),
        ({"sticky": {}}, BalanceConfig("sticky")),
        ({"sticky": {"cookie": "app_route"}}, BalanceConfig("sticky", cookie="app_route")),
        ({"hash": "ip"}, BalanceConfig("hash", hash_key=HashKey("ip"))),
        ({"hash": "header:X-User"}, BalanceConfig("hash", hash_key=HashKey("header", "x-user"))),
        ({"hash": "cookie:Session"}, BalanceConfig("hash", hash_key=HashKey("cookie", "Session"))),
        ({"hash": "param:id"}, BalanceConfig("hash", hash_key=HashKey("param", "id"))),
    ],
)
def test_balance_forms(value: object, balance: BalanceConfig) -> None:
    assert parse(with_value("upstreams.catalog.balance", value)).upstreams["catalog"].balance == balance


def test_balance_defaults_to_round_robin() -> None:
    assert parse(minimal()).upstreams["catalog"].balance == BalanceConfig("round_robin", None, "fgw_sticky")


_BALANCE = (
    "expected one of round_robin, least_conn, p2c, ewma, sticky, or {hash: KEY} or {sticky: {cookie: NAME}}"
)
_HASH = "expected 'ip', 'header:NAME', 'cookie:NAME' or 'param:NAME'"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("least-conn", f"balance: {_BALANCE}, found 'least-conn'; did you mean 'least_conn'?"),
        (3, f"balance: {_BALANCE}, found 3"),
        (None, f"balance: {_BALANCE}, found null"),
        (
            "hash",
            "balance: hash needs a key: write {hash: KEY} with KEY one of 'ip', 'header:NAME',"
            " 'cookie:NAME' or 'param:NAME'",
        ),
        ({"p2c": True}, "balance: p2c has no options; write balance: p2c"),
        ({}, "balance: expected a mapping with one key, hash or sticky, found an empty mapping"),
        ({"hash": "ip", "sticky": {}}, "balance: expected one of hash or sticky, found both"),
        ({"hsah": "ip"}, "balance: unknown key 'hsah'; expected one of: hash, sticky; did you mean 'hash'?"),
        ({"hash": "IP"}, f"balance.hash: {_HASH}, found 'IP'"),
        ({"hash": "query:q"}, f"balance.hash: {_HASH}, found 'query:q'"),
        ({"hash": ["ip"]}, f"balance.hash: {_HASH}, found a list"),
        (
            {"hash": "header:"},
            "balance.hash: expected 'header:' followed by a header name (an HTTP token), found 'header:'",
        ),
        (
            {"hash": "cookie:a b"},
            "balance.hash: expected 'cookie:' followed by a cookie name (an HTTP token), found 'cookie:a b'",
        ),
        (
            {"hash": "param:1d"},
            "balance.hash: expected 'param:' followed by a path parameter name like 'id', found 'param:1d'",
        ),
        (
            {"hash": "param:item"},
            "balance.hash: no route to upstream 'catalog' has a path parameter 'item' (theirs: id)",
        ),
        ({"sticky": None}, "balance.sticky: expected a mapping, found null"),
        (
            {"sticky": {"name": "s"}},
            "balance.sticky: unknown key 'name'; expected one of: cookie",
        ),
        (
            {"sticky": {"cookie": "a;b"}},
            "balance.sticky.cookie: expected a cookie name (an HTTP token like 'fgw_sticky'), found 'a;b'",
        ),
    ],
)
def test_balance_errors(value: object, message: str) -> None:
    doc = with_value("upstreams.catalog.balance", value)
    assert error_of(doc) == f"{SOURCE}: upstreams.catalog.{message}"


def test_hash_param_needs_one_route_that_defines_it() -> None:
    """Routes to the upstream without the parameter are fine (their requests go round robin), as
    long as one route has it; an upstream no route uses is not checked."""
    doc = with_value("upstreams.catalog.balance", {"hash": "param:id"})
    doc["routes"].append({"path": "/catalog/health", "upstream": "catalog"})
    assert parse(doc).upstreams["catalog"].balance.hash_key == HashKey("param", "id")
    doc = with_value("upstreams.spare", {"targets": ["127.0.0.1:9"], "balance": {"hash": "param:x"}})
    assert parse(doc).upstreams["spare"].balance.hash_key == HashKey("param", "x")


def test_route_fields() -> None:
    route = {
        "id": "catalog-item",
        "path": "/catalog/items/{id:int}",
        "upstream": "catalog",
        "methods": ["get", "POST", "get"],
        "host": ["API.Example.com", "*.example.com", "api.example.com"],
        "listeners": "public",
        "headers": {"X-Version": 2, "X-Rate": 1.5, "X-Empty": ""},
        "query": {"preview": "", "n": 3},
        "priority": "-5",
        "rewrite": "/api/items/{id}",
        "preserve_host": "true",
        "timeouts": {"read": "10s"},
        "plugins": [{"name": "request_id", "header": "X-Id", "nested": {"a": [1]}}],
    }
    doc = with_value("routes[0]", route)
    doc = with_value("upstreams.catalog.timeouts", {"connect": 1}, doc)
    assert parse(doc).routes[0] == RouteConfig(
        id="catalog-item",
        path="/catalog/items/{id:int}",
        upstream="catalog",
        key_path="routes[0]",
        methods=("GET", "POST"),
        hosts=("api.example.com", "*.example.com"),
        listeners=("public",),
        headers=(("x-version", "2"), ("x-rate", "1.5"), ("x-empty", "")),
        query=(("preview", ""), ("n", "3")),
        priority=-5,
        rewrite="/api/items/{id}",
        preserve_host=True,
        timeouts=UpstreamTimeouts(connect=1.0, read=10.0, send=60.0),  # the rest from the upstream
        plugins=(
            PluginConfig("request_id", {"header": "X-Id", "nested": {"a": [1]}}, "routes[0].plugins[0]"),
        ),
    )


@pytest.mark.parametrize(
    ("methods", "expected"),
    [("*", None), (["*"], None), ("get", ("GET",)), ("M-SEARCH", ("M-SEARCH",))],
)
def test_methods_forms(methods: object, expected: tuple[str, ...] | None) -> None:
    assert parse(with_value("routes[0].methods", methods)).routes[0].methods == expected


@pytest.mark.parametrize("prefix", ["/catalog", "/catalog/", "/catalog/items", "/catalog/items/", "/"])
def test_strip_prefix_forms(prefix: str) -> None:
    assert parse(with_value("routes[0].strip_prefix", prefix)).routes[0].strip_prefix == prefix


def test_rewrite_may_use_catch_all_parameters() -> None:
    doc = with_value(
        "routes[0]", {"path": "/files/{*rest}", "upstream": "catalog", "rewrite": "/{rest}/{*rest}"}
    )
    assert parse(doc).routes[0].rewrite == "/{rest}/{*rest}"


def test_key_paths_of_routes_and_plugins() -> None:
    route = {"path": "/a", "upstream": "catalog", "plugins": [{"name": "a"}, {"name": "b", "x": 1}]}
    doc = with_value("routes[1]", route)
    doc = with_value("plugins", [{"name": "access_log"}, {"name": "metrics"}], doc)
    config = parse(doc)
    assert [route.key_path for route in config.routes] == ["routes[0]", "routes[1]"]
    assert [plugin.key_path for plugin in config.routes[1].plugins] == [
        "routes[1].plugins[0]",
        "routes[1].plugins[1]",
    ]
    assert config.routes[1].plugins[1].options == {"x": 1}
    assert [(p.name, p.key_path) for p in config.plugins] == [
        ("access_log", "plugins[0]"),
        ("metrics", "plugins[1]"),
    ]
