"""One rate limit shared through Redis by two ``fastgw run --workers 2`` gateways, under 50
concurrent clients: the admitted count is the limit (within 1%), and with Redis killed mid-load
each limit keeps its failure policy without a request hanging, then counts again once Redis is
back.

The limit (500 per 60 s window) is far above what one window's worth of this load could sneak
past a broken counter, and the window far longer than the load takes, so every request here
falls in one window: the sliding window admits exactly 500, the token bucket (500 per hour)
500 plus the odd token refilled meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import aiohttp
import pytest

from tests.e2e.conftest import GatewayProc, RunGateway, Upstream, gateway_doc
from tests.support.procs import ProcessReaper
from tests.support.redis_server import RedisServer

CLIENTS = 50
TIMEOUT = aiohttp.ClientTimeout(total=5)  # a request slower than this counts as hung: the test fails


class Answer(NamedTuple):
    status: int
    counted: bool  # it carries a RateLimit field
    marked: bool  # the marker said so when it was sent


@pytest.fixture
def redis_server(procs: ProcessReaper) -> Iterator[RedisServer]:
    yield RedisServer(procs).start()


def limit(policy: str, url: str, **options: Any) -> dict[str, Any]:
    redis = {"url": url, "timeout": "250ms", "retry_interval": "200ms", **options.pop("redis", {})}
    return {"name": "rate_limit", "policy": policy, "key": "ip", "redis": redis, **options}


def two_gateways(
    run_gateway: RunGateway, upstream: Upstream, routes: list[dict[str, Any]]
) -> list[GatewayProc]:
    return [run_gateway(gateway_doc(upstream.port, routes), workers=2) for _ in range(2)]


async def load(
    gateways: list[GatewayProc],
    path: str,
    total: int,
    on_answer: Callable[[int], None] | None = None,
    marker: Callable[[], bool] | None = None,
) -> list[Answer]:
    """``total`` GETs of ``path`` from CLIENTS concurrent clients, alternating between gateways,
    in completion order. ``marker()`` is asked as each request is sent, ``on_answer(n)`` told
    each time one more is answered."""
    answers: list[Answer] = []
    queue = iter(range(total))
    urls = [f"http://127.0.0.1:{gw.port}{path}" for gw in gateways]

    async def client(session: aiohttp.ClientSession) -> None:
        for i in queue:
            marked = marker() if marker is not None else False
            async with session.get(urls[i % len(urls)]) as response:
                await response.read()
                answers.append(Answer(response.status, "RateLimit" in response.headers, marked))
            if on_answer is not None:
                on_answer(len(answers))

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    return answers


def test_two_gateways_of_two_workers_admit_the_limit(
    run_gateway: RunGateway, upstream_proc: Upstream, redis_server: RedisServer
) -> None:
    routes = [
        {
            "id": "sw",
            "path": "/echo/sw",
            "upstream": "up",
            "plugins": [limit("sw", redis_server.url, limit=500, window=60)],
        },
        {
            "id": "tb",
            "path": "/echo/tb",
            "upstream": "up",
            "plugins": [limit("tb", redis_server.url, limit=500, window=3600, algorithm="token_bucket")],
        },
    ]
    gateways = two_gateways(run_gateway, upstream_proc, routes)
    for path in ("/echo/sw", "/echo/tb"):
        statuses = Counter(a.status for a in asyncio.run(load(gateways, path, 1000)))
        assert set(statuses) == {200, 429}, statuses
        assert 495 <= statuses[200] <= 505, (path, statuses)


def test_redis_killed_mid_load_keeps_each_policy_and_recovers(
    run_gateway: RunGateway, upstream_proc: Upstream, redis_server: RedisServer
) -> None:
    routes = [
        {
            "id": "open",
            "path": "/echo/open",
            "upstream": "up",
            "plugins": [limit("open", redis_server.url, limit=10**6, window=60)],
        },
        {
            "id": "closed",
            "path": "/echo/closed",
            "upstream": "up",
            "plugins": [
                limit("closed", redis_server.url, limit=10**6, window=60, redis={"on_error": "closed"})
            ],
        },
    ]
    gateways = two_gateways(run_gateway, upstream_proc, routes)

    async def kill_mid_load(path: str) -> list[Answer]:
        """800 requests; Redis is killed after the 100th answer. Requests sent once the kill
        returned are marked: their answers must follow the policy."""
        killed = asyncio.Event()
        tasks = []

        async def kill() -> None:
            await asyncio.to_thread(redis_server.kill)
            killed.set()

        def on_answer(answered: int) -> None:
            if answered == 100:
                tasks.append(asyncio.get_running_loop().create_task(kill()))

        return await load(gateways, path, 800, on_answer, killed.is_set)

    for path, policy_status in (("/echo/open", 200), ("/echo/closed", 503)):
        answers = asyncio.run(kill_mid_load(path))
        assert len(answers) == 800  # every request answered within TIMEOUT, none hung
        assert {a.status for a in answers} <= {200, policy_status}
        after = [a for a in answers if a.marked]
        assert len(after) > 100, len(after)
        assert {a.status for a in after} == {policy_status}, Counter(after)
        assert not any(a.counted for a in after), (path, Counter(after))  # nothing counted without Redis
        redis_server.start()

    # back: every worker of both gateways counts in Redis again after its next probe

    async def recovered() -> bool:
        for _ in range(100):
            results = await load(gateways, "/echo/closed", 200)
            if all(a.status == 200 and a.counted for a in results):
                return True
            await asyncio.sleep(0.1)
        return False

    assert asyncio.run(recovered())
    for gw in gateways:  # logged once per outage in each worker, not once per request
        log = gw.proc.stderr()
        assert 1 <= log.count("rate limit store") <= 2 * 2 * 2, log  # 2 outages x (down, back) x 2 workers
