"""Who the client is and how it reached the gateway: the one reading of X-Forwarded-*.

The TCP peer is the client unless it is one of the listener's ``trusted_proxies``; only then are
its X-Forwarded-* headers believed, and only as follows:

- **X-Forwarded-For** is a list (every line of it, in order, is one comma-separated list, RFC 9110
  5.3) to which each proxy appended the address it saw. Read right to left, the client is the
  nearest hop that is not itself a trusted proxy; a chain of trusted proxies only yields its
  leftmost hop. Empty elements are skipped (RFC 9110 5.6.1); a hop that is not an address at all
  is still the client (only a trusted proxy can forward one, and ``ip_filter`` refuses it).
- **X-Forwarded-Proto**: its first non-empty element, ``http`` or ``https`` in any case; any other
  value is ``http``. Absent, or from any other peer, the scheme of the connection itself
  (``https`` on a TLS listener).
- **X-Forwarded-Host**: its first non-empty element when it is a ``host[:port]`` (the rule the
  Host header is held to); a malformed one is ``b""`` (no host is known: a URL is not built on
  it); absent, or from any other peer, the request's own Host header.

``resolve`` works it all out at once, for an exchange to keep; the hot path calls it only when a
plugin asks (never for a peer that is not a trusted proxy, whose answer is its own address).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from fastgw.http.limits import is_host

_SCHEMES = {b"http": b"http", b"https": b"https"}


class Forwarded(NamedTuple):
    """What the gateway believes about the client of one request."""

    client_ip: str
    """The nearest untrusted X-Forwarded-For hop behind a trusted proxy, else the peer."""
    client_address: bytes
    """``client_ip`` as bytes (a rate limit's key)."""
    proto: bytes
    """``b"http"`` or ``b"https"``: the scheme the client used."""
    host: bytes
    """The Host the client used (``b""`` when a trusted proxy forwarded a malformed one)."""
    forwarded_for: bytes
    """The X-Forwarded-For value to send on: a trusted proxy's chain and the peer, else the peer."""


def resolve(
    peer_ip: bytes,
    peer_trusted: bool,
    headers: Iterable[tuple[bytes, bytes]],
    host_header: bytes,
    is_trusted: Callable[[str], bool],
    own_scheme: bytes = b"http",
) -> Forwarded:
    """The client of a request from ``peer_ip`` (``peer_trusted``: one of the trusted proxies),
    with its request ``headers`` (read only when the peer is trusted) and Host header;
    ``is_trusted`` tells whether an address is a trusted proxy (the listener's rule);
    ``own_scheme`` is the connection's (``https`` on a TLS listener)."""
    peer = peer_ip.decode("latin-1")
    if not peer_trusted:
        return Forwarded(peer, peer_ip, own_scheme, host_header, peer_ip)
    chain: list[bytes] = []
    protos: list[bytes] = []
    hosts: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            chain.append(value)
        elif lower == b"x-forwarded-proto":
            protos.append(value)
        elif lower == b"x-forwarded-host":
            hosts.append(value)
    client = client_ip(peer, chain, is_trusted)
    forwarded_for = b", ".join([*chain, peer_ip]) if chain else peer_ip
    proto = scheme(protos) if protos else own_scheme
    return Forwarded(client, client.encode(), proto, host(hosts, host_header), forwarded_for)


def client_ip(peer: str, chain: Iterable[bytes], is_trusted: Callable[[str], bool]) -> str:
    """The nearest hop of the X-Forwarded-For lines ``chain`` that is not a trusted proxy, read
    right to left; the leftmost when all are; ``peer`` when there is none."""
    address = peer
    hops = b",".join(chain).decode("latin-1").split(",")
    for hop in reversed(hops):
        hop = hop.strip()
        if not hop:
            continue
        address = hop
        if not is_trusted(hop):
            break
    return address


def scheme(lines: Iterable[bytes]) -> bytes:
    """The scheme a trusted proxy's X-Forwarded-Proto lines name: http (also for anything else)
    or https."""
    first = _first_element(lines)
    return _SCHEMES.get(first.lower(), b"http") if first is not None else b"http"


def host(lines: Iterable[bytes], host_header: bytes) -> bytes:
    """The host a trusted proxy's X-Forwarded-Host lines name, ``b""`` when malformed, the Host
    header when there is none."""
    first = _first_element(lines)
    if first is None:
        return host_header
    return first if is_host(first) else b""


def _first_element(lines: Iterable[bytes]) -> bytes | None:
    """The first non-empty element of a comma-separated list header's lines, stripped, or None."""
    for line in lines:
        for element in line.split(b","):
            element = element.strip(b" \t")
            if element:
                return element
    return None
