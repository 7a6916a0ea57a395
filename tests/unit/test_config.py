"""Config loading: every rule of the document format, asserted on the exact rendered message.

Most cases start from a minimal valid document, set one key path to a value, and check either the
resulting record or the whole ``file: key.path: message`` text of the ``ConfigError``.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgw.config
from fastgw.config import Config, load_config, parse_config
from fastgw.config.schema import (
    BalanceConfig,
    ClientTimeouts,
    HashKey,
    Limits,
    ListenerConfig,
    PluginConfig,
    PoolConfig,
    RetryConfig,
    RouteConfig,
    TargetConfig,
    UpstreamConfig,
    UpstreamTimeouts,
)
from fastgw.errors import ConfigError

SOURCE = "gw.yaml"
EXAMPLE = Path(fastgw.config.__file__).with_name("example.yaml")

_MINIMAL: dict[str, Any] = {
    "listeners": [{"name": "public", "bind": "127.0.0.1:0"}],
    "upstreams": {"catalog": {"targets": ["127.0.0.1:9001"]}},
    "routes": [{"path": "/catalog/items/{id:int}", "upstream": "catalog"}],
}
_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def minimal() -> dict[str, Any]:
    return copy.deepcopy(_MINIMAL)


def with_value(path: str, value: object, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` (default: the minimal document) with ``value`` set at ``path`` (``a.b[1].c``)."""
    doc = minimal() if doc is None else doc
    steps: list[str | int] = [int(index) if index else key for key, index in _STEP.findall(path)]
    node: Any = doc
    for step in steps[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    last = steps[-1]
    if isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    return doc


def parse(doc: object, env: dict[str, str] | None = None) -> Config:
    return parse_config(doc, SOURCE, env={} if env is None else env)


def error_of(doc: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(doc, env)
    assert info.value.file == SOURCE
    return str(info.value)


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

_INT_KEY: dict[object, object] = {key: value for key, value in _MINIMAL.items()}
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
        {**_MINIMAL, "route": []},
        "gw.yaml: unknown key 'route'; expected one of: listeners, upstreams, routes, plugins, admin,"
        " access_log, tracing, registries; did you mean 'routes'?",
    ),
    (
        {**_MINIMAL, "extra": 1},
        "gw.yaml: unknown key 'extra'; expected one of: listeners, upstreams, routes, plugins, admin,"
        " access_log, tracing, registries",
    ),
    (
        {k: v for k, v in _MINIMAL.items() if k != "routes"},
        "gw.yaml: missing required key 'routes'",
    ),
    (_INT_KEY, "gw.yaml: expected non-empty string keys, found key 5"),
]


@pytest.mark.parametrize(("doc", "message"), _DOCUMENT_ERRORS)
def test_document_errors(doc: object, message: str) -> None:
    assert error_of(copy.deepcopy(doc)) == message


# -- one bad value at one key path ---------------------------------------------------------------

_BIND = "expected host:port or [ipv6]:port with a port from 0 to 65535"
_TARGET = "expected host:port or [ipv6]:port with a port from 1 to 65535"
_SIZE = "expected a size like 65536, '16KiB', '1MiB', '1GiB', '16KB' or '1MB'"
_DURATION = "expected a duration like 30, '250ms', '1.5s', '2m' or '1h'"
_PATH = "expected a path starting with '/' without '?' or '#'"
_HOST = "expected a host name like 'api.example.com' or '*.example.com', without port"
_ROUTE_KEYS = (
    "id, path, upstream, methods, host, listeners, headers, query, priority, rewrite,"
    " strip_prefix, preserve_host, timeouts, retry, concurrency, plugins, aggregate, redirect_https,"
    " websocket, upgrade, tunnel"
)

