"""The cache's pure parts: config errors with key paths, RFC 9111 storing rules, keys, the byte-
bounded LRU zone and its purge, the Redis encoding, and the hooks on a fake exchange."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.hooks import Response
from fastgw.plan import compile_plan
from fastgw.plugins.cache.key import KeySpec, purge_matches, uri_of, variant_key, vary_names
from fastgw.plugins.cache.plugin import Cache
from fastgw.plugins.cache.policy import (
    HEURISTIC_STATUSES,
    ResponsePolicy,
    parse_directives,
    request_directives,
)
from fastgw.plugins.cache.redis_store import decode, encode
from fastgw.plugins.cache.store import ENTRY_OVERHEAD, Entry, MemoryStore, VaryRecord
from tests.support.exchange import FakeExchange


class CacheExchange(FakeExchange):
    """A request to host ``h``."""

    def __init__(self, method: bytes = b"GET", path: bytes = b"/", query: bytes = b"", **kwargs: Any) -> None:
        super().__init__(method=method, path=path, query=query, host_header=b"h", **kwargs)


# -- config errors ---------------------------------------------------------------------------------


def compile_with(options: dict[str, Any]) -> Any:
    document = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": ["127.0.0.1:9"]}},
        "routes": [
            {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "cache", **options}]}
        ],
    }
    return compile_plan(parse_config(document, "gw.yaml"))


P = "gw.yaml: routes[0].plugins[0]"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tll": "1s"}, f"{P}: unknown key 'tll'; expected one of: zone, max_bytes"),
        ({"ttl": "soon"}, f"{P}.ttl: expected a duration"),
        ({"max_bytes": 0}, f"{P}.max_bytes: expected a size greater than 0"),
        (
            {"max_bytes": "1KiB", "max_object_bytes": "2KiB"},
            f"{P}.max_object_bytes: expected at most max_bytes",
        ),
        ({"statuses": [200, 206]}, f"{P}.statuses[1]: 206 cannot be cached"),
        ({"statuses": [200, 700]}, f"{P}.statuses[1]: expected an integer"),
        ({"statuses": []}, f"{P}.statuses: expected a non-empty list"),
        ({"key": {"query": "some"}}, f"{P}.key.query: expected 'all', 'none' or a non-empty list"),
        ({"key": {"headers": ["bad name"]}}, f"{P}.key.headers[0]: expected a header name"),
        ({"key": {"cookies": True}}, f"{P}.key: unknown key 'cookies'"),
        ({"set_cookie": "keep"}, f"{P}.set_cookie: expected the name of a Set-Cookie rule (bypass, strip)"),
        ({"unsafe_cache_authorized": "yes"}, f"{P}.unsafe_cache_authorized: expected true or false"),
        ({"coalesce_timeout": -1}, f"{P}.coalesce_timeout: expected a duration"),
        ({"redis": {}}, f"{P}.redis: missing required key 'url'"),
        ({"redis": {"url": "http://x"}}, f"{P}.redis.url: expected a redis:// or rediss:// URL"),
    ],
)
def test_config_errors_name_the_key_path(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_with(options)
    assert str(err.value).startswith(message), str(err.value)


def test_a_valid_config_compiles() -> None:
    plan = compile_with(
        {
            "zone": "unit-valid",
            "ttl": "30s",
            "max_ttl": "1h",
            "stale_while_revalidate": "10s",
            "statuses": [200, 404],
            "key": {"query": ["page", "lang"], "headers": ["Accept-Language"]},
            "set_cookie": "strip",
            "coalesce": False,
        }
    )
    cache = plan.routes[0].plugins[0]
    assert isinstance(cache, Cache) and cache.follow is False
    assert cache.keys.query == (b"lang", b"page") and cache.keys.header_names == (b"accept-language",)
    assert cache.policy.statuses == {200, 404} and cache.policy.store_set_cookie


# -- RFC 9111 rules --------------------------------------------------------------------------------

POLICY = ResponsePolicy(HEURISTIC_STATUSES, None, None, 0.0, False)


def fresh(headers: list[tuple[bytes, bytes]], status: int = 200, policy: ResponsePolicy = POLICY) -> Any:
    return policy.freshness(status, headers)


def test_directives_are_parsed_case_insensitively_with_quotes() -> None:
    assert parse_directives(b'Max-Age=60, no-cache="Set-Cookie, X", s-maxage="5"') == {
        b"max-age": b"60",
        b"no-cache": b"Set-Cookie, X",
        b"s-maxage": b"5",
    }


def test_freshness_order_and_age() -> None:
    assert fresh([(b"Cache-Control", b"max-age=60, s-maxage=5")]).ttl == 5
    assert fresh([(b"cache-control", b"max-age=60"), (b"Age", b"20")]).ttl == 40
    dated = [(b"Date", b"Sun, 06 Nov 1994 08:49:37 GMT"), (b"Expires", b"Sun, 06 Nov 1994 08:50:37 GMT")]
    assert fresh(dated).ttl == 60
    assert fresh([(b"Expires", b"0"), (b"Date", b"Sun, 06 Nov 1994 08:49:37 GMT")]) is None  # expired
    assert fresh([]) is None  # no freshness and no route ttl
    with_ttl = ResponsePolicy(HEURISTIC_STATUSES, 30.0, 10.0, 0.0, False)
    assert fresh([], policy=with_ttl).ttl == 10  # max_ttl caps it


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Cache-Control", b"no-store, max-age=60")],
        [(b"Cache-Control", b"private, max-age=60")],
        [(b"Cache-Control", b"no-cache")],
        [(b"Cache-Control", b"max-age=60"), (b"Set-Cookie", b"a=1")],
        [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept, *")],
        [(b"Cache-Control", b"max-age=60"), (b"Age", b"60")],
    ],
)
def test_not_stored(headers: list[tuple[bytes, bytes]]) -> None:
    assert fresh(headers) is None


def test_statuses_and_stale_while_revalidate() -> None:
    assert fresh([(b"Cache-Control", b"max-age=60")], status=500) is None
    assert fresh([(b"Cache-Control", b"max-age=60")], status=404) is not None
    assert fresh([(b"Cache-Control", b"max-age=1, stale-while-revalidate=30")]).stale == 30
    assert fresh([(b"Cache-Control", b"max-age=1, stale-while-revalidate=30, must-revalidate")]).stale == 0


def test_request_directives() -> None:
    assert request_directives(b"no-cache", None).refresh
    assert request_directives(b"max-age=0", None).refresh
    assert request_directives(None, b"no-cache").refresh
    assert not request_directives(b"max-age=10", b"no-cache").refresh  # Pragma only without CC
    assert request_directives(b"no-store", None).no_store


# -- keys ------------------------------------------------------------------------------------------


def test_keys() -> None:
    ctx = CacheExchange(path=b"/p", query=b"?b=2&utm=x&a=%41", headers=[(b"Accept-Language", b"de")])
    assert KeySpec(None, ()).base_key(ctx, {}) == b"h/p?b=2&utm=x&a=%41"
    assert KeySpec((), ()).base_key(ctx, {}) == b"h/p"
    assert KeySpec((b"a", b"b"), ()).base_key(ctx, {}) == b"h/p?a=A&b=2"
    keyed = KeySpec(None, (b"x-tenant",)).base_key(ctx, {b"x-tenant": b"t"})
    assert keyed == b"h/p?b=2&utm=x&a=%41\x1fx-tenant=t"
    assert variant_key(b"k", (b"accept-language",), ctx) == b"k\x1ede"
    assert vary_names(b"Accept-Language, accept ,Accept") == (b"accept", b"accept-language")
    assert purge_matches(b"k\x1ede", b"k", None) and purge_matches(b"k\x1fx=1", b"k", None)
    assert not purge_matches(b"kk", b"k", None) and purge_matches(b"kk", None, b"k")


# RFC 9111 4.4: what a successful unsafe request invalidates, by URI key.
def test_uri_keys_of_keys_and_of_location_references() -> None:
    for key in (b"h/p?q", b"h/p?q\x1fx=1", b"h/p?q\x1ede\x1fen", b"h/p?q\x1fx=1\x1ede"):
        assert uri_of(key) == b"h/p?q"
    every, some = KeySpec(None, ()), KeySpec((b"lang",), ())
    assert some.uri_key(b"h", b"/p", b"?utm=1&lang=en") == b"h/p?lang=en"
    named = {
        b"/items/9": b"h/items/9",
        b"9?lang=en": b"h/items/9?lang=en",  # relative to the target /items/new
        b"../other/./x": b"h/other/x",
        b"http://H/items/9#top": b"h/items/9",
        b"https://h:8443/items/9": b"h/items/9",  # same host, whatever the scheme and port
        b"//h/items/9": b"h/items/9",
    }
    for reference, uri in named.items():
        assert every.reference_key(b"h", b"/items/new", reference) == uri, reference
    for elsewhere in (b"http://other/items/9", b"mailto:a@h", b"http://[::1/x", b"/caf\xc3\xa9"):
        assert every.reference_key(b"h", b"/items/new", elsewhere) is None, elsewhere
    assert every.reference_key(b"[::1]", b"/a", b"http://[::1]:80/b") == b"[::1]/b"


# -- the zone --------------------------------------------------------------------------------------


def entry(body: bytes, fresh_until: float = 100.0, stale_until: float = 100.0) -> Entry:
    return Entry(200, [(b"X", b"y")], b"text/plain", body, 0.0, fresh_until, stale_until, 0)


def test_the_zone_is_bounded_by_bytes_and_evicts_the_least_recently_used() -> None:
    one = entry(b"x" * 1000)
    zone = MemoryStore("unit", 3 * (one.size + 2))
    for key in (b"k1", b"k2", b"k3"):
        assert zone.put(key, entry(b"x" * 1000))
    assert zone.get(b"k1", 0.0) is not None  # k1 is now the most recently used
    zone.put(b"k4", entry(b"x" * 1000))
    assert set(zone.entries) == {b"k3", b"k1", b"k4"} and zone.size <= zone.max_bytes
    assert not zone.put(b"huge", entry(b"x" * 10_000))  # larger than the zone: not kept
    zone.resize(one.size + 2)
    assert list(zone.entries) == [b"k4"] and zone.size == one.size + 2


def test_expired_entries_are_dropped_when_looked_up() -> None:
    zone = MemoryStore("unit", 1 << 20)
    zone.put(b"k", entry(b"body", fresh_until=10.0, stale_until=20.0))
    assert zone.get(b"k", 15.0) is not None  # stale but servable while revalidating
    assert zone.get(b"k", 20.0) is None and len(zone) == 0 and zone.size == 0


def test_purge_by_key_takes_every_variant_and_by_prefix_everything_under_it() -> None:
    zone = MemoryStore("unit", 1 << 20)
    for key in (b"h/a", b"h/a\x1ede", b"h/a\x1fx=1", b"h/ab", b"h/b", b"g/a"):
        zone.put(key, entry(b"."))
    assert zone.purge(base=b"h/a") == 3 and set(zone.entries) == {b"h/ab", b"h/b", b"g/a"}
    assert zone.purge(prefix=b"h/") == 2 and set(zone.entries) == {b"g/a"}
    assert zone.size == len(b"g/a") + entry(b".").size


def test_invalidate_takes_every_entry_of_a_uri_through_the_index() -> None:
    zone = MemoryStore("unit", 1 << 20)
    for key in (b"h/a", b"h/a\x1ede\x1fen", b"h/a\x1fx=1", b"h/a\x1fx=2\x1ede", b"h/ab", b"h/a?b"):
        zone.put(key, entry(b"."))
    assert zone.invalidate(b"h/a") == 4 and set(zone.entries) == {b"h/ab", b"h/a?b"}
    assert zone.invalidate(b"h/a") == 0 and set(zone.by_uri) == {b"h/ab", b"h/a?b"}
    # the index follows every way an entry leaves: eviction, expiry, purge, replacement
    small = MemoryStore("unit", 2 * (entry(b".").size + 8))
    for key in (b"h/1", b"h/2", b"h/3"):
        small.put(key, entry(b"."))
    small.put(b"h/3", entry(b"."))
    small.put(b"h/4", entry(b".", stale_until=5.0))
    assert small.get(b"h/4", 6.0) is None and small.purge(base=b"h/3") == 1
    assert small.by_uri == {} and small.size == 0


def test_redis_encoding_round_trips() -> None:
    stored = Entry(203, [(b"X-\xff", b"v\x80")], b"", b"\x00body\n", 1.5, 2.5, 3.5, 7)
    back = decode(encode(stored))
    assert isinstance(back, Entry)
    assert (back.status, back.headers, back.content_type, back.body) == (
        203,
        stored.headers,
        b"",
        b"\x00body\n",
    )
    assert (back.stored_at, back.fresh_until, back.stale_until, back.initial_age) == (1.5, 2.5, 3.5, 7)
    vary = decode(encode(VaryRecord((b"accept", b"accept-language"), 9.0)))
    assert isinstance(vary, VaryRecord) and vary.names == (b"accept", b"accept-language")
    assert decode(b"garbage") is None and decode(b"E{not json\nbody") is None


def test_entry_size_counts_body_headers_and_overhead() -> None:
    assert entry(b"").size == ENTRY_OVERHEAD + len(b"X") + len(b"y") + 16


# -- hooks on a fake exchange ----------------------------------------------------------------------


def test_hit_and_miss_on_a_fake_exchange() -> None:
    cache = Cache.compile({"zone": "unit-hooks", "ttl": "60s"}, "plugins[0]")
    assert isinstance(cache, Cache)
    ctx = CacheExchange(method=b"GET", path=b"/x")
    assert cache.on_request(ctx) is None and ctx.add_response_headers == [(b"X-Cache", b"MISS")]
    ctx.response_status = 200
    ctx.response_headers = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"2"),
        (b"X-Cache", b"MISS"),
    ]
    cache.on_response(ctx)
    assert ctx.body_filters is not None
    (collector,) = ctx.body_filters
    assert collector.feed(b"ok") == b"ok" and collector.end() == b""
    cache.on_complete(ctx)
    again = CacheExchange(method=b"HEAD", path=b"/x")
    hit = cache.on_request(again)
    assert isinstance(hit, Response) and (hit.status, hit.body, hit.content_type) == (
        200,
        b"ok",
        b"text/plain",
    )
    assert (b"X-Cache", b"HIT") in hit.headers and not cache.misses


# -- what a hit reuses --------------------------------------------------------------------------


def stored_entry() -> Entry:
    return Entry(200, [(b"ETag", b'"v1"')], b"text/plain", b"hello", 1000.0, 1060.0, 1060.0, 5)


def test_an_entry_renders_its_head_once_for_every_hit() -> None:
    entry = stored_entry()
    head = entry.head()
    assert head == b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nETag: "v1"\r\n'
    assert entry.head() is head


def test_an_entrys_age_field_follows_the_clock() -> None:
    """Age = the upstream's Age when stored + whole seconds since (RFC 9111 5.1), whatever the
    field made for an earlier hit."""
    entry = stored_entry()
    assert entry.age_field(1000.2) == (b"Age", b"5")
    assert entry.age_field(1003.9) == (b"Age", b"8")
    assert entry.age_field(1000.5) == (b"Age", b"5")


def test_a_hit_answers_with_the_head_rendered_once_and_the_fields_of_this_hit() -> None:
    cache = compile_with({"zone": "unit-hit", "ttl": "60s"}).routes[0].plugins[0]
    entry = stored_entry()
    response = cache.hit(CacheExchange(), entry, 1002.0, 0)
    assert response.head == entry.head() and response.head_fields == 1
    assert response.headers == [(b"ETag", b'"v1"'), (b"Age", b"7"), (b"X-Cache", b"HIT")]
    assert (response.status, response.body, response.content_type) == (200, b"hello", b"text/plain")
