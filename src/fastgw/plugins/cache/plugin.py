"""The ``cache`` plugin: answers GET and HEAD from stored responses, fills the store from the
upstream's storable GET responses.

Per request, on a cached route:

- ``on_request``: methods other than GET and HEAD pass untouched. A request with Authorization
  is BYPASS (neither served nor stored) unless the route keys by ``authorization`` or sets
  ``unsafe_cache_authorized``. Otherwise the base key is looked up: a fresh entry is a HIT (the
  stored status, headers and body, with ``Age``); an entry past its freshness but within
  stale-while-revalidate is STALE while another request is revalidating it, and that request
  itself when none is; anything else is a MISS, which leads a flight upstream or follows one
  already in the air (``coalesce``). A request asking ``no-cache`` / ``max-age=0`` goes upstream
  (its response refreshes the entry); ``no-store`` keeps its response out of the store.
- ``on_response`` (misses only): the response is checked against RFC 9111 (``policy``); a
  storable one gets a ``BodyCollector``, which keeps the body up to ``max_object_bytes`` (past
  that it lets go and the response streams on uncached) and stores the entry in ``end()``, which
  runs only when the body completed: a response cut mid-body is never stored.
- ``on_complete``: whatever the leader's request came to, its followers are released.

An unsafe request (any method but GET, HEAD, OPTIONS and TRACE) that gets a 2xx or 3xx
invalidates, in ``on_response``, the stored responses of its target URI, and of the URIs its
response's ``Location`` and ``Content-Location`` name on the same host (RFC 9111 4.4): every
header selection and variant of each, in the store this plugin uses (its zone in this process,
or Redis for every worker and instance).

Every answer carries ``X-Cache: HIT|MISS|STALE|BYPASS`` and is counted in
``fastgw_cache_requests_total{route,result}``. The common hit (GET or HEAD, none of the request
fields above, a fresh entry) is answered in C by ``hits.HitPath`` before any of this: one dict
lookup (two when the response varies), no allocation but its key; ``Cache.decide`` makes every
other decision, that one included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fastgw.config.validate import (
    Section,
    read_bool,
    read_duration,
    read_int,
    read_list,
    read_one_of,
    read_size,
    read_str,
)
from fastgw.errors import ConfigError
from fastgw.hooks import HookResult, Plugin, RequestContext, Response, RouteInfo, register_plugin
from fastgw.observe.counters import Counter, declare_counter
from fastgw.plugins._auth import read_header_name
from fastgw.plugins.cache.coalesce import Coalescer, Flight, Landing
from fastgw.plugins.cache.hits import HitPath, hit_response
from fastgw.plugins.cache.key import KeySpec, variant_key, vary_names
from fastgw.plugins.cache.policy import (
    HEURISTIC_STATUSES,
    NO_DIRECTIVES,
    RequestDirectives,
    ResponsePolicy,
    fields_of,
    request_directives,
)
from fastgw.plugins.cache.store import Entry, MemoryStore, Stored, VaryRecord, zone_for

REQUESTS = declare_counter(
    "fastgw_cache_requests_total",
    "Requests to cached routes by how the cache answered (hit, miss, stale, bypass).",
    ("route", "result"),
)
RESULTS = ("hit", "miss", "stale", "bypass")
HIT, MISS, STALE, BYPASS = range(4)
X_CACHE = tuple((b"X-Cache", result.upper().encode()) for result in RESULTS)

_GET = b"GET"
_HEAD = b"HEAD"
_SAFE = frozenset({_GET, _HEAD, b"OPTIONS", b"TRACE"})  # RFC 9110 9.2.1; the rest may change state
_NAMING_CHANGED = frozenset({b"location", b"content-location"})  # RFC 9111 4.4: also invalidated
# Request fields the cache reads; key.headers adds its own.
_REQUEST_FIELDS = frozenset(
    {
        b"authorization",
        b"cache-control",
        b"pragma",
        b"range",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"upgrade",
    }
)
# A request with one of these may get a 304 or 206 from the upstream: it does not lead a flight.
_CONDITIONAL = _REQUEST_FIELDS - {b"authorization", b"cache-control", b"pragma", b"upgrade"}
# Response fields not stored: framing and connection (a hit has its own), Date and Age (a hit's
# are its own), Content-Type (kept apart), the gateway's own fields.
_NOT_STORED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"date",
        b"age",
        b"content-type",
        b"x-cache",
        b"x-request-id",
    }
)
_CACHE_KEYS = (
    "zone",
    "max_bytes",
    "max_object_bytes",
    "ttl",
    "max_ttl",
    "stale_while_revalidate",
    "statuses",
    "key",
    "set_cookie",
    "unsafe_cache_authorized",
    "coalesce",
    "coalesce_timeout",
    "redis",
)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_OBJECT = 1024 * 1024
DEFAULT_COALESCE_TIMEOUT = 10.0


class Miss:
    """A request that went upstream and whose response may be stored: its base key, and the
    flight it leads (None when it leads none)."""

    __slots__ = ("base", "flight")

    def __init__(self, base: bytes, flight: Flight | None) -> None:
        self.base = base
        self.flight = flight


class BodyCollector:
    """A ``BodyFilter`` that passes the body on unchanged and keeps a copy, up to ``limit`` bytes,
    to store when the body completes."""

    __slots__ = ("cache", "key", "limit", "miss", "parts", "size", "template", "vary")

    def __init__(
        self, cache: CachePlugin, miss: Miss, key: bytes, vary: tuple[bytes, ...], template: Entry, limit: int
    ) -> None:
        self.cache = cache
        self.miss = miss
        self.key = key
        self.vary = vary
        self.template = template  # the entry, its body still empty
        self.limit = limit
        self.parts: list[bytes] | None = []
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        parts = self.parts
        if parts is not None:
            self.size += len(data)
            if self.size > self.limit:
                self.parts = None  # too large to store: stop holding it, let the followers go
                self.cache.release(self.miss)
            else:
                parts.append(data)
        return data

    def end(self) -> bytes:
        if self.parts is not None:
            entry = self.template
            entry.body = b"".join(self.parts)
            entry.size += len(entry.body)
            self.cache.save(self.miss, self.key, self.vary, entry)
        return b""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """A cache's options, whichever store keeps its entries."""

    keys: KeySpec
    policy: ResponsePolicy
    coalescer: Coalescer
    follow: bool  # False: misses do not wait for a flight (it still marks revalidation)
    max_object: int
    authorized: bool  # requests with Authorization may use the cache


