"""The cache with its entries in Redis (``redis: {url, ...}`` in the cache's options).

``RedisCache`` differs from the memory ``Cache`` in two places: the lookup is the one point where
a request leaves the synchronous path (while Redis is known to be down it does not, and the
request is a miss at once), and storing is a write in the background (the response does not
wait for it; while Redis is down nothing is written). Coalescing stays per process: followers in
this worker wait for its leader; other workers and instances lead their own flights, and find
the entry in Redis once it is there.

Invalidating a URI (after a successful unsafe request) is a write in the background too, sent
as the response head goes out. Until it is done, a lookup of that URI in this process waits for
it, so a client's next request here does not get what its own request just changed; in other
workers and instances that holds once Redis ran the invalidation (a round trip later).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

from fastgw.config.validate import Section, read_str
from fastgw.hooks import HookResult, RequestContext, Response
from fastgw.plugins._redis import StoreUnavailable, read_store, redacted
from fastgw.plugins.cache.key import uri_of, variant_key
from fastgw.plugins.cache.plugin import CachePlugin, CacheSettings
from fastgw.plugins.cache.policy import RequestDirectives
from fastgw.plugins.cache.purge import REMOTE_STORES
from fastgw.plugins.cache.redis_store import CACHE_ROLE, RedisCacheStore
from fastgw.plugins.cache.store import Entry, Stored, VaryRecord

_KEYS = ("url", "timeout", "retry_interval", "prefix")


def read_redis(value: object, path: str) -> RedisCacheStore:
    section = Section(value, path, _KEYS, ("url",))
    url, store = read_store(section, CACHE_ROLE)
    prefix = (section.get("prefix", read_str) or "fastgw:cache:").encode()
    remote = RedisCacheStore(store, prefix)
    REMOTE_STORES[redacted(url), prefix] = remote  # the admin purge reaches it (the newest)
    return remote


class RedisCache(CachePlugin):
    def __init__(self, remote: RedisCacheStore, settings: CacheSettings) -> None:
        super().__init__(settings)
        self.remote = remote
        self.writes: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)
        self.invalidating: dict[bytes, asyncio.Task[None]] = {}  # URI key -> its invalidation

    def on_request(self, ctx: RequestContext) -> HookResult:
        prepared = self.prepare(ctx)
        if prepared is None:
            return None
        base, fields, directives = prepared
        if not self.remote.available():
            return self.answer(ctx, base, None, fields, directives, time.time())  # down: a miss
        return self.look_up(ctx, base, fields, directives)

    async def look_up(
        self, ctx: RequestContext, base: bytes, fields: dict[bytes, bytes], directives: RequestDirectives
    ) -> Response | None:
        found: Stored | None
        if self.invalidating:
            pending = self.invalidating.get(uri_of(base))
            if pending is not None:
                await asyncio.wait((pending,))  # read what this process just invalidated
        try:
            found = await self.remote.get(base)
            if type(found) is VaryRecord:
                found = await self.remote.get(variant_key(base, found.names, ctx))
        except StoreUnavailable:
            found = None  # logged once per outage by the store; the request is a miss
        if ctx.finished:
            return None  # the client left meanwhile: on_complete has run, register nothing
        now = time.time()
        if type(found) is Entry and found.stale_until <= now:
            found = None
        result = self.answer(ctx, base, found, fields, directives, now)
        if result is None or isinstance(result, Response):
            return result
        answer: Response | None = await result
        return answer

    def keep(self, key: bytes, value: Stored, now: float) -> None:
        if self.remote.available():
            self._in_background(self.remote.put(key, value, now))

    def invalidate(self, uris: list[bytes]) -> None:
        if not self.remote.available():
            return
        task = self._in_background(self.remote.invalidate(uris))
        for uri in uris:
            self.invalidating[uri] = task

        def done(_: asyncio.Task[None]) -> None:
            for uri in uris:
                if self.invalidating.get(uri) is task:
                    del self.invalidating[uri]

        task.add_done_callback(done)

    def _in_background(self, write: Awaitable[object]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(_unless_unavailable(write))
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)
        return task


async def _unless_unavailable(write: Awaitable[object]) -> None:
    with contextlib.suppress(StoreUnavailable):  # logged by the store; the write is just not done
        await write
