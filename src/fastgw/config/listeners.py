"""The ``listeners`` section: bind addresses, trusted proxies, client limits and timeouts, and the
request id header. Names and non-ephemeral bind addresses are unique."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from fastgw.config.schema import ClientTimeouts, Http2Config, Limits, ListenerConfig
from fastgw.config.syntax import GATEWAY_HEADERS, TOKEN
from fastgw.config.tls import read_listener_tls
from fastgw.config.validate import (
    Reader,
    claim,
    expected,
    named_sections,
    read_address,
    read_bool,
    read_duration,
    read_int,
    read_list,
    read_one_of,
    read_record,
    read_size,
    read_str,
    show_address,
)
from fastgw.errors import ConfigError

__all__ = ["read_listeners"]


def _read_network(value: object, path: str) -> str:
    """An address or CIDR, normalised (``10.1.2.3/8`` -> ``10.0.0.0/8``, ``::1`` -> ``::1/128``)."""
    try:
        return str(ipaddress.ip_network(read_str(value, path), strict=False))
    except (ConfigError, ValueError):
        raise expected(path, "an IPv4 or IPv6 address or network like '10.0.0.0/8'", value) from None


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


_read_http2_record = read_record(
    Http2Config,
    {
        "enabled": read_bool,
        "h2c": read_bool,
        "max_concurrent_streams": read_int(1, 10_000),
        "stream_window_bytes": read_int(1024, 2**31 - 1),
    },
)


def _read_http2(value: object, path: str) -> Http2Config:
    """``http2: false``, or its settings (``http2: {h2c: true, max_concurrent_streams: 200}``)."""
    if isinstance(value, bool):
        return Http2Config(enabled=value)
    return _read_http2_record(value, path)


def _check_http2(listener: ListenerConfig, path: str) -> None:
    http2, tls = listener.http2, listener.tls
    if http2.h2c and not http2.enabled:
        raise ConfigError(f"{path}.http2.h2c", "h2c needs http2 enabled")
    if http2.h2c and tls is not None:
        raise ConfigError(f"{path}.http2.h2c", "h2c is cleartext HTTP/2; a TLS listener offers h2 by ALPN")
    if tls is not None and tls.alpn is not None and "h2" in tls.alpn and not http2.enabled:
        raise ConfigError(f"{path}.tls.alpn", "offers h2, but the listener's http2 is off")


def _read_request_id_header(value: object, path: str) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value) or "_" in value:
        raise expected(path, "a header name (an HTTP token without '_', like 'X-Request-Id')", value)
    if value.lower() in GATEWAY_HEADERS - {"x-request-id"}:
        raise ConfigError(path, f"{value!r} is a header the gateway owns; choose another name")
    return value


_LISTENER_KEYS = (
    "name", "bind", "trusted_proxies", "buffer_bytes", "limits", "timeouts", "trace_context",
    "headers_with_underscores", "request_id_header", "tls", "http2",
)  # fmt: skip
_LISTENER_READERS: Mapping[str, Reader[object]] = {
    "trusted_proxies": read_list(_read_network),
    "trace_context": read_bool,
    "buffer_bytes": read_size,
    "limits": _read_limits,
    "timeouts": _read_client_timeouts,
    "headers_with_underscores": read_one_of("a policy", ("drop", "reject", "allow")),
    "request_id_header": _read_request_id_header,
    "tls": read_listener_tls,
    "http2": _read_http2,
}


def read_listeners(value: object, path: str) -> tuple[ListenerConfig, ...]:
    listeners: list[ListenerConfig] = []
    binds: dict[str, str] = {}
    entries = named_sections(
        value, path, _LISTENER_KEYS, ("bind",), name_key="name", default="listener", what="listener name"
    )
    for name, section in entries:
        host, port = section.require("bind", read_address(0))
        if port:  # several listeners may each ask for an ephemeral port
            claim(binds, show_address((host, port)), section.path, section.at("bind"), "bind address")
        listener = ListenerConfig(name=name, host=host, port=port, **section.read(_LISTENER_READERS))
        _check_http2(listener, section.path)
        listeners.append(listener)
    return tuple(listeners)
