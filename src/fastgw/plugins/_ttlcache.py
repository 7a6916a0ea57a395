"""A small cache for auth decisions: at most ``max_entries``, each entry with its own expiry.

Used by the plugins that ask another service whether a request may pass (forward_auth,
introspection). Bounded by count, least recently used evicted first, so a flood of distinct
credentials cannot grow memory; each entry carries its own deadline, because how long a decision
may be trusted differs per entry (a token's ``exp``, a shorter time for a refusal). Expired
entries are dropped when looked up, and pushed out by newer ones like any other.

One per plugin instance, used from one event loop: no locking.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Up to ``max_entries`` values, each valid until its own deadline on ``clock``."""

    __slots__ = ("_clock", "_entries", "max_entries")

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value stored under ``key`` if it has not expired, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        deadline, value = entry
        if self._clock() >= deadline:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds; a ttl of 0 or less stores nothing (and forgets
        what was stored under ``key``)."""
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
