"""The one reading of X-Forwarded-* (fastgw.http.forwarded): believed only from a trusted proxy;
X-Forwarded-For read right to left to the nearest untrusted hop; the first element of -Proto and
-Host, checked; malformed values never become a scheme or a host."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from fastgw.http.forwarded import Forwarded, resolve

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
PEER = b"10.0.0.1"  # a trusted proxy
HOST = b"gw.example:8080"


def is_trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in PROXIES)


def through_proxy(*headers: tuple[str, str]) -> Forwarded:
    pairs = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    return resolve(PEER, True, pairs, HOST, is_trusted)


def test_a_peer_that_is_no_trusted_proxy_is_the_client_whatever_it_claims() -> None:
    class Unread:
        def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
            raise AssertionError("the headers of an untrusted peer are not read (nor parsed)")

    got = resolve(b"203.0.113.7", False, Unread(), HOST, is_trusted)
    assert got == Forwarded("203.0.113.7", b"203.0.113.7", b"http", HOST, b"203.0.113.7")


def test_forwarded_for_is_read_right_to_left_to_the_nearest_untrusted_hop() -> None:
    # spoofed by the client, then appended by two trusted proxies
    got = through_proxy(("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3"))
    assert (got.client_ip, got.client_address) == ("203.0.113.9", b"203.0.113.9")
    assert got.forwarded_for == b"198.51.100.1, 203.0.113.9, 10.1.2.3, 10.0.0.1"


def test_forwarded_for_lines_are_one_list_in_order() -> None:
    # RFC 9110 5.3: two lines are the list joined with a comma
    got = through_proxy(("X-Forwarded-For", "203.0.113.9"), ("x-forwarded-for", "10.0.0.2, ::1"))
    assert got.client_ip == "203.0.113.9"
    assert got.forwarded_for == b"203.0.113.9, 10.0.0.2, ::1, 10.0.0.1"


def test_a_chain_of_trusted_proxies_only_yields_its_leftmost_hop() -> None:
    assert through_proxy(("X-Forwarded-For", "10.0.0.9, 10.0.0.8")).client_ip == "10.0.0.9"


@pytest.mark.parametrize("value", ["", " ", " , ,", ",,"])
def test_a_forwarded_for_without_hops_leaves_the_peer(value: str) -> None:
    got = through_proxy(("X-Forwarded-For", value))
    assert (got.client_ip, got.client_address) == ("10.0.0.1", PEER)


def test_empty_hops_and_blanks_are_skipped() -> None:
    assert through_proxy(("X-Forwarded-For", " 203.0.113.9 ,, \t, ")).client_ip == "203.0.113.9"


def test_a_hop_that_is_no_address_is_still_the_client() -> None:
    # Only a trusted proxy can forward one; ip_filter refuses such a client, a rate limit keys on it.
    got = through_proxy(("X-Forwarded-For", "203.0.113.9, unknown"))
    assert (got.client_ip, got.client_address) == ("unknown", b"unknown")


def test_without_forwarded_headers_a_trusted_peer_is_the_client_over_http_at_its_host() -> None:
    assert through_proxy() == Forwarded("10.0.0.1", PEER, b"http", HOST, PEER)


@pytest.mark.parametrize(
    ("values", "scheme"),
    [
        (["https"], b"https"),
        (["HTTPS"], b"https"),
        (["https, http"], b"https"),  # the first element: what the client used
        ([" , https"], b"https"),  # empty elements do not count
        (["", "https"], b"https"),  # nor empty lines
        (["http", "https"], b"http"),  # the first line's
        (["wss"], b"http"),
        (["https;x"], b"http"),
        (["ftp, https"], b"http"),
    ],
)
def test_forwarded_proto_is_http_or_https(values: list[str], scheme: bytes) -> None:
    assert through_proxy(*[("X-Forwarded-Proto", v) for v in values]).proto == scheme


@pytest.mark.parametrize(
    ("values", "host"),
    [
        (["api.example.com"], b"api.example.com"),
        (["api.example.com:8443"], b"api.example.com:8443"),
        (["[2001:db8::1]:443"], b"[2001:db8::1]:443"),
        (["api.example.com, internal.local"], b"api.example.com"),
        ([" , api.example.com"], b"api.example.com"),
        ([""], HOST),  # no value at all: the request's own Host
        (["bad host"], b""),  # malformed: no host is known
        (["a.example/path"], b""),
        (["user@a.example"], b""),
        (["a.example:port"], b""),
        (["a\\b"], b""),
    ],
)
def test_forwarded_host_is_a_host_and_port_or_nothing(values: list[str], host: bytes) -> None:
    assert through_proxy(*[("X-Forwarded-Host", v) for v in values]).host == host


def test_proto_and_host_from_an_untrusted_peer_are_ignored() -> None:
    pairs = [(b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"evil.example")]
    got = resolve(b"203.0.113.7", False, pairs, HOST, is_trusted)
    assert (got.proto, got.host) == (b"http", HOST)
