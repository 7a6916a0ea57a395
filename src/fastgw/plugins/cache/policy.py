"""RFC 9111 rules for a shared cache: may a response be stored, for how long, and what the
request asks of the cache.

The gateway is a *shared* cache (RFC 9111 section 1): ``s-maxage`` wins over ``max-age``
(5.2.2.10), ``private`` responses are not stored (5.2.2.7), and neither are ``no-store`` ones
(5.2.2.5). ``no-cache`` responses (5.2.2.4) may only be reused after revalidation, which this
cache does not do, so they are not stored either. Requests with Authorization stay out of the
cache unless the route keys by it or allows it explicitly (the plugin decides, before any of
this; stricter than 3.5, which would let ``public`` responses be shared).

Freshness (4.2.1): ``s-maxage``, then ``max-age``, then ``Expires`` minus ``Date``; without any
of those, the route's ``ttl`` when the status is one the route caches (by default the statuses
RFC 9110 section 15.1 calls heuristically cacheable, without 206: ranges are not cached). The
upstream's ``Age`` counts against the lifetime (4.2.3), and ``max_ttl`` caps it.
``stale-while-revalidate`` (RFC 5861) comes from the response or the route's default, unless the
response says ``must-revalidate`` / ``proxy-revalidate``.

Headers are (name, value) byte pairs with names in any case, as the exchange holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime

Headers = list[tuple[bytes, bytes]]

# RFC 9110 section 15.1, minus 206 (a partial response is not the resource).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


def parse_directives(value: bytes | None) -> dict[bytes, bytes]:
    """``Cache-Control`` directives by lower-case name; a directive without argument maps to
    ``b""``. Quoted arguments are unquoted; commas inside quotes do not split."""
    directives: dict[bytes, bytes] = {}
    if not value:
        return directives
    for part in _split_list(value):
        name, _, argument = part.partition(b"=")
        name = name.strip().lower()
        if name:
            directives.setdefault(name, argument.strip().strip(b'"'))
    return directives


def _split_list(value: bytes) -> list[bytes]:
    if b'"' not in value:
        return value.split(b",")
    parts, start, quoted = [], 0, False
    for i, byte in enumerate(value):
        if byte == 0x22:  # '"'
            quoted = not quoted
        elif byte == 0x2C and not quoted:  # ','
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def delta_seconds(value: bytes | None) -> int | None:
    """A delta-seconds argument (RFC 9111 1.2.2); None when absent or not a number. An invalid
    one makes the response stale (4.2.1), which callers get by treating it as 0."""
    if value is None:
        return None
    return int(value) if value.isdigit() else 0


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date as a POSIX timestamp; None when absent or invalid."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def fields_of(headers: Headers, names: frozenset[bytes]) -> dict[bytes, bytes]:
    """The fields named in ``names`` (lower-case), several lines of one field joined with ", "."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in names:
            found[lower] = found[lower] + b", " + value if lower in found else value
    return found


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a stored response may be served: ``ttl`` seconds fresh, then ``stale`` more
    seconds as STALE while one request revalidates; ``age`` is the upstream's Age at storing."""

    ttl: float
    stale: float
    age: int


_RESPONSE_FIELDS = frozenset(
    {b"cache-control", b"expires", b"date", b"age", b"vary", b"set-cookie", b"content-length"}
)


@dataclass(frozen=True, slots=True)
class ResponsePolicy:
    """A route's storing rules, compiled from its options."""

    statuses: frozenset[int]
    ttl: float | None  # when the response gives no freshness; None: not stored then
    max_ttl: float | None
    stale_while_revalidate: float
    store_set_cookie: bool  # True: stored without its Set-Cookie lines (``set_cookie: strip``)

    def freshness(self, status: int, headers: Headers) -> Freshness | None:
        """The response's freshness if it may be stored, else None."""
        if status not in self.statuses:
            return None
        fields = fields_of(headers, _RESPONSE_FIELDS)
        cc = parse_directives(fields.get(b"cache-control"))
        if b"no-store" in cc or b"private" in cc or b"no-cache" in cc:
            return None
        if b"set-cookie" in fields and not self.store_set_cookie:
            return None
        if b"*" in [v.strip() for v in fields.get(b"vary", b"").split(b",")]:
            return None  # RFC 9111 4.1: it never matches a later request
        lifetime = self._lifetime(cc, fields)
        if lifetime is None:
            return None
        # The upstream's Age only: the apparent age from Date (4.2.3) would charge any clock skew
        # and Date's one-second resolution against short lifetimes.
        age = delta_seconds(fields.get(b"age")) or 0
        if self.max_ttl is not None:
            lifetime = min(lifetime, self.max_ttl)
        stale = 0.0
        if b"must-revalidate" not in cc and b"proxy-revalidate" not in cc:
            given = delta_seconds(cc.get(b"stale-while-revalidate"))
            stale = float(given) if given is not None else self.stale_while_revalidate
        if lifetime - age <= 0 and stale <= 0:
            return None
        return Freshness(lifetime - age, stale, age)

    def _lifetime(self, cc: dict[bytes, bytes], fields: dict[bytes, bytes]) -> float | None:
        for directive in (b"s-maxage", b"max-age"):
            if directive in cc:
                return float(delta_seconds(cc[directive]) or 0)
        if b"expires" in fields:
            expires = http_date(fields[b"expires"])
            date = http_date(fields.get(b"date"))
            if expires is None or date is None:
                return 0.0  # an invalid Expires means already expired (5.3)
            return max(0.0, expires - date)
        return self.ttl


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """What the request's ``Cache-Control`` (or HTTP/1.0 ``Pragma``) asks of the cache."""

    refresh: bool  # no-cache / max-age=0: do not answer from the cache (5.2.1.4, 5.2.1.1)
    no_store: bool  # do not store the response (5.2.1.5)


NO_DIRECTIVES = RequestDirectives(False, False)


def request_directives(cache_control: bytes | None, pragma: bytes | None) -> RequestDirectives:
    if cache_control is None:
        # RFC 9111 5.4: Pragma: no-cache counts only when Cache-Control is absent.
        if pragma is not None and b"no-cache" in pragma.lower():
            return RequestDirectives(True, False)
        return NO_DIRECTIVES
    cc = parse_directives(cache_control)
    refresh = b"no-cache" in cc or delta_seconds(cc.get(b"max-age")) == 0
    return RequestDirectives(refresh, b"no-store" in cc)