_VALUE_ERRORS: list[tuple[str, object, str]] = [
    # listeners
    ("listeners", [], "listeners: expected a non-empty list, found an empty list"),
    ("listeners", {"bind": "x"}, "listeners: expected a non-empty list, found a mapping"),
    ("listeners[0]", "127.0.0.1:80", "listeners[0]: expected a mapping, found '127.0.0.1:80'"),
    ("listeners[0].name", "", "listeners[0].name: expected a non-empty string, found ''"),
    ("listeners[0].name", 7, "listeners[0].name: expected a non-empty string, found 7"),
    ("listeners[0].bind", "localhost", f"listeners[0].bind: {_BIND}, found 'localhost'"),
    (
        "listeners[0].bind",
        "127.0.0.1:65536",
        f"listeners[0].bind: {_BIND}, found '127.0.0.1:65536'",
    ),
    ("listeners[0].bind", "127.0.0.1:-1", f"listeners[0].bind: {_BIND}, found '127.0.0.1:-1'"),
    ("listeners[0].bind", "127.0.0.1:", f"listeners[0].bind: {_BIND}, found '127.0.0.1:'"),
    ("listeners[0].bind", ":8080", f"listeners[0].bind: {_BIND}, found ':8080'"),
    ("listeners[0].bind", "::1:8080", f"listeners[0].bind: {_BIND}, found '::1:8080'"),
    ("listeners[0].bind", "[::1]8080", f"listeners[0].bind: {_BIND}, found '[::1]8080'"),
    ("listeners[0].bind", "[127.0.0.1]:80", f"listeners[0].bind: {_BIND}, found '[127.0.0.1]:80'"),
    ("listeners[0].bind", "my host:80", f"listeners[0].bind: {_BIND}, found 'my host:80'"),
    ("listeners[0].bind", 8080, f"listeners[0].bind: {_BIND}, found 8080"),
    (
        "listeners[0].trusted_proxies",
        "10.0.0.0/8",
        "listeners[0].trusted_proxies: expected a list, found '10.0.0.0/8'",
    ),
    (
        "listeners[0].trusted_proxies",
        ["10.0.0.0/8", "10.0.0.0/33"],
        "listeners[0].trusted_proxies[1]: expected an IPv4 or IPv6 address or network"
        " like '10.0.0.0/8', found '10.0.0.0/33'",
    ),
    (
        "listeners[0].trusted_proxies",
        [8],
        "listeners[0].trusted_proxies[0]: expected an IPv4 or IPv6 address or network"
        " like '10.0.0.0/8', found 8",
    ),
    (
        "listeners[0].buffer_bytes",
        0,
        "listeners[0].buffer_bytes: expected a size greater than 0, found 0",
    ),
    (
        "listeners[0].buffer_bytes",
        "0KiB",
        "listeners[0].buffer_bytes: expected a size greater than 0, found '0KiB'",
    ),
    (
        "listeners[0].buffer_bytes",
        -5,
        "listeners[0].buffer_bytes: expected a size greater than 0, found -5",
    ),
    ("listeners[0].buffer_bytes", "16 KiB", f"listeners[0].buffer_bytes: {_SIZE}, found '16 KiB'"),
    ("listeners[0].buffer_bytes", "1.5MiB", f"listeners[0].buffer_bytes: {_SIZE}, found '1.5MiB'"),
    ("listeners[0].buffer_bytes", "16kib", f"listeners[0].buffer_bytes: {_SIZE}, found '16kib'"),
    ("listeners[0].buffer_bytes", "-16", f"listeners[0].buffer_bytes: {_SIZE}, found '-16'"),
    ("listeners[0].buffer_bytes", 1024.0, f"listeners[0].buffer_bytes: {_SIZE}, found 1024.0"),
    ("listeners[0].buffer_bytes", True, f"listeners[0].buffer_bytes: {_SIZE}, found true"),
    ("listeners[0].limits", 5, "listeners[0].limits: expected a mapping, found 5"),
    (
        "listeners[0].limits.max_headers",
        0,
        "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found 0",
    ),
    (
        "listeners[0].limits.max_headers",
        True,
        "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found true",
    ),
    (
        "listeners[0].limits.max_headers",
        10.0,
        "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found 10.0",
    ),
    (
        "listeners[0].limits.max_headers",
        "1e3",
        "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found '1e3'",
    ),
    (
        "listeners[0].limits.max_headers",
        " 5",
        "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found ' 5'",
    ),
    (
        "listeners[0].limits.max_connections",
        2_000_000,
        "listeners[0].limits.max_connections: expected an integer from 1 to 1000000, found 2000000",
    ),
    (
        "listeners[0].limits.max_pipeline",
        -1,
        "listeners[0].limits.max_pipeline: expected an integer from 0 to 1024, found -1",
    ),
    (
        "listeners[0].limits.max_header_bytes",
        "lots",
        f"listeners[0].limits.max_header_bytes: {_SIZE}, found 'lots'",
    ),
    (
        "listeners[0].limits.max_header",
        100,
        "listeners[0].limits: unknown key 'max_header'; expected one of: max_header_bytes,"
        " max_headers, max_uri_bytes, max_body_bytes, max_connections, max_pipeline;"
        " did you mean 'max_headers'?",
    ),
    (
        "listeners[0].timeouts.head",
        0,
        "listeners[0].timeouts.head: expected a duration greater than 0, found 0",
    ),
    (
        "listeners[0].timeouts.head",
        "0ms",
        "listeners[0].timeouts.head: expected a duration greater than 0, found '0ms'",
    ),
    (
        "listeners[0].timeouts.head",
        -3,
        "listeners[0].timeouts.head: expected a duration greater than 0, found -3",
    ),
    ("listeners[0].timeouts.head", "5x", f"listeners[0].timeouts.head: {_DURATION}, found '5x'"),
    (
        "listeners[0].timeouts.head",
        "1.5 s",
        f"listeners[0].timeouts.head: {_DURATION}, found '1.5 s'",
    ),
    ("listeners[0].timeouts.head", ".5s", f"listeners[0].timeouts.head: {_DURATION}, found '.5s'"),
    ("listeners[0].timeouts.head", "5S", f"listeners[0].timeouts.head: {_DURATION}, found '5S'"),
    ("listeners[0].timeouts.head", "-1s", f"listeners[0].timeouts.head: {_DURATION}, found '-1s'"),
    ("listeners[0].timeouts.head", math.nan, f"listeners[0].timeouts.head: {_DURATION}, found nan"),
    ("listeners[0].timeouts.head", math.inf, f"listeners[0].timeouts.head: {_DURATION}, found inf"),
    ("listeners[0].timeouts.head", None, f"listeners[0].timeouts.head: {_DURATION}, found null"),
    ("listeners[0].timeouts.head", False, f"listeners[0].timeouts.head: {_DURATION}, found false"),
    (
        "listeners[0].timeouts.drain",
        -1,
        "listeners[0].timeouts.drain: expected a duration of at least 0, found -1",
    ),
    (
        "listeners[0].tiemouts",
        {},
        "listeners[0]: unknown key 'tiemouts'; expected one of: name, bind, trusted_proxies,"
        " buffer_bytes, limits, timeouts, trace_context, headers_with_underscores, request_id_header, tls,"
        " http2; did you mean 'timeouts'?",
    ),
    # upstreams
    ("upstreams", {}, "upstreams: expected a non-empty mapping, found an empty mapping"),
    ("upstreams", ["catalog"], "upstreams: expected a non-empty mapping, found a list"),
    ("upstreams.catalog", None, "upstreams.catalog: expected a mapping, found null"),
    ("upstreams.catalog", {"pool": {}}, "upstreams.catalog: missing required key 'targets' (or 'discovery')"),
    (
        "upstreams.catalog.tragets",
        ["127.0.0.1:1"],
        "upstreams.catalog: unknown key 'tragets'; expected one of: targets, pool, timeouts,"
        " host_header, health, outlier, breaker, balance, concurrency, tls, discovery, protocol;"
        " did you mean 'targets'?",
    ),
    (
        "upstreams.catalog.targets",
        [],
        "upstreams.catalog.targets: expected a non-empty list, found an empty list",
    ),
    (
        "upstreams.catalog.targets",
        "127.0.0.1:9001",
        "upstreams.catalog.targets: expected a non-empty list, found '127.0.0.1:9001'",
    ),
    (
        "upstreams.catalog.targets[0]",
        "127.0.0.1:0",
        f"upstreams.catalog.targets[0]: {_TARGET}, found '127.0.0.1:0'",
    ),
    (
        "upstreams.catalog.targets[0]",
        "catalog",
        f"upstreams.catalog.targets[0]: {_TARGET}, found 'catalog'",
    ),
    (
        "upstreams.catalog.targets[0]",
        9001,
        "upstreams.catalog.targets[0]: expected 'host:port' or a mapping with address and weight, found 9001",
    ),
    (
        "upstreams.catalog.targets[1]",
        {"address": "127.0.0.1:9002", "weight": 0},
        "upstreams.catalog.targets[1].weight: expected an integer from 1 to 1000, found 0",
    ),
    (
        "upstreams.catalog.targets[1]",
        {"address": "127.0.0.1:9002", "weight": True},
        "upstreams.catalog.targets[1].weight: expected an integer from 1 to 1000, found true",
    ),
    (
        "upstreams.catalog.targets[1]",
        {"address": "127.0.0.1:99999"},
        f"upstreams.catalog.targets[1].address: {_TARGET}, found '127.0.0.1:99999'",
    ),
    (
        "upstreams.catalog.targets[1]",
        {"weight": 2},
        "upstreams.catalog.targets[1]: missing required key 'address'",
    ),
    (
        "upstreams.catalog.targets[1]",
        {"address": "127.0.0.1:9002", "wieght": 2},
        "upstreams.catalog.targets[1]: unknown key 'wieght'; expected one of: address, weight;"
        " did you mean 'weight'?",
    ),
    (
        "upstreams.catalog.pool",
        {"max_idle": 1100},
        "upstreams.catalog.pool.max_idle: expected at most max_connections (1024), found 1100",
    ),
    (
        "upstreams.catalog.pool.max_connections",
        0,
        "upstreams.catalog.pool.max_connections: expected an integer from 1 to 100000, found 0",
    ),
    (
        "upstreams.catalog.pool.idle_timeout",
        "never",
        f"upstreams.catalog.pool.idle_timeout: {_DURATION}, found 'never'",
    ),
    (
        "upstreams.catalog.timeouts.connect",
        0,
        "upstreams.catalog.timeouts.connect: expected a duration greater than 0, found 0",
    ),
    (
        "upstreams.catalog.timeouts.conect",
        1,
        "upstreams.catalog.timeouts: unknown key 'conect'; expected one of: connect, read, send, head, total;"
        " did you mean 'connect'?",
    ),
    (
        "upstreams.catalog.host_header",
        "catalog internal",
        "upstreams.catalog.host_header: expected a host name with an optional :port,"
        " found 'catalog internal'",
    ),
    (
        "upstreams.catalog.host_header",
        "a/b",
        "upstreams.catalog.host_header: expected a host name with an optional :port, found 'a/b'",
    ),
    # routes
    ("routes", [], "routes: expected a non-empty list, found an empty list"),
    ("routes[0]", {"upstream": "catalog"}, "routes[0]: missing required key 'path'"),
    ("routes[0]", {"path": "/"}, "routes[0]: expected exactly one of upstream or aggregate, found neither"),
    (
        "routes[0].tiemouts",
        {},
        f"routes[0]: unknown key 'tiemouts'; expected one of: {_ROUTE_KEYS}; did you mean 'timeouts'?",
    ),
    ("routes[0].id", "", "routes[0].id: expected a non-empty string, found ''"),
    ("routes[0].id", 404, "routes[0].id: expected a non-empty string, found 404"),
    ("routes[0].path", "catalog", f"routes[0].path: {_PATH}, found 'catalog'"),
    ("routes[0].path", "/a?b=1", f"routes[0].path: {_PATH}, found '/a?b=1'"),
    ("routes[0].path", "/a#b", f"routes[0].path: {_PATH}, found '/a#b'"),
    ("routes[0].path", 5, f"routes[0].path: {_PATH}, found 5"),
    (
        "routes[0].upstream",
        "catlog",
        "routes[0].upstream: expected the name of an upstream (catalog), found 'catlog';"
        " did you mean 'catalog'?",
    ),
    (
        "routes[0].upstream",
        "zzz",
        "routes[0].upstream: expected the name of an upstream (catalog), found 'zzz'",
    ),
    (
        "routes[0].upstream",
        5,
        "routes[0].upstream: expected the name of an upstream (catalog), found 5",
    ),
    (
        "routes[0].upstream",
        "x" * 100,
        "routes[0].upstream: expected the name of an upstream (catalog), found '" + "x" * 56 + "...",
    ),
    (
        "routes[0].methods",
        [],
        "routes[0].methods: expected a string or a non-empty list, found an empty list",
    ),
    ("routes[0].methods", 5, "routes[0].methods: expected a string or a non-empty list, found 5"),
    (
        "routes[0].methods",
        "GE T",
        "routes[0].methods: expected an HTTP method token like 'GET', found 'GE T'",
    ),
    (
        "routes[0].methods",
        ["GET", "GE T"],
        "routes[0].methods[1]: expected an HTTP method token like 'GET', found 'GE T'",
    ),
    (
        "routes[0].methods",
        [True],
        "routes[0].methods[0]: expected an HTTP method token like 'GET', found true",
    ),
    (
        "routes[0].methods",
        ["GET", "*"],
        "routes[0].methods: expected '*' alone or a list of methods, found a list",
    ),
    (
        "routes[0].host",
        "api.example.com:8080",
        f"routes[0].host: {_HOST}, found 'api.example.com:8080'",
    ),
    (
        "routes[0].host",
        ["ok.example.com", "a*.example.com"],
        f"routes[0].host[1]: {_HOST}, found 'a*.example.com'",
    ),
    ("routes[0].host", "*.*.example.com", f"routes[0].host: {_HOST}, found '*.*.example.com'"),
    ("routes[0].host", "api.*.com", f"routes[0].host: {_HOST}, found 'api.*.com'"),
    ("routes[0].host", "*", f"routes[0].host: {_HOST}, found '*'"),
    ("routes[0].host", "example.com/x", f"routes[0].host: {_HOST}, found 'example.com/x'"),
    ("routes[0].host", "exa mple.com", f"routes[0].host: {_HOST}, found 'exa mple.com'"),
    ("routes[0].host", "example.com.", f"routes[0].host: {_HOST}, found 'example.com.'"),
    ("routes[0].host", "", f"routes[0].host: {_HOST}, found ''"),
    (
        "routes[0].host",
        [],
        "routes[0].host: expected a string or a non-empty list, found an empty list",
    ),
    (
        "routes[0].listeners",
        ["pubilc"],
        "routes[0].listeners[0]: expected the name of a listener (public), found 'pubilc';"
        " did you mean 'public'?",
    ),
    (
        "routes[0].listeners",
        "zzz",
        "routes[0].listeners: expected the name of a listener (public), found 'zzz'",
    ),
    ("routes[0].headers", ["X-A"], "routes[0].headers: expected a mapping, found a list"),
    (
        "routes[0].headers",
        {"X Version": "2"},
        "routes[0].headers: expected header names that are HTTP tokens, found 'X Version'",
    ),
    (
        "routes[0].headers",
        {"X-A": "1", "x-a": "2"},
        "routes[0].headers.x-a: duplicate header 'x-a' (header names ignore case)",
    ),
    (
        "routes[0].headers",
        {"X-A": True},
        "routes[0].headers.X-A: expected a string or a number, found true",
    ),
    (
        "routes[0].headers",
        {"X-A": None},
        "routes[0].headers.X-A: expected a string or a number, found null",
    ),
    (
        "routes[0].headers",
        {1: "x"},
        "routes[0].headers: expected non-empty string keys, found key 1",
    ),
    (
        "routes[0].query",
        {"q": ["1"]},
        "routes[0].query.q: expected a string or a number, found a list",
    ),
    ("routes[0].query", {"": "1"}, "routes[0].query: expected non-empty string keys, found key ''"),
    ("routes[0].query", "q=1", "routes[0].query: expected a mapping, found 'q=1'"),
    (
        "routes[0].priority",
        "high",
        "routes[0].priority: expected an integer from -1000000 to 1000000, found 'high'",
    ),
    (
        "routes[0].concurrency",
        {"queue": 3},
        "routes[0].concurrency: missing required key 'max_in_flight'",
    ),
    (
        "routes[0].concurrency",
        {"max_in_flight": 0},
        "routes[0].concurrency.max_in_flight: expected an integer from 1 to 1000000, found 0",
    ),
    (
        "upstreams.catalog.concurrency",
        {"max_in_flight": 5, "queue_timeout": 0},
        "upstreams.catalog.concurrency.queue_timeout: expected a duration greater than 0, found 0",
    ),
    (
        "routes[0].retry",
        {"when": ["connect", "boom"]},
        "routes[0].retry.when[1]: expected 'connect', 'reset' or a 5xx status like 503, found 'boom'",
    ),
    (
        "routes[0].retry",
        {"when": [404]},
        "routes[0].retry.when[0]: expected 'connect', 'reset' or a 5xx status like 503, found 404",
    ),
    (
        "routes[0].retry",
        {"attempts": 0},
        "routes[0].retry.attempts: expected an integer from 1 to 10, found 0",
    ),
    (
        "routes[0].retry",
        {"budget": 2},
        "routes[0].retry.budget: expected a fraction from 0 to 1, like 0.2, found 2",
    ),
    (
        "routes[0].retry",
        {"methods": "G T"},
        "routes[0].retry.methods: expected an HTTP method token like 'GET', found 'G T'",
    ),
    (
        "routes[0].priority",
        1.5,
        "routes[0].priority: expected an integer from -1000000 to 1000000, found 1.5",
    ),
    (
        "routes[0].priority",
        True,
        "routes[0].priority: expected an integer from -1000000 to 1000000, found true",
    ),
    (
        "routes[0].rewrite",
        "/api/items/{idx}",
        "routes[0].rewrite: unknown parameter 'idx'; expected one of the path's parameters: id;"
        " did you mean 'id'?",
    ),
    (
        "routes[0].rewrite",
        "/api/items/{id}/{zzz}",
        "routes[0].rewrite: unknown parameter 'zzz'; expected one of the path's parameters: id",
    ),
    ("routes[0].rewrite", "api/{id}", f"routes[0].rewrite: {_PATH}, found 'api/{{id}}'"),
    (
        "routes[0].strip_prefix",
        "/cat",
        "routes[0].strip_prefix: expected a prefix of the path's literal start '/catalog/items/'"
        " ending at a '/', found '/cat'",
    ),
    (
        "routes[0].strip_prefix",
        "/items",
        "routes[0].strip_prefix: expected a prefix of the path's literal start '/catalog/items/'"
        " ending at a '/', found '/items'",
    ),
    (
        "routes[0].strip_prefix",
        "/catalog/items/5",
        "routes[0].strip_prefix: expected a prefix of the path's literal start '/catalog/items/'"
        " ending at a '/', found '/catalog/items/5'",
    ),
    ("routes[0].strip_prefix", "catalog", f"routes[0].strip_prefix: {_PATH}, found 'catalog'"),
    (
        "routes[0].preserve_host",
        "yes",
        "routes[0].preserve_host: expected true or false, found 'yes'",
    ),
    ("routes[0].preserve_host", 1, "routes[0].preserve_host: expected true or false, found 1"),
    (
        "routes[0].timeouts",
        {"red": "1s"},
        "routes[0].timeouts: unknown key 'red'; expected one of: connect, read, send, head, total;"
        " did you mean 'read'?",
    ),
    (
        "routes[0].timeouts",
        {"read": 0},
        "routes[0].timeouts.read: expected a duration greater than 0, found 0",
    ),
    ("routes[0].timeouts", "10s", "routes[0].timeouts: expected a mapping, found '10s'"),
    ("routes[0].plugins", {"name": "x"}, "routes[0].plugins: expected a list, found a mapping"),
    (
        "routes[0].plugins",
        ["request_id"],
        "routes[0].plugins[0]: expected a mapping, found 'request_id'",
    ),
    (
        "routes[0].plugins",
        [{"header": "X-Id"}],
        "routes[0].plugins[0]: missing required key 'name'",
    ),
    (
        "routes[0].plugins",
        [{"name": ""}],
        "routes[0].plugins[0].name: expected a non-empty string, found ''",
    ),
    # global plugins
    ("plugins", "access_log", "plugins: expected a list, found 'access_log'"),
    ("plugins", [{"name": "a"}, {}], "plugins[1]: missing required key 'name'"),
    ("plugins", [{"name": "a", 3: "x"}], "plugins[0]: expected non-empty string keys, found key 3"),
]


