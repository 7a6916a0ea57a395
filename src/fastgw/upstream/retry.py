"""A route's retry rules and its retry budget.

The hot path asks only after an attempt failed (``Exchange.try_again`` in ``_proxy.pyx``); a request
that succeeds costs nothing here beyond the route's request counter, kept in C. The budget is a
token bucket refilled by traffic: each request the route saw adds ``budget`` tokens, time adds
``MIN_PER_SECOND``, each retry spends one. So a failing upstream receives at most
``1 + budget`` times the requests it would have had without retries (plus a trickle), instead of
``attempts`` times: retries cannot turn an outage into a storm (Finagle's retry budget).
"""

from __future__ import annotations

import random
import time

from fastgw._proxy import Exchange, RouteCore
from fastgw.config.schema import RetryConfig

MIN_PER_SECOND = 3.0  # retries allowed per second whatever the traffic, so a quiet route can retry
BURST = 10.0  # most tokens saved up


class RetryPolicy:
    __slots__ = ("config", "denied", "methods", "route", "seen", "spent", "stamp", "tokens")

    def __init__(self, config: RetryConfig, route: RouteCore) -> None:
        self.config = config
        self.route = route
        self.methods = None if config.methods is None else frozenset(m.encode() for m in config.methods)
        self.tokens = BURST
        self.seen = 0  # route.requests when the bucket was last refilled
        self.stamp = time.monotonic()
        self.spent = 0  # retries made, and refused by the budget: for metrics and tests
        self.denied = 0

    def allows(self, exchange: Exchange, kind: str | None, status: int) -> bool:
        """May this failed attempt be sent again? ``kind`` is "connect" or "reset", or None for an
        upstream status. Spends a token when the answer is yes."""
        config = self.config
        if exchange.tries + 1 >= config.attempts:
            return False
        if self.methods is not None and exchange.method not in self.methods:
            return False
        if (kind not in config.when) if kind is not None else (status not in config.statuses):
            return False
        return self._spend()

    def delay(self, retry: int) -> float:
        """Full-jitter exponential backoff before retry number ``retry`` (1, 2, ...)."""
        ceiling = min(self.config.max_backoff, self.config.backoff * 2 ** (retry - 1))
        return random.uniform(0, ceiling)

    def _spend(self) -> bool:
        requests = self.route.requests
        now = time.monotonic()
        earned = (requests - self.seen) * self.config.budget + (now - self.stamp) * MIN_PER_SECOND
        self.tokens = min(BURST, self.tokens + earned)
        self.seen, self.stamp = requests, now
        if self.tokens < 1:
            self.denied += 1
            return False
        self.tokens -= 1
        self.spent += 1
        return True
