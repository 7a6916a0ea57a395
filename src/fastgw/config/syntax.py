"""HTTP syntax that several sections read alike: tokens (header, cookie and method names),
methods, request targets, and the headers the gateway writes itself and so never takes from
configuration."""

from __future__ import annotations

import re

from fastgw.config.validate import expected, read_matching

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token

# Headers the gateway writes itself on a request it sends, or hop-by-hop ones. Lower-case.
# Configuration can neither pass them on from the client (an aggregate backend's ``headers``) nor
# take their names for its own (a listener's ``request_id_header``, except X-Request-Id itself).
GATEWAY_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
        "te", "trailer", "upgrade", "expect", "proxy-authorization", "x-request-id", "x-forwarded-for",
        "traceparent",
    }
)  # fmt: skip


def read_method(value: object, path: str) -> str:
    """An HTTP method, upper-cased."""
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise expected(path, "an HTTP method token like 'GET'", value)
    return value.upper()


# The path (and query) of a request the gateway sends itself: a health probe, a backend call.
read_request_target = read_matching(
    re.compile(r"/[!-\x22\x24-~]*"),  # printable ASCII, no space (request line), no '#'
    "a path starting with '/' (a query is allowed) without spaces or '#'",
)
