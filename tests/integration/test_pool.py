"""Per-target pools against a real upstream: limits, waiters, cancellation, acquire timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import uvloop

from fastgw.config.schema import PoolConfig
from fastgw.errors import UpstreamFault
from fastgw.upstream.pool import PoolKey, TargetPool
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]


def run(coro_fn: Callable[[], object], loop_kind: str) -> None:
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro_fn())  # type: ignore[arg-type]
    finally:
        loop.close()


def test_waiter_gets_the_released_connection_and_a_cancelled_one_leaks_nothing(
    upstream: int, loop_kind: str
) -> None:
    async def scenario() -> None:
        pool = TargetPool(PoolKey("127.0.0.1", upstream, PoolConfig(max_connections=1, max_idle=1)))
        first = await pool.acquire(1.0)
        assert pool.open == 1 and pool.in_use == 1
        cancelled = pool.acquire(1.0)  # at the limit: a waiter
        waiting = pool.acquire(1.0)
        await asyncio.sleep(0)
        cancelled.cancel()
        first.reusable = True
        pool.release(first)
        second = await asyncio.wait_for(waiting, 1.0)
        assert second is first  # handed over, skipping the cancelled waiter
        second.reusable = True
        pool.release(second)
        assert pool.idle.items() == [first] and pool.in_use == 0 and pool.open == 1
        pool.close()

    run(scenario, loop_kind)


def test_the_last_connection_parked_is_taken_first_and_one_that_closes_leaves_the_idle_shelf(
    upstream: int, loop_kind: str
) -> None:
    async def scenario() -> None:
        pool = TargetPool(PoolKey("127.0.0.1", upstream, PoolConfig(max_connections=3, max_idle=3)))
        a, b, c = [await pool.acquire(1.0) for _ in range(3)]
        for conn in (a, b, c):
            conn.reusable = True
            pool.release(conn)
        assert pool.idle.items() == [a, b, c] and pool.in_use == 0
        assert pool.take_idle() is c and pool.take_idle() is b  # the warmest first
        assert pool.idle.items() == [a] and pool.in_use == 2
        a.close()  # closed while idle: the pool forgets it when its connection is lost
        for _ in range(100):
            if not pool.idle:
                break
            await asyncio.sleep(0.01)
        assert pool.idle.items() == [] and pool.take_idle() is None and pool.open == 2
        for conn in (b, c):
            pool.release(conn)
        assert pool.idle.items() == [b, c]
        pool.close()
        assert pool.idle.items() == [] and b.closed and c.closed

    run(scenario, loop_kind)


def test_acquire_times_out_with_503(upstream: int, loop_kind: str) -> None:
    async def scenario() -> None:
        config = PoolConfig(max_connections=1, max_idle=1, acquire_timeout=0.3)
        pool = TargetPool(PoolKey("127.0.0.1", upstream, config))
        held = await pool.acquire(1.0)
        with pytest.raises(UpstreamFault) as err:
            await asyncio.wait_for(pool.acquire(1.0), 3.0)
        assert err.value.status == 503
        held.reusable = False
        pool.release(held)
        pool.close()

    run(scenario, loop_kind)


def test_refused_connect_is_502_and_frees_the_slot(loop_kind: str) -> None:
    from tests.support.ports import free_port

    async def scenario() -> None:
        pool = TargetPool(PoolKey("127.0.0.1", free_port(), PoolConfig(max_connections=1, max_idle=1)))
        for _ in range(2):
            with pytest.raises(UpstreamFault) as err:
                await pool.acquire(1.0)
            assert err.value.status == 502
        assert pool.open == 0

    run(scenario, loop_kind)


def test_client_leaving_while_waiting_for_a_connection_leaks_nothing(
    make_gateway: Make, upstream: int
) -> None:
    doc = gateway_config(upstream)
    doc["upstreams"]["up"]["pool"] = {"max_connections": 1, "max_idle": 1}
    gw = make_gateway(doc)
    busy = connect(gw.port)
    busy.sendall(build_request("GET", "/slow/400"))
    time.sleep(0.1)
    quitter = connect(gw.port)
    quitter.sendall(build_request("GET", "/echo/never-waited-for"))
    time.sleep(0.1)
    quitter.close()  # leaves while queued for the only upstream connection
    assert read_response(busy).status == 200
    busy.close()
    # the one connection is back and serves the next clients
    results: list[int] = []

    def client() -> None:
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/echo/next"))
            results.append(read_response(sock).status)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [200, 200, 200]
    pool = next(iter(gw.plan.pools.values()))
    assert gw.call(lambda: (pool.open, pool.in_use)) == (1, 0)
