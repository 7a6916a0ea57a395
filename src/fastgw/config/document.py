"""The whole document: its top-level keys, the order its sections are read in, and the checks
that need more than one section (route parameters a hash balancer names, the admin API's port
against the listeners').

Listeners and upstreams come first because routes name both; a route's reference to an upstream
or a listener is checked as the route is read (``routes``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastgw.config.discovery import read_registries
from fastgw.config.listeners import read_listeners
from fastgw.config.operations import read_access_log, read_admin, read_tracing
from fastgw.config.routes import path_params, read_plugin, read_routes
from fastgw.config.schema import (
    AdminConfig,
    Config,
    ListenerConfig,
    RegistriesConfig,
    RouteConfig,
    UpstreamConfig,
)
from fastgw.config.upstreams import read_upstreams
from fastgw.config.validate import Section, binds_overlap, expected, read_list, show_address, suggest
from fastgw.errors import ConfigError

__all__ = ["read_config"]

_TOP_KEYS = (
    "listeners", "upstreams", "routes", "plugins", "admin", "access_log", "tracing", "registries",
)  # fmt: skip


def read_config(document: object, source: str, revision: int | None = None) -> Config:
    """The ``Config`` of a plain document (``${ENV}`` already substituted) read from ``source``
    (at ``revision``, for a versioned source such as an etcd key)."""
    if not isinstance(document, Mapping):
        raise expected("", "a mapping with listeners, upstreams and routes", document)
    section = Section(document, "", _TOP_KEYS, required=("listeners", "upstreams", "routes"))
    listeners = section.require("listeners", read_listeners)
    registries = section.get("registries", read_registries) or RegistriesConfig()
    upstreams = section.require("upstreams", lambda value, path: read_upstreams(value, path, registries))
    names = [listener.name for listener in listeners]
    routes = section.require("routes", lambda value, path: read_routes(value, path, names, upstreams))
    _check_hash_params(upstreams, routes)
    plugins = section.get("plugins", read_list(read_plugin)) or ()
    admin = section.get("admin", read_admin)
    if admin is not None:
        _check_admin_bind(admin, listeners)
    return Config(
        source=source,
        listeners=listeners,
        upstreams=upstreams,
        routes=routes,
        plugins=plugins,
        admin=admin,
        access_log=section.get("access_log", read_access_log),
        tracing=section.get("tracing", read_tracing),
        registries=registries,
        revision=revision,
    )


def _check_hash_params(upstreams: Mapping[str, UpstreamConfig], routes: tuple[RouteConfig, ...]) -> None:
    """``hash: param:NAME`` needs a route to the upstream whose path defines NAME (a typo would
    silently balance every request round robin)."""
    for upstream in upstreams.values():
        key = upstream.balance.hash_key
        if key is None or key.source != "param":
            continue
        paths = [route.path for route in routes if route.upstream == upstream.name]
        params = sorted({param for path in paths for param in path_params(path)})
        if paths and key.name not in params:
            raise ConfigError(
                f"upstreams.{upstream.name}.balance.hash",
                f"no route to upstream {upstream.name!r} has a path parameter {key.name!r}"
                f" (theirs: {', '.join(params) or 'none'}){suggest(key.name, params)}",
            )


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
