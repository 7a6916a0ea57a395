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
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_from_bytes

from fastgw.plugins._auth import query_param

HEADERS_SEP = b"\x1f"
VARIANT_SEP = b"\x1e"


class KeySpec:
    """The key options of one route, compiled."""

    __slots__ = ("header_names", "query")

    def __init__(self, query: tuple[bytes, ...] | None, header_names: tuple[bytes, ...]) -> None:
        self.query = query  # None: the whole query string; () none of it; else these, sorted
        self.header_names = header_names  # lower-case

    def base_key(self, ctx: Any, fields: dict[bytes, bytes]) -> bytes:
        """The key of the request without Vary; ``fields`` holds the request's selected headers."""
        query = self.query
        key: bytes
        if query is None:
            key = ctx.host + ctx.path + ctx.query
        elif not query or not ctx.query:
            key = ctx.host + ctx.path
        else:
            pairs = []
            for name in query:
                value = query_param(ctx.query, name)
                if value is not None:
                    pairs.append(name + b"=" + quote_from_bytes(value, safe="").encode())
            key = ctx.host + ctx.path + (b"?" + b"&".join(pairs) if pairs else b"")
        if self.header_names:
            key += HEADERS_SEP + HEADERS_SEP.join(
                [name + b"=" + fields.get(name, b"") for name in self.header_names]
            )
        return key


def variant_key(base: bytes, vary: tuple[bytes, ...], ctx: Any) -> bytes:
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
