"""Cache keys: what makes two requests the same for the cache.

A key is bytes: ``host + path + query``, then the selected request headers, then (for a response
that varies) the values of the headers its ``Vary`` names::

    shop.example/products/7?lang=en                      the *base key* (what purge names)
    shop.example/products/7?lang=en\\x1faccept-language=de        + key.headers
    <base key>\\x1e<value of each Vary header>\\x1f...             a variant (Vary)

The method is not part of the key: only GET fills the cache, and HEAD is answered from the GET
entry (RFC 9110 9.3.2: the same header fields). ``query`` is the query string as received
(``all``, the default), none of it (``none``), or only the listed parameters, sorted by name, so
parameter order and unrelated parameters (tracking tags) do not split the cache. \\x1f and \\x1e
cannot occur in a host, a normalized path or a header value, so parts never run into each other.

The part before the header selections and the variant is the *URI key* (``uri_key``, ``uri_of``):
what an unsafe request's success invalidates (RFC 9111 4.4), all header selections and variants
together. A store that must find them without a scan indexes its keys by it; in Redis that index
is a set under the URI key and \\x1d (``INDEX_SEP``).
"""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes, urljoin, urlsplit

from fastgw.hooks import RequestContext
from fastgw.plugins._auth import query_param

HEADERS_SEP = b"\x1f"
VARIANT_SEP = b"\x1e"
INDEX_SEP = b"\x1d"
_AFTER_URI = re.compile(b"[" + HEADERS_SEP + VARIANT_SEP + b"]")  # what ends the URI part of a key


class KeySpec:
    """The key options of one route, compiled."""

    __slots__ = ("header_names", "query")

    def __init__(self, query: tuple[bytes, ...] | None, header_names: tuple[bytes, ...]) -> None:
        self.query = query  # None: the whole query string; () none of it; else these, sorted
        self.header_names = header_names  # lower-case

    def base_key(self, ctx: RequestContext, fields: dict[bytes, bytes]) -> bytes:
        """The key of the request without Vary; ``fields`` holds the request's selected headers."""
        key = self.uri_key(ctx.host, ctx.path, ctx.query)
        if self.header_names:
            key += HEADERS_SEP + HEADERS_SEP.join(
                [name + b"=" + fields.get(name, b"") for name in self.header_names]
            )
        return key

    def uri_key(self, host: bytes, path: bytes, query: bytes) -> bytes:
        """The key part naming the URI: ``host + path`` and the query (``b""`` or ``b"?..."``)
        as the route keys it."""
        selected = self.query
        if selected is None:
            return host + path + query
        if not selected or not query:
            return host + path
        pairs = []
        for name in selected:
            value = query_param(query, name)
            if value is not None:
                pairs.append(name + b"=" + quote_from_bytes(value, safe="").encode())
        return host + path + (b"?" + b"&".join(pairs) if pairs else b"")

    def reference_key(self, host: bytes, path: bytes, reference: bytes) -> bytes | None:
        """The URI key of what ``reference`` (a Location or Content-Location value) names,
        resolved against ``path`` (RFC 3986 5.2: relative references, dot segments); None when
        it names another host or is not an http(s) URI."""
        try:
            base = "http://" + host.decode("ascii") + path.decode("ascii")
            target = urlsplit(urljoin(base, reference.decode("ascii").strip()))
            named = target.hostname
        except (UnicodeDecodeError, ValueError):
            return None
        if target.scheme not in ("http", "https") or named != host.decode("ascii").strip("[]"):
            return None
        query = b"?" + target.query.encode() if target.query else b""
        return self.uri_key(host, (target.path or "/").encode(), query)


def uri_of(key: bytes) -> bytes:
    """The URI key of a stored key: what comes before its header selections or its variant."""
    end = _AFTER_URI.search(key)
    return key if end is None else key[: end.start()]


def variant_key(base: bytes, vary: tuple[bytes, ...], ctx: RequestContext) -> bytes:
    """The key of the response variant ``ctx`` selects among those varying by ``vary``."""
    values: list[bytes] = [ctx.header(name) or b"" for name in vary]
    return base + VARIANT_SEP + HEADERS_SEP.join(values)


def vary_names(value: bytes | None) -> tuple[bytes, ...]:
    """The header names a ``Vary`` value lists, lower-case, sorted, without duplicates."""
    if not value:
        return ()
    return tuple(sorted({name.strip().lower() for name in value.split(b",") if name.strip()}))


def purge_matches(key: bytes, base: bytes | None, prefix: bytes | None) -> bool:
    """Is stored ``key`` one that purging base key ``base`` (all its header selections and
    variants) or everything under ``prefix`` removes?"""
    if prefix is not None:
        return key.startswith(prefix)
    assert base is not None
    return key == base or (key.startswith(base) and key[len(base)] in (HEADERS_SEP[0], VARIANT_SEP[0]))
