"""Config errors of ``rate_limit`` and ``ip_filter``: each names the key path and what was expected."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from fastgw.plugins.ipfilter import IpFilter
from fastgw.plugins.ratelimit import RateLimit
from fastgw.plugins.ratelimit.cluster import ClusterRateLimit

LIMIT = {"name": "rate_limit", "limit": 10, "window": 60, "key": "ip"}


def doc(plugin: dict[str, Any], where: str = "route") -> dict[str, Any]:
    route: dict[str, Any] = {"id": "r", "path": "/{*rest}", "upstream": "up"}
    document: dict[str, Any] = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": ["127.0.0.1:9"]}},
        "routes": [route],
    }
    if where == "route":
        route["plugins"] = [plugin]
    else:
        document["plugins"] = [plugin]
    return document


def error_of(plugin: dict[str, Any], where: str = "route") -> str:
    with pytest.raises(ConfigError) as err:
        compile_plan(parse_config(doc(plugin, where), "gw.yaml"))
    return str(err.value)


P = "gw.yaml: routes[0].plugins[0]"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"algorithm": "leaky_bucket"},
            f"{P}.algorithm: expected the name of an algorithm (token_bucket, sliding_window), "
            "found 'leaky_bucket'; did you mean 'token_bucket'?",
        ),
        (
            {"key": "cookie"},
            f"{P}.key: expected a key part: 'consumer', 'ip', 'route' or 'header:<name>', found 'cookie'",
        ),
        (
            {"key": ["ip", "header:"]},
            f"{P}.key[1]: expected a key part: 'consumer', 'ip', 'route' or 'header:<name>', found 'header:'",
        ),
        ({"key": []}, f"{P}.key: expected a string or a non-empty list, found an empty list"),
        ({"limit": 0}, f"{P}.limit: expected an integer of at least 1, found 0"),
        (
            {"window": "1.5s"},
            f"{P}.window: expected a whole number of seconds (RateLimit-Policy has no fractions), "
            "found '1.5s'",
        ),
        (
            {"limt": 5},
            f"{P}: unknown key 'limt'; expected one of: policy, limit, window, algorithm, key, headers, "
            "bypass, reject, redis, max_keys; did you mean 'limit'?",
        ),
        (
            {"headers": ["ietf"]},
            f"{P}.headers[0]: expected the name of a header style (draft, legacy, x), found 'ietf'",
        ),
        (
            {"policy": 'say "hi"'},
            f"{P}.policy: expected printable ASCII without quotes or backslashes, found 'say \"hi\"'",
        ),
        ({"reject": {"status": 200}}, f"{P}.reject.status: expected an integer from 400 to 599, found 200"),
        (
            {"bypass": {"ips": ["10.0.0.0/8", "10.0.0.300"]}},
            f"{P}.bypass.ips[1]: expected a CIDR like '10.0.0.0/8', '2001:db8::/32' or an address, "
            "found '10.0.0.300'",
        ),
        ({"redis": {"on_error": "closed"}}, f"{P}.redis: missing required key 'url'"),
        ({"redis": None}, f"{P}.redis: expected a mapping, found null"),
        (
            {"redis": {"url": "http://127.0.0.1:6379"}},
            f"{P}.redis.url: expected a redis:// or rediss:// URL: Redis URL must specify one of the "
            "following schemes (redis://, rediss://, unix://)",
        ),
        (
            {"redis": {"url": "redis://h", "on_error": "ignore"}},
            f"{P}.redis.on_error: expected the name of a failure policy (open, closed), found 'ignore'",
        ),
        (
            {"redis": {"url": "redis://h", "closed_status": 503}},
            f"{P}.redis.closed_status: only used with on_error: closed",
        ),
        (
            {"redis": {"url": "redis://h", "timeout": 0}},
            f"{P}.redis.timeout: expected a duration greater than 0, found 0",
        ),
    ],
)
def test_rate_limit_errors(change: dict[str, Any], message: str) -> None:
    assert error_of({**LIMIT, **change}) == message


def test_missing_required_options() -> None:
    assert error_of({"name": "rate_limit", "limit": 5, "window": 1}) == f"{P}: missing required key 'key'"


def test_errors_in_top_level_plugins_name_their_own_path() -> None:
    assert error_of({**LIMIT, "algorithm": 3}, where="top").startswith(
        "gw.yaml: plugins[0].algorithm: expected"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, f"{P}: expected a non-empty 'allow' or 'deny' list of CIDRs"),
        (
            {"deny": ["fe80::/10", "fe80::1/10"]},
            f"{P}.deny[1]: 'fe80::1/10' has host bits set; did you mean 'fe80::/10'?",
        ),
        ({"allow": "10.0.0.0/8"}, f"{P}.allow: expected a list, found '10.0.0.0/8'"),
        (
            {"alow": []},
            f"{P}: unknown key 'alow'; expected one of: allow, deny, cache_size; did you mean 'allow'?",
        ),
    ],
)
def test_ip_filter_errors(options: dict[str, Any], message: str) -> None:
    assert error_of({"name": "ip_filter", **options}) == message


def test_valid_options_compile_to_the_plugin_for_the_store() -> None:
    local = compile_plan(parse_config(doc(LIMIT), "gw.yaml"))
    cluster = compile_plan(parse_config(doc({**LIMIT, "redis": {"url": "redis://127.0.0.1:1/0"}}), "gw.yaml"))
    both = compile_plan(parse_config(doc({"name": "ip_filter", "allow": ["::/0"]}), "gw.yaml"))
    assert [type(p) for p in local.routes[0].plugins] == [RateLimit]
    assert [type(p) for p in cluster.routes[0].plugins] == [ClusterRateLimit]
    assert [type(p) for p in both.routes[0].plugins] == [IpFilter]
