"""DNS: A/AAAA records (with the upstream's port), or SRV records (priority, weight and port).

The name is resolved again when its answer's TTL runs out (the smallest TTL of the records that
made the set; at least ``MIN_REFRESH`` so that a TTL of 0 is not a busy loop, at most
``MAX_REFRESH``). A name that does not exist, or has no record of the type, is an answer with no
instances (the feed's floor keeps the last set); a timeout or a server failure is an error.

SRV (RFC 2782): only the records of the lowest priority value are used (the others are its
fallbacks), each with its weight (0 counts as 1) and port; their targets are resolved to A
records, or AAAA ones when a target has no A record, and each address is one instance.

The questions go to ``registries.dns.nameservers`` (IP and port), or to the system's resolvers
(``/etc/resolv.conf``) without that section. dnspython's asyncio resolver asks them; nothing is
cached between two refreshes, so every TTL that runs out is a fresh question.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from fastgw.config.schema import DiscoveryConfig, DnsRegistry
from fastgw.discovery.feed import Instance, Resolver, Sink

MIN_REFRESH = 1.0
MAX_REFRESH = 300.0


class DnsError(Exception):
    """The name could not be resolved now (a timeout, no server answering, a server failure)."""


def make_resolver(registry: DnsRegistry) -> dns.asyncresolver.Resolver:
    if not registry.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=True)
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in registry.nameservers]
    resolver.cache = None
    resolver.lifetime = registry.timeout
    resolver.timeout = registry.timeout
    return resolver


class DnsResolver(Resolver):
    def __init__(self, config: DiscoveryConfig) -> None:
        assert isinstance(config.registry, DnsRegistry)
        self.name = config.service
        self.record = config.record
        self.port = config.port
        self.resolver = make_resolver(config.registry)

    async def run(self, sink: Sink) -> None:
        while True:
            instances, ttl = await self.resolve()
            sink.publish(instances)
            await asyncio.sleep(min(max(float(ttl), MIN_REFRESH), MAX_REFRESH))

    async def resolve(self) -> tuple[list[Instance], int]:
        """The instances the name has now, and how long that answer may be kept (seconds)."""
        if self.record == "SRV":
            return await self._srv()
        assert self.port is not None
        addresses, ttl = await self._addresses(self.name, self.record)
        return [Instance(address, self.port, 1, f"{self.record} {self.name}") for address in addresses], ttl

    async def _query(self, name: str, record: str) -> dns.resolver.Answer | None:
        """The answer, or None when the name or the record type does not exist."""
        try:
            return await self.resolver.resolve(name, record, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.resolver.LifetimeTimeout:
            raise DnsError(f"{record} {name}: no answer within {self.resolver.lifetime:g}s") from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"{record} {name}: {exc}") from None

    async def _addresses(self, name: str, record: str) -> tuple[list[str], int]:
        answer = await self._query(name, record)
        if answer is None or answer.rrset is None:
            return [], int(MIN_REFRESH)
        return [str(item.address) for item in answer], answer.rrset.ttl

    async def _srv(self) -> tuple[list[Instance], int]:
        answer = await self._query(self.name, "SRV")
        if answer is None or answer.rrset is None or not len(answer):
            return [], int(MIN_REFRESH)
        ttl = answer.rrset.ttl
        first = min(item.priority for item in answer)
        records = [item for item in answer if item.priority == first]
        found = await asyncio.gather(*(self._srv_target(str(item.target)) for item in records))
        instances = []
        for item, (addresses, address_ttl) in zip(records, found, strict=True):
            ttl = min(ttl, address_ttl) if addresses else ttl
            origin = f"SRV {self.name} -> {str(item.target).rstrip('.')}"
            instances += [Instance(a, int(item.port), max(1, int(item.weight)), origin) for a in addresses]
        return instances, ttl

    async def _srv_target(self, target: str) -> tuple[list[str], int]:
        addresses, ttl = await self._addresses(target, "A")
        if not addresses:
            addresses, ttl = await self._addresses(target, "AAAA")
        return addresses, ttl