@pytest.mark.parametrize(("path", "value", "message"), _VALUE_ERRORS)
def test_value_errors(path: str, value: object, message: str) -> None:
    assert error_of(with_value(path, value)) == f"{SOURCE}: {message}"


def test_rewrite_needs_parameters_when_the_path_has_none() -> None:
    doc = with_value("routes[0]", {"path": "/a", "upstream": "catalog", "rewrite": "/b/{x}"})
    assert error_of(doc) == "gw.yaml: routes[0].rewrite: unknown parameter 'x'; the path has none"


def test_rewrite_and_strip_prefix_exclude_each_other() -> None:
    doc = with_value("routes[0].rewrite", "/api/{id}")
    doc = with_value("routes[0].strip_prefix", "/catalog", doc)
    assert (
        error_of(doc)
        == "gw.yaml: routes[0].strip_prefix: expected either rewrite or strip_prefix, found both"
    )


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


# -- ${ENV} substitution -------------------------------------------------------------------------

_REFERENCE = "expected ${NAME} or ${NAME:-default} (write $$ for a literal $)"
_ENV = {"PORT": "8081", "HOST": "10.0.0.1", "N": "50", "YES": "true", "EMPTY": "", "WAIT": "250ms"}


@pytest.mark.parametrize(
    ("path", "value", "read", "expected"),
    [
        (
            "listeners[0].bind",
            "${HOST}:${PORT}",
            lambda c: (c.listeners[0].host, c.listeners[0].port),
            ("10.0.0.1", 8081),
        ),
        ("listeners[0].bind", "127.0.0.1:${NOPE:-9000}", lambda c: c.listeners[0].port, 9000),
        ("listeners[0].bind", "127.0.0.1:${EMPTY:-9001}", lambda c: c.listeners[0].port, 9001),
        (
            "listeners[0].limits.max_headers",
            "${N}",
            lambda c: c.listeners[0].limits.max_headers,
            50,
        ),
        ("listeners[0].timeouts.head", "${WAIT}", lambda c: c.listeners[0].timeouts.head, 0.25),
        ("routes[0].preserve_host", "${YES}", lambda c: c.routes[0].preserve_host, True),
        ("routes[0].headers", {"X-A": "a$$b"}, lambda c: c.routes[0].headers, (("x-a", "a$b"),)),
        (
            "routes[0].headers",
            {"X-A": "$${HOST}"},
            lambda c: c.routes[0].headers,
            (("x-a", "${HOST}"),),
        ),
        ("routes[0].headers", {"X-A": "${EMPTY}"}, lambda c: c.routes[0].headers, (("x-a", ""),)),
        (
            "routes[0].headers",
            {"X-A": "cost: 5$"},
            lambda c: c.routes[0].headers,
            (("x-a", "cost: 5$"),),
        ),
        (
            "routes[0].headers",
            {"X-A": "${NOPE:-a:-b}"},
            lambda c: c.routes[0].headers,
            (("x-a", "a:-b"),),
        ),
        (
            "routes[0].plugins",
            [{"name": "auth", "keys": ["${HOST}", {"k": "${PORT}"}]}],
            lambda c: c.routes[0].plugins[0].options,
            {"keys": ["10.0.0.1", {"k": "8081"}]},
        ),
    ],
)
def test_env_substitution(path: str, value: object, read: Any, expected: object) -> None:
    assert read(parse(with_value(path, value), env=_ENV)) == expected


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "listeners[0].bind",
            "127.0.0.1:${PORT}",
            "listeners[0].bind: environment variable PORT is not set",
        ),
        (
            "routes[0].plugins",
            [{"name": "auth", "keys": [{"k": "${SECRET}"}]}],
            "routes[0].plugins[0].keys[0].k: environment variable SECRET is not set",
        ),
        (
            "routes[0].id",
            "${1BAD}",
            f"routes[0].id: {_REFERENCE}, found '${{1BAD}}'",
        ),
        (
            "routes[0].id",
            "a${OPEN",
            f"routes[0].id: {_REFERENCE}, found 'a${{OPEN'",
        ),
        (
            "listeners[0].limits.max_headers",
            "${EMPTY}",
            "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found ''",
        ),
    ],
)
def test_env_substitution_errors(path: str, value: object, message: str) -> None:
    assert error_of(with_value(path, value), env={"EMPTY": ""}) == f"{SOURCE}: {message}"


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTGW_TEST_PORT", "8082")
    doc = with_value("listeners[0].bind", "127.0.0.1:${FASTGW_TEST_PORT}")
    assert parse_config(doc, SOURCE).listeners[0].port == 8082


