"""Load a configuration file into typed ``Config`` records, or fail naming file and key path.

The steps, each raising only ``ConfigError``:

1. read the file: ``.yaml``/``.yml`` (safe YAML, a repeated key is an error) or ``.json``;
2. substitute ``${VAR}`` and ``${VAR:-default}`` in every string value (``$$`` is a literal
   ``$``); a value that is one whole reference stays a string for the typed reader to convert;
3. walk the document with the readers of ``validate``: listeners, then upstreams, then routes
   (which name both), then the global plugins. The first problem found is raised, rendered as
   ``file: key.path: expected ..., found ...``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import yaml

from fastgw.config.schema import (
    ACCESS_LOG_FIELDS,
    AccessLogConfig,
    AdminConfig,
    AggregateBackend,
    AggregateConfig,
    BalanceConfig,
    BreakerConfig,
    ClientTimeouts,
    ConcurrencyConfig,
    Config,
    HashKey,
    HealthCheckConfig,
    Limits,
    ListenerConfig,
    OtlpConfig,
    OutlierConfig,
    PluginConfig,
    PoolConfig,
    RetryConfig,
    RouteConfig,
    TargetConfig,
    TracingConfig,
    UpstreamConfig,
    UpstreamTimeouts,
)
from fastgw.config.validate import (
    Reader,
    Section,
    binds_overlap,
    describe,
    expected,
    join,
    read_bool,
    read_duration,
    read_fields,
    read_int,
    read_list,
    read_mapping,
    read_one_of,
    read_record,
    read_sequence,
    read_size,
    read_str,
    read_text,
    show_address,
    suggest,
)
from fastgw.errors import ConfigError
from fastgw.importers import foreign_document

__all__ = ["load_config", "parse_config"]

_EMPTY = "the document is empty; expected a mapping with listeners, upstreams and routes"


# -- files ---------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """The safe loader, except that a key repeated in one mapping is an error, not an override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = error.problem or ""
        if error.context and not error.context.startswith("while"):
            detail = f"{error.context}, {detail}"
        raise ConfigError("", f"invalid YAML{where}: {detail}") from None
    except yaml.YAMLError as error:
        raise ConfigError("", f"invalid YAML: {error}") from None


