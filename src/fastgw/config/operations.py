"""The operations sections: ``admin`` (the admin API's bind address and token), ``access_log``
and ``tracing`` (the OTLP/HTTP exporter)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from fastgw.config.schema import ACCESS_LOG_FIELDS, AccessLogConfig, AdminConfig, OtlpConfig, TracingConfig
from fastgw.config.syntax import TOKEN
from fastgw.config.validate import (
    Reader,
    Section,
    expected,
    join,
    read_address,
    read_duration,
    read_fields,
    read_fraction,
    read_int,
    read_list,
    read_mapping,
    read_one_of,
    read_size,
    read_str,
    read_text,
)
from fastgw.errors import ConfigError

__all__ = ["read_access_log", "read_admin", "read_tracing"]

_ADMIN_DEFAULTS = AdminConfig()


def read_admin(value: object, path: str) -> AdminConfig:
    section = Section(value, path, ("bind", "token"))
    default_bind = (_ADMIN_DEFAULTS.host, _ADMIN_DEFAULTS.port)
    host, port = section.get("bind", read_address(0)) or default_bind
    token = section.get("token", read_str)
    if token is None and not _is_loopback(host):
        raise ConfigError(
            join(path, "token"),
            f"required when admin.bind is not a loopback address (found {host!r}); the admin API can reload"
            " the configuration",
        )
    return AdminConfig(host=host, port=port, token=token)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_read_sample = read_fraction("0.1")

_ACCESS_LOG_READERS: Mapping[str, Reader[object]] = {
    "sink": read_str,
    "fields": read_list(read_one_of("an access log field", ACCESS_LOG_FIELDS), non_empty=True),
    "sample": _read_sample,
    "flush_interval": read_duration(),
    "buffer_bytes": read_size,
}


def read_access_log(value: object, path: str) -> AccessLogConfig:
    return AccessLogConfig(**read_fields(value, path, _ACCESS_LOG_READERS))


# -- tracing ---------------------------------------------------------------------------------------

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
        if not TOKEN.fullmatch(name):
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


def read_tracing(value: object, path: str) -> TracingConfig:
    section = Section(value, path, ("otlp",))
    return TracingConfig(otlp=section.get("otlp", _read_otlp))
