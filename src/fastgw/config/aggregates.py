"""A route's ``aggregate`` section: the backend calls whose JSON answers ``aggregate.py`` merges
into one, and how (``merge: by_key`` or ``deep``, or a custom ``aggregator``).

A backend's path may use the route's parameters (``{id}``) and fields of earlier backends'
answers (``{basket.owner}``); both are checked here, so the runtime only substitutes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastgw.config.schema import AggregateBackend, AggregateConfig, UpstreamConfig
from fastgw.config.syntax import GATEWAY_HEADERS, TOKEN, read_method, read_request_target
from fastgw.config.validate import (
    Reader,
    Section,
    expected,
    join,
    read_bool,
    read_duration,
    read_list,
    read_mapping,
    read_matching,
    read_one_of,
    read_sequence,
    read_size,
    suggest,
)
from fastgw.errors import ConfigError

__all__ = ["read_aggregate"]

_AGGREGATE_KEYS = ("backends", "merge", "aggregator")
_MERGES = ("by_key", "deep")
_BACKEND_KEYS = (
    "key", "upstream", "path", "method", "headers", "timeout", "required", "max_body", "target",
    "fields", "mapping", "group",
)  # fmt: skip
_FIELD_PATH = re.compile(r"[A-Za-z0-9_$@-]+(?:\.[A-Za-z0-9_$@-]+)*")
_TEMPLATE_REF = re.compile(r"\{([^{}]*)\}")

_read_backend_key = read_matching(
    re.compile(r"[A-Za-z_][A-Za-z0-9_-]*"), "a name like 'basket' (letters, digits, '_' or '-')"
)
_read_field_name = read_matching(  # JSON keys usable in config (no dots: those make paths)
    re.compile(r"[A-Za-z0-9_$@-]+"), "a JSON field name like 'percent'"
)
_read_field_path = read_matching(_FIELD_PATH, "a field or a dotted path of fields like 'data.items'")
_read_aggregator = read_matching(
    re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"),
    "a Python callable as 'package.module:function'",
)


def _read_passed_header(value: object, path: str) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise expected(path, "a header name (an HTTP token like 'authorization')", value)
    if value.lower() in GATEWAY_HEADERS:
        raise ConfigError(path, f"{value!r} is not passed on: the gateway writes it or it is hop-by-hop")
    return value.lower()


def _read_backend_method(value: object, path: str) -> str:
    method = read_method(value, path)
    if method in ("HEAD", "CONNECT"):
        raise expected(path, "a method whose response has a JSON body to merge, like GET", value)
    return method


def _read_mapping_renames(value: object, path: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (_read_field_name(name, path), _read_field_name(new, join(path, name)))
        for name, new in read_mapping(value, path, non_empty=True).items()
    )


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
    template = section.require("path", read_request_target)
    _check_backend_template(template, section.at("path"), params, earlier)
    fields = section.read(_BACKEND_READERS)
    return AggregateBackend(key=key, upstream=upstream, path=template, key_path=path, **fields)


def read_aggregate(
    value: object, path: str, params: list[str], upstreams: Mapping[str, UpstreamConfig]
) -> AggregateConfig:
    """The ``aggregate`` of a route whose path template has the parameters ``params``."""
    section = Section(value, path, _AGGREGATE_KEYS, required=("backends",))
    if "merge" in section.items and "aggregator" in section.items:
        raise ConfigError(path, "expected either merge or aggregator (a custom merge), found both")
    merge = section.get("merge", read_one_of("a merge", _MERGES)) or "by_key"
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