class CachePlugin(Plugin):
    """What the memory and the Redis caches share; they differ in how entries are kept."""

    def __init__(self, settings: CacheSettings) -> None:
        keys = self.keys = settings.keys
        self.policy = settings.policy
        self.coalescer = settings.coalescer
        self.follow = settings.follow
        self.max_object = settings.max_object
        self.authorized = settings.authorized
        self.wanted = _REQUEST_FIELDS | frozenset(keys.header_names)
        self.misses: dict[RequestContext, Miss] = {}  # by exchange, from on_request to on_complete
        self.route_counts: dict[RouteInfo, tuple[Counter, ...]] = {}

    # -- requests --------------------------------------------------------------------------------
    def prepare(self, ctx: RequestContext) -> tuple[bytes, dict[bytes, bytes], RequestDirectives] | None:
        """The base key, the request fields read and its directives, for a lookup; None when there
        is none to make: the cache stays out (not GET/HEAD, or BYPASS, already told), or the
        client asked for a fresh answer (a miss, already registered)."""
        method = ctx.method
        if method != _GET and method != _HEAD:
            return None
        fields = fields_of(ctx.headers, self.wanted)
        if b"upgrade" in fields:
            return None  # a protocol switch (WebSocket) is never answered from the cache
        if not self.authorized and b"authorization" in fields:
            self.tell(ctx, BYPASS)
            return None
        directives = NO_DIRECTIVES
        if b"cache-control" in fields or b"pragma" in fields:
            directives = request_directives(fields.get(b"cache-control"), fields.get(b"pragma"))
        base = self.keys.base_key(ctx, fields)
        if directives.refresh:
            self.miss(ctx, base, False, directives)
            return None
        return base, fields, directives

    def answer(
        self,
        ctx: RequestContext,
        base: bytes,
        found: Stored | None,
        fields: dict[bytes, bytes],
        directives: RequestDirectives,
        now: float,
    ) -> HookResult:
        """A hit from ``found`` (the servable value looked up for ``base``), or the miss path."""
        in_air = self.coalescer.in_air(base)
        if type(found) is Entry:
            if now < found.fresh_until:
                return self.hit(ctx, found, now, HIT)
            if in_air is not None:
                return self.hit(ctx, found, now, STALE)  # someone is revalidating it already
        if in_air is not None and self.follow:
            return self.follow_flight(ctx, base, in_air, directives)
        lead = in_air is None and ctx.method == _GET and not directives.no_store
        if lead and fields and not _CONDITIONAL.isdisjoint(fields):
            lead = False
        self.miss(ctx, base, lead, directives)
        return None

    def hit(self, ctx: RequestContext, entry: Entry, now: float, result: int) -> Response:
        # Other plugins' fields (rate limit, CORS) in ctx.add_response_headers go on any answer.
        self.count(ctx, result)
        if result == HIT:
            return hit_response(entry, now)  # the one answer of this second of the entry's age
        stored = entry.headers
        headers = [*stored, entry.age_field(now), X_CACHE[result]]
        return Response(entry.status, entry.body, headers, entry.content_type, entry.head(), len(stored))

    def miss(self, ctx: RequestContext, base: bytes, lead: bool, directives: RequestDirectives) -> None:
        self.tell(ctx, MISS)
        if ctx.method == _GET and not directives.no_store:
            self.misses[ctx] = Miss(base, self.coalescer.take_off(base) if lead else None)

    async def follow_flight(
        self, ctx: RequestContext, base: bytes, flight: Flight, directives: RequestDirectives
    ) -> Response | None:
        landing = await flight.wait(self.coalescer.timeout)
        if ctx.finished:
            return None  # the client left while waiting: on_complete has run, register nothing
        if landing is not None and (
            not landing.vary or variant_key(base, landing.vary, ctx) == landing.variant
        ):
            return self.hit(ctx, landing.entry, time.time(), HIT)
        self.miss(ctx, base, False, directives)
        return None

    def tell(self, ctx: RequestContext, result: int) -> None:
        added = ctx.add_response_headers
        if added is None:
            added = ctx.add_response_headers = []
        added.append(X_CACHE[result])
        self.count(ctx, result)

    def count(self, ctx: RequestContext, result: int) -> None:
        route = ctx.route
        assert route is not None, "hooks run on a matched route"
        counts = self.route_counts.get(route)
        if counts is None:
            counts = self.route_counts[route] = tuple(REQUESTS.labels(route.id, r) for r in RESULTS)
        counts[result].inc()

    # -- responses -------------------------------------------------------------------------------
    def on_response(self, ctx: RequestContext) -> None:
        headers = ctx.response_headers
        assert headers is not None, "on_response runs once the response head is parsed"
        miss = self.misses.get(ctx)
        if miss is None:
            if ctx.method not in _SAFE and 200 <= ctx.response_status < 400:
                self.invalidate(self.changed_uris(ctx, headers))
            return None
        status = ctx.response_status
        freshness = self.policy.freshness(status, headers)
        if freshness is None:
            self.release(miss)
            return None
        added = ctx.add_response_headers or ()
        stored: list[tuple[bytes, bytes]] = []
        content_type = b""
        length = -1
        vary: tuple[bytes, ...] = ()
        for pair in headers:
            if pair in added:
                continue
            name = pair[0].lower()
            if name in _NOT_STORED:
                if name == b"content-type":
                    content_type = pair[1]
                elif name == b"content-length":
                    length = int(pair[1]) if pair[1].isdigit() else -1
                continue
            if name == b"set-cookie":
                continue  # reached only with ``set_cookie: strip``
            if name == b"vary":
                vary = vary_names(pair[1])
            stored.append(pair)
        if length > self.max_object:
            self.release(miss)
            return None
        now = time.time()
        fresh_until = now + freshness.ttl
        entry = Entry(
            status, stored, content_type, b"", now, fresh_until, fresh_until + freshness.stale, freshness.age
        )
        key = variant_key(miss.base, vary, ctx) if vary else miss.base
        if status == 204:
            self.save(miss, key, vary, entry)  # no body to wait for
            return None
        if ctx.body_filters is None:
            ctx.body_filters = []
        ctx.body_filters.append(BodyCollector(self, miss, key, vary, entry, self.max_object))
        return None

    def on_complete(self, ctx: RequestContext) -> None:
        miss = self.misses.pop(ctx, None)
        if miss is not None:
            self.release(miss)

    def release(self, miss: Miss) -> None:
        """The leader will store nothing: its followers go upstream themselves."""
        if miss.flight is not None:
            self.coalescer.land(miss.flight, None)

    def save(self, miss: Miss, key: bytes, vary: tuple[bytes, ...], entry: Entry) -> None:
        now = time.time()
        if vary:
            self.keep(miss.base, VaryRecord(vary, entry.stale_until), now)
        self.keep(key, entry, now)
        if miss.flight is not None:
            self.coalescer.land(miss.flight, Landing(entry, vary, key))

    def changed_uris(self, ctx: RequestContext, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
        """The URI keys a successful unsafe request invalidates: its target's, and those its
        response ``headers`` Location and Content-Location name on the same host."""
        host = ctx.host
        uris = [self.keys.uri_key(host, ctx.path, ctx.query)]
        for name, value in headers:
            if name.lower() in _NAMING_CHANGED:
                uri = self.keys.reference_key(host, ctx.path, value)
                if uri is not None and uri not in uris:
                    uris.append(uri)
        return uris

    def keep(self, key: bytes, value: Stored, now: float) -> None:
        raise NotImplementedError

    def invalidate(self, uris: list[bytes]) -> None:
        """Remove every stored response under these URI keys."""
        raise NotImplementedError


@register_plugin
class Cache(CachePlugin):
    """The response cache in this process's memory (a zone); with ``redis``, a ``RedisCache``."""

    name: ClassVar[str] = "cache"

    def __init__(self, store: MemoryStore, settings: CacheSettings) -> None:
        super().__init__(settings)
        self.store = store
        self.hits = HitPath(store, settings.keys, settings.authorized, self.route_counts, self.count)

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _CACHE_KEYS)
        max_bytes = section.get("max_bytes", read_size) or DEFAULT_MAX_BYTES
        max_object = section.get("max_object_bytes", read_size) or min(DEFAULT_MAX_OBJECT, max_bytes)
        if max_object > max_bytes and "redis" not in section.items:
            raise ConfigError(
                section.at("max_object_bytes"),
                f"expected at most max_bytes ({max_bytes}): an object larger than the zone is never kept",
            )
        keys = section.get("key", read_key_spec) or KeySpec(None, ())
        unsafe = section.get("unsafe_cache_authorized", read_bool) or False
        authorized = unsafe or b"authorization" in keys.header_names
        policy = ResponsePolicy(
            statuses=section.get("statuses", read_statuses) or HEURISTIC_STATUSES,
            ttl=section.get("ttl", read_duration()),
            max_ttl=section.get("max_ttl", read_duration()),
            stale_while_revalidate=section.get("stale_while_revalidate", read_duration(allow_zero=True))
            or 0.0,
            store_set_cookie=section.get("set_cookie", read_set_cookie) == "strip",
        )
        follow = section.get("coalesce", read_bool)
        timeout = section.get("coalesce_timeout", read_duration()) or DEFAULT_COALESCE_TIMEOUT
        settings = CacheSettings(
            keys, policy, Coalescer(timeout), follow is not False, max_object, authorized
        )
        if "redis" in section.items:
            # Imported only when used: gateways that never cache in Redis do not load redis-py.
            from fastgw.plugins.cache.remote import RedisCache, read_redis

            return RedisCache(read_redis(section.items["redis"], section.at("redis")), settings)
        zone = section.get("zone", read_str) or "default"
        return cls(zone_for(zone, max_bytes), settings)

    def on_request(self, ctx: RequestContext) -> HookResult:
        # PERF: the common hit is answered in C (hits.pyx); the rest is decided in Python.
        hit = self.hits.answer(ctx)
        if hit is not None:
            return hit
        return self.decide(ctx)

    def decide(self, ctx: RequestContext) -> HookResult:
        """Every decision about a request (the compiled hit path's one included): BYPASS, a
        refresh, HIT, STALE, following a flight, MISS."""
        prepared = self.prepare(ctx)
        if prepared is None:
            return None
        base, fields, directives = prepared
        now = time.time()
        store = self.store
        found = store.get(base, now)
        if type(found) is VaryRecord:
            found = store.get(variant_key(base, found.names, ctx), now)
        return self.answer(ctx, base, found, fields, directives, now)

    def keep(self, key: bytes, value: Stored, now: float) -> None:
        self.store.put(key, value)

    def invalidate(self, uris: list[bytes]) -> None:
        for uri in uris:
            self.store.invalidate(uri)


