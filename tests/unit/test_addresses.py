"""Network sets: IPv4 and IPv6 CIDRs, IPv4-mapped IPv6 on both sides, and config errors."""

from __future__ import annotations

import pytest

from fastgw.errors import ConfigError
from fastgw.plugins._addresses import NetworkSet, read_networks


def networks(*cidrs: str) -> NetworkSet:
    return NetworkSet(read_networks(list(cidrs), "allow"))


def test_ipv4_prefixes_of_every_length() -> None:
    s = networks("10.0.0.0/8", "192.168.1.0/24", "203.0.113.7")
    assert s.contains("10.255.0.1") and s.contains("192.168.1.200") and s.contains("203.0.113.7")
    assert not s.contains("11.0.0.1") and not s.contains("192.168.2.1") and not s.contains("203.0.113.8")


def test_ipv6_prefixes() -> None:
    s = networks("2001:db8::/32", "::1")
    assert s.contains("2001:db8:ffff::1") and s.contains("::1")
    assert not s.contains("2001:db9::1") and not s.contains("10.0.0.1")


def test_ipv4_mapped_addresses_match_ipv4_networks() -> None:
    assert networks("10.0.0.0/8").contains("::ffff:10.1.2.3")
    assert not networks("10.0.0.0/8").contains("::ffff:11.1.2.3")


def test_ipv4_mapped_networks_match_ipv4_addresses() -> None:
    s = networks("::ffff:10.0.0.0/104")
    assert s.contains("10.9.9.9") and s.contains("::ffff:10.9.9.9") and not s.contains("11.0.0.1")
    assert networks("::/0").contains("198.51.100.1")  # all of IPv6 includes the mapped range


def test_what_is_not_an_address_is_neither_in_nor_out() -> None:
    assert networks("0.0.0.0/0").contains("unknown") is None


def test_the_cache_stays_bounded_and_keeps_answering() -> None:
    s = NetworkSet(read_networks(["10.0.0.0/8"], "allow"), cache_size=4)
    for i in range(20):
        assert s.contains(f"10.0.0.{i}")
    assert len(s._cache) <= 4


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ["10.0.0.0/33"],
            "allow[0]: expected a CIDR like '10.0.0.0/8', '2001:db8::/32' or an address, found '10.0.0.0/33'",
        ),
        (
            ["10.0.0.0/8", "bogus"],
            "allow[1]: expected a CIDR like '10.0.0.0/8', '2001:db8::/32' or an address, found 'bogus'",
        ),
        (["10.0.0.1/8"], "allow[0]: '10.0.0.1/8' has host bits set; did you mean '10.0.0.0/8'?"),
        ([8], "allow[0]: expected a CIDR like '10.0.0.0/8', '2001:db8::/32' or an address, found 8"),
        ("10.0.0.0/8", "allow: expected a list, found '10.0.0.0/8'"),
    ],
)
def test_bad_networks_name_the_key_path(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        read_networks(value, "allow")
    assert str(err.value) == message
