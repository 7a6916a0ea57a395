"""The cluster-wide rate limit against a real redis-server: the Lua scripts do the local
limiters' arithmetic, gateways share one limit, NOSCRIPT is survived, and while Redis is gone
each limit keeps its failure policy (logged once), then recovers when Redis is back."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from fastgw.plugins.ratelimit.algorithms import SlidingWindow, TokenBucket
from fastgw.plugins.ratelimit.redis_store import SCRIPTS
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.procs import ProcessReaper, reaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.redis_server import RedisServer

Make = Callable[..., RunningGateway]
READ_TIMEOUT = 5.0  # a request that takes longer than this hangs, as far as these tests go


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with reaper(report=False) as procs:
        yield RedisServer(procs).start()


@pytest.fixture
def processes() -> Iterator[ProcessReaper]:
    with reaper(report=False) as procs:
        yield procs


def limited(upstream: int, url: str, **options: Any) -> dict[str, Any]:
    limit = {"name": "rate_limit", "policy": "shared", "window": 60, "key": "ip", **options}
    redis_options = {"url": url, "timeout": "250ms", "retry_interval": "200ms", **options.pop("redis", {})}
    limit.pop("redis", None)
    routes = [
        {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{**limit, "redis": redis_options}]}
    ]
    return gateway_config(upstream, routes=routes)


def get(gw: RunningGateway) -> RawResponse:
    with connect(gw.port, timeout=READ_TIMEOUT) as sock:
        sock.sendall(build_request("GET", "/echo"))
        return read_response(sock, timeout=READ_TIMEOUT)


def statuses(gw: RunningGateway, n: int) -> list[int]:
    return [get(gw).status for _ in range(n)]


# -- the scripts do the local arithmetic -------------------------------------------------------------

# (seconds, hits) steps exercising bursts, refill, window edges and long silences.
STEPS = [(0.0, 4), (0.5, 1), (1.0, 2), (2.5, 1), (9.999, 3), (10.0, 2), (13.0, 3), (15.0, 4), (40.0, 5)]


@pytest.mark.parametrize(
    ("algorithm", "local"), [("token_bucket", TokenBucket), ("sliding_window", SlidingWindow)]
)
def test_lua_scripts_agree_with_the_local_limiters(
    redis_server: RedisServer, algorithm: str, local: type[TokenBucket | SlidingWindow]
) -> None:
    limit, window = 3, 10
    limiter = local(limit, float(window))
    client = redis.Redis.from_url(redis_server.url)
    start = 1_000_000_000_000  # ms; a multiple of the window, as the local clock's 0 is
    try:
        for seconds, n in STEPS:
            for _ in range(n):
                remaining = limiter.hit("k", seconds)
                wait = limiter.retry_in("k", seconds) if remaining < 0 else limiter.reset_in("k", seconds)
                got = client.eval(
                    SCRIPTS[algorithm].source, 1, "k", limit, window * 1000, start + int(seconds * 1000)
                )
                assert got[0] == remaining, (seconds, got)
                assert abs(got[1] - wait * 1000) <= 1, (seconds, got, wait)
    finally:
        client.close()


# -- through the gateway -----------------------------------------------------------------------------


def test_gateways_share_one_limit_through_redis(
    make_gateway: Make, upstream: int, redis_server: RedisServer
) -> None:
    document = limited(upstream, redis_server.url, limit=4)
    one, two = make_gateway(document), make_gateway(document)
    assert statuses(one, 2) + statuses(two, 2) == [200] * 4
    refused = get(two)
    assert refused.status == 429 and refused.header("Retry-After")
    assert refused.header("RateLimit-Policy") == '"shared";q=4;w=60'
    assert (refused.header("RateLimit") or "").startswith('"shared";r=0;t=')
    assert get(one).status == 429


def test_a_flushed_script_cache_is_refilled(
    make_gateway: Make, upstream: int, redis_server: RedisServer
) -> None:
    gw = make_gateway(limited(upstream, redis_server.url, limit=3, algorithm="token_bucket"))
    client = redis.Redis.from_url(redis_server.url)
    try:
        first = get(gw)  # a fresh server: EVALSHA says NOSCRIPT, EVAL runs and caches it
        assert first.status == 200 and (first.header("RateLimit") or "").startswith('"shared";r=2;')
        client.script_flush()
        assert statuses(gw, 3) == [200, 200, 429]  # the same counter, script sent again
        assert client.script_exists(SCRIPTS["token_bucket"].sha) == [True]
    finally:
        client.close()


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "fastgw" and "rate limit store" in r.getMessage()
    ]


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
def test_redis_down_keeps_the_policy_then_recovers(
    make_gateway: Make,
    upstream: int,
    processes: ProcessReaper,
    caplog: pytest.LogCaptureFixture,
    policy: str,
    status: int,
) -> None:
    server = RedisServer(processes).start()
    gw = make_gateway(limited(upstream, server.url, limit=2, redis={"on_error": policy}))
    caplog.set_level(logging.WARNING, logger="fastgw")
    assert statuses(gw, 3) == [200, 200, 429]

    server.kill()
    during = [get(gw) for _ in range(20)]  # each answered within READ_TIMEOUT, or get() raises
    assert [r.status for r in during] == [status] * 20
    assert all(r.header("RateLimit") is None for r in during)  # nothing was counted
    if policy == "closed":
        assert during[0].json()["error"] == "rate limit store unavailable"
    assert len(outage_warnings(caplog)) == 1  # once per outage, not per request

    server.start()  # empty again: the next window starts from zero
    deadline = time.monotonic() + 10  # the store retries every 200 ms
    r = get(gw)
    while r.header("RateLimit") is None and time.monotonic() < deadline:
        time.sleep(0.05)
        r = get(gw)
    assert r.status == 200 and (r.header("RateLimit") or "").startswith('"shared";r=1;')
    assert statuses(gw, 2) == [200, 429]
    warnings = outage_warnings(caplog)
    assert len(warnings) == 2 and "reachable again" in warnings[1], warnings


def test_a_stalled_redis_times_out_into_the_policy(
    make_gateway: Make, upstream: int, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that accepts but never answers (stopped) costs the command timeout, not a hang."""
    gw = make_gateway(limited(upstream, redis_server.url, limit=5, redis={"on_error": "closed"}))
    caplog.set_level(logging.WARNING, logger="fastgw")
    assert get(gw).status == 200
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        stalled = [get(gw) for _ in range(5)]  # get() raises if one takes READ_TIMEOUT
        assert [r.status for r in stalled] == [503] * 5
        assert "TimeoutError" in outage_warnings(caplog)[0]
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
