"""``rate_limit``: at most ``limit`` requests per ``window`` for each key; the rest get 429.

    plugins:
      - name: rate_limit
        policy: per-client          # the name in the RateLimit fields (and in the Redis key)
        limit: 100
        window: 60s                 # whole seconds
        algorithm: sliding_window   # or token_bucket
        key: [consumer, ip]         # consumer | ip | route | header:<name>, or a list of them
        headers: [draft]            # draft | legacy | x, any of them; [] for none
        bypass: {ips: [10.0.0.0/8], consumers: [ops]}
        reject: {status: 429, body: '{"error": "slow down"}', content_type: application/json}
        redis:                      # absent: counted per process (exact for one worker)
          url: redis://127.0.0.1:6379/0
          timeout: 250ms            # connect and command timeout
          on_error: open            # or closed: answer closed_status while Redis is down
          closed_status: 503
          retry_interval: 1s
          prefix: "fastgw:rl:"

Per process, a request costs the key, one dict lookup and a little arithmetic on the coarse
clock (``algorithms``), all on the synchronous path. With ``redis`` each request runs one Lua
script (``redis_store``): only then does ``on_request`` return an awaitable. While Redis is known
to be down, requests skip it and get the ``on_error`` policy at once.

Admitted requests carry the header fields (``headers``) on the proxied response; refused ones
get them with ``Retry-After``. Clients in ``bypass`` are neither counted nor told anything. In
Redis the counters of a key are shared by every limit with the same ``policy`` name and
algorithm, in every worker and gateway instance; give distinct limits distinct names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, read_duration, read_int, read_list, read_one_of, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import HookResult, Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._addresses import NetworkSet, read_networks
from fastgw.plugins._refusal import Refusal
from fastgw.plugins.ratelimit.admission import HeaderRenderer, LocalAdmission
from fastgw.plugins.ratelimit.algorithms import (
    DEFAULT_MAX_KEYS,
    LocalLimiter,
    SlidingWindow,
    TokenBucket,
    whole_seconds,
)
from fastgw.plugins.ratelimit.headers import Headers, read_styles
from fastgw.plugins.ratelimit.keys import KeyOf, read_key

ALGORITHMS: dict[str, type[LocalLimiter]] = {"token_bucket": TokenBucket, "sliding_window": SlidingWindow}
_POLICY_NAME = re.compile(r"[\x20-\x7e]+")  # a structured-field string; quotes and backslashes below
read_status = read_int(400, 599)


def read_policy_name(value: object, path: str) -> str:
    name = read_str(value, path)
    if not _POLICY_NAME.fullmatch(name) or '"' in name or "\\" in name:
        raise ConfigError(path, f"expected printable ASCII without quotes or backslashes, found {name!r}")
    return name


def read_window(value: object, path: str) -> int:
    seconds = read_duration()(value, path)
    if seconds != int(seconds):
        raise ConfigError(
            path, f"expected a whole number of seconds (RateLimit-Policy has no fractions), found {value!r}"
        )
    return int(seconds)


def read_reject(value: object, path: str) -> Refusal:
    section = Section(value, path, ("status", "body", "content_type"))
    status = section.get("status", read_status) or 429
    body = section.get("body", read_str)
    default_type = "application/json" if body is None else "text/plain; charset=utf-8"
    content_type = section.get("content_type", read_str) or default_type
    return Refusal(
        status, "rate limit exceeded", None if body is None else body.encode(), content_type.encode()
    )


class Bypass:
    """Clients a limit leaves alone: by address (CIDRs) or by consumer name."""

    __slots__ = ("consumers", "networks")

    def __init__(self, networks: NetworkSet, consumers: frozenset[str]) -> None:
        self.networks = networks
        self.consumers = consumers

    @classmethod
    def read(cls, value: object, path: str) -> Bypass:
        section = Section(value, path, ("ips", "consumers"))
        networks = NetworkSet(section.get("ips", read_networks) or ())
        consumers = frozenset(section.get("consumers", read_list(read_str)) or ())
        return cls(networks, consumers)

    def applies(self, ctx: RequestContext) -> bool:
        if self.consumers and ctx.consumer in self.consumers:
            return True
        return bool(self.networks) and self.networks.contains(ctx.client_ip) is True


@register_plugin
class RateLimit(Plugin):
    name: ClassVar[str] = "rate_limit"

    def __init__(
        self,
        limiter: LocalLimiter,
        key_of: KeyOf,
        headers: HeaderRenderer,
        reject: Refusal,
        bypass: Bypass | None,
    ) -> None:
        self.limiter = limiter  # the per-process counters (unused when Redis holds them)
        self.key_of = key_of
        self.headers = headers
        self.reject = reject
        self.bypass = bypass
        self.admission = LocalAdmission(limiter, key_of, headers, self.refuse, bypass)
        if type(self).on_request is RateLimit.on_request:
            # PERF: counted in this process, the hook itself is the compiled admission
            # (build_chain takes the instance's callable): no Python frame per request, and
            # as a bound method, no argument tuple either.
            self.on_request = self.admission.admit  # type: ignore[method-assign]

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(
            options,
            key_path,
            (
                "policy",
                "limit",
                "window",
                "algorithm",
                "key",
                "headers",
                "bypass",
                "reject",
                "redis",
                "max_keys",
            ),
            ("limit", "window", "key"),
        )
        policy = section.get("policy", read_policy_name) or "default"
        limit = section.require("limit", read_int(1))
        window = section.require("window", read_window)
        algorithm = (
            section.get("algorithm", read_one_of("an algorithm", tuple(ALGORITHMS))) or "sliding_window"
        )
        key_of = section.require("key", read_key)
        styles = section.get("headers", read_styles)
        max_keys = section.get("max_keys", read_int(16)) or DEFAULT_MAX_KEYS
        limiter = ALGORITHMS[algorithm](limit, float(window), max_keys)
        headers = HeaderRenderer(policy, limit, window, ("draft",) if styles is None else styles)
        reject = section.get("reject", read_reject) or Refusal(429, "rate limit exceeded")
        bypass = section.get("bypass", Bypass.read)
        if "redis" not in section.items:
            return cls(limiter, key_of, headers, reject, bypass)
        # Imported only when used: gateways that never count in Redis do not load redis-py.
        from fastgw.plugins.ratelimit.cluster import ClusterRateLimit, RedisLimit

        redis = RedisLimit.read(section.items["redis"], section.at("redis"), policy, algorithm)
        return ClusterRateLimit(limiter, key_of, headers, reject, bypass, redis)

    def on_request(self, ctx: RequestContext) -> HookResult:
        """Admit (telling the client its quota) or refuse, counting in this process."""
        return self.admission(ctx)

    def refuse(self, ctx: RequestContext, retry: float) -> Response:
        seconds = max(1, whole_seconds(retry))
        headers: Headers = [(b"Retry-After", b"%d" % seconds)]
        return self.reject.response(ctx, self.headers.render(0, seconds, headers))
