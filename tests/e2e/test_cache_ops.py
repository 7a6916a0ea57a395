"""The response cache with ``fastgw run``: ``POST /cache/purge`` on the admin API reaches the
memory zone of every worker (``--workers 2``), by key and by prefix; two gateway processes share
one Redis cache, and a purge through either one's admin API empties it for both; an unsafe
request's success invalidates the Redis entries of its URI for every worker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis

from tests.e2e.conftest import RunGateway, Upstream, gateway_doc, wait_for
from tests.support.ports import free_port, wait_for_port
from tests.support.procs import reaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.redis_server import RedisServer

MAX_AGE = "cc=" + quote("max-age=60")
HOST = "test.local"  # build_request's Host: the first part of every key


def cache_doc(upstream: Upstream, **cache: Any) -> tuple[dict[str, Any], int]:
    admin_port = free_port()
    doc = gateway_doc(upstream.port, [{"id": "r", "path": "/{*rest}", "upstream": "up"}])
    doc["routes"][0]["plugins"] = [{"name": "cache", **cache}]
    doc["admin"] = {"bind": f"127.0.0.1:{admin_port}"}
    return doc, admin_port


def get(port: int, target: str, method: str = "GET") -> RawResponse:
    with connect(port) as sock:  # a new connection each time: the kernel picks the worker
        sock.sendall(build_request(method, target, [("Connection", "close")]))
        return read_response(sock)


def purge(admin_port: int, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/cache/purge", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fill_every_worker(port: int, target: str, workers: int) -> None:
    """Ask until each worker stored its own copy (each copy has its own upstream count ``n``)."""
    seen: set[int] = set()
    for _ in range(400):
        seen.add(get(port, target).json()["n"])
        if len(seen) == workers:
            return
    raise AssertionError(f"{target}: the requests reached {len(seen)} of {workers} workers")


def test_purge_by_key_and_prefix_reaches_every_worker(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    doc, admin_port = cache_doc(upstream_proc, zone="ops")
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)
    targets = [f"/cache/{name}?{MAX_AGE}" for name in ("one", "pre-a", "pre-b", "other")]
    for target in targets:
        fill_every_worker(gw.port, target, 2)

    assert purge(admin_port, json.dumps({"key": HOST + targets[0]}).encode()) == (
        200,
        {"ok": True, "purged": 2},
    )
    assert get(gw.port, targets[0]).header("X-Cache") == "MISS"
    assert purge(admin_port, json.dumps({"prefix": f"{HOST}/cache/pre-"}).encode()) == (
        200,
        {"ok": True, "purged": 4},
    )
    assert get(gw.port, targets[1]).header("X-Cache") == "MISS"
    assert get(gw.port, targets[2]).header("X-Cache") == "MISS"
    assert get(gw.port, targets[3]).header("X-Cache") == "HIT"  # not under the prefix

    for bad in (b"not json", b"[]", b"{}", b'{"key": ""}', b'{"key": "a", "prefix": "b"}', b'{"keys": "a"}'):
        status, answer = purge(admin_port, bad)
        assert status == 400 and answer["ok"] is False and '{"key"' in answer["error"], bad


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with reaper(report=False) as procs:
        yield RedisServer(procs).start()


def test_two_gateways_share_the_redis_cache_and_its_purge(
    run_gateway: RunGateway, upstream_proc: Upstream, redis_server: RedisServer
) -> None:
    shared = {"url": redis_server.url, "prefix": "e2e:"}
    doc_one, admin_one = cache_doc(upstream_proc, redis=shared)
    doc_two, _ = cache_doc(upstream_proc, redis=shared)
    one, two = run_gateway(doc_one), run_gateway(doc_two)
    wait_for_port(admin_one)
    target = f"/cache/shared?{MAX_AGE}"
    first = get(one.port, target)
    client = redis.Redis.from_url(redis_server.url)
    try:  # stored in the background: wait for it in Redis, so gateway two's first ask is a hit
        wait_for(lambda: client.exists(b"e2e:" + (HOST + target).encode()), 5, "the entry in Redis")
    finally:
        client.close()
    hit = get(two.port, target)
    assert (first.header("X-Cache"), hit.header("X-Cache"), hit.body) == ("MISS", "HIT", first.body)

    assert purge(admin_one, json.dumps({"key": HOST + target}).encode()) == (200, {"ok": True, "purged": 1})
    assert get(two.port, target).header("X-Cache") == "MISS"

    redis_server.kill()  # the purge cannot be done: said so, with the store named
    status, answer = purge(admin_one, json.dumps({"prefix": HOST}).encode())
    assert status == 503 and answer["ok"] is False and redis_server.url in answer["error"]
    assert get(one.port, target).header("X-Cache") == "MISS"  # and requests still get answers


# RFC 9111 4.4 across workers: the Redis entries are every worker's, and so is their invalidation.
def test_an_unsafe_request_invalidates_the_redis_cache_of_every_worker(
    run_gateway: RunGateway, upstream_proc: Upstream, redis_server: RedisServer
) -> None:
    doc, _ = cache_doc(upstream_proc, redis={"url": redis_server.url, "prefix": "e2e-changed:"})
    gw = run_gateway(doc, workers=2)
    target = f"/cache/changed?{MAX_AGE}"
    filled = get(gw.port, target).json()["n"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_for(lambda: client.exists(b"e2e-changed:" + (HOST + target).encode()), 5, "the entry in Redis")
    finally:
        client.close()
    assert {get(gw.port, target).json()["n"] for _ in range(8)} == {filled}  # hits, in either worker

    changed = get(gw.port, target, "PUT").json()["n"]
    # The worker that took the PUT sent the invalidation; an answer newer than the PUT means
    # Redis ran it (the old entry is fresh for a minute), and from then on no worker has it.
    wait_for(lambda: get(gw.port, target).json()["n"] > changed, 5, "an answer newer than the PUT")
    assert all(get(gw.port, target).json()["n"] > changed for _ in range(8))
