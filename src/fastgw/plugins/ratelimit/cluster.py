"""The cluster-wide rate limit: the same plugin, with its counters in Redis (``redis_store``).

``ClusterRateLimit`` differs from ``RateLimit`` only in ``on_request``: it asks Redis (the one
point where the request leaves the synchronous path), and while Redis is known to be down it
answers at once by its failure policy: ``open`` lets the request through (without rate-limit
fields, since nothing was counted), ``closed`` refuses it with ``closed_status``.
"""

from __future__ import annotations

from fastgw.config.validate import Section, read_one_of, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import HookResult, RequestContext, Response
from fastgw.plugins._redis import RedisStore, Script, StoreUnavailable, read_store
from fastgw.plugins._refusal import Refusal
from fastgw.plugins.ratelimit.admission import HeaderRenderer
from fastgw.plugins.ratelimit.algorithms import LocalLimiter, whole_seconds
from fastgw.plugins.ratelimit.keys import KeyOf
from fastgw.plugins.ratelimit.plugin import Bypass, RateLimit, read_status
from fastgw.plugins.ratelimit.redis_store import RATE_LIMIT_ROLE, SCRIPTS, evaluate

_KEYS = ("url", "timeout", "on_error", "closed_status", "retry_interval", "prefix")


class RedisLimit:
    """The cluster-wide half of a limit: where its counters live and what to do without them."""

    __slots__ = ("closed", "key_prefix", "script", "store")

    def __init__(self, store: RedisStore, script: Script, key_prefix: bytes, closed: Refusal | None) -> None:
        self.store = store
        self.script = script
        self.key_prefix = key_prefix
        self.closed = closed  # the answer while Redis is down, or None to let requests through

    @classmethod
    def read(cls, value: object, path: str, policy: str, algorithm: str) -> RedisLimit:
        section = Section(value, path, _KEYS, ("url",))
        _, store = read_store(section, RATE_LIMIT_ROLE)
        on_error = section.get("on_error", read_one_of("a failure policy", ("open", "closed"))) or "open"
        closed_status = section.get("closed_status", read_status) or 503
        if on_error == "open" and "closed_status" in section.items:
            raise ConfigError(section.at("closed_status"), "only used with on_error: closed")
        prefix = section.get("prefix", read_str) or "fastgw:rl:"
        closed = Refusal(closed_status, "rate limit store unavailable") if on_error == "closed" else None
        key_prefix = f"{prefix}{policy}:{algorithm}:".encode()
        return cls(store, SCRIPTS[algorithm], key_prefix, closed)


class ClusterRateLimit(RateLimit):
    def __init__(
        self,
        limiter: LocalLimiter,
        key_of: KeyOf,
        headers: HeaderRenderer,
        reject: Refusal,
        bypass: Bypass | None,
        redis: RedisLimit,
    ) -> None:
        super().__init__(limiter, key_of, headers, reject, bypass)
        self.redis = redis
        self.limit = limiter.limit
        self.window_ms = int(limiter.window * 1000)

    def on_request(self, ctx: RequestContext) -> HookResult:
        if self.bypass is not None and self.bypass.applies(ctx):
            return None
        redis = self.redis
        if not redis.store.available():
            return None if redis.closed is None else redis.closed.response(ctx)
        return self._ask_redis(ctx, redis.key_prefix + self.key_of(ctx))

    async def _ask_redis(self, ctx: RequestContext, key: bytes) -> Response | None:
        redis = self.redis
        try:
            remaining, milliseconds = await evaluate(
                redis.store, redis.script, key, self.limit, self.window_ms
            )
        except StoreUnavailable:
            return None if redis.closed is None else redis.closed.response(ctx)
        if remaining < 0:
            return self.refuse(ctx, milliseconds / 1000)
        self.headers.tell(ctx, remaining, whole_seconds(milliseconds / 1000))
        return None
