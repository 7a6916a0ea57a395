"""Sets of CIDR networks that answer "is this client address in the set?" (for ``ip_filter`` and
the rate limit's bypass list).

Networks are parsed once at compile time into integer masks grouped by prefix length, IPv4 and
IPv6 apart. IPv4-mapped IPv6 (``::ffff:a.b.c.d``, what a dual-stack socket reports for an IPv4
peer) counts as the IPv4 address on both sides: a mapped address is matched against the IPv4
networks, and a configured network inside ``::ffff:0:0/96`` becomes the IPv4 network it maps.

Lookups go through a per-process cache of address -> verdict, bounded by ``cache_size`` (cleared
when full: a flood of distinct addresses costs parse time, never memory).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fastgw.config.validate import describe, read_list
from fastgw.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_ALL_V4 = ipaddress.IPv4Network("0.0.0.0/0")
_CIDR_EXAMPLE = "a CIDR like '10.0.0.0/8', '2001:db8::/32' or an address"


def read_network(value: object, path: str) -> Network:
    """One CIDR (or a single address) from the config; host bits must be zero."""
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected {_CIDR_EXAMPLE}, found {describe(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(path, f"expected {_CIDR_EXAMPLE}, found {describe(value)}") from None
    raise ConfigError(path, f"{value!r} has host bits set; did you mean '{loose}'?")


read_networks = read_list(read_network)


def _as_ipv4(network: Network) -> Iterable[ipaddress.IPv4Network]:
    """The IPv4 networks an IPv6 network covers through IPv4-mapped addresses."""
    if isinstance(network, ipaddress.IPv6Network):
        if network.subnet_of(_MAPPED):
            mapped = network.network_address.ipv4_mapped
            assert mapped is not None
            yield ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        elif network.supernet_of(_MAPPED):
            yield _ALL_V4


def _by_prefix(networks: Iterable[Network], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
    """(mask, network integers) per prefix length, longest prefixes first."""
    groups: dict[int, set[int]] = {}
    for net in networks:
        groups.setdefault(net.prefixlen, set()).add(int(net.network_address))
    full = (1 << bits) - 1
    return tuple(
        (full ^ ((1 << (bits - length)) - 1), frozenset(nets))
        for length, nets in sorted(groups.items(), reverse=True)
    )


class NetworkSet:
    """A fixed set of networks; ``contains(address)`` is True, False, or None (not an address)."""

    __slots__ = ("_cache", "_v4", "_v6", "cache_size", "networks")

    def __init__(self, networks: Iterable[Network], cache_size: int = 10_000) -> None:
        self.networks = tuple(networks)
        v4 = [n for n in self.networks if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in self.networks if isinstance(n, ipaddress.IPv6Network)]
        v4 += [m for n in v6 for m in _as_ipv4(n)]
        self._v4 = _by_prefix(v4, 32)
        self._v6 = _by_prefix(v6, 128)
        self.cache_size = cache_size
        self._cache: dict[str, bool | None] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, address: str) -> bool | None:
        try:
            return self._cache[address]
        except KeyError:
            pass
        verdict = self._lookup(address)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[address] = verdict
        return verdict

    def _lookup(self, address: str) -> bool | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        groups = self._v4
        if isinstance(ip, ipaddress.IPv6Address):
            mapped = ip.ipv4_mapped
            if mapped is None:
                groups = self._v6
            else:
                ip = mapped
        value = int(ip)
        return any(value & mask in nets for mask, nets in groups)
