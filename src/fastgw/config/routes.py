"""The ``routes`` section: per route its path template, what it matches (methods, hosts, headers,
query, listeners, priority), its plugins, and either an upstream with the request's shaping
(rewrite or strip_prefix, Host, timeouts, retry) or an aggregate (read by ``aggregates``).

Route ids are unique; every upstream and listener a route names exists.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from fastgw.config.aggregates import read_aggregate
from fastgw.config.schema import (
    PluginConfig,
    RetryConfig,
    RouteConfig,
    TunnelConfig,
    UpstreamConfig,
    UpstreamTimeouts,
)
from fastgw.config.syntax import TOKEN, read_method
from fastgw.config.tls import read_https_redirect
from fastgw.config.upstreams import UPSTREAM_TIMEOUTS, read_concurrency
from fastgw.config.validate import (
    Reader,
    Section,
    expected,
    join,
    named_sections,
    read_bool,
    read_duration,
    read_fields,
    read_fraction,
    read_int,
    read_list,
    read_mapping,
    read_one_of,
    read_record,
    read_str,
    read_text,
    suggest,
)
from fastgw.errors import ConfigError

__all__ = ["path_params", "read_plugin", "read_routes"]

_PATH_PARAM = re.compile(r"\{\*?([^{}:]*)(?::[^{}]*)?\}")  # {id}, {id:int}, {*rest}
_REWRITE_PARAM = re.compile(r"\{\*?([^{}]*)\}")
_ROUTE_HOST = re.compile(r"(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def path_params(template: str) -> list[str]:
    """The parameter names of a path template, in order (``/a/{id:int}/{*rest}`` -> id, rest)."""
    return [match[1] for match in _PATH_PARAM.finditer(template)]


def read_plugin(value: object, path: str) -> PluginConfig:
    """A route's or the global list's ``{name: ..., **options}``; the options are checked later by
    the plugin's own compile()."""
    items = read_mapping(value, path)
    if "name" not in items:
        raise ConfigError(path, "missing required key 'name'")
    name = read_str(items["name"], join(path, "name"))
    return PluginConfig(name=name, options={k: v for k, v in items.items() if k != "name"}, key_path=path)


def _read_path(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "#" in value:
        raise expected(path, "a path starting with '/' without '?' or '#'", value)
    return value


def _read_methods(value: object, path: str) -> tuple[str, ...] | None:
    """None (any method) for ``"*"``; otherwise upper-cased, duplicates dropped."""
    methods = read_list(read_method, non_empty=True, single=True)(value, path)
    if "*" in methods:
        if len(methods) == 1:
            return None
        raise expected(path, "'*' alone or a list of methods", value)
    return tuple(dict.fromkeys(methods))


def _read_host(value: object, path: str) -> str:
    host = value.lower() if isinstance(value, str) else None
    if host is None or not _ROUTE_HOST.fullmatch(host):
        raise expected(path, "a host name like 'api.example.com' or '*.example.com', without port", value)
    return host


def _read_header_predicates(value: object, path: str) -> tuple[tuple[str, str], ...]:
    headers: dict[str, str] = {}
    for name, wanted in read_mapping(value, path).items():
        if not TOKEN.fullmatch(name):
            raise ConfigError(path, f"expected header names that are HTTP tokens, found {name!r}")
        if name.lower() in headers:
            raise ConfigError(
                join(path, name), f"duplicate header {name.lower()!r} (header names ignore case)"
            )
        headers[name.lower()] = read_text(wanted, join(path, name))
    return tuple(headers.items())


def _read_query_predicates(value: object, path: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, read_text(wanted, join(path, name))) for name, wanted in read_mapping(value, path).items()
    )


def _check_rewrite(rewrite: str, template: str, path: str) -> None:
    params = path_params(template)
    for match in _REWRITE_PARAM.finditer(rewrite):
        if match[1] not in params:
            known = (
                f"expected one of the path's parameters: {', '.join(params)}"
                if params
                else "the path has none"
            )
            raise ConfigError(path, f"unknown parameter {match[1]!r}; {known}{suggest(match[1], params)}")


