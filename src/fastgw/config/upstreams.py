"""The ``upstreams`` section: per upstream its targets, connection pool, timeouts, Host header,
active health checks, outlier detection, circuit breaker, balancing and concurrency limit.

Where two keys bound each other (``pool.max_idle`` and ``max_connections``, ``health.timeout`` and
``interval``, ``outlier.max_ejection`` and ``base_ejection``), a value written out must fit, and a
default that would not is moved to fit. ``pool.max_idle`` left out is ``max_connections``: idle
connections are closed by ``idle_timeout``, not by count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from fastgw.config.discovery import read_discovery
from fastgw.config.schema import (
    UPSTREAM_PROTOCOLS,
    BalanceConfig,
    BreakerConfig,
    ConcurrencyConfig,
    HashKey,
    HealthCheckConfig,
    OutlierConfig,
    PoolConfig,
    RegistriesConfig,
    TargetConfig,
    UpstreamConfig,
    UpstreamTimeouts,
)
from fastgw.config.syntax import TOKEN, read_request_target
from fastgw.config.tls import read_upstream_tls
from fastgw.config.validate import (
    Reader,
    Section,
    describe,
    expected,
    join,
    read_address,
    read_bool,
    read_duration,
    read_fields,
    read_fraction,
    read_int,
    read_list,
    read_mapping,
    read_matching,
    read_one_of,
    read_record,
    suggest,
)
from fastgw.errors import ConfigError

__all__ = ["UPSTREAM_TIMEOUTS", "read_concurrency", "read_upstreams"]

# Also the readers of a route's partial ``timeouts`` override.
UPSTREAM_TIMEOUTS: Mapping[str, Reader[object]] = {
    "connect": read_duration(),
    "read": read_duration(),
    "send": read_duration(),
    "head": read_duration(),
    "total": read_duration(),
}
_POOL: Mapping[str, Reader[object]] = {
    "max_connections": read_int(1, 100_000),
    "max_idle": read_int(0, 100_000),
    "idle_timeout": read_duration(),
    "acquire_timeout": read_duration(),
    "max_streams": read_int(1, 10_000),
}


def _read_pool(value: object, path: str) -> PoolConfig:
    fields = read_fields(value, path, _POOL)
    pool = PoolConfig(**fields)
    if "max_idle" not in fields:
        return replace(pool, max_idle=pool.max_connections)  # no churn below max_connections
    if pool.max_idle > pool.max_connections:
        raise expected(
            join(path, "max_idle"), f"at most max_connections ({pool.max_connections})", pool.max_idle
        )
    return pool


def _read_target(value: object, path: str) -> TargetConfig:
    if isinstance(value, str):
        host, port = read_address(1)(value, path)
        return TargetConfig(host=host, port=port)
    if not isinstance(value, Mapping):
        raise expected(path, "'host:port' or a mapping with address and weight", value)
    section = Section(value, path, ("address", "weight"), required=("address",))
    host, port = section.require("address", read_address(1))
    return TargetConfig(host=host, port=port, **section.read({"weight": read_int(1, 1000)}))


_read_host_header = read_matching(
    re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"),
    "a host name with an optional :port",
)


# -- health: active checks, passive outlier detection, the breaker (upstream/health.py, breaker.py)

_STATUS_CLASS = re.compile(r"([1-5])xx")
_STATUS_RANGE = re.compile(r"([0-9]{3})-([0-9]{3})")
_STATUSES = "a status from 100 to 599, a class like '2xx' or a range like '200-299'"


def _read_status_range(value: object, path: str) -> tuple[int, int]:
    """``200``, ``"2xx"`` or ``"200-299"`` as an inclusive (lowest, highest) range."""
    if isinstance(value, str) and value.isdigit():  # a whole ${ENV} reference
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return (value, value)
    if isinstance(value, str):
        if match := _STATUS_CLASS.fullmatch(value):
            return (int(match[1]) * 100, int(match[1]) * 100 + 99)
        if (match := _STATUS_RANGE.fullmatch(value)) and 100 <= int(match[1]) <= int(match[2]) <= 599:
            return (int(match[1]), int(match[2]))
    raise expected(path, _STATUSES, value)


def _read_statuses(value: object, path: str) -> tuple[tuple[int, int], ...]:
    if isinstance(value, list):
        return read_list(_read_status_range, non_empty=True)(value, path)
    try:
        return (_read_status_range(value, path),)
    except ConfigError:
        raise expected(path, f"{_STATUSES}, or a non-empty list of these", value) from None


def _render_seconds(value: float) -> str:
    return f"{value:g}s"


_HEALTH: Mapping[str, Reader[object]] = {
    "interval": read_duration(),
    "timeout": read_duration(),
    "healthy_after": read_int(1, 100),
    "unhealthy_after": read_int(1, 100),
    "statuses": _read_statuses,
}


def _read_health(value: object, path: str) -> HealthCheckConfig:
    section = Section(value, path, ("path", *_HEALTH), required=("path",))
    check = HealthCheckConfig(path=section.require("path", read_request_target), **section.read(_HEALTH))
    # A round of probes must end before the next one is due (the checker never overlaps rounds).
    if check.timeout > check.interval:
        if "timeout" in section.items:
            bound = f"at most interval ({_render_seconds(check.interval)})"
            raise expected(section.at("timeout"), bound, section.items["timeout"])
        check = replace(check, timeout=check.interval)  # the default shrinks to fit
    return check


_OUTLIER: Mapping[str, Reader[object]] = {
    "consecutive_failures": read_int(1, 1000),
    "count_5xx": read_bool,
    "base_ejection": read_duration(),
    "max_ejection": read_duration(),
    "max_ejected_percent": read_int(1, 100),
}


def _read_outlier(value: object, path: str) -> OutlierConfig:
    section = Section(value, path, _OUTLIER)
    outlier = OutlierConfig(**section.read(_OUTLIER))
    if outlier.max_ejection < outlier.base_ejection:
        if "max_ejection" in section.items:
            raise expected(
                section.at("max_ejection"),
                f"at least base_ejection ({_render_seconds(outlier.base_ejection)})",
                section.items["max_ejection"],
            )
        outlier = replace(outlier, max_ejection=outlier.base_ejection)  # the default grows to fit
    return outlier


_BREAKER: Mapping[str, Reader[object]] = {
    "failures": read_int(1, 1000),
    "failure_ratio": read_fraction("0.5"),
    "window": read_duration(),
    "min_requests": read_int(1, 1_000_000),
    "open_for": read_duration(),
    "trial_requests": read_int(1, 100),
    "count_5xx": read_bool,
}


def _read_breaker(value: object, path: str) -> BreakerConfig:
    return BreakerConfig(**Section(value, path, _BREAKER).read(_BREAKER))


# -- balancing (upstream/balance.py): a string names an algorithm without options, a mapping of one
# key an algorithm with options (hash needs its key; sticky's cookie name has a default).

_BALANCE_NAMES = ("round_robin", "least_conn", "p2c", "ewma", "sticky")
_BALANCE_FORMS = (
    "one of round_robin, least_conn, p2c, ewma, sticky, or {hash: KEY} or {sticky: {cookie: NAME}}"
)
_HASH_KEY = re.compile(r"ip|(header|cookie|param):(.*)", re.DOTALL)
_HASH_KEYS = "'ip', 'header:NAME', 'cookie:NAME' or 'param:NAME'"
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _read_hash_key(value: object, path: str) -> HashKey:
    match = _HASH_KEY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise expected(path, _HASH_KEYS, value)
    source, name = match[1], match[2]
    if source is None:
        return HashKey("ip")
    if source == "param" and not _PARAM_NAME.fullmatch(name):
        raise expected(path, "'param:' followed by a path parameter name like 'id'", value)
    if source != "param" and not TOKEN.fullmatch(name):
        raise expected(path, f"'{source}:' followed by a {source} name (an HTTP token)", value)
    return HashKey(source, name.lower() if source == "header" else name)


_read_cookie_name = read_matching(TOKEN, "a cookie name (an HTTP token like 'fgw_sticky')")


def _read_balance(value: object, path: str) -> BalanceConfig:
    if isinstance(value, str):
        if value == "hash":
            raise ConfigError(path, f"hash needs a key: write {{hash: KEY}} with KEY one of {_HASH_KEYS}")
        if value not in _BALANCE_NAMES:
            raise ConfigError(
                path, f"expected {_BALANCE_FORMS}, found {describe(value)}{suggest(value, _BALANCE_NAMES)}"
            )
        return BalanceConfig(algorithm=value)
    if not isinstance(value, Mapping):
        raise expected(path, _BALANCE_FORMS, value)
    for key in value:
        if key in _BALANCE_NAMES and key != "sticky":
            raise ConfigError(path, f"{key} has no options; write balance: {key}")
    section = Section(value, path, ("hash", "sticky"))
    if len(section.items) == 2:
        raise ConfigError(path, "expected one of hash or sticky, found both")
    if not section.items:
        raise expected(path, "a mapping with one key, hash or sticky", value)
    if "hash" in section.items:
        return BalanceConfig(algorithm="hash", hash_key=section.require("hash", _read_hash_key))
    options = Section(section.items["sticky"], section.at("sticky"), ("cookie",))
    return BalanceConfig(algorithm="sticky", **options.read({"cookie": _read_cookie_name}))


# -- the section -----------------------------------------------------------------------------------

_CONCURRENCY: Mapping[str, Reader[object]] = {
    "max_in_flight": read_int(1, 1_000_000),
    "queue": read_int(0, 1_000_000),
    "queue_timeout": read_duration(),
}


def read_concurrency(value: object, path: str) -> ConcurrencyConfig:
    """An upstream's or a route's limit on requests in flight, with its queue."""
    section = Section(value, path, _CONCURRENCY, required=("max_in_flight",))
    return ConcurrencyConfig(**section.read(_CONCURRENCY))


_UPSTREAM_KEYS = (
    "targets", "pool", "timeouts", "host_header", "health", "outlier", "breaker", "balance", "concurrency",
    "tls", "discovery", "protocol",
)  # fmt: skip
_UPSTREAM_READERS: Mapping[str, Reader[object]] = {
    "pool": _read_pool,
    "timeouts": read_record(UpstreamTimeouts, UPSTREAM_TIMEOUTS),
    "host_header": _read_host_header,
    "health": _read_health,
    "outlier": _read_outlier,
    "breaker": _read_breaker,
    "balance": _read_balance,
    "concurrency": read_concurrency,
    "tls": read_upstream_tls,
    "protocol": read_one_of("a protocol", UPSTREAM_PROTOCOLS),
}


def read_upstreams(
    value: object, path: str, registries: RegistriesConfig | None = None
) -> dict[str, UpstreamConfig]:
    """The section; ``registries`` is where discovery providers are (read before this section)."""
    upstreams: dict[str, UpstreamConfig] = {}
    for name, entry in read_mapping(value, path, non_empty=True).items():
        section = Section(entry, join(path, name), _UPSTREAM_KEYS)
        if "targets" not in section.items and "discovery" not in section.items:
            raise ConfigError(section.path, "missing required key 'targets' (or 'discovery')")
        targets = section.get("targets", read_list(_read_target, non_empty=True)) or ()
        discovery = section.get(
            "discovery", lambda v, p: read_discovery(v, p, registries or RegistriesConfig())
        )
        upstream = UpstreamConfig(
            name=name, targets=targets, discovery=discovery, **section.read(_UPSTREAM_READERS)
        )
        if discovery is not None and discovery.require_health_check and upstream.health is None:
            raise ConfigError(
                section.at("discovery.require_health_check"),
                "needs health: on the upstream (the check a joining target must pass)",
            )
        _check_protocol(upstream, section)
        upstreams[name] = upstream
    return upstreams


def _check_protocol(upstream: UpstreamConfig, section: Section) -> None:
    """What the upstream's ``protocol`` needs, and what HTTP/1.1 has no use for."""
    protocol = upstream.protocol
    if protocol == "h2" and upstream.tls is None:
        raise ConfigError(
            section.at("protocol"), "h2 is HTTP/2 over TLS and needs tls: (cleartext HTTP/2 is h2c)"
        )
    if protocol == "h2c" and upstream.tls is not None:
        raise ConfigError(section.at("protocol"), "h2c is cleartext HTTP/2; with tls: write protocol: h2")
    pool = section.items.get("pool")
    if protocol == "http/1.1" and isinstance(pool, Mapping) and "max_streams" in pool:
        raise ConfigError(
            section.at("pool.max_streams"), "streams per connection are for protocol h2c or h2 (HTTP/2)"
        )
    if protocol != "http/1.1" and upstream.health is not None:
        raise ConfigError(
            section.at("health"),
            f"active health checks speak HTTP/1.1, which an upstream with protocol {protocol} may not"
            " (passive checks, outlier:, work with any protocol)",
        )
