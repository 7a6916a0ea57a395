"""Service discovery: upstream targets from a registry, followed while the gateway runs.

``feed`` holds the interface (``Resolver``, ``Instance``) and the ``ServiceFeed`` that applies what
a resolver finds to an upstream group (retry with backoff, last known good set, floor,
staleness); one module per provider implements ``Resolver``: ``dns`` (A/AAAA on TTL, SRV),
``etcd`` (a watched key prefix), ``consul`` (blocking queries on the health endpoint), ``eureka``
(the apps registry with delta fetches), ``static`` (a fixed set, for tests and tools). None of it
runs on the hot path: resolvers are asyncio tasks on the worker's loop, and the group they feed
is read per request as before. Provider modules are imported only when an upstream uses them.
"""

from __future__ import annotations

from fastgw.config.schema import DiscoveryConfig
from fastgw.discovery.feed import DiscoveryKey, Instance, Resolver, ServiceFeed, resolve_once

__all__ = ["DiscoveryKey", "Instance", "Resolver", "ServiceFeed", "make_resolver", "resolve_once"]


def make_resolver(config: DiscoveryConfig) -> Resolver:
    """The resolver of ``config``'s provider (its module imported now, on first use)."""
    if config.provider == "dns":
        from fastgw.discovery.dns import DnsResolver

        return DnsResolver(config)
    if config.provider == "etcd":
        from fastgw.discovery.etcd import EtcdResolver

        return EtcdResolver(config)
    if config.provider == "consul":
        from fastgw.discovery.consul import ConsulResolver

        return ConsulResolver(config)
    if config.provider == "eureka":
        from fastgw.discovery.eureka import EurekaResolver

        return EurekaResolver(config)
    raise ValueError(f"unknown discovery provider {config.provider!r}")