# -- options -----------------------------------------------------------------------------------------


read_set_cookie = read_one_of("a Set-Cookie rule", ("bypass", "strip"))


def read_statuses(value: object, path: str) -> frozenset[int]:
    statuses = read_list(read_int(200, 599), non_empty=True)(value, path)
    for index, status in enumerate(statuses):
        if status in (206, 304):
            raise ConfigError(
                f"{path}[{index}]", f"{status} cannot be cached: it answers a range or a condition"
            )
    return frozenset(statuses)


def read_key_spec(value: object, path: str) -> KeySpec:
    """``key: {query: all | none | [names], headers: [names]}``."""
    section = Section(value, path, ("query", "headers"))
    query: tuple[bytes, ...] | None = None
    if "query" in section.items:
        raw = section.items["query"]
        if raw == "all":
            query = None
        elif raw == "none":
            query = ()
        elif isinstance(raw, list) and raw:
            names = read_list(read_str)(raw, section.at("query"))
            query = tuple(sorted(name.encode() for name in names))
        else:
            raise ConfigError(
                section.at("query"),
                f"expected 'all', 'none' or a non-empty list of parameter names, found {raw!r}",
            )
    headers = section.get("headers", read_list(read_header_name, single=True)) or ()
    return KeySpec(query, tuple(sorted({name.lower().encode() for name in headers})))
