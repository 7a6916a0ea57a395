"""The compiled hit path (``plugins/cache/hits.pyx``) against the plugin's Python path
(``Cache.decide``): the same answer, field for field (so the same bytes on the wire), Age and
X-Cache included, for every request the compiled path answers, and no answer (with no effect
but the LRU touch) for every request it must leave to the Python path."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from fastgw.hooks import Response
from fastgw.plugins.cache.hits import hit_response
from fastgw.plugins.cache.key import variant_key
from fastgw.plugins.cache.plugin import HIT, REQUESTS, RESULTS, Cache
from fastgw.plugins.cache.store import Entry, VaryRecord
from tests.support.exchange import FakeExchange

_zones = itertools.count()


def cache_with(**options: Any) -> Cache:
    cache = Cache.compile({"zone": f"unit-hits-{next(_zones)}", "ttl": "60s", **options}, "plugins[0]")
    assert isinstance(cache, Cache)
    return cache


def request(
    method: bytes = b"GET", path: bytes = b"/x", query: bytes = b"", headers: Any = ()
) -> FakeExchange:
    return FakeExchange(headers, query, path, method, host_header=b"h")


def fill(cache: Cache, ctx: FakeExchange, headers: list[tuple[bytes, bytes]], body: bytes = b"ok") -> None:
    """Store a response for ``ctx`` the way the gateway does: a miss, its response, its body."""
    assert cache.on_request(ctx) is None
    ctx.response_status = 200
    ctx.response_headers = [*headers, (b"Content-Length", b"%d" % len(body))]
    cache.on_response(ctx)
    assert ctx.body_filters is not None
    (collector,) = ctx.body_filters
    collector.feed(body)
    collector.end()
    cache.on_complete(ctx)


def counts() -> dict[str, int]:
    """The counts of the fake route (every test's): tests compare them before and after."""
    return {result: REQUESTS.labels("r", result).value for result in RESULTS}


def fields(response: Response) -> tuple[Any, ...]:
    """Everything the client sides render of an answer."""
    return (
        response.status,
        response.body,
        response.headers,
        response.content_type,
        response.head,
        response.head_fields,
    )


def assert_both_hit(cache: Cache, make: Any) -> Response:
    """The compiled path answers ``make()``'s request with what the Python path answers, and
    each counts one hit."""
    before = counts()["hit"]
    compiled = cache.hits.answer(make())
    python = cache.decide(make())
    assert isinstance(compiled, Response) and isinstance(python, Response)
    assert fields(compiled) == fields(python)
    assert (b"X-Cache", b"HIT") in compiled.headers
    assert counts()["hit"] == before + 2
    return compiled


def assert_left_to_python(cache: Cache, make: Any) -> None:
    before = counts()
    assert cache.hits.answer(make()) is None
    assert counts() == before  # nothing counted, nothing told
    assert not cache.misses


# -- what the compiled path answers ---------------------------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_fresh_hit_is_the_python_paths_answer(method: bytes) -> None:
    cache = cache_with()
    fill(cache, request(), [(b"Content-Type", b"text/plain"), (b"ETag", b'"v1"'), (b"Age", b"3")])
    hit = assert_both_hit(cache, lambda: request(method))
    assert hit.body == b"ok" and hit.headers[0] == (b"ETag", b'"v1"')
    assert hit.headers[1] == (b"Age", b"3")  # the upstream's Age, within the first second


def test_a_hit_through_a_vary_record_finds_the_variant_the_python_key_names() -> None:
    cache = cache_with()
    vary = [(b"Vary", b"Accept-Language, Accept")]
    fill(cache, request(headers=[(b"Accept-Language", b"de")]), vary, b"de")
    fill(cache, request(headers=[(b"Accept-Language", b"en"), (b"Accept", b"a/b")]), vary, b"en")
    assert type(cache.store.entries[b"h/x"]) is VaryRecord
    german = assert_both_hit(cache, lambda: request(headers=[(b"accept-language", b"de")]))
    english = assert_both_hit(
        cache, lambda: request(headers=[(b"Accept", b"a/b"), (b"Accept-Language", b"en")])
    )
    assert (german.body, english.body) == (b"de", b"en")
    # a variant not stored: a miss, for the Python path
    assert_left_to_python(cache, lambda: request(headers=[(b"Accept-Language", b"fr")]))


def test_key_headers_and_a_selected_query_make_the_python_paths_key() -> None:
    cache = cache_with(key={"query": ["page"], "headers": ["X-Tenant", "X-Other"]})
    fill(cache, request(query=b"?page=2&utm=a", headers=[(b"X-Tenant", b"t1")]), [])
    assert_both_hit(cache, lambda: request(query=b"?utm=b&page=2", headers=[(b"x-tenant", b"t1")]))
    assert_left_to_python(cache, lambda: request(query=b"?page=2", headers=[(b"X-Tenant", b"t2")]))
    # on two lines the Python path joins the values: it decides
    two_lines = [(b"X-Tenant", b"t1"), (b"X-Tenant", b"t1")]
    assert_left_to_python(cache, lambda: request(query=b"?page=2", headers=two_lines))


def test_authorization_is_answered_where_the_route_keys_by_it() -> None:
    cache = cache_with(key={"headers": ["Authorization"]})
    fill(cache, request(headers=[(b"Authorization", b"Bearer a")]), [])
    assert_both_hit(cache, lambda: request(headers=[(b"Authorization", b"Bearer a")]))


def test_conditional_requests_get_the_stored_response_as_before() -> None:
    cache = cache_with()
    fill(cache, request(), [(b"ETag", b'"v1"')])
    assert_both_hit(cache, lambda: request(headers=[(b"If-None-Match", b'"v1"'), (b"Range", b"bytes=0-1")]))


def test_hits_within_one_second_of_age_share_one_answer_and_a_new_second_makes_another() -> None:
    cache = cache_with()
    fill(cache, request(), [(b"Age", b"7")])
    entry = cache.store.entries[b"h/x"]
    assert isinstance(entry, Entry)
    first = cache.hits.answer(request())
    assert first is not None and cache.hits.answer(request()) is first
    entry.stored_at -= 2.0  # two seconds older
    later = cache.hits.answer(request())
    assert later is not None and later is not first
    assert later.headers[-2:] == [(b"Age", b"9"), (b"X-Cache", b"HIT")]
    assert first.headers[-2:] == [(b"Age", b"7"), (b"X-Cache", b"HIT")]  # not changed under it
    assert fields(later) == fields(cache.hit(request(), entry, time.time(), HIT))


# -- what it leaves to the Python path -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "python_answers"),
    [
        (b"POST", [], None),
        (b"OPTIONS", [], None),
        (b"GET", [(b"Cache-Control", b"no-cache")], b"MISS"),
        (b"GET", [(b"Cache-Control", b"max-age=60")], b"HIT"),
        (b"GET", [(b"Pragma", b"no-cache")], b"MISS"),
        (b"GET", [(b"Authorization", b"Bearer a")], b"BYPASS"),
        (b"GET", [(b"Upgrade", b"websocket"), (b"Connection", b"upgrade")], None),
    ],
    ids=["post", "options", "no-cache", "cache-control", "pragma", "authorization", "upgrade"],
)
def test_requests_the_python_path_decides_are_left_to_it(
    method: bytes, headers: list[Any], python_answers: bytes | None
) -> None:
    cache = cache_with()
    fill(cache, request(), [])
    assert_left_to_python(cache, lambda: request(method, headers=headers))
    ctx = request(method, headers=headers)
    python = cache.decide(ctx)
    told = python.headers if isinstance(python, Response) else ctx.add_response_headers or []
    assert [value for name, value in told if name == b"X-Cache"] == (
        [python_answers] if python_answers else []
    )


