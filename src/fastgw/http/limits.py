"""The request checks llhttp leaves to us, and the one path normalization.

llhttp (strict mode, see _parser.pyx) already rejects CL+TE, duplicate Content-Length, signed or hex
lengths, obs-fold, bare LF, NUL/CR in values and bad chunk sizes. It accepts the shapes below,
which are request-smuggling or cache-poisoning tools when a proxy forwards them; each raises a
``ClientFault`` with the status to answer:

- ``Transfer-Encoding`` other than exactly ``chunked`` (``,chunked``, ``gzip, chunked``, ...), or
  any Transfer-Encoding on an HTTP/1.0 request;
- a Content-Length that is not plain ASCII digits (Python's ``int()`` takes ``+1``, ``1_0``, `` 1``);
- HTTP versions other than 1.0 and 1.1 (HTTP/0.9 ``GET /``);
- a missing Host on HTTP/1.1, two Host headers, or a Host that is not ``host[:port]``;
- an absolute-form target whose authority differs from Host;
- percent-encoded control characters, malformed escapes, and dot-segments climbing above root.

``normalize_path`` runs once per request; the router, access rules and the upstream all see the
same normalized path, so what was matched is what is forwarded.
"""

from __future__ import annotations

import re

from fastgw.http.faults import ClientFault

# RFC 3986 unreserved characters: their percent-encodings are decoded, every other escape is kept
# (upper-cased), so "%2F" stays an escaped slash and never becomes a separator.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = b"0123456789ABCDEFabcdef"
_NEEDS_NORMALIZING = re.compile(rb"%|/\.")

# host = reg-name / IPv4 / [IPv6], optional port; no spaces, slashes, '@' or userinfo.
_HOST_RE = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def normalize_path(path: bytes) -> bytes:
    """Return the normalized form of an origin-form path (no query), or raise ClientFault(400).

    PERF: the common path has no '%' and no '/.', and is returned as it is after one regex scan
    (``b"%" in path`` costs more: bytes containment first tries the argument as an int).
    """
    if _NEEDS_NORMALIZING.search(path) is None:
        return path
    if b"%" in path:
        path = _decode_unreserved(path)
    return _remove_dot_segments(path)


def _decode_unreserved(path: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c != 0x25:  # '%'
            out.append(c)
            i += 1
            continue
        if i + 2 >= n:
            raise ClientFault("malformed percent-escape in path")
        h1, h2 = path[i + 1], path[i + 2]
        if h1 not in _HEX or h2 not in _HEX:
            raise ClientFault("malformed percent-escape in path")
        value = int(path[i + 1 : i + 3], 16)
        if value < 0x20 or value == 0x7F:
            raise ClientFault("control character in path")
        if value in _UNRESERVED:
            out.append(value)
        else:
            out += b"%%%02X" % value
        i += 3
    return bytes(out)


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4 on a path that starts with '/'; climbing above root is an error."""
    if b"/." not in path:
        return path
    segments = path.split(b"/")
    out: list[bytes] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments[1:], start=1):
        if segment == b".":
            if index == last:
                out.append(b"")
            continue
        if segment == b"..":
            if not out:
                raise ClientFault("path climbs above the root")
            out.pop()
            if index == last:
                out.append(b"")
            continue
        out.append(segment)
    return b"/" + b"/".join(out)


def check_transfer_encoding(value: bytes, http_10: bool) -> None:
    """Only exactly ``chunked`` is forwarded; anything else is ambiguous framing (RFC 9112 6.1)."""
    if http_10:
        raise ClientFault("Transfer-Encoding on an HTTP/1.0 request")
    if value.lower() != b"chunked":
        raise ClientFault("unsupported Transfer-Encoding")


_host_cache: dict[bytes, tuple[bytes, bytes]] = {}


def is_host(value: bytes) -> bool:
    """Is this a ``host[:port]`` (what a Host header must be)?"""
    return _HOST_RE.fullmatch(value) is not None


def check_host(value: bytes) -> bytes:
    """Validate a Host value; return the lower-cased host without port, for routing."""
    return host_entry(value)[1]


def host_entry(value: bytes) -> tuple[bytes, bytes]:
    """Validate a Host value; return ``(value, host)``: an equal value kept from an earlier call
    and the lower-cased host without port, for routing.

    PERF: a gateway sees few distinct Host values; valid ones are remembered (bounded). A
    connection keeps the value its client sent last, to compare the next with: the one kept here,
    so ten thousand connections from clients naming the same host hold one copy, not ten thousand.
    """
    entry = _host_cache.get(value)
    if entry is not None:
        return entry
    entry = (value, _parse_host(value))
    if len(_host_cache) < 1024:
        _host_cache[value] = entry
    return entry


def _parse_host(value: bytes) -> bytes:
    if not is_host(value):
        raise ClientFault("invalid Host header")
    if value[:1] == b"[":
        return value[: value.index(b"]") + 1].lower()
    colon = value.rfind(b":")
    return (value[:colon] if colon >= 0 else value).lower()


def split_absolute_target(url: bytes) -> tuple[bytes, bytes]:
    """Split ``http://authority/path?q`` into (authority, '/path?q'); 400 for other forms."""
    lowered = url[:8].lower()
    if lowered.startswith(b"http://"):
        rest = url[7:]
    elif lowered.startswith(b"https://"):
        rest = url[8:]
    else:
        raise ClientFault("unsupported request target")
    slash = rest.find(b"/")
    if slash < 0:
        return rest, b"/"
    return rest[:slash], rest[slash:]
