"""The auth plugins' decision cache: per-entry expiry and a count bound, on a fake clock."""

from __future__ import annotations

import pytest

from fastgw.plugins._ttlcache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entry_lives_exactly_its_own_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.put("short", 1, 5)
    cache.put("long", 2, 50)
    clock.now += 4.999
    assert cache.get("short") == 1
    clock.now += 0.001
    assert cache.get("short") is None
    assert len(cache) == 1  # the expired entry was dropped when looked up
    assert cache.get("long") == 2


def test_least_recently_used_goes_first_when_full() -> None:
    cache: TTLCache[str, int] = TTLCache(2, Clock())
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3, 60)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)


def test_put_again_replaces_value_and_deadline() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2, clock)
    cache.put("a", 1, 1)
    cache.put("a", 2, 10)
    clock.now += 5
    assert cache.get("a") == 2


def test_ttl_of_zero_or_less_stores_nothing_and_forgets() -> None:
    cache: TTLCache[str, int] = TTLCache(2, Clock())
    cache.put("a", 1, 60)
    cache.put("a", 2, 0)
    assert cache.get("a") is None
    cache.put("b", 1, -3)
    assert len(cache) == 0


def test_needs_room_for_one_entry() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(0)
