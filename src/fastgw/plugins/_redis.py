"""Redis as the plugins' shared state (rate-limit counters, the response cache): one store per
server and use in each process, with the failure handling both need.

Connect and command timeouts are short, redis-py's own retries are off, and the whole call is
bounded too, so a dead or stalled Redis costs a request at most about ``2 * timeout``. After a
failure the store is *down*: the outage is logged once, naming the store's ``role`` and what its
users do without it, and for ``retry_interval`` seconds requests do not touch Redis at all
(``available()`` is False, so a plugin answers at once by its own policy, on the synchronous
path). Then a single request probes again; its success ends the outage (logged too). The
connection pool is dropped on failure, so no connection from before an outage is reused after it.

A ``Script`` is a Lua script sent by ``EVALSHA``; on ``NOSCRIPT`` (a restarted or flushed server)
by ``EVAL``, which caches it again.

A client is made lazily on the running loop (plans are compiled before workers fork, and a client
must not cross processes or loops); stores are shared per process by URL, timeouts and role, so
every plugin pointing at one Redis for one use shares one pool, across reloads too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from fastgw.config.validate import Section, read_duration, read_str
from fastgw.errors import ConfigError

log = logging.getLogger("fastgw")

T = TypeVar("T")
DEFAULT_TIMEOUT = 0.25
DEFAULT_RETRY_INTERVAL = 1.0


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
    """One Redis server as seen by one process, for one use (see the module docstring)."""

    def __init__(self, url: str, timeout: float, retry_interval: float, role: tuple[str, str]) -> None:
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


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, known to the server by its SHA-1 once it ran."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    async def run(self, client: redis.asyncio.Redis, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """The script's reply for ``keys`` and ``args`` (inside ``RedisStore.run``'s command)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


_STORES: dict[tuple[str, float, float, tuple[str, str]], RedisStore] = {}


def store_for(url: str, timeout: float, retry_interval: float, role: tuple[str, str]) -> RedisStore:
    """The process's store for this Redis and use (shared by every plugin and plan naming it)."""
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


def read_store(section: Section, role: tuple[str, str]) -> tuple[str, RedisStore]:
    """The ``url``, ``timeout`` and ``retry_interval`` of a plugin's ``redis:`` section: the URL
    as configured and the process's store for it."""
    url = section.require("url", read_str)
    problem = check_url(url)
    if problem is not None:
        raise ConfigError(section.at("url"), f"expected a redis:// or rediss:// URL: {problem}")
    timeout = section.get("timeout", read_duration()) or DEFAULT_TIMEOUT
    retry_interval = section.get("retry_interval", read_duration()) or DEFAULT_RETRY_INTERVAL
    return url, store_for(url, timeout, retry_interval, role)
