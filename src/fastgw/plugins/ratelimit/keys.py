"""What a rate limit counts by: the key spec from the config, compiled into one function.

A spec is one part or a list of parts: ``consumer`` (set by an authentication plugin), ``ip``
(``ctx.client_ip``, which already honours the listener's trusted proxies), ``route`` (the
route's id) or ``header:<name>``. The key is bytes: one part's value, or the parts joined with
``\\x1f`` (a byte no header value or address holds). A part the request does not have (no
consumer, no such header) is empty, so every such request shares one counter: leaving the header
out never escapes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastgw.config.validate import describe, read_list
from fastgw.errors import ConfigError
from fastgw.hooks import RequestContext

KeyOf = Callable[[RequestContext], bytes]

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_EXPECTED = "a key part: 'consumer', 'ip', 'route' or 'header:<name>'"
SEPARATOR = b"\x1f"


def by_ip(ctx: RequestContext) -> bytes:
    return ctx.client_address


def _by_consumer(ctx: RequestContext) -> bytes:
    consumer = ctx.consumer
    return consumer.encode() if consumer else b""


def _by_route(ctx: RequestContext) -> bytes:
    route = ctx.route
    assert route is not None, "hooks run on a matched route"
    return route.id.encode()


def _by_header(name: bytes) -> KeyOf:
    def by_header(ctx: RequestContext) -> bytes:
        return ctx.header(name) or b""

    return by_header


_PARTS: dict[str, KeyOf] = {"ip": by_ip, "consumer": _by_consumer, "route": _by_route}


def read_key_part(value: object, path: str) -> KeyOf:
    if isinstance(value, str):
        if value in _PARTS:
            return _PARTS[value]
        kind, _, name = value.partition(":")
        if kind == "header" and _HEADER_NAME.fullmatch(name):
            return _by_header(name.lower().encode())
    raise ConfigError(path, f"expected {_EXPECTED}, found {describe(value)}")


_read_parts = read_list(read_key_part, non_empty=True, single=True)


def read_key(value: object, path: str) -> KeyOf:
    """The compiled key function of a spec (a part, or a non-empty list of parts)."""
    parts = _read_parts(value, path)
    if len(parts) == 1:
        return parts[0]
    join = SEPARATOR.join

    def combined(ctx: RequestContext) -> bytes:
        return join([part(ctx) for part in parts])

    return combined
