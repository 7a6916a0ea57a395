"""A coarse clock and timeout sweeper: one timer per process instead of one per request.

PERF: arming a ``loop.call_later`` per request costs a TimerHandle allocation and heap work, twice
per request (head and keep-alive). Instead each connection stores a deadline (``clock.now`` +
timeout, a float) and a sweeper wakes every ``tick`` seconds to expire the ones past it. Timeouts
are therefore precise to one tick, which is plenty for slowloris, idle and pool timeouts.
The clock also renders the ``Date`` header line once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Protocol


class Expirable(Protocol):
    def check_deadline(self, now: float) -> None: ...


class Clock:
    """Process-wide coarse time, Date line and the set of objects with deadlines."""

    def __init__(self, tick: float = 0.25) -> None:
        self.tick = tick
        self.now = time.monotonic()
        self.date_line = b""
        self._date_second = -1
        self.watched: set[Expirable] = set()
        # Told the new time on each tick: the compiled hot path keeps its own C copy of ``now``.
        self.listeners: list[Callable[[float], None]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._update_date()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._advance()  # the clock may have stood still since import
        if self._handle is None:
            self._handle = loop.call_later(self.tick, self._sweep, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _advance(self) -> float:
        self.now = now = time.monotonic()
        for listener in self.listeners:
            listener(now)
        return now

    def _update_date(self) -> None:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self.date_line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self._advance()
        self._update_date()
        for item in list(self.watched):
            item.check_deadline(now)
        self._handle = loop.call_later(self.tick, self._sweep, loop)


CLOCK = Clock()
