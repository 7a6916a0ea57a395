"""The cache in Redis, shared by every worker and gateway instance that names the same server.

Each stored value is one Redis string under ``prefix + key``, expiring (``PX``) when it stops
being servable, so Redis forgets entries by itself. An ``Entry`` is ``E``, one JSON line of its
fields, then the body as raw bytes; a ``VaryRecord`` is ``V`` and the header names joined by
commas. Header bytes go through latin-1, which maps every byte to one character and back.

Each key also goes into the set of its URI (``prefix + URI key + INDEX_SEP``), which lives as
long as the longest-lived key in it: an unsafe request's success invalidates the URI's entries
(RFC 9111 4.4) through that set, in one script, without a scan. Storing is a script too, so an
entry is never in Redis without its index.

Talking to Redis goes through ``plugins/_redis.py``'s ``RedisStore`` (a client per event loop, short
timeouts, one warning per outage, a pause before retrying): while Redis is down or slow, every
lookup is a miss and nothing is stored, and no request waits longer than the timeouts.
Purging by prefix walks the keys with ``SCAN`` (never ``KEYS``, which blocks the server); it is
an admin operation, so it gets its own, longer deadline and its failure is reported to the admin
caller instead of counting as an outage of the data path.
"""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio

from fastgw.plugins._redis import RedisStore, Script
from fastgw.plugins.cache.key import HEADERS_SEP, INDEX_SEP, VARIANT_SEP, uri_of
from fastgw.plugins.cache.purge import RemoteUnavailable
from fastgw.plugins.cache.store import Entry, Stored, VaryRecord

PURGE_TIMEOUT = 30.0

CACHE_ROLE = ("cache store", "lookups miss and nothing is stored")

# KEYS: the entry, its URI's index; ARGV: the value, its lifetime (ms).
PUT = Script(
    """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
"""
)

# KEYS: pairs of a URI's index and its URI key. Removes the indexed keys, the URI key (an entry
# stored before indexes were kept) and the index; returns how many keys went.
INVALIDATE = Script(
    """
local removed = 0
for i = 1, #KEYS, 2 do
  local doomed = redis.call('SMEMBERS', KEYS[i])
  table.insert(doomed, KEYS[i + 1])
  table.insert(doomed, KEYS[i])
  for j = 1, #doomed, 1000 do
    removed = removed + redis.call('UNLINK', unpack(doomed, j, math.min(j + 999, #doomed)))
  end
end
return removed
"""
)


def encode(value: Stored) -> bytes:
    if isinstance(value, VaryRecord):
        return b"V%r," % value.stale_until + b",".join(value.names)
    fields = [
        value.status,
        [[n.decode("latin-1"), v.decode("latin-1")] for n, v in value.headers],
        value.content_type.decode("latin-1"),
        value.stored_at,
        value.fresh_until,
        value.stale_until,
        value.initial_age,
    ]
    return b"E" + orjson.dumps(fields) + b"\n" + value.body


def decode(data: bytes) -> Stored | None:
    """The stored value, or None for bytes this version did not write."""
    try:
        if data[:1] == b"V":
            stale_until, _, names = data[1:].partition(b",")
            return VaryRecord(tuple(names.split(b",")) if names else (), float(stale_until))
        if data[:1] == b"E":
            line, _, body = data[1:].partition(b"\n")
            status, headers, content_type, stored_at, fresh_until, stale_until, age = orjson.loads(line)
            pairs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
            return Entry(
                status, pairs, content_type.encode("latin-1"), body, stored_at, fresh_until, stale_until, age
            )
    except (ValueError, TypeError):
        pass
    return None


def _glob_escape(prefix: bytes) -> bytes:
    """``prefix`` as a literal in a Redis glob pattern."""
    out = bytearray()
    for byte in prefix:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


class RedisCacheStore:
    """Entries under ``key_prefix`` on one Redis server (see the module docstring)."""

    __slots__ = ("key_prefix", "redis")

    def __init__(self, redis_store: RedisStore, key_prefix: bytes) -> None:
        self.redis = redis_store
        self.key_prefix = key_prefix

    def available(self) -> bool:
        return self.redis.available()

    async def get(self, key: bytes) -> Stored | None:
        """StoreUnavailable when Redis cannot answer."""

        async def command(client: redis.asyncio.Redis) -> bytes | None:
            data = await client.get(self.key_prefix + key)
            return data if isinstance(data, bytes) else None

        data = await self.redis.run(command)
        return None if data is None else decode(data)

    async def put(self, key: bytes, value: Stored, now: float) -> None:
        milliseconds = int((value.stale_until - now) * 1000)
        if milliseconds <= 0:
            return

        index = self.key_prefix + uri_of(key) + INDEX_SEP

        async def command(client: redis.asyncio.Redis) -> None:
            await PUT.run(client, (self.key_prefix + key, index), (encode(value), milliseconds))

        await self.redis.run(command)

    async def invalidate(self, uris: list[bytes]) -> int:
        """Remove every entry under these URI keys; how many Redis keys went (indexes too).
        StoreUnavailable when Redis cannot answer."""
        keys: list[bytes] = []
        for uri in uris:
            keys += (self.key_prefix + uri + INDEX_SEP, self.key_prefix + uri)

        async def command(client: redis.asyncio.Redis) -> int:
            return int(await INVALIDATE.run(client, keys, ()))

        return await self.redis.run(command)

    async def purge(self, base: bytes | None = None, prefix: bytes | None = None) -> int:
        """Remove base key ``base`` with its header selections and variants, or every key under
        ``prefix``; how many Redis keys went. RemoteUnavailable if Redis did not do it."""
        if prefix is not None:
            pattern = _glob_escape(self.key_prefix + prefix) + b"*"
            exact: list[bytes] = []
        else:
            assert base is not None
            full = self.key_prefix + base
            pattern = _glob_escape(full) + b"[" + HEADERS_SEP + VARIANT_SEP + b"]*"
            exact = [full]

        client = self.redis.client()
        try:
            async with asyncio.timeout(PURGE_TIMEOUT):
                return await self._unlink(client, exact, pattern)
        except Exception as exc:  # whatever the client raised: Redis did not do it
            raise RemoteUnavailable(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    async def _unlink(client: redis.asyncio.Redis, exact: list[bytes], pattern: bytes) -> int:
        removed = 0
        if exact:
            removed += int(await client.unlink(*exact))
        batch: list[bytes] = []
        async for found in client.scan_iter(match=pattern, count=500):
            batch.append(found)
            if len(batch) >= 500:
                removed += await _unlink_counting_entries(client, batch)
                batch.clear()
        if batch:
            removed += await _unlink_counting_entries(client, batch)
        return removed


async def _unlink_counting_entries(client: redis.asyncio.Redis, keys: list[bytes]) -> int:
    """UNLINK ``keys``; how many of them were entries (URI indexes go too, but are not counted)."""
    indexes = [key for key in keys if key.endswith(INDEX_SEP)]
    if indexes:
        await client.unlink(*indexes)
    entries = [key for key in keys if not key.endswith(INDEX_SEP)]
    return int(await client.unlink(*entries)) if entries else 0
