"""The per-process limiters: token bucket and sliding window, over one dict of key -> state.

Both allow ``limit`` requests per ``window`` seconds for each key. ``now`` is passed in (the
plugin passes the process's coarse clock; tests pass their own), so the arithmetic is exact and
testable. A hit is one dict lookup and a few float operations on a small list updated in place;
the only allocation is the key itself (made by the caller) and a key's state when it is new.

- **Token bucket**: ``limit`` tokens at most, refilled continuously at ``limit / window`` per
  second; a request takes one. Bursts up to ``limit``, then a steady rate.
- **Sliding window** (the weighted two-window counter): windows are aligned to multiples of
  ``window``; a request is admitted while ``previous * (1 - elapsed / window) + current`` stays
  within ``limit``. Exact in the first window, a close approximation of a true sliding log after,
  at two numbers per key.

Memory is bounded by ``max_keys``: when a new key would exceed it, idle keys (a full bucket, a
window with nothing left to count) are dropped, then the oldest ones until a quarter is free, so
the sweep's cost is spread over many inserts.

``hit`` answers the requests left after this one, or -1 when it is refused. ``reset_in`` and
``retry_in`` say, for the headers, how long until the key's quota is whole again (bucket full,
window over) and how long until a refused key is admitted again.

The Redis scripts in ``redis_store`` implement the same arithmetic on the server.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

DEFAULT_MAX_KEYS = 100_000


class LocalLimiter:
    """Shared bookkeeping; subclasses define the arithmetic."""

    __slots__ = ("limit", "max_keys", "states", "window")

    def __init__(self, limit: int, window: float, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.states: dict[Hashable, list[float]] = {}

    def hit(self, key: Hashable, now: float) -> int:
        raise NotImplementedError

    def reset_in(self, key: Hashable, now: float) -> float:
        raise NotImplementedError

    def retry_in(self, key: Hashable, now: float) -> float:
        raise NotImplementedError

    def is_idle(self, state: list[float], now: float) -> bool:
        """Would forgetting this state change no answer?"""
        raise NotImplementedError

    def make_room(self, now: float) -> None:
        states = self.states
        for key in [k for k, state in states.items() if self.is_idle(state, now)]:
            del states[key]
        excess = len(states) - self.max_keys * 3 // 4
        if excess > 0:  # still busy: forget the oldest keys (dicts keep insertion order)
            for key in list(states)[:excess]:
                del states[key]


class TokenBucket(LocalLimiter):
    """State per key: [tokens, time of the last update]."""

    __slots__ = ()

    def hit(self, key: Hashable, now: float) -> int:
        state = self.states.get(key)
        if state is None:
            if len(self.states) >= self.max_keys:
                self.make_room(now)
            self.states[key] = [self.limit - 1.0, now]
            return self.limit - 1
        tokens = state[0] + (now - state[1]) * self.limit / self.window
        if tokens > self.limit:
            tokens = self.limit
        state[1] = now
        if tokens < 1.0:
            state[0] = tokens
            return -1
        state[0] = tokens - 1.0
        return int(tokens - 1.0)

    def _tokens(self, key: Hashable, now: float) -> float:
        state = self.states.get(key)
        if state is None:
            return float(self.limit)
        return min(float(self.limit), state[0] + (now - state[1]) * self.limit / self.window)

    def reset_in(self, key: Hashable, now: float) -> float:
        return (self.limit - self._tokens(key, now)) * self.window / self.limit

    def retry_in(self, key: Hashable, now: float) -> float:
        return max(0.0, (1.0 - self._tokens(key, now)) * self.window / self.limit)

    def is_idle(self, state: list[float], now: float) -> bool:
        return state[0] + (now - state[1]) * self.limit / self.window >= self.limit


class SlidingWindow(LocalLimiter):
    """State per key: [number of the current window, previous window's count, current count]."""

    __slots__ = ()

    def hit(self, key: Hashable, now: float) -> int:
        window = self.window
        index = now // window  # windows are numbered, not compared by float start times
        state = self.states.get(key)
        if state is None:
            if len(self.states) >= self.max_keys:
                self.make_room(now)
            state = self.states[key] = [index, 0.0, 0.0]
        elif state[0] != index:
            # PERF: roll over in place: the current count becomes the previous one only when
            # the windows are adjacent; after a longer silence both are zero.
            state[1] = state[2] if index - state[0] == 1.0 else 0.0
            state[2] = 0.0
            state[0] = index
        used = state[1] * (1.0 - (now - index * window) / window) + state[2]
        if used + 1.0 > self.limit:
            return -1
        state[2] += 1.0
        return int(self.limit - used - 1.0)

    def _counts(self, key: Hashable, now: float) -> tuple[float, float, float]:
        """(window start, previous count, current count) as ``hit`` would see them at ``now``."""
        index = now // self.window
        start = index * self.window
        state = self.states.get(key)
        if state is None or index - state[0] > 1.0:
            return start, 0.0, 0.0
        if state[0] != index:
            return start, state[2], 0.0
        return start, state[1], state[2]

    def reset_in(self, key: Hashable, now: float) -> float:
        return (now // self.window + 1.0) * self.window - now

    def retry_in(self, key: Hashable, now: float) -> float:
        return sliding_retry_in(*self._counts(key, now), self.limit, self.window, now)

    def is_idle(self, state: list[float], now: float) -> bool:
        return now // self.window - state[0] > 1.0


def sliding_retry_in(
    start: float, previous: float, current: float, limit: int, window: float, now: float
) -> float:
    """Seconds from ``now`` until ``previous * weight + current + 1 <= limit`` holds again.

    While the current count leaves room, only the previous window's weight has to fall; else it
    takes the next window, where the current count becomes the decaying previous one.
    """
    if current + 1.0 <= limit:
        if previous <= 0.0:
            return 0.0
        elapsed = window * (1.0 - (limit - 1.0 - current) / previous)
        return max(0.0, start + elapsed - now)
    elapsed = window * (1.0 - (limit - 1.0) / current) if current > 0 else 0.0
    return start + window + max(0.0, elapsed) - now


def whole_seconds(seconds: float) -> int:
    """A delay in whole seconds, rounded up (a client that waits that long is not early)."""
    return max(0, math.ceil(seconds - 1e-9))