def _check_strip_prefix(prefix: str, template: str, path: str) -> None:
    """The prefix must be literal text at the start of the path and end at a segment boundary."""
    static = template.split("{", 1)[0]
    at_boundary = prefix.endswith("/") or template[len(prefix) : len(prefix) + 1] in ("", "/")
    if not static.startswith(prefix) or not at_boundary:
        raise expected(path, f"a prefix of the path's literal start {static!r} ending at a '/'", prefix)


def _read_timeout_overrides(base: UpstreamTimeouts) -> Reader[UpstreamTimeouts]:
    """A partial ``timeouts`` mapping; the keys it leaves out keep the upstream's values."""
    return lambda value, path: replace(base, **read_fields(value, path, UPSTREAM_TIMEOUTS))


# -- retry -----------------------------------------------------------------------------------------

_RETRY_CONDITIONS = ("connect", "reset")


def _read_retry_condition(value: object, path: str) -> str | int:
    if value in _RETRY_CONDITIONS:
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and 500 <= value <= 599:
        return value
    raise expected(path, "'connect', 'reset' or a 5xx status like 503", value)


def _read_retry_methods(value: object, path: str) -> frozenset[str] | None:
    methods = _read_methods(value, path)
    return None if methods is None else frozenset(methods)


_RETRY: Mapping[str, Reader[object]] = {
    "attempts": read_int(1, 10),
    "when": read_list(_read_retry_condition, non_empty=True, single=True),
    "methods": _read_retry_methods,
    "backoff": read_duration(allow_zero=True),
    "max_backoff": read_duration(allow_zero=True),
    "budget": read_fraction("0.2", allow_zero=True),
}


def _read_retry(value: object, path: str) -> RetryConfig:
    fields = read_fields(value, path, _RETRY)
    conditions = fields.pop("when", None)
    if conditions is not None:
        fields["when"] = frozenset(c for c in conditions if isinstance(c, str))
        fields["statuses"] = frozenset(c for c in conditions if isinstance(c, int))
    return RetryConfig(**fields)


# -- protocol upgrades ---------------------------------------------------------------------------

_TUNNEL: Mapping[str, Reader[object]] = {
    "idle_timeout": read_duration(),
    "max_lifetime": read_duration(allow_zero=True),
}


def _read_protocol(value: object, path: str) -> str:
    """An Upgrade protocol name (RFC 9110 7.8), lower-case; h2c is the gateway's own business."""
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise expected(path, "a protocol name like 'websocket'", value)
    if value.lower() == "h2c":
        raise ConfigError(
            path,
            "h2c (HTTP/2 over cleartext) cannot be tunnelled: its requests would pass the gateway"
            " unrouted; only a protocol that is not HTTP, such as websocket",
        )
    return value.lower()


def _read_upgrade(section: Section) -> tuple[tuple[str, ...], TunnelConfig]:
    """The protocols a route lets a request switch to (``websocket: true``, ``upgrade: [...]``,
    or both) and the ``tunnel`` settings of the connections that switched."""
    websocket = section.get("websocket", read_bool)
    protocols = dict.fromkeys(
        section.get("upgrade", read_list(_read_protocol, non_empty=True, single=True)) or ()
    )
    if websocket is False and "websocket" in protocols:
        raise ConfigError(section.at("websocket"), "false contradicts upgrade: [websocket]")
    if websocket:
        protocols["websocket"] = None
    tunnel = section.get("tunnel", read_record(TunnelConfig, _TUNNEL))
    if tunnel is not None and not protocols:
        raise ConfigError(
            section.at("tunnel"), "applies to a route that upgrades: set websocket: true or upgrade: [...]"
        )
    methods = section.get("methods", _read_methods)
    if "websocket" in protocols and methods is not None and "GET" not in methods:
        raise ConfigError(
            section.at("methods"), "a WebSocket handshake is a GET request: add GET, or leave methods out"
        )
    return tuple(protocols), tunnel or TunnelConfig()


# -- the section -----------------------------------------------------------------------------------

