"""Service discovery's two sections: ``registries`` (once per gateway: where each provider's
registry is, with its credentials, which come from the environment through ``${VAR}``) and an
upstream's ``discovery`` (which service of which provider its targets come from).

``discovery`` keys depend on the provider: ``name``, ``type`` and ``port`` for DNS, ``prefix`` for
etcd, ``service``, ``tags``, ``datacenter`` and ``weight_meta`` for Consul, ``app`` for Eureka;
``min_targets``, ``require_health_check`` and ``retry`` for all. A provider used by an upstream
needs its entry in ``registries`` (DNS excepted: without one it asks the system's resolvers).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from fastgw.config.schema import (
    ConsulRegistry,
    DiscoveryConfig,
    DnsRegistry,
    EtcdRegistry,
    EurekaRegistry,
    RegistriesConfig,
    Registry,
    TlsFiles,
)
from fastgw.config.validate import (
    Reader,
    Section,
    expected,
    read_bool,
    read_duration,
    read_int,
    read_list,
    read_matching,
    read_one_of,
    read_str,
)
from fastgw.errors import ConfigError

__all__ = ["PROVIDERS", "read_discovery", "read_registries"]

PROVIDERS = ("dns", "etcd", "consul", "eureka")


def read_http_url(value: object, path: str) -> str:
    """An http:// or https:// URL with a host and no credentials (they go in their own keys, so
    that a URL can be logged); a trailing slash is dropped."""
    text = read_str(value, path)
    url = urlsplit(text)
    try:
        url.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        url = url._replace(netloc="")
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise expected(path, "an http:// or https:// URL like 'http://127.0.0.1:2379'", value)
    if url.username is not None:
        raise ConfigError(path, "expected a URL without credentials; give them as username and password")
    return text.rstrip("/")


def _read_nameserver(value: object, path: str) -> tuple[str, int]:
    """``10.0.0.2``, ``10.0.0.2:5353`` or ``[fd00::2]:53``: an IP address (a resolver's name would
    need a resolver), port 53 unless given."""
    text = read_str(value, path)
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise expected(path, "an IP address with an optional :port", value)
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            raise expected(path, "an IP address with an optional :port", value)
        port = int(digits)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise expected(path, "an IP address with an optional :port, like '127.0.0.1:5353'", value) from None
    if not 1 <= port <= 65535:
        raise expected(path, "a port from 1 to 65535", value)
    return host, port


_TLS: Mapping[str, Reader[object]] = {"ca": read_str, "cert": read_str, "key": read_str}


def _read_tls(value: object, path: str) -> TlsFiles:
    section = Section(value, path, _TLS)
    tls = TlsFiles(**section.read(_TLS))
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError(path, "expected cert and key together (a client certificate and its key)")
    return tls


_DNS: Mapping[str, Reader[object]] = {
    "nameservers": read_list(_read_nameserver, non_empty=True),
    "timeout": read_duration(),
}
_ETCD: Mapping[str, Reader[object]] = {
    "endpoints": read_list(read_http_url, non_empty=True, single=True),
    "username": read_str,
    "password": read_str,
    "tls": _read_tls,
    "timeout": read_duration(),
}
_CONSUL: Mapping[str, Reader[object]] = {
    "address": read_http_url,
    "token": read_str,
    "datacenter": read_str,
    "wait": read_duration(),
    "tls": _read_tls,
    "timeout": read_duration(),
}
_EUREKA: Mapping[str, Reader[object]] = {
    "url": read_http_url,
    "username": read_str,
    "password": read_str,
    "interval": read_duration(),
    "tls": _read_tls,
    "timeout": read_duration(),
}


def _check_login(section: Section) -> None:
    if ("username" in section.items) != ("password" in section.items):
        raise ConfigError(section.path, "expected username and password together")


def _read_etcd(value: object, path: str) -> EtcdRegistry:
    section = Section(value, path, _ETCD, required=("endpoints",))
    _check_login(section)
    return EtcdRegistry(**section.read(_ETCD))


def _read_consul(value: object, path: str) -> ConsulRegistry:
    section = Section(value, path, _CONSUL)
    registry = ConsulRegistry(**section.read(_CONSUL))
    if registry.wait > 600:
        raise expected(section.at("wait"), "at most 10m (Consul's own limit)", section.items["wait"])
    return registry


def _read_eureka(value: object, path: str) -> EurekaRegistry:
    section = Section(value, path, _EUREKA, required=("url",))
    _check_login(section)
    return EurekaRegistry(**section.read(_EUREKA))


def _read_dns(value: object, path: str) -> DnsRegistry:
    return DnsRegistry(**Section(value, path, _DNS).read(_DNS))


_REGISTRIES: Mapping[str, Reader[object]] = {
    "dns": _read_dns,
    "etcd": _read_etcd,
    "consul": _read_consul,
    "eureka": _read_eureka,
}


def read_registries(value: object, path: str) -> RegistriesConfig:
    return RegistriesConfig(**Section(value, path, _REGISTRIES).read(_REGISTRIES))


# -- an upstream's discovery ---------------------------------------------------------------------

_DNS_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?"
)
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_read_dns_name = read_matching(
    _DNS_NAME, "a DNS name like 'catalog.internal' or '_http._tcp.catalog.internal'"
)
_read_service = read_matching(_SERVICE_NAME, "a service name (letters, digits, '_', '.', ':', '-')")
_read_tag = read_matching(re.compile(r"[^\s&?=#/]+"), "a tag without spaces, '&', '?', '=', '#' or '/'")


def _read_prefix(value: object, path: str) -> str:
    text = read_str(value, path)
    if not text.startswith("/"):
        raise expected(path, "a key prefix starting with '/', like '/services/catalog/'", value)
    return text


_DEFAULTS = DiscoveryConfig(provider="dns", service="-", registry=DnsRegistry())


def _read_retry(value: object, path: str) -> tuple[float, float]:
    section = Section(value, path, ("base", "max"))
    base = section.get("base", read_duration()) or _DEFAULTS.retry_base
    most = section.get("max", read_duration()) or max(_DEFAULTS.retry_max, base)
    if most < base:
        raise expected(section.at("max"), f"at least base ({base:g}s)", section.items["max"])
    return base, most


_COMMON: Mapping[str, Reader[object]] = {
    "min_targets": read_int(0, 10_000),
    "require_health_check": read_bool,
}
# Per provider: the key naming the service, and the provider's own options.
_SERVICE_KEY = {"dns": "name", "etcd": "prefix", "consul": "service", "eureka": "app"}
_SERVICE_READERS: Mapping[str, Reader[str]] = {
    "dns": _read_dns_name,
    "etcd": _read_prefix,
    "consul": _read_service,
    "eureka": _read_service,
}
_OPTIONS: Mapping[str, Mapping[str, Reader[object]]] = {
    "dns": {"type": read_one_of("a DNS record type", ("A", "AAAA", "SRV")), "port": read_int(1, 65535)},
    "etcd": {},
    "consul": {
        "tags": read_list(_read_tag, single=True),
        "datacenter": _read_service,
        "weight_meta": read_str,
    },
    "eureka": {},
}
_RENAMED = {"type": "record"}  # a key whose record field has another name


def read_discovery(value: object, path: str, registries: RegistriesConfig) -> DiscoveryConfig:
    """An upstream's ``discovery``: its provider decides which keys it takes."""
    if not isinstance(value, Mapping) or "provider" not in value:
        raise expected(path, f"a mapping with a provider ({', '.join(PROVIDERS)}) and its service", value)
    provider = read_one_of("a discovery provider", PROVIDERS)(value["provider"], f"{path}.provider")
    service_key = _SERVICE_KEY[provider]
    options = _OPTIONS[provider]
    section = Section(
        value, path, ("provider", service_key, *options, *_COMMON, "retry"), required=(service_key,)
    )
    registry = _registry_for(provider, registries, section.at("provider"))
    fields = {_RENAMED.get(key, key): found for key, found in section.read(options).items()}
    retry = section.get("retry", _read_retry)
    if retry is not None:
        fields["retry_base"], fields["retry_max"] = retry
    discovery = DiscoveryConfig(
        provider=provider,
        service=section.require(service_key, _SERVICE_READERS[provider]),
        registry=registry,
        **fields,
        **section.read(_COMMON),
    )
    if provider == "dns":
        if discovery.record == "SRV" and discovery.port is not None:
            raise ConfigError(section.at("port"), "SRV records carry their own ports; expected no port")
        if discovery.record != "SRV" and discovery.port is None:
            raise ConfigError(
                path, f"missing required key 'port' (the targets' port for {discovery.record} records)"
            )
    return discovery


def _registry_for(provider: str, registries: RegistriesConfig, path: str) -> Registry:
    registry: Registry | None = getattr(registries, provider)
    if registry is None:
        raise ConfigError(path, f"{provider} needs registries.{provider} (where the registry is)")
    return registry