def _parse_json(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise ConfigError(
            "", f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


_PARSERS: dict[str, Callable[[str], object]] = {
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".json": _parse_json,
}


def load_config(path: str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the file at ``path``; ``env`` defaults to ``os.environ``."""
    try:
        extension = os.path.splitext(path)[1]
        parse = _PARSERS.get(extension.lower())
        if parse is None:
            raise ConfigError("", f"unknown file extension {extension!r}; expected .yaml, .yml or .json")
        try:
            with open(path, "rb") as file:
                raw = file.read()
        except OSError as error:
            raise ConfigError("", f"cannot read the file: {error.strerror or error}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ConfigError(
                "",
                f"expected UTF-8 text, found byte {raw[error.start]:#04x} at offset {error.start}",
            ) from None
        if not text.strip():
            raise ConfigError("", _EMPTY)
        data: object = foreign_document(path, text)  # another gateway's file (Ocelot's), translated
        if data is None:
            data = parse(text)
    except ConfigError as error:
        raise error.with_file(path) from None
    except RecursionError:
        raise ConfigError("", "the document is nested too deeply", path) from None
    return parse_config(data, path, env=env)


def parse_config(data: object, source: str, *, env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed document; errors name ``source`` as the file."""
    try:
        if data is None:
            raise ConfigError("", _EMPTY)
        document = _substitute_tree(data, "", os.environ if env is None else env, set())
        return _read_config(document, source)
    except ConfigError as error:
        raise error.with_file(source) from None
    except RecursionError:
        raise ConfigError("", "the document is nested too deeply", source) from None


# -- ${ENV} substitution -------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def _substitute(text: str, path: str, env: Mapping[str, str]) -> str:
    """``$$`` -> ``$``; ``${NAME:-default}`` takes the default when NAME is unset or empty."""
    if "$" not in text:
        return text

    def replace_reference(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        body = match["body"]
        reference = _REFERENCE_BODY.fullmatch(body) if body is not None else None
        if reference is None:
            raise expected(path, "${NAME} or ${NAME:-default} (write $$ for a literal $)", text)
        value = env.get(reference["name"])
        if not value and reference["default"] is not None:
            return str(reference["default"])
        if value is None:
            raise ConfigError(path, f"environment variable {reference['name']} is not set")
        return value

    return _REFERENCE.sub(replace_reference, text)


def _substitute_tree(node: object, path: str, env: Mapping[str, str], open_nodes: set[int]) -> object:
    """A copy of the tree with every string value substituted (keys are left as written)."""
    if isinstance(node, str):
        return _substitute(node, path, env)
    if not isinstance(node, (dict, list)):
        return node
    if id(node) in open_nodes:  # YAML aliases can make a node contain itself
        raise ConfigError(path, "expected plain data, found a recursive alias")
    open_nodes.add(id(node))
    if isinstance(node, dict):
        copy: object = {
            key: _substitute_tree(value, join(path, str(key)), env, open_nodes) for key, value in node.items()
        }
    else:
        copy = [
            _substitute_tree(value, f"{path}[{index}]", env, open_nodes) for index, value in enumerate(node)
        ]
    open_nodes.discard(id(node))
    return copy


# -- shared readers ------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_ROUTE_HOST = re.compile(r"(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_HOST_HEADER = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PORT = re.compile(r"[0-9]{1,5}")


def _split_address(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (host without brackets, port), or None."""
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]:")
        try:
            valid_host = bool(bracket) and ipaddress.ip_address(host).version == 6
        except ValueError:
            valid_host = False
    else:
        host, colon, port = text.rpartition(":")
        valid_host = bool(colon) and _HOST_NAME.fullmatch(host) is not None
    return (host, int(port)) if valid_host and _PORT.fullmatch(port) else None


def _read_address(min_port: int) -> Reader[tuple[str, int]]:
    what = f"host:port or [ipv6]:port with a port from {min_port} to 65535"

    def read(value: object, path: str) -> tuple[str, int]:
        address = _split_address(value) if isinstance(value, str) else None
        if address is None or not min_port <= address[1] <= 65535:
            raise expected(path, what, value)
        return address

    return read


def _read_network(value: object, path: str) -> str:
    """An address or CIDR, normalised (``10.1.2.3/8`` -> ``10.0.0.0/8``, ``::1`` -> ``::1/128``)."""
    try:
        return str(ipaddress.ip_network(read_str(value, path), strict=False))
    except (ConfigError, ValueError):
        raise expected(path, "an IPv4 or IPv6 address or network like '10.0.0.0/8'", value) from None


def _read_plugin(value: object, path: str) -> PluginConfig:
    """``{name: ..., **options}``; the options are checked later by the plugin's own compile()."""
    items = read_mapping(value, path)
    if "name" not in items:
        raise ConfigError(path, "missing required key 'name'")
    name = read_str(items["name"], join(path, "name"))
    return PluginConfig(name=name, options={k: v for k, v in items.items() if k != "name"}, key_path=path)


def _claim(seen: dict[str, str], key: str, owner: str, path: str, what: str) -> None:
    """Record that ``owner`` uses ``key``; a second use is an error pointing at the first."""
    if key in seen:
        raise ConfigError(path, f"duplicate {what} {key!r} (first at {seen[key]})")
    seen[key] = owner


# -- listeners -----------------------------------------------------------------------------------

_read_limits = read_record(
    Limits,
    {
        "max_header_bytes": read_size,
        "max_headers": read_int(1, 10_000),
        "max_uri_bytes": read_size,
        "max_body_bytes": read_size,
        "max_connections": read_int(1, 1_000_000),
        "max_pipeline": read_int(0, 1024),
    },
)
_read_client_timeouts = read_record(
    ClientTimeouts,
    {
        "head": read_duration(),
        "body": read_duration(),
        "keepalive": read_duration(),
        "send": read_duration(),
        "linger": read_duration(),
        "drain": read_duration(allow_zero=True),
    },
)


def _read_request_id_header(value: object, path: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value) or "_" in value:
        raise expected(path, "a header name (an HTTP token without '_', like 'X-Request-Id')", value)
    if value.lower() in _GATEWAY_HEADERS - {"x-request-id"}:
        raise ConfigError(path, f"{value!r} is a header the gateway owns; choose another name")
    return value


_LISTENER_KEYS = (
    "name", "bind", "trusted_proxies", "buffer_bytes", "limits", "timeouts", "trace_context",
    "headers_with_underscores", "request_id_header",
)  # fmt: skip
_LISTENER_READERS: Mapping[str, Reader[object]] = {
    "trusted_proxies": read_list(_read_network),
    "trace_context": read_bool,
    "buffer_bytes": read_size,
    "limits": _read_limits,
    "timeouts": _read_client_timeouts,
    "headers_with_underscores": read_one_of("a policy", ("drop", "reject", "allow")),
    "request_id_header": _read_request_id_header,
}


def _read_listeners(value: object, path: str) -> tuple[ListenerConfig, ...]:
    listeners: list[ListenerConfig] = []
    names: dict[str, str] = {}
    binds: dict[str, str] = {}
    for index, entry in enumerate(read_sequence(value, path, non_empty=True)):
        at = f"{path}[{index}]"
        section = Section(entry, at, _LISTENER_KEYS, required=("bind",))
        name = section.get("name", read_str) or f"listener{index}"
        _claim(names, name, at, section.at("name"), "listener name")
        host, port = section.require("bind", _read_address(0))
        if port:  # several listeners may each ask for an ephemeral port
            _claim(
                binds,
                show_address((host, port)),
                at,
                section.at("bind"),
                "bind address",
            )
        listeners.append(ListenerConfig(name=name, host=host, port=port, **section.read(_LISTENER_READERS)))
    return tuple(listeners)


# -- upstreams -----------------------------------------------------------------------------------

_UPSTREAM_TIMEOUTS: Mapping[str, Reader[object]] = {
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
}


def _read_pool(value: object, path: str) -> PoolConfig:
    fields = read_fields(value, path, _POOL)
    pool = PoolConfig(**fields)
    if pool.max_idle > pool.max_connections:
        if "max_idle" in fields:
            raise expected(
                join(path, "max_idle"),
                f"at most max_connections ({pool.max_connections})",
                pool.max_idle,
            )
        pool = replace(pool, max_idle=pool.max_connections)  # the default shrinks to fit
    return pool


def _read_target(value: object, path: str) -> TargetConfig:
    if isinstance(value, str):
        host, port = _read_address(1)(value, path)
        return TargetConfig(host=host, port=port)
    if not isinstance(value, Mapping):
        raise expected(path, "'host:port' or a mapping with address and weight", value)
    section = Section(value, path, ("address", "weight"), required=("address",))
    host, port = section.require("address", _read_address(1))
    return TargetConfig(host=host, port=port, **section.read({"weight": read_int(1, 1000)}))


def _read_host_header(value: object, path: str) -> str:
    if not isinstance(value, str) or not _HOST_HEADER.fullmatch(value):
        raise expected(path, "a host name with an optional :port", value)
    return value


# Health: active checks and passive outlier detection (upstream/health.py runs them).

_HEALTH_PATH = re.compile(r"/[!-\x22\x24-~]*")  # printable ASCII, no space (request line), no '#'
_STATUS_CLASS = re.compile(r"([1-5])xx")
_STATUS_RANGE = re.compile(r"([0-9]{3})-([0-9]{3})")
_STATUSES = "a status from 100 to 599, a class like '2xx' or a range like '200-299'"


def _read_health_path(value: object, path: str) -> str:
    if not isinstance(value, str) or not _HEALTH_PATH.fullmatch(value):
        raise expected(path, "a path starting with '/' (a query is allowed) without spaces or '#'", value)
    return value


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
    check = HealthCheckConfig(path=section.require("path", _read_health_path), **section.read(_HEALTH))
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


def _read_failure_ratio(value: object, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    raise expected(path, "a fraction greater than 0 and at most 1, like 0.5", value)


_BREAKER: Mapping[str, Reader[object]] = {
    "failures": read_int(1, 1000),
    "failure_ratio": _read_failure_ratio,
    "window": read_duration(),
    "min_requests": read_int(1, 1_000_000),
    "open_for": read_duration(),
    "trial_requests": read_int(1, 100),
    "count_5xx": read_bool,
}


def _read_breaker(value: object, path: str) -> BreakerConfig:
    return BreakerConfig(**Section(value, path, _BREAKER).read(_BREAKER))


# Balancing (upstream/balance.py): a string names an algorithm without options, a mapping of one
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
    if source != "param" and not _TOKEN.fullmatch(name):
        raise expected(path, f"'{source}:' followed by a {source} name (an HTTP token)", value)
    return HashKey(source, name.lower() if source == "header" else name)


def _read_cookie_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise expected(path, "a cookie name (an HTTP token like 'fgw_sticky')", value)
    return value


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


def _check_hash_params(upstreams: Mapping[str, UpstreamConfig], routes: tuple[RouteConfig, ...]) -> None:
    """``hash: param:NAME`` needs a route to the upstream whose path defines NAME (a typo would
    silently balance every request round robin)."""
    for upstream in upstreams.values():
        key = upstream.balance.hash_key
        if key is None or key.source != "param":
            continue
        paths = [route.path for route in routes if route.upstream == upstream.name]
        params = sorted({match[1] for path in paths for match in _PATH_PARAM.finditer(path)})
        if paths and key.name not in params:
            raise ConfigError(
                f"upstreams.{upstream.name}.balance.hash",
                f"no route to upstream {upstream.name!r} has a path parameter {key.name!r}"
                f" (theirs: {', '.join(params) or 'none'}){suggest(key.name, params)}",
            )


def _read_concurrency(value: object, path: str) -> ConcurrencyConfig:
    readers: Mapping[str, Reader[object]] = {
        "max_in_flight": read_int(1, 1_000_000),
        "queue": read_int(0, 1_000_000),
        "queue_timeout": read_duration(),
    }
    section = Section(value, path, readers, required=("max_in_flight",))
    return ConcurrencyConfig(**section.read(readers))


_UPSTREAM_KEYS = (
    "targets", "pool", "timeouts", "host_header", "health", "outlier", "breaker", "balance", "concurrency"
)  # fmt: skip
_UPSTREAM_READERS: Mapping[str, Reader[object]] = {
    "pool": _read_pool,
    "timeouts": read_record(UpstreamTimeouts, _UPSTREAM_TIMEOUTS),
    "host_header": _read_host_header,
    "health": _read_health,
    "outlier": _read_outlier,
    "breaker": _read_breaker,
    "balance": _read_balance,
    "concurrency": _read_concurrency,
}


def _read_upstreams(value: object, path: str) -> dict[str, UpstreamConfig]:
    upstreams: dict[str, UpstreamConfig] = {}
    for name, entry in read_mapping(value, path, non_empty=True).items():
        section = Section(entry, join(path, name), _UPSTREAM_KEYS, required=("targets",))
        targets = section.require("targets", read_list(_read_target, non_empty=True))
        upstreams[name] = UpstreamConfig(name=name, targets=targets, **section.read(_UPSTREAM_READERS))
    return upstreams


# -- routes --------------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"\{\*?([^{}:]*)(?::[^{}]*)?\}")  # {id}, {id:int}, {*rest}
_REWRITE_PARAM = re.compile(r"\{\*?([^{}]*)\}")


def _read_path(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "#" in value:
        raise expected(path, "a path starting with '/' without '?' or '#'", value)
    return value


def _read_method(value: object, path: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise expected(path, "an HTTP method token like 'GET'", value)
    return value.upper()


def _read_methods(value: object, path: str) -> tuple[str, ...] | None:
    """None (any method) for ``"*"``; otherwise upper-cased, duplicates dropped."""
    methods = read_list(_read_method, non_empty=True, single=True)(value, path)
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
        if not _TOKEN.fullmatch(name):
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
    params = [match[1] for match in _PATH_PARAM.finditer(template)]
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
    return lambda value, path: replace(base, **read_fields(value, path, _UPSTREAM_TIMEOUTS))


_ROUTE_KEYS = (
    "id", "path", "upstream", "methods", "host", "listeners", "headers", "query",
    "priority", "rewrite", "strip_prefix", "preserve_host", "timeouts", "retry", "concurrency",
    "plugins", "aggregate",
)  # fmt: skip
# What only a proxied route can use: an aggregate route has no single upstream request to shape.
_PROXY_ONLY_KEYS = ("rewrite", "strip_prefix", "preserve_host", "timeouts", "retry")

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


def _read_fraction(value: object, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise expected(path, "a fraction from 0 to 1, like 0.2", value)


def _read_retry(value: object, path: str) -> RetryConfig:
    readers: Mapping[str, Reader[object]] = {
        "attempts": read_int(1, 10),
        "when": read_list(_read_retry_condition, non_empty=True, single=True),
        "methods": _read_retry_methods,
        "backoff": read_duration(allow_zero=True),
        "max_backoff": read_duration(allow_zero=True),
        "budget": _read_fraction,
    }
    fields = read_fields(value, path, readers)
    conditions = fields.pop("when", None)
    if conditions is not None:
        fields["when"] = frozenset(c for c in conditions if isinstance(c, str))
        fields["statuses"] = frozenset(c for c in conditions if isinstance(c, int))
    return RetryConfig(**fields)


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
    return RouteConfig(
        id=route_id,
        path=template,
        upstream=upstream.name,
        rewrite=rewrite,
        strip_prefix=strip_prefix,
        timeouts=timeouts,
        retry=section.get("retry", _read_retry),
        **section.read({"preserve_host": read_bool}),
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
        "concurrency": section.get("concurrency", _read_concurrency),
        **section.read(
            {
                "headers": _read_header_predicates,
                "query": _read_query_predicates,
                "priority": read_int(-1_000_000, 1_000_000),
                "plugins": read_list(_read_plugin),
            }
        ),
    }


# -- aggregate routes: several upstream calls merged into one JSON answer (aggregate.py) -----------

_AGGREGATE_KEYS = ("backends", "merge", "aggregator")
_MERGES = ("by_key", "deep")
_BACKEND_KEYS = (
    "key", "upstream", "path", "method", "headers", "timeout", "required", "max_body", "target",
    "fields", "mapping", "group",
)  # fmt: skip
_BACKEND_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_$@-]+")  # JSON keys usable in config (no dots: those make paths)
_FIELD_PATH = re.compile(r"[A-Za-z0-9_$@-]+(?:\.[A-Za-z0-9_$@-]+)*")
_BACKEND_PATH = re.compile(r"/[!-\x22\x24-~]*")  # printable ASCII, no space, no '#'
_TEMPLATE_REF = re.compile(r"\{([^{}]*)\}")
_CALLABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
# Headers the gateway writes itself on a backend call, or hop-by-hop ones: never copied.
_GATEWAY_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
        "te", "trailer", "upgrade", "expect", "proxy-authorization", "x-request-id", "x-forwarded-for",
        "traceparent",
    }
)  # fmt: skip


def _read_backend_key(value: object, path: str) -> str:
    if not isinstance(value, str) or not _BACKEND_KEY.fullmatch(value):
        raise expected(path, "a name like 'basket' (letters, digits, '_' or '-')", value)
    return value


def _read_field_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not _FIELD_NAME.fullmatch(value):
        raise expected(path, "a JSON field name like 'percent'", value)
    return value


def _read_field_path(value: object, path: str) -> str:
    if not isinstance(value, str) or not _FIELD_PATH.fullmatch(value):
        raise expected(path, "a field or a dotted path of fields like 'data.items'", value)
    return value


def _read_passed_header(value: object, path: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise expected(path, "a header name (an HTTP token like 'authorization')", value)
    if value.lower() in _GATEWAY_HEADERS:
        raise ConfigError(path, f"{value!r} is not passed on: the gateway writes it or it is hop-by-hop")
    return value.lower()


def _read_backend_method(value: object, path: str) -> str:
    method = _read_method(value, path)
    if method in ("HEAD", "CONNECT"):
        raise expected(path, "a method whose response has a JSON body to merge, like GET", value)
    return method


def _read_mapping_renames(value: object, path: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (_read_field_name(name, path), _read_field_name(new, join(path, name)))
        for name, new in read_mapping(value, path, non_empty=True).items()
    )


def _read_aggregator(value: object, path: str) -> str:
    if not isinstance(value, str) or not _CALLABLE.fullmatch(value):
        raise expected(path, "a Python callable as 'package.module:function'", value)
    return value


_BACKEND_READERS: Mapping[str, Reader[object]] = {
    "method": _read_backend_method,
    "headers": read_list(_read_passed_header, single=True),
    "timeout": read_duration(),
    "required": read_bool,
    "max_body": read_size,
    "target": _read_field_path,
    "fields": read_list(_read_field_name, non_empty=True),
    "mapping": _read_mapping_renames,
    "group": _read_field_name,
}


def _check_backend_template(template: str, path: str, params: list[str], earlier: list[str]) -> None:
    """Each ``{name}`` is a route parameter, each ``{key.field}`` a field of an earlier backend."""
    for match in _TEMPLATE_REF.finditer(template):
        ref = match[1]
        key, dot, field = ref.partition(".")
        if not dot:
            if ref not in params:
                known = f"the route's parameters: {', '.join(params)}" if params else "the route has none"
                raise ConfigError(
                    path, f"unknown parameter {{{ref}}}; expected one of {known}{suggest(ref, params)}"
                )
            continue
        if key not in earlier:
            before = f"earlier backends: {', '.join(earlier)}" if earlier else "it is the first backend"
            raise ConfigError(
                path, f"{{{ref}}} names backend {key!r}, which is not defined before this one"
                f" ({before}){suggest(key, earlier)}",
            )  # fmt: skip
        if not _FIELD_PATH.fullmatch(field):
            raise ConfigError(
                path, f"expected {{{key}.FIELD}} with a field like 'id' or 'a.b', found {{{ref}}}"
            )


def _read_backend(
    value: object,
    path: str,
    index: int,
    params: list[str],
    earlier: list[str],
    upstreams: Mapping[str, UpstreamConfig],
) -> AggregateBackend:
    section = Section(value, path, _BACKEND_KEYS, required=("upstream", "path"))
    key = section.get("key", _read_backend_key) or f"resp{index}"
    if key in earlier:
        raise ConfigError(section.at("key"), f"duplicate backend key {key!r}")
    upstream = section.require("upstream", read_one_of("an upstream", upstreams))
    template = section.require("path", _read_backend_path)
    _check_backend_template(template, section.at("path"), params, earlier)
    fields = section.read(_BACKEND_READERS)
    return AggregateBackend(key=key, upstream=upstream, path=template, key_path=path, **fields)


def _read_backend_path(value: object, path: str) -> str:
    if not isinstance(value, str) or not _BACKEND_PATH.fullmatch(value):
        raise expected(path, "a path starting with '/' (a query is allowed) without spaces or '#'", value)
    return value


def _read_aggregate(
    value: object, path: str, template: str, upstreams: Mapping[str, UpstreamConfig]
) -> AggregateConfig:
    section = Section(value, path, _AGGREGATE_KEYS, required=("backends",))
    if "merge" in section.items and "aggregator" in section.items:
        raise ConfigError(path, "expected either merge or aggregator (a custom merge), found both")
    merge = section.get("merge", read_one_of("a merge", _MERGES)) or "by_key"
    params = [match[1] for match in _PATH_PARAM.finditer(template)]
    backends: list[AggregateBackend] = []
    entries = read_sequence(section.items["backends"], section.at("backends"), non_empty=True)
    for index, entry in enumerate(entries):
        at = f"{section.at('backends')}[{index}]"
        backend = _read_backend(entry, at, index, params, [b.key for b in backends], upstreams)
        if backend.group is not None and merge != "deep":
            raise ConfigError(
                join(at, "group"), "applies to merge: deep (by_key already puts each result under its key)"
            )
        backends.append(backend)
    return AggregateConfig(
        backends=tuple(backends),
        key_path=path,
        merge=merge,
        aggregator=section.get("aggregator", _read_aggregator),
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
    return RouteConfig(
        id=route_id,
        path=template,
        upstream="",
        aggregate=section.require("aggregate", lambda v, p: _read_aggregate(v, p, template, upstreams)),
        **_read_route_common(section, listeners),
    )


def _read_routes(
    value: object, path: str, listeners: Collection[str], upstreams: Mapping[str, UpstreamConfig]
) -> tuple[RouteConfig, ...]:
    routes: list[RouteConfig] = []
    ids: dict[str, str] = {}
    for index, entry in enumerate(read_sequence(value, path, non_empty=True)):
        at = f"{path}[{index}]"
        section = Section(entry, at, _ROUTE_KEYS, required=("path",))
        route_id = section.get("id", read_str) or f"route{index}"
        _claim(ids, route_id, at, section.at("id"), "route id")
        routes.append(_read_route(section, route_id, listeners, upstreams))
    return tuple(routes)


# -- operations: admin listener, access log -------------------------------------------------------


ADMIN_HOST, ADMIN_PORT = "127.0.0.1", 9901


def _read_admin(value: object, path: str) -> AdminConfig:
    section = Section(value, path, ("bind", "token"))
    host, port = section.get("bind", _read_address(0)) or (ADMIN_HOST, ADMIN_PORT)
    token = section.get("token", read_str)
    if token is None and not _is_loopback(host):
        raise ConfigError(
            join(path, "token"),
            f"required when admin.bind is not a loopback address (found {host!r}); the admin API can reload"
            " the configuration",
        )
    return AdminConfig(host=host, port=port, token=token)


def _check_admin_bind(admin: AdminConfig, listeners: tuple[ListenerConfig, ...]) -> None:
    """The admin API and a listener on one port: one of them fails to bind, or (workers bind with
    SO_REUSEPORT) the two share the port and each gets some of the other's connections."""
    for index, listener in enumerate(listeners):
        if binds_overlap((admin.host, admin.port), (listener.host, listener.port)):
            raise ConfigError(
                "admin.bind",
                f"{show_address((admin.host, admin.port))} overlaps listeners[{index}].bind"
                f" ({show_address((listener.host, listener.port))}); expected a port no listener uses",
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_sample(value: object, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    raise expected(path, "a fraction greater than 0 and at most 1, like 0.1", value)


_ACCESS_LOG_READERS: Mapping[str, Reader[object]] = {
    "sink": read_str,
    "fields": read_list(read_one_of("an access log field", ACCESS_LOG_FIELDS), non_empty=True),
    "sample": _read_sample,
    "flush_interval": read_duration(),
    "buffer_bytes": read_size,
}


def _read_access_log(value: object, path: str) -> AccessLogConfig:
    return AccessLogConfig(**read_fields(value, path, _ACCESS_LOG_READERS))


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_EXPORTER_HEADERS = ("content-type", "content-length", "host", "transfer-encoding", "connection")


def _read_otlp_endpoint(value: object, path: str) -> str:
    """An http(s) URL; one with no path gets the OTLP/HTTP traces path, ``/v1/traces``."""
    text = read_str(value, path)
    url = urlsplit(text)
    try:
        url.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        url = url._replace(netloc="")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise expected(path, "an http:// or https:// URL like 'http://127.0.0.1:4318/v1/traces'", value)
    if url.username is not None:  # the endpoint is logged when the collector is down
        raise ConfigError(path, "expected a URL without credentials; send them in tracing.otlp.headers")
    return text if url.path not in ("", "/") else urlunsplit(url._replace(path="/v1/traces"))


def _read_export_headers(value: object, path: str) -> tuple[tuple[str, str], ...]:
    headers = []
    for name, entry in read_mapping(value, path).items():
        at = join(path, name)
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(at, "expected a header name (letters, digits and !#$%&'*+.^_`|~-)")
        if name.lower() in _EXPORTER_HEADERS:
            raise ConfigError(at, f"{name} is set by the exporter; expected another header")
        text = read_text(entry, at)
        if any(c in text for c in "\r\n\0"):
            raise expected(at, "a header value without CR, LF or NUL", entry)
        headers.append((name, text))
    return tuple(headers)


_OTLP_READERS: Mapping[str, Reader[object]] = {
    "endpoint": _read_otlp_endpoint,
    "service_name": read_str,
    "sample": _read_sample,
    "batch": read_int(1, 10_000),
    "queue": read_int(1, 1_000_000),
    "flush_interval": read_duration(),
    "timeout": read_duration(),
    "headers": _read_export_headers,
}


def _read_otlp(value: object, path: str) -> OtlpConfig:
    section = Section(value, path, _OTLP_READERS, required=("endpoint",))
    otlp = OtlpConfig(**section.read(_OTLP_READERS))
    if otlp.queue < otlp.batch:
        raise ConfigError(section.at("queue"), f"expected at least batch ({otlp.batch}), found {otlp.queue}")
    return otlp


def _read_tracing(value: object, path: str) -> TracingConfig:
    section = Section(value, path, ("otlp",))
    return TracingConfig(otlp=section.get("otlp", _read_otlp))


# -- the document --------------------------------------------------------------------------------

_TOP_KEYS = ("listeners", "upstreams", "routes", "plugins", "admin", "access_log", "tracing")


def _read_config(document: object, source: str) -> Config:
    if not isinstance(document, Mapping):
        raise expected("", "a mapping with listeners, upstreams and routes", document)
    section = Section(document, "", _TOP_KEYS, required=("listeners", "upstreams", "routes"))
    listeners = section.require("listeners", _read_listeners)
    upstreams = section.require("upstreams", _read_upstreams)
    names = [listener.name for listener in listeners]
    routes = section.require("routes", lambda value, path: _read_routes(value, path, names, upstreams))
    _check_hash_params(upstreams, routes)
    plugins = section.get("plugins", read_list(_read_plugin)) or ()
    admin = section.get("admin", _read_admin)
    if admin is not None:
        _check_admin_bind(admin, listeners)
    return Config(
        source=source,
        listeners=listeners,
        upstreams=upstreams,
        routes=routes,
        plugins=plugins,
        admin=admin,
        access_log=section.get("access_log", _read_access_log),
        tracing=section.get("tracing", _read_tracing),
    )
