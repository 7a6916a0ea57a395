"""Config loading: one bad value at one key path gets the exact ``file: key.path: message``."""

from __future__ import annotations

import math

import pytest

from tests.support.config_docs import BIND_EXPECTED, SOURCE, error_of, with_value

# -- one bad value at one key path ---------------------------------------------------------------

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
    ("listeners[0].bind", "localhost", f"listeners[0].bind: {BIND_EXPECTED}, found 'localhost'"),
    (
        "listeners[0].bind",
        "127.0.0.1:65536",
        f"listeners[0].bind: {BIND_EXPECTED}, found '127.0.0.1:65536'",
    ),
    ("listeners[0].bind", "127.0.0.1:-1", f"listeners[0].bind: {BIND_EXPECTED}, found '127.0.0.1:-1'"),
    ("listeners[0].bind", "127.0.0.1:", f"listeners[0].bind: {BIND_EXPECTED}, found '127.0.0.1:'"),
    ("listeners[0].bind", ":8080", f"listeners[0].bind: {BIND_EXPECTED}, found ':8080'"),
    ("listeners[0].bind", "::1:8080", f"listeners[0].bind: {BIND_EXPECTED}, found '::1:8080'"),
    ("listeners[0].bind", "[::1]8080", f"listeners[0].bind: {BIND_EXPECTED}, found '[::1]8080'"),
    ("listeners[0].bind", "[127.0.0.1]:80", f"listeners[0].bind: {BIND_EXPECTED}, found '[127.0.0.1]:80'"),
    ("listeners[0].bind", "my host:80", f"listeners[0].bind: {BIND_EXPECTED}, found 'my host:80'"),
    ("listeners[0].bind", 8080, f"listeners[0].bind: {BIND_EXPECTED}, found 8080"),
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