_ROUTE_KEYS = (
    "id", "path", "upstream", "methods", "host", "listeners", "headers", "query",
    "priority", "rewrite", "strip_prefix", "preserve_host", "timeouts", "retry", "concurrency",
    "plugins", "aggregate", "redirect_https", "websocket", "upgrade", "tunnel",
)  # fmt: skip
# What only a proxied route can use: an aggregate route has no single upstream request to shape
# (nor a connection to hand over).
_PROXY_ONLY_KEYS = (
    "rewrite", "strip_prefix", "preserve_host", "timeouts", "retry", "websocket", "upgrade", "tunnel",
)  # fmt: skip


def _read_route(
    section: Section,
    route_id: str,
    listeners: Collection[str],
    upstreams: Mapping[str, UpstreamConfig],
) -> RouteConfig:
    template = section.require("path", _read_path)
    if ("upstream" in section.items) == ("aggregate" in section.items):
        found = "both" if "upstream" in section.items else "neither"
        raise ConfigError(section.path, f"expected exactly one of upstream or aggregate, found {found}")
    if "aggregate" in section.items:
        return _read_aggregate_route(section, route_id, template, listeners, upstreams)
    upstream = upstreams[section.require("upstream", read_one_of("an upstream", upstreams))]
    rewrite = section.get("rewrite", _read_path)
    if rewrite is not None:
        _check_rewrite(rewrite, template, section.at("rewrite"))
    strip_prefix = section.get("strip_prefix", _read_path)
    if strip_prefix is not None:
        if rewrite is not None:
            raise ConfigError(
                section.at("strip_prefix"), "expected either rewrite or strip_prefix, found both"
            )
        _check_strip_prefix(strip_prefix, template, section.at("strip_prefix"))
    timeouts = section.get("timeouts", _read_timeout_overrides(upstream.timeouts))
    upgrade, tunnel = _read_upgrade(section)
    return RouteConfig(
        id=route_id,
        path=template,
        upstream=upstream.name,
        rewrite=rewrite,
        strip_prefix=strip_prefix,
        timeouts=timeouts,
        retry=section.get("retry", _read_retry),
        upgrade=upgrade,
        tunnel=tunnel,
        **section.read({"preserve_host": read_bool}),
        **_read_route_common(section, listeners),
    )


def _read_aggregate_route(
    section: Section,
    route_id: str,
    template: str,
    listeners: Collection[str],
    upstreams: Mapping[str, UpstreamConfig],
) -> RouteConfig:
    for key in _PROXY_ONLY_KEYS:
        if key in section.items:
            raise ConfigError(
                section.at(key),
                "applies to routes with an upstream; an aggregate route sets path and timeout per backend",
            )
    params = path_params(template)
    return RouteConfig(
        id=route_id,
        path=template,
        upstream="",
        aggregate=section.require("aggregate", lambda v, p: read_aggregate(v, p, params, upstreams)),
        **_read_route_common(section, listeners),
    )


def _read_route_common(section: Section, listeners: Collection[str]) -> dict[str, Any]:
    """The keyword arguments every kind of route reads alike: matching, limits, plugins."""
    hosts = section.get("host", read_list(_read_host, non_empty=True, single=True)) or ()
    on_listeners = section.get(
        "listeners", read_list(read_one_of("a listener", listeners), non_empty=True, single=True)
    )
    return {
        "key_path": section.path,
        "methods": section.get("methods", _read_methods),
        "hosts": tuple(dict.fromkeys(hosts)),
        "listeners": tuple(dict.fromkeys(on_listeners or ())),
        "concurrency": section.get("concurrency", read_concurrency),
        **section.read(
            {
                "headers": _read_header_predicates,
                "query": _read_query_predicates,
                "priority": read_int(-1_000_000, 1_000_000),
                "plugins": read_list(read_plugin),
                "redirect_https": read_https_redirect,
            }
        ),
    }


def read_routes(
    value: object, path: str, listeners: Collection[str], upstreams: Mapping[str, UpstreamConfig]
) -> tuple[RouteConfig, ...]:
    entries = named_sections(
        value, path, _ROUTE_KEYS, ("path",), name_key="id", default="route", what="route id"
    )
    return tuple(_read_route(section, route_id, listeners, upstreams) for route_id, section in entries)