def test_a_stale_entry_is_left_to_the_python_path_which_serves_it_stale() -> None:
    cache = cache_with()
    now = time.time()
    cache.store.put(b"h/x", Entry(200, [], b"text/plain", b"old", now - 100, now - 40, now + 60, 0))
    assert_left_to_python(cache, request)
    stale = cache.decide(request())  # no revalidation in the air: this request revalidates
    assert stale is None and cache.misses
    served = cache.decide(request())
    assert isinstance(served, Response) and (b"X-Cache", b"STALE") in served.headers
    assert served.headers[0] == (b"Age", b"100")


def test_an_expired_entry_is_left_for_the_python_lookup_to_remove() -> None:
    cache = cache_with()
    now = time.time()
    cache.store.put(b"h/x", Entry(200, [], b"", b"old", now - 100, now - 40, now - 10, 0))
    assert_left_to_python(cache, request)
    assert len(cache.store) == 1
    assert cache.decide(request()) is None and len(cache.store) == 0  # a miss; the entry gone


def test_a_variant_key_is_the_one_the_python_key_function_makes() -> None:
    cache = cache_with()
    names = (b"accept", b"accept-language")
    ctx = request(headers=[(b"Accept-Language", b"de")])
    now = time.time()
    cache.store.put(b"h/x", VaryRecord(names, now + 60))
    cache.store.put(variant_key(b"h/x", names, ctx), Entry(200, [], b"", b"v", now, now + 60, now + 60, 0))
    assert_both_hit(cache, lambda: request(headers=[(b"Accept-Language", b"de")]))