def test_substitution_does_not_change_the_input() -> None:
    doc = with_value("routes[0].id", "${ID}")
    assert parse(doc, env={"ID": "x"}).routes[0].id == "x"
    assert doc["routes"][0]["id"] == "${ID}"


# -- files ---------------------------------------------------------------------------------------

_YAML = """\
listeners:
  - bind: "127.0.0.1:0"
upstreams:
  catalog: {targets: ["127.0.0.1:9001"]}
routes:
  - {path: /catalog, upstream: catalog}
"""
_JSON = (
    '{"listeners": [{"bind": "127.0.0.1:0"}],'
    ' "upstreams": {"catalog": {"targets": ["127.0.0.1:9001"]}},'
    ' "routes": [{"path": "/catalog", "upstream": "catalog"}]}'
)


@pytest.mark.parametrize(
    ("name", "text"),
    [("gw.yaml", _YAML), ("gw.yml", _YAML), ("GW.YAML", _YAML), ("gw.json", _JSON)],
)
def test_load_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    config = load_config(str(path), env={})
    assert config.source == str(path)
    assert config.routes[0].path == "/catalog"


def test_load_file_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + _YAML.encode())
    assert load_config(str(path), env={}).listeners[0].port == 0


def load_error(tmp_path: Path, name: str, content: str | bytes | None) -> tuple[str, str]:
    """The rendered error of loading ``content`` saved as ``name`` (None: no file), and the path."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert info.value.file == str(path)
    return str(info.value), str(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("gw.toml", "a = 1", "unknown file extension '.toml'; expected .yaml, .yml or .json"),
        ("gateway", "{}", "unknown file extension ''; expected .yaml, .yml or .json"),
        ("gw.yaml", None, "cannot read the file: No such file or directory"),
        (
            "gw.yaml",
            "",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.yaml",
            "# only a comment\n",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.yml",
            "~\n",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.json",
            " \n",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.json",
            "null",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.yaml",
            "a: 1\n b: 2\n",
            "invalid YAML at line 2, column 3: mapping values are not allowed here",
        ),
        (
            "gw.yaml",
            "a: [1, 2\n",
            "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            "gw.yaml",
            "a: 1\n---\nb: 2\n",
            "invalid YAML at line 2, column 1: expected a single document in the stream,"
            " but found another document",
        ),
        (
            "gw.yaml",
            "routes: []\nroutes: []\n",
            "invalid YAML at line 2, column 1: duplicate key 'routes'",
        ),
        (
            "gw.yaml",
            "a: !!python/object/apply:os.system [true]\n",
            "invalid YAML at line 1, column 4: could not determine a constructor for the tag"
            " 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        ("gw.json", '{"a": 1,}', "invalid JSON at line 1, column 8: trailing comma is not allowed"),
        (
            "gw.json",
            '{"a" 1}',
            "invalid JSON at line 1, column 6: unexpected character, expected ':' after key",
        ),
        ("gw.json", "[1, 2", "invalid JSON at line 1, column 6: unexpected end of data"),
        ("gw.json", "[1]", "expected a mapping with listeners, upstreams and routes, found a list"),
        ("gw.yaml", b"a: \xff\n", "expected UTF-8 text, found byte 0xff at offset 3"),
    ],
)
def test_load_errors(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    rendered, path = load_error(tmp_path, name, content)
    assert rendered == f"{path}: {message}"


def test_load_a_directory(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").mkdir()
    rendered, path = load_error(tmp_path, "gw.yaml", None)
    assert rendered == f"{path}: cannot read the file: Is a directory"


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    text = _YAML + "  - <<: {path: /a, upstream: catalog}\n    path: /b\n"
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    assert [route.path for route in load_config(str(path), env={}).routes] == ["/catalog", "/b"]


def test_yaml_error_names_the_key_path(tmp_path: Path) -> None:
    rendered, path = load_error(tmp_path, "gw.yaml", _YAML.replace('"127.0.0.1:0"', "true"))
    assert rendered == f"{path}: listeners[0].bind: {_BIND}, found true"


def test_recursive_yaml_alias(tmp_path: Path) -> None:
    text = _YAML + "plugins: [{name: x, loop: &loop [*loop]}]\n"
    rendered, path = load_error(tmp_path, "gw.yaml", text)
    assert rendered == f"{path}: plugins[0].loop[0]: expected plain data, found a recursive alias"


def test_deeply_nested_yaml(tmp_path: Path) -> None:
    rendered, path = load_error(tmp_path, "gw.yaml", "a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert rendered == f"{path}: the document is nested too deeply"


def test_deeply_nested_document() -> None:
    nested: list[object] = []
    for _ in range(20_000):
        nested = [nested]
    assert (
        error_of(with_value("plugins", [{"name": "x", "deep": nested}]))
        == "gw.yaml: the document is nested too deeply"
    )


# -- the example file ----------------------------------------------------------------------------


def test_example_file_loads() -> None:
    config = load_config(str(EXAMPLE), env={})
    assert config.source == str(EXAMPLE)
    assert [listener.name for listener in config.listeners] == ["public", "internal"]
    assert config.listeners[0].port == 8080
    assert config.listeners[1].host == "::1"
    assert set(config.upstreams) == {"catalog", "orders"}
    assert [route.id for route in config.routes] == ["catalog-item", "route1", "route2"]
    assert config.routes[2].upgrade == ("websocket",) and config.routes[2].tunnel.idle_timeout == 300.0
    assert config.routes[0].timeouts == UpstreamTimeouts(
        connect=5.0, read=10.0, send=60.0, head=2.0, total=30.0
    )
    assert config.routes[1].methods is None
    assert config.routes[1].plugins[0].options == {"request": {"set": {"X-Price-Currency": "$ (USD)"}}}
    assert [plugin.name for plugin in config.routes[0].plugins] == ["rate_limit"]
    assert [plugin.name for plugin in config.plugins] == ["ip_filter"]
    assert config.access_log is not None and config.access_log.sink == "stdout"
    assert config.admin is not None and (config.admin.host, config.admin.port) == ("127.0.0.1", 9901)
    assert config.tracing is not None and config.tracing.otlp is not None


def test_retry_reads_conditions_statuses_and_methods() -> None:
    doc = with_value(
        "routes[0].retry", {"attempts": 3, "when": ["reset", 503, 502], "methods": "*", "backoff": "10ms"}
    )
    retry = parse(doc).routes[0].retry
    assert retry == RetryConfig(
        attempts=3, when=frozenset({"reset"}), statuses=frozenset({502, 503}), methods=None, backoff=0.01
    )
    assert (
        parse(with_value("routes[0].retry", {})).routes[0].retry == RetryConfig()
    )  # idempotent methods, connect+reset


def test_example_file_uses_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"([a-z0-9_]+):", text))
    for key in [
        *("name", "bind", "trusted_proxies", "buffer_bytes", "limits", "timeouts"),
        *("max_header_bytes", "max_headers", "max_uri_bytes", "max_body_bytes", "max_connections"),
        *("max_pipeline", "head", "body", "keepalive", "drain"),
        *("targets", "address", "weight", "pool", "max_idle", "idle_timeout", "acquire_timeout"),
        *("connect", "read", "send", "host_header", "balance", "hash", "sticky", "cookie"),
        *("health", "interval", "timeout", "healthy_after", "unhealthy_after", "statuses", "outlier"),
        *("consecutive_failures", "count_5xx", "base_ejection", "max_ejection", "max_ejected_percent"),
        *("id", "path", "upstream", "methods", "host", "listeners", "headers", "query", "priority"),
        *("rewrite", "strip_prefix", "preserve_host", "plugins", "upstreams", "routes"),
    ]:
        assert key in keys, key


def test_example_file_port_from_the_environment() -> None:
    assert load_config(str(EXAMPLE), env={"GATEWAY_PORT": "9999"}).listeners[0].port == 9999


# -- properties ----------------------------------------------------------------------------------

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_PATHS = [
    "listeners", "listeners[0]", "listeners[0].name", "listeners[0].bind", "listeners[0].limits",
    "listeners[0].limits.max_headers", "listeners[0].timeouts", "listeners[0].timeouts.drain",
    "listeners[0].trusted_proxies", "listeners[0].buffer_bytes", "upstreams", "upstreams.catalog",
    "upstreams.catalog.targets", "upstreams.catalog.targets[0]", "upstreams.catalog.pool",
    "upstreams.catalog.timeouts", "upstreams.catalog.host_header", "upstreams.catalog.health",
    "upstreams.catalog.outlier", "upstreams.catalog.health.statuses", "upstreams.catalog.balance",
    "upstreams.catalog.balance.hash", "upstreams.catalog.balance.sticky", "routes", "routes[0]",
    "routes[0].id", "routes[0].path", "routes[0].methods", "routes[0].host", "routes[0].listeners",
    "routes[0].headers", "routes[0].query", "routes[0].priority", "routes[0].rewrite",
    "routes[0].strip_prefix", "routes[0].preserve_host", "routes[0].timeouts", "routes[0].plugins",
    "plugins", "unknown",
]  # fmt: skip


@settings(max_examples=300, database=None, deadline=None)
@given(st.sampled_from(_PATHS), _VALUES)
def test_any_value_anywhere_is_a_config_or_a_config_error(path: str, value: object) -> None:
    try:
        config = parse(with_value(path, value))
    except ConfigError as error:
        assert error.file == SOURCE and error.message
    else:
        assert isinstance(config, Config)


@settings(max_examples=100, database=None, deadline=None)
@given(
    st.integers(1, 10**9),
    st.sampled_from([("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("", 1)]),
)
def test_duration_units(number: int, unit: tuple[str, float]) -> None:
    seconds = parse(with_value("listeners[0].timeouts.body", f"{number}{unit[0]}")).listeners[0].timeouts.body
    assert seconds == pytest.approx(number * unit[1])


@settings(max_examples=100, database=None, deadline=None)
@given(
    st.integers(1, 10**9),
    st.sampled_from([("B", 1), ("KB", 1000), ("KiB", 1024), ("MB", 10**6), ("MiB", 2**20), ("GiB", 2**30)]),
)
def test_size_units(number: int, unit: tuple[str, int]) -> None:
    assert (
        parse(with_value("listeners[0].buffer_bytes", f"{number}{unit[0]}")).listeners[0].buffer_bytes
        == number * unit[1]
    )
