"""Cluster-wide rate-limit counters in Redis: one atomic Lua script, one round trip per request.

Every worker of every gateway instance runs the same script against the same keys, so they share
one limit. The scripts do the arithmetic of ``algorithms`` on the server, in milliseconds, with
the server's clock (``TIME``), so gateway clocks need not agree. Each returns
``{remaining or -1, milliseconds}``: when admitted, until the quota is whole again (bucket full,
window over); when refused, until a request would be admitted. A script is sent by ``EVALSHA``;
on ``NOSCRIPT`` (a restarted or flushed server) by ``EVAL``, which caches it again.

Failure handling (``RedisStore``): connect and command timeouts are short, redis-py's own retries
are off, and the whole call is bounded too, so a dead or stalled Redis costs a request at most
about ``2 * timeout``. After a failure the store is *down*: the outage is logged once, and for
``retry_interval`` seconds requests do not touch Redis at all (``available()`` is False, so the
limit answers at once with its fail-open or fail-closed policy, on the synchronous path). Then a
single request probes again; its success ends the outage (logged too). The connection pool is
dropped on failure, so no connection from before an outage is reused after it.

A client is made lazily on the running loop (plans are compiled before workers fork, and a
client must not cross processes or loops); stores are shared per process by URL and timeouts, so
every limit pointing at one Redis uses one pool, across reloads too.

Other plugins keeping state in Redis (the response cache) use the same store with their own
``role`` (named in the outage logs) and their commands through ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

log = logging.getLogger("fastgw")

T = TypeVar("T")
RATE_LIMIT_ROLE = ("rate limit store", "limits using it fail open or closed as configured")

# ARGV: limit, window (ms), and for tests only a fixed "now" (ms); else Redis's own clock.
_ARGUMENTS_LUA = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1]: the bucket.
TOKEN_BUCKET_LUA = (
    _ARGUMENTS_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = limit
else
  tokens = math.min(limit, tokens + math.max(0, now - tonumber(state[2])) * limit / window)
end
local remaining, wait
if tokens < 1 then
  remaining = -1
  wait = (1 - tokens) * window / limit
else
  tokens = tokens - 1
  remaining = math.floor(tokens)
  wait = (limit - tokens) * window / limit
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], window)
return {remaining, math.ceil(wait)}
"""
)

# KEYS[1]: the counters. ARGV as above. Windows are numbered (now // window).
SLIDING_WINDOW_LUA = (
    _ARGUMENTS_LUA
    + """
local index = math.floor(now / window)
local start = index * window
local state = redis.call('HMGET', KEYS[1], 'window', 'previous', 'current')
local last = tonumber(state[1])
local previous, current = 0, 0
if last == index then
  previous, current = tonumber(state[2]), tonumber(state[3])
elseif last == index - 1 then
  previous = tonumber(state[3])
end
local used = previous * (1 - (now - start) / window) + current
if used + 1 > limit then
  local wait
  if current + 1 <= limit then
    wait = start + window * (1 - (limit - 1 - current) / previous) - now
  else
    wait = start + window + window * (1 - (limit - 1) / current) - now
  end
  return {-1, math.ceil(math.max(0, wait))}
end
current = current + 1
redis.call('HSET', KEYS[1], 'window', index, 'previous', previous, 'current', current)
redis.call('PEXPIRE', KEYS[1], start + 2 * window - now)
return {math.floor(limit - used - 1), math.ceil(start + window - now)}
"""
)


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


SCRIPTS = {"token_bucket": Script(TOKEN_BUCKET_LUA), "sliding_window": Script(SLIDING_WINDOW_LUA)}


class StoreUnavailable(Exception):
    """Redis did not answer (down, slow, refused, or an error reply)."""


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    """One Redis server as seen by one process (see the module docstring)."""

    def __init__(
        self, url: str, timeout: float, retry_interval: float, role: tuple[str, str] = RATE_LIMIT_ROLE
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.role, self.fallback = role  # what the store is for, and what its users do without it
        self.down = False
        self.retry_at = 0.0
        self.failures = 0  # failures recorded so far: a command that began before the last one
        # and succeeded anyway (it was answered just before the outage) must not end the outage
        self._client: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def available(self) -> bool:
        """False while backing off after a failure; the first call after the pause says True once,
        so one request probes Redis while the others keep answering without it."""
        if not self.down:
            return True
        now = time.monotonic()
        if now < self.retry_at:
            return False
        self.retry_at = now + self.retry_interval
        return True

    def client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # we fail fast and decide ourselves
            )
        return self._client

    async def evaluate(self, script: Script, key: bytes, limit: int, window_ms: int) -> tuple[int, int]:
        """Run ``script`` for ``key``: (remaining or -1, milliseconds). StoreUnavailable if Redis
        cannot answer within the timeouts."""

        async def command(client: redis.asyncio.Redis) -> list[int]:
            try:
                reply: list[int] = await client.evalsha(script.sha, 1, key, limit, window_ms)
            except NoScriptError:
                reply = await client.eval(script.source, 1, key, limit, window_ms)
            return reply

        reply = await self.run(command)
        return int(reply[0]), int(reply[1])

    async def run(self, command: Callable[[redis.asyncio.Redis], Awaitable[T]]) -> T:
        """``command(client)`` within the timeouts; StoreUnavailable if Redis cannot answer."""
        client = self.client()
        failures_before = self.failures
        try:
            async with asyncio.timeout(2 * self.timeout):
                result = await command(client)
        except Exception as exc:
            # RedisError, OSError and TimeoutError are the usual ones, but a connection that dies
            # mid-command can surface as other errors from below redis-py (uvloop raises
            # RuntimeError writing to a transport that just closed). Whatever the client raised,
            # the store did not answer: the failure policy decides, never a 500.
            await self._failed(client, exc)
            raise StoreUnavailable(str(exc)) from exc
        if self.down and self.failures == failures_before:
            self.down = False
            log.warning("%s %s is reachable again", self.role, redacted(self.url))
        return result

    async def _failed(self, client: redis.asyncio.Redis, exc: BaseException) -> None:
        self.failures += 1
        self.retry_at = time.monotonic() + self.retry_interval
        if not self.down:
            self.down = True
            log.warning(
                "%s %s unavailable (%s: %s); %s, retrying every %gs",
                self.role,
                redacted(self.url),
                type(exc).__name__,
                exc,
                self.fallback,
                self.retry_interval,
            )
        if client is self._client:
            self._client = None
            with contextlib.suppress(Exception):  # closing sockets to a dead server: nothing to do
                await client.connection_pool.disconnect()


_STORES: dict[tuple[str, float, float, tuple[str, str]], RedisStore] = {}


def store_for(
    url: str, timeout: float, retry_interval: float, role: tuple[str, str] = RATE_LIMIT_ROLE
) -> RedisStore:
    """The process's store for this Redis (shared by every limit and plan that names it)."""
    key = (url, timeout, retry_interval, role)
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = RedisStore(url, timeout, retry_interval, role)
    return store


def check_url(url: str) -> str | None:
    """What is wrong with a Redis URL, or None."""
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        return str(exc)
    return None
