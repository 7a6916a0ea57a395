"""The ``cache`` plugin on real responses from the test upstream (its ``/cache/{name}`` path
answers with the Cache-Control, Vary, Set-Cookie... the query asks for and counts its calls):
hits and misses, what RFC 9111 keeps out of a shared cache, TTLs, Vary, Authorization,
coalescing of concurrent misses, the memory bound, large and cut bodies, HEAD from GET,
stale-while-revalidate, the counters, and the Redis store shared by gateways (and down)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
import redis

from fastgw.observe.metrics import samples_by
from fastgw.plugins.cache.plugin import Cache, CachePlugin
from fastgw.plugins.cache.remote import RedisCache
from fastgw.plugins.cache.store import ZONES
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.procs import ProcessReaper, reaper
from tests.support.rawhttp import NoResponse, RawResponse, build_request, connect, read_response
from tests.support.redis_server import RedisServer
from tests.support.upstream_server import pattern

Make = Callable[..., RunningGateway]
_zones = itertools.count()


@pytest.fixture
def zone() -> str:
    """A memory zone of this test's own: zones are per process, and tests share the process."""
    return f"test-{next(_zones)}-{time.monotonic_ns()}"


def cached(upstream: int, zone: str, **options: Any) -> dict[str, Any]:
    plugin = {"name": "cache", "zone": zone, **options}
    return gateway_config(
        upstream, routes=[{"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [plugin]}]
    )


def get(
    gw: RunningGateway, target: str, headers: list[tuple[str, str]] | None = None, method: str = "GET"
) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, target, headers or []))
        return read_response(sock, head=method == "HEAD")


def upstream_calls(upstream: int) -> int:
    """Requests the upstream answered so far (``/stats`` is not counted)."""
    with connect(upstream) as sock:
        sock.sendall(build_request("GET", "/stats"))
        return int(read_response(sock).json()["requests"])


def cache_of(gw: RunningGateway) -> CachePlugin:
    plugin = gw.plan.routes[0].plugins[0]
    assert isinstance(plugin, CachePlugin)
    return plugin


def cc(value: str) -> str:
    return "cc=" + quote(value)


# -- hits and misses -------------------------------------------------------------------------------


