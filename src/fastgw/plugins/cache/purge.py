"""Purging from the admin side: every cache this process holds, by base key or by key prefix.

The admin API calls ``purge_entries`` in each worker (``server/control.py``): the memory zones
are per process, so every worker purges its own; a Redis cache is purged by each worker too,
which costs a few idempotent commands and counts each removed key once (``UNLINK`` reports only
what it removed).
"""

from __future__ import annotations

from typing import Any, Protocol

from fastgw.plugins.cache.store import ZONES


class RemoteStore(Protocol):
    async def purge(self, base: bytes | None = None, prefix: bytes | None = None) -> int: ...


class RemoteUnavailable(Exception):
    """A remote store could not purge; its message names the store."""


# The Redis caches this process made, by (redacted URL, prefix); ``cache.remote`` registers them.
REMOTE_STORES: dict[tuple[str, bytes], RemoteStore] = {}


async def purge_entries(key: str | None = None, prefix: str | None = None) -> dict[str, Any]:
    """Remove base key ``key`` (with its header selections and variants) or everything under
    ``prefix``: ``{"purged": n, "errors": [...]}`` (a Redis cache that could not be reached)."""
    base = key.encode() if key is not None else None
    start = prefix.encode() if prefix is not None else None
    purged = sum(zone.purge(base, start) for zone in ZONES.values())
    errors = []
    for (where, _), remote in list(REMOTE_STORES.items()):
        try:
            purged += await remote.purge(base, start)
        except RemoteUnavailable as exc:
            errors.append(f"{where}: {exc}")
    return {"purged": purged, "errors": errors}