def test_a_compiled_hit_keeps_the_entry_recently_used_in_the_zone() -> None:
    cache = cache_with(max_bytes="4KiB", max_object_bytes="1KiB")
    fill(cache, request(path=b"/a"), [], b"a" * 900)
    fill(cache, request(path=b"/b"), [], b"b" * 900)
    assert cache.hits.answer(request(path=b"/a")) is not None  # /a is now the most recently used
    fill(cache, request(path=b"/c"), [], b"c" * 900)
    fill(cache, request(path=b"/d"), [], b"d" * 900)
    assert list(cache.store.entries) == [b"h/a", b"h/c", b"h/d"]  # /b went first


@pytest.mark.parametrize("seconds_later", [0.0, 0.2, 0.999, 1.0, 59.5, 3600.25])
def test_a_hit_answer_carries_the_age_field_of_the_entry_and_x_cache(seconds_later: float) -> None:
    """``hit_response`` (both paths' HIT) and ``Entry.age_field`` (STALE's) give one Age."""
    entry = Entry(200, [(b"ETag", b'"v1"')], b"text/plain", b"hello", 1000.25, 2000.0, 2000.0, 5)
    response = hit_response(entry, 1000.25 + seconds_later)
    assert response.headers == [
        (b"ETag", b'"v1"'),
        entry.age_field(1000.25 + seconds_later),
        (b"X-Cache", b"HIT"),
    ]
    assert (response.status, response.body, response.content_type) == (200, b"hello", b"text/plain")
    assert (response.head, response.head_fields) == (entry.head(), 1)


def test_an_age_past_what_the_cache_represents_is_stored_as_the_greatest_it_can() -> None:
    """RFC 9111 1.2.2: an upstream's Age too large to represent counts as the greatest value the
    cache represents (2^62 seconds here), instead of failing the response."""
    cache = cache_with(stale_while_revalidate="1h")
    ctx = request()
    fill(cache, ctx, [(b"Cache-Control", b"max-age=99999999999999999999"), (b"Age", b"99999999999999999999")])
    entry = cache.store.entries[b"h/x"]
    assert isinstance(entry, Entry) and entry.initial_age == 2**62
    assert entry.age_field(entry.stored_at + 1.5) == (b"Age", b"%d" % (2**62 + 1))