def test_a_miss_fills_the_cache_and_the_hit_carries_the_stored_response(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/basic?{cc('max-age=60')}&x=1"
    before = upstream_calls(upstream)
    first = get(gw, target)
    second = get(gw, target)
    assert (first.status, first.header("X-Cache"), second.header("X-Cache")) == (200, "MISS", "HIT")
    assert upstream_calls(upstream) == before + 1
    assert second.body == first.body and second.json()["target"] == target
    assert second.header("Content-Type") == "application/json"
    assert second.header("Cache-Control") == "max-age=60"
    assert second.header("Content-Length") == str(len(first.body))
    assert second.header("Age") is not None and int(second.header("Age") or "") >= 0
    # the gateway's own fields are the hit's, not the stored response's
    assert second.header("X-Request-Id") and second.header("X-Request-Id") != first.header("X-Request-Id")
    assert len(second.header_values("X-Request-Id")) == 1 and len(second.header_values("Date")) == 1
    # another query string is another key
    assert get(gw, f"/cache/basic?{cc('max-age=60')}&x=2").header("X-Cache") == "MISS"


def test_an_upgrade_request_is_never_answered_from_the_cache(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    """A WebSocket handshake on a cached route goes to the upstream even when a GET of the same
    URI is stored: a stored 200 is no answer to a protocol switch."""
    doc = cached(upstream, zone)
    doc["routes"][0]["websocket"] = True
    gw = make_gateway(doc)
    target = f"/cache/upgrade?{cc('max-age=60')}"
    assert get(gw, target).header("X-Cache") == "MISS"
    assert get(gw, target).header("X-Cache") == "HIT"
    before = upstream_calls(upstream)
    handshake = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                 ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]  # fmt: skip
    answer = get(gw, target, handshake)
    assert answer.header("X-Cache") is None
    assert upstream_calls(upstream) == before + 1


def test_head_is_answered_from_the_get_entry(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/head?{cc('max-age=60')}"
    assert get(gw, target, method="HEAD").header("X-Cache") == "MISS"  # HEAD does not fill it
    body = get(gw, target).body
    before = upstream_calls(upstream)
    head = get(gw, target, method="HEAD")
    assert (head.status, head.header("X-Cache"), head.body) == (200, "HIT", b"")
    assert head.header("Content-Length") == str(len(body))
    assert upstream_calls(upstream) == before


class PythonPathOnly:
    """Stands in for a plugin's compiled hit path: leaves every request to the Python path."""

    def answer(self, ctx: object) -> None:
        return None


def without_date_and_request_id(raw: bytes) -> bytes:
    return b"\r\n".join(
        line for line in raw.split(b"\r\n") if not line.lower().startswith((b"date:", b"x-request-id:"))
    )


@pytest.mark.parametrize(
    ("method", "vary", "headers"),
    [("GET", "", []), ("HEAD", "", []), ("GET", "&vary=Accept", [("Accept", "a/b")])],
    ids=["get", "head", "vary"],
)
def test_the_compiled_hit_sends_the_bytes_the_python_path_sends(
    make_gateway: Make, upstream: int, zone: str, method: str, vary: str, headers: list[tuple[str, str]]
) -> None:
    """The same hit answered by ``hits.pyx`` and by ``Cache.decide``: byte for byte the same
    response but for Date and the request id (Age included: the pair is asked again if a second
    of the entry's age passed between them)."""
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/bytes?{cc('max-age=60')}{vary}"
    assert get(gw, target, headers).header("X-Cache") == "MISS"
    cache = cache_of(gw)
    assert isinstance(cache, Cache)
    compiled_path = cache.hits

    def hit(python_path: bool) -> bytes:
        cache.hits = PythonPathOnly() if python_path else compiled_path  # type: ignore[assignment]
        try:
            return without_date_and_request_id(get(gw, target, headers, method).raw)
        finally:
            cache.hits = compiled_path

    for _ in range(3):
        compiled, python = hit(False), hit(True)
        if hit(False) == compiled:
            break
    assert b"\r\nX-Cache: HIT\r\n" in compiled and b"\r\nAge: " in compiled
    assert compiled == python


def test_a_stored_204_has_no_body_no_length_and_no_content_type(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/empty?{cc('max-age=60')}&status=204"
    first, second = get(gw, target), get(gw, target)
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert (second.status, second.body) == (204, b"")
    # RFC 9110 8.6: no Content-Length on a 204; the upstream sent no Content-Type
    assert second.header("Content-Length") is None and second.header("Content-Type") is None


def test_ttl_from_the_config_expires(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone, ttl="1s"))
    target = "/cache/ttl"  # no Cache-Control: the route's ttl applies
    assert [get(gw, target).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    time.sleep(1.1)
    assert [get(gw, target).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]


def test_freshness_from_the_upstream(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone))  # no ttl: only what the upstream says is stored
    assert [get(gw, "/cache/nothing").header("X-Cache") for _ in range(2)] == ["MISS", "MISS"]
    short = f"/cache/short?{cc('max-age=1')}"
    assert [get(gw, short).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    # s-maxage is the shared cache's lifetime (RFC 9111 5.2.2.10)
    shared = f"/cache/shared?{cc('max-age=0, s-maxage=60')}"
    assert [get(gw, shared).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    expires = "/cache/expires?expires=60"
    assert [get(gw, expires).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    # the upstream's Age counts against the lifetime: 60 - 59 leaves one second
    aged = f"/cache/aged?{cc('max-age=60')}&age=59"
    assert [get(gw, aged).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    assert int(get(gw, aged).header("Age") or "") >= 59
    time.sleep(1.1)
    assert get(gw, short).header("X-Cache") == "MISS"
    assert get(gw, aged).header("X-Cache") == "MISS"


@pytest.mark.parametrize(
    "query",
    [
        cc("no-store, max-age=60"),
        cc("private, max-age=60"),
        cc("no-cache, max-age=60"),
        cc("max-age=60") + "&cookie=session%3D1",
        cc("max-age=60") + "&status=500",
        cc("max-age=60") + "&vary=*",
    ],
    ids=["no-store", "private", "no-cache", "set-cookie", "status-500", "vary-star"],
)
def test_responses_a_shared_cache_must_not_store(
    make_gateway: Make, upstream: int, zone: str, query: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    before = upstream_calls(upstream)
    assert [get(gw, f"/cache/no?{query}").header("X-Cache") for _ in range(2)] == ["MISS", "MISS"]
    assert upstream_calls(upstream) == before + 2


def test_set_cookie_strip_stores_the_response_without_its_cookie(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone, set_cookie="strip"))
    target = f"/cache/cookie?{cc('max-age=60')}&cookie=session%3D1"
    first, second = get(gw, target), get(gw, target)
    assert first.header("Set-Cookie") == "session=1"  # the client that caused the miss gets it
    assert (second.header("X-Cache"), second.header("Set-Cookie")) == ("HIT", None)


def test_vary_keeps_one_entry_per_variant(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/vary?{cc('max-age=60')}&vary=Accept-Language"

    def ask(language: str) -> tuple[str | None, str]:
        r = get(gw, target, [("Accept-Language", language)])
        return r.header("X-Cache"), r.json()["vary"]["Accept-Language"]

    assert [ask("en"), ask("de"), ask("en"), ask("de")] == [
        ("MISS", "en"),
        ("MISS", "de"),
        ("HIT", "en"),
        ("HIT", "de"),
    ]


def test_key_headers_and_selected_query_parameters(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone, key={"query": ["page"], "headers": ["X-Tenant"]}))
    base = f"/cache/keyed?{cc('max-age=60')}&page=2"
    assert get(gw, base + "&utm=a", [("X-Tenant", "a")]).header("X-Cache") == "MISS"
    assert get(gw, base + "&utm=b", [("X-Tenant", "a")]).header("X-Cache") == "HIT"  # utm is not keyed
    assert get(gw, base, [("X-Tenant", "b")]).header("X-Cache") == "MISS"
    assert get(gw, base.replace("page=2", "page=3"), [("X-Tenant", "a")]).header("X-Cache") == "MISS"


def test_authorization_bypasses_the_cache_unless_the_route_says_so(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    target = f"/cache/auth?{cc('max-age=60')}"
    alice, bob = [("Authorization", "Bearer alice")], [("Authorization", "Bearer bob")]
    gw = make_gateway(cached(upstream, zone))
    assert [get(gw, target, alice).header("X-Cache") for _ in range(2)] == ["BYPASS", "BYPASS"]
    assert get(gw, target).header("X-Cache") == "MISS"  # nothing was stored for the bypasses

    keyed = make_gateway(cached(upstream, zone + "-keyed", key={"headers": ["authorization"]}))
    assert [get(keyed, target, who).header("X-Cache") for who in (alice, alice, bob)] == [
        "MISS",
        "HIT",
        "MISS",
    ]

    shared = make_gateway(cached(upstream, zone + "-shared", unsafe_cache_authorized=True))
    assert [get(shared, target, who).header("X-Cache") for who in (alice, bob)] == ["MISS", "HIT"]


def test_request_no_cache_refreshes_and_no_store_keeps_out(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/refresh?{cc('max-age=60')}"
    old = get(gw, target).json()["n"]
    refreshed = get(gw, target, [("Cache-Control", "no-cache")])
    assert refreshed.header("X-Cache") == "MISS" and refreshed.json()["n"] > old
    assert get(gw, target).json()["n"] == refreshed.json()["n"]  # the refreshed entry
    kept_out = f"/cache/kept-out?{cc('max-age=60')}"
    assert get(gw, kept_out, [("Cache-Control", "no-store")]).header("X-Cache") == "MISS"
    assert get(gw, kept_out).header("X-Cache") == "MISS"


# -- invalidation by unsafe requests (RFC 9111 4.4) ------------------------------------------------


def test_an_unsafe_request_that_succeeds_invalidates_its_target_uri(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    # The key holds only cc, so the POST's own status=... leaves its target URI the cached one.
    gw = make_gateway(cached(upstream, zone, key={"query": ["cc"]}))
    target, other = f"/cache/changed?{cc('max-age=60')}", f"/cache/unchanged?{cc('max-age=60')}"
    for t in (target, other):
        assert [get(gw, t).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    # An error answer changes nothing; nor does a safe method.
    for method, status in (("POST", 400), ("DELETE", 404), ("PUT", 500), ("OPTIONS", 200)):
        assert get(gw, f"{target}&status={status}", method=method).status == status
        assert get(gw, target).header("X-Cache") == "HIT", (method, status)
    # 2xx and 3xx do, for every unsafe method, one the gateway knows nothing about too.
    for method, status in (("POST", 201), ("PUT", 204), ("PATCH", 200), ("DELETE", 303), ("MKCOL", 201)):
        changed = get(gw, f"{target}&status={status}", method=method)
        assert changed.status == status and changed.header("X-Cache") is None
        after = get(gw, target)
        assert after.header("X-Cache") == "MISS", (method, status)
        assert get(gw, target).header("X-Cache") == "HIT"
    assert get(gw, other).header("X-Cache") == "HIT"  # another URI is not touched


def test_invalidation_takes_every_variant_and_header_selection_of_the_uri(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone, key={"headers": ["X-Tenant"]}))
    target = f"/cache/variants?{cc('max-age=60')}&vary=Accept"
    askers = [[("X-Tenant", t), ("Accept", a)] for t in ("a", "b") for a in ("text/plain", "text/html")]

    def results() -> list[str | None]:
        return [get(gw, target, headers).header("X-Cache") for headers in askers]

    assert (results(), results()) == (["MISS"] * 4, ["HIT"] * 4)
    assert get(gw, target, [("X-Tenant", "c")], method="DELETE").status == 200
    assert (results(), results()) == (["MISS"] * 4, ["HIT"] * 4)


def test_location_and_content_location_on_the_same_host_are_invalidated_too(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    stored = {name: f"/cache/{name}?{cc('max-age=60')}" for name in ("created", "described", "near", "away")}
    elsewhere = [("Host", "elsewhere.example")]
    for target in stored.values():
        get(gw, target)
    get(gw, stored["away"], elsewhere)

    def post(**references: str) -> None:
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in references.items())
        assert get(gw, f"/cache/new?{query}", method="POST").status == 200

    def hits() -> dict[str, bool]:
        found = {name: get(gw, target).header("X-Cache") == "HIT" for name, target in stored.items()}
        return found | {"away@elsewhere": get(gw, stored["away"], elsewhere).header("X-Cache") == "HIT"}

    post(location=stored["created"], content_location="http://TEST.local:8080" + stored["described"])
    assert hits() == {
        "created": False, "described": False, "near": True, "away": True, "away@elsewhere": True
    }  # fmt: skip
    # A reference relative to the request's path, with a dot segment.
    post(location="./" + stored["near"].removeprefix("/cache/"))
    assert hits() == {"created": True, "described": True, "near": False, "away": True, "away@elsewhere": True}
    # Another host's URI is not this one's to invalidate (RFC 9111 4.4: same origin only).
    post(location="http://elsewhere.example" + stored["away"])
    assert hits() == {"created": True, "described": True, "near": True, "away": True, "away@elsewhere": True}


# -- coalescing ------------------------------------------------------------------------------------


def concurrently(gw: RunningGateway, target: str, n: int) -> list[RawResponse]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: get(gw, target), range(n)))


def test_a_hundred_concurrent_misses_make_one_upstream_call(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/herd?{cc('max-age=60')}&delay=500"
    before = upstream_calls(upstream)
    responses = concurrently(gw, target, 100)
    assert upstream_calls(upstream) == before + 1
    assert {r.status for r in responses} == {200}
    assert len({r.body for r in responses}) == 1
    assert sorted(r.header("X-Cache") or "" for r in responses).count("MISS") == 1


def test_an_uncacheable_leader_releases_its_followers(make_gateway: Make, upstream: int, zone: str) -> None:
    # The followers would wait a minute; each answers well within the client's read timeout.
    gw = make_gateway(cached(upstream, zone, coalesce_timeout="60s"))
    target = f"/cache/uncacheable?{cc('no-store')}&delay=300"
    before = upstream_calls(upstream)
    responses = concurrently(gw, target, 10)
    assert {(r.status, r.header("X-Cache")) for r in responses} == {(200, "MISS")}
    assert upstream_calls(upstream) == before + 10


def test_followers_go_upstream_after_the_coalescing_timeout(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone, coalesce_timeout="100ms"))
    target = f"/cache/slow-leader?{cc('max-age=60')}&delay=1000"
    before = upstream_calls(upstream)
    responses = concurrently(gw, target, 4)
    assert {(r.status, r.header("X-Cache")) for r in responses} == {(200, "MISS")}
    assert upstream_calls(upstream) == before + 4


def test_stale_while_revalidate_serves_stale_while_one_request_revalidates(
    make_gateway: Make, upstream: int, zone: str
) -> None:
    gw = make_gateway(cached(upstream, zone))
    target = f"/cache/swr?{cc('max-age=1, stale-while-revalidate=60')}&delay=300"
    stored = get(gw, target).json()["n"]
    time.sleep(1.1)
    cache = cache_of(gw)
    with ThreadPoolExecutor(max_workers=1) as pool:
        revalidating = pool.submit(get, gw, target)
        deadline = time.monotonic() + 5
        while not gw.call(lambda: bool(cache.coalescer.flights)):  # the revalidation is in the air
            assert time.monotonic() < deadline, "the revalidating request never went upstream"
            time.sleep(0.005)
        stale = get(gw, target)
        fresh = revalidating.result()
    assert (stale.header("X-Cache"), stale.json()["n"]) == ("STALE", stored)
    assert fresh.header("X-Cache") == "MISS" and fresh.json()["n"] > stored
    assert get(gw, target).json()["n"] == fresh.json()["n"]


# -- bounds ----------------------------------------------------------------------------------------


def test_the_memory_bound_holds_under_many_keys(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone, max_bytes="64KiB", max_object_bytes="4KiB"))
    for i in range(200):  # about 250 KB of bodies into a 64 KiB zone
        assert get(gw, f"/cache/many?{cc('max-age=60')}&size=1200&i={i}").status == 200
    store = ZONES[zone]
    assert 0 < gw.call(lambda: store.size) <= 64 * 1024
    assert 20 < gw.call(lambda: len(store)) < 64
    # the least recently used went first; the latest are there
    assert get(gw, f"/cache/many?{cc('max-age=60')}&size=1200&i=199").header("X-Cache") == "HIT"
    assert get(gw, f"/cache/many?{cc('max-age=60')}&size=1200&i=0").header("X-Cache") == "MISS"


@pytest.mark.parametrize("source", ["size", "chunked"])
def test_a_body_over_max_object_bytes_passes_through_uncached(
    make_gateway: Make, upstream: int, zone: str, source: str
) -> None:
    gw = make_gateway(cached(upstream, zone, ttl="60s", max_object_bytes="10KiB"))
    large = f"/cache/large?size=20000&{cc('max-age=60')}" if source == "size" else "/chunked/20000"
    for _ in range(2):
        r = get(gw, large)
        assert (r.status, r.header("X-Cache"), r.body) == (200, "MISS", pattern(20000))
    small = f"/cache/small?size=5000&{cc('max-age=60')}" if source == "size" else "/chunked/5000"
    assert [get(gw, small).header("X-Cache") for _ in range(2)] == ["MISS", "HIT"]
    assert get(gw, small).body == pattern(5000)


def test_a_response_cut_mid_body_is_not_stored(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone, ttl="60s"))
    before = upstream_calls(upstream)
    for _ in range(2):
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/reset-mid-body"))
            try:
                r = read_response(sock)
                assert not r.complete and r.header("X-Cache") == "MISS"
            except NoResponse:
                pass  # the reset overtook the head: nothing to check but the count below
    assert upstream_calls(upstream) == before + 2


# -- counters --------------------------------------------------------------------------------------


def test_hits_and_misses_are_counted_per_route(make_gateway: Make, upstream: int, zone: str) -> None:
    gw = make_gateway(cached(upstream, zone))

    def counts() -> dict[str, float]:
        samples = samples_by(gw.call(gw.gateway.collect), "fastgw_cache_requests_total")
        return {
            dict(labels)["result"]: value for labels, value in samples.items() if ("route", "r") in labels
        }

    before = counts()
    target = f"/cache/counted?{cc('max-age=60')}"
    for headers in ([], [], [], [("Authorization", "Basic eDp5")]):
        get(gw, target, headers)
    after = counts()
    assert {k: after.get(k, 0) - before.get(k, 0) for k in ("hit", "miss", "bypass", "stale")} == {
        "hit": 2,
        "miss": 1,
        "bypass": 1,
        "stale": 0,
    }


# -- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[ProcessReaper]:
    with reaper(report=False) as procs:
        yield procs


def in_redis(upstream: int, url: str, prefix: str) -> dict[str, Any]:
    options = {"url": url, "timeout": "250ms", "retry_interval": "200ms", "prefix": prefix}
    return cached(upstream, "unused", redis=options)


def keys_in_redis(url: str, pattern: bytes, at_least: int) -> list[bytes]:
    """The keys matching ``pattern``, once there are ``at_least`` (the cache writes in the background)."""
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 5
        while len(keys := client.keys(pattern)) < at_least:
            assert time.monotonic() < deadline, f"fewer than {at_least} keys {pattern!r} ever reached Redis"
            time.sleep(0.02)
        return keys
    finally:
        client.close()


def test_gateways_share_the_redis_cache(
    make_gateway: Make, upstream: int, processes: ProcessReaper, zone: str
) -> None:
    server = RedisServer(processes).start()
    one, two = (make_gateway(in_redis(upstream, server.url, zone)) for _ in range(2))
    target = f"/cache/redis?{cc('max-age=60')}&vary=Accept"
    first = get(one, target, [("Accept", "text/plain")])
    keys_in_redis(server.url, zone.encode() + b"*", 2)  # the VaryRecord and the variant
    before = upstream_calls(upstream)
    hit = get(two, target, [("Accept", "text/plain")])
    assert (first.header("X-Cache"), hit.header("X-Cache"), hit.body) == ("MISS", "HIT", first.body)
    assert upstream_calls(upstream) == before
    assert get(two, target, [("Accept", "application/json")]).header("X-Cache") == "MISS"


def test_an_unsafe_request_through_one_gateway_invalidates_the_redis_entries_for_all(
    make_gateway: Make, upstream: int, processes: ProcessReaper, zone: str
) -> None:
    server = RedisServer(processes).start()
    one, two = (make_gateway(in_redis(upstream, server.url, zone)) for _ in range(2))
    target = f"/cache/redis-changed?{cc('max-age=60')}&vary=Accept"
    accepts = ([("Accept", "text/plain")], [("Accept", "text/html")])
    filled = [get(one, target, accept).json()["n"] for accept in accepts]
    keys_in_redis(server.url, zone.encode() + b"*[^\x1d]", 3)  # the VaryRecord, the two variants
    assert [get(two, target, accept).json()["n"] for accept in accepts] == filled  # hits
    changed = get(two, target, method="PUT").json()["n"]
    # Gateway two waits for its own invalidation before it looks the URI up again.
    after = [get(two, target, accept) for accept in accepts]
    assert [r.header("X-Cache") for r in after] == ["MISS", "MISS"]
    assert all(r.json()["n"] > changed for r in after)
    # For gateway one the old entries are gone too: whatever it answers is newer than the PUT.
    assert all(get(one, target, accept).json()["n"] > changed for accept in accepts)


def test_a_redis_purge_by_prefix_counts_entries_and_takes_the_uri_indexes_too(
    make_gateway: Make, upstream: int, processes: ProcessReaper, zone: str
) -> None:
    server = RedisServer(processes).start()
    gw = make_gateway(in_redis(upstream, server.url, zone))
    target = f"/cache/redis-purged?{cc('max-age=60')}&vary=Accept"
    for accept in ("text/plain", "text/html"):
        get(gw, target, [("Accept", accept)])
    keys_in_redis(server.url, zone.encode() + b"*", 4)  # the VaryRecord, two variants, the URI's index
    cache = cache_of(gw)
    assert isinstance(cache, RedisCache)
    purge = cache.remote.purge(prefix=b"test.local/cache/redis-purged")
    assert asyncio.run_coroutine_threadsafe(purge, gw.loop).result(10) == 3
    assert keys_in_redis(server.url, zone.encode() + b"*", 0) == []


def test_redis_down_means_misses_logged_once(
    make_gateway: Make, upstream: int, processes: ProcessReaper, zone: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(processes).start()
    gw = make_gateway(in_redis(upstream, server.url, zone))
    caplog.set_level(logging.WARNING, logger="fastgw")
    target = f"/cache/redis-down?{cc('max-age=60')}"
    get(gw, target)
    server.kill()
    before = upstream_calls(upstream)
    during = [get(gw, target) for _ in range(10)]  # each answered (read_response times out otherwise)
    assert {(r.status, r.header("X-Cache")) for r in during} == {(200, "MISS")}
    assert upstream_calls(upstream) == before + 10
    warnings = [r.getMessage() for r in caplog.records if "cache store" in r.getMessage()]
    assert len(warnings) == 1 and "unavailable" in warnings[0]
