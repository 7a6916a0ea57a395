"""The rate_limit hook on a fake exchange, with the process clock moved by hand: refill and window
roll-over as the client sees them (fields and Retry-After), without waiting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastgw.hooks import Response
from fastgw.http import _clock
from fastgw.plugins.ratelimit import RateLimit


@dataclass
class FakeExchange:
    client_ip: str = "192.0.2.1"
    consumer: str | None = None
    request_id: bytes = b"00000001"
    add_response_headers: list[tuple[bytes, bytes]] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)

    @property
    def client_address(self) -> bytes:
        return self.client_ip.encode()


def plugin(**options: Any) -> RateLimit:
    compiled = RateLimit.compile({"key": "ip", **options}, "plugins[0]")
    assert isinstance(compiled, RateLimit)
    return compiled


def fields(headers: list[tuple[bytes, bytes]] | None) -> dict[bytes, bytes]:
    return dict(headers or [])


class HeldClock:
    """The process clock, held at ``now`` and moved by hand."""

    def __init__(self, now: float) -> None:
        self._now = now
        _clock.hold(now)

    @property
    def now(self) -> float:
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        self._now = value
        _clock.hold(value)


@pytest.fixture
def clock() -> Iterator[HeldClock]:
    held = HeldClock(1000.0)
    yield held
    _clock.hold(None)


def test_bucket_refills_as_the_clock_moves(clock: Any) -> None:
    limit = plugin(policy="p", limit=2, window=2, algorithm="token_bucket")
    first, second = FakeExchange(), FakeExchange()
    assert limit.on_request(first) is None and limit.on_request(second) is None
    assert fields(first.add_response_headers)[b"RateLimit"] == b'"p";r=1;t=1'
    assert fields(second.add_response_headers)[b"RateLimit"] == b'"p";r=0;t=2'
    refused = limit.on_request(FakeExchange())
    assert isinstance(refused, Response) and refused.status == 429
    assert fields(refused.headers)[b"Retry-After"] == b"1"
    assert refused.body == b'{"error": "rate limit exceeded", "request_id": "00000001"}'
    clock.now += 1.0
    assert limit.on_request(FakeExchange()) is None


def test_sliding_window_rolls_over(clock: Any) -> None:
    limit = plugin(policy="p", limit=1, window=10, headers=["draft", "x"])
    assert limit.on_request(FakeExchange()) is None
    refused = limit.on_request(FakeExchange())
    assert isinstance(refused, Response)
    # 1000 is the start of a window: the next starts at 1010, where 1 still weighs fully
    assert fields(refused.headers)[b"Retry-After"] == b"20"
    assert fields(refused.headers)[b"X-RateLimit-Reset"] == b"20"
    clock.now += 20.0
    exchange = FakeExchange(add_response_headers=[(b"Set-Cookie", b"a=b")])
    assert limit.on_request(exchange) is None
    assert exchange.add_response_headers is not None and exchange.add_response_headers[0] == (
        b"Set-Cookie",
        b"a=b",
    )
    assert fields(exchange.add_response_headers)[b"RateLimit-Policy"] == b'"p";q=1;w=10'


def test_bypassed_clients_are_not_counted(clock: Any) -> None:
    limit = plugin(limit=1, window=60, bypass={"consumers": ["ops"], "ips": ["192.0.2.0/24"]})
    for _ in range(3):
        exchange = FakeExchange()
        assert limit.on_request(exchange) is None and exchange.add_response_headers is None
    assert limit.limiter.states == {}
    assert limit.on_request(FakeExchange(client_ip="198.51.100.1")) is None
    assert limit.on_request(FakeExchange(client_ip="198.51.100.1")) is not None
