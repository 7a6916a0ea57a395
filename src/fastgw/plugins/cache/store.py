"""What the cache keeps, and the per-process store bounded by bytes.

Under a base key the store holds either an ``Entry`` (the response did not vary) or a
``VaryRecord`` naming the request headers the response varies by; the entries themselves then
live under variant keys (``key.variant_key``). A lookup is one dict get, two for a varying
response. (Both are C classes, in ``hits.pyx``, where the common hit reads them.)

``MemoryStore`` is a least-recently-used dict bounded by the bytes its entries hold (body,
headers, key, and a fixed overhead per entry for the objects around them): storing past
``max_bytes`` evicts from the least recently used end. Stores are *zones* named in the config and
shared per process (``zone_for``), so routes naming one zone share it, and a reload keeps the
entries (with the new size). Expired entries are dropped when looked up, or pushed out by newer
ones like any other. One event loop per process uses them: no locking.

Each zone also indexes its keys by URI key (``key.uri_of``), so ``invalidate`` drops every entry
of a URI (header selections and variants) in O(its entries), not a scan of the zone: it runs on
the request path, after every successful unsafe request.

Times are wall-clock seconds (``time.time()``), because Redis entries are shared by processes
and machines.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeAlias

from fastgw.plugins.cache.hits import ENTRY_OVERHEAD, Entry, VaryRecord
from fastgw.plugins.cache.key import purge_matches, uri_of

__all__ = ["ENTRY_OVERHEAD", "ZONES", "Entry", "MemoryStore", "Stored", "VaryRecord", "zone_for"]

Stored: TypeAlias = Entry | VaryRecord


class MemoryStore:
    """One zone: LRU entries bounded by ``max_bytes`` (see the module docstring)."""

    __slots__ = ("by_uri", "entries", "max_bytes", "name", "size")

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, Stored] = OrderedDict()
        self.by_uri: dict[bytes, set[bytes]] = {}  # URI key -> the keys held under it
        self.size = 0  # bytes counted for the entries held

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes, now: float) -> Stored | None:
        """What is stored under ``key`` and still servable (fresh or stale-while-revalidate)."""
        found = self.entries.get(key)
        if found is None:
            return None
        if found.stale_until <= now:
            self._remove(key)
            return None
        self.entries.move_to_end(key)  # PERF: O(1) in C; keeps the LRU order
        return found

    def put(self, key: bytes, value: Stored) -> bool:
        """Store ``value`` (replacing what ``key`` held); False when it is larger than the zone."""
        size = len(key) + value.size
        if size > self.max_bytes:
            return False
        if key in self.entries:
            self._remove(key)
        self.entries[key] = value
        self.size += size
        uri = uri_of(key)
        keys = self.by_uri.get(uri)
        if keys is None:
            keys = self.by_uri[uri] = set()
        keys.add(key)
        self._fit()
        return True

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._fit()

    def purge(self, base: bytes | None = None, prefix: bytes | None = None) -> int:
        """Remove the entries of base key ``base`` or every key under ``prefix``; how many."""
        doomed = [key for key in self.entries if purge_matches(key, base, prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def invalidate(self, uri: bytes) -> int:
        """Remove every entry under URI key ``uri``; how many."""
        keys = self.by_uri.get(uri)
        if not keys:
            return 0
        doomed = list(keys)
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _fit(self) -> None:
        while self.size > self.max_bytes:
            self._remove(next(iter(self.entries)))  # the least recently used

    def _remove(self, key: bytes) -> None:
        value = self.entries.pop(key)
        self.size -= len(key) + value.size
        uri = uri_of(key)
        keys = self.by_uri[uri]
        keys.discard(key)
        if not keys:
            del self.by_uri[uri]


ZONES: dict[str, MemoryStore] = {}


def zone_for(name: str, max_bytes: int) -> MemoryStore:
    """The process's zone of that name, made or resized to ``max_bytes``."""
    zone = ZONES.get(name)
    if zone is None:
        zone = ZONES[name] = MemoryStore(name, max_bytes)
    elif zone.max_bytes != max_bytes:
        zone.resize(max_bytes)
    return zone
