"""Time for the hot path, the Date line, and a timer wheel per event loop (see _clock.pyx)."""

import asyncio
from typing import final

SLOT_SECONDS: float
"""The wheel's slot width: the most a deadline fires late, beside the event loop's own latency."""

def now() -> float:
    """The coarse monotonic clock deadlines and rate limits use (a few ms behind time.monotonic)."""

def hold(at: float | None) -> None:
    """Tests only: ``now()`` reads ``at`` until ``hold(None)``."""

def http_date(second: int) -> bytes:
    """``second`` (Unix time) as an IMF-fixdate, ``b"Sun, 06 Nov 1994 08:49:37 GMT"``."""

def current_date_line() -> bytes:
    """``b"Date: <IMF-fixdate>\\r\\n"`` for the current second."""

class Timed:
    """Something with a deadline filed on a wheel; ``expire`` runs when its slot fires."""

    def expire(self, now: float) -> None: ...

@final
class TimerWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None: ...
    @property
    def ticks(self) -> int:
        """Slots passed so far."""
    @property
    def wakeups(self) -> int:
        """Times the loop timer ran the wheel (once per first filled slot, not per slot)."""
    @property
    def pending(self) -> int:
        """Items filed."""

def running_wheel() -> TimerWheel:
    """The running event loop's wheel."""

def file(item: Timed, at: float) -> None:
    """Have ``item.expire(now)`` called once ``at`` has passed (within one slot)."""

def unfile(item: Timed) -> None:
    """Take ``item`` off the wheel: nothing is called, and the wheel no longer holds it."""
