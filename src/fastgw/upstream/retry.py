"""When a failed attempt is sent again: the one place for these rules, and the retry budget.

The hot path asks only after an attempt failed (``Exchange.after_failure`` and a 5xx head in
``proxy/exchange.pyx``); a request that succeeds costs nothing here beyond the route's request
counter, kept in C. Every route has ``RetryRules``; its ``after`` answers with a ``RetryPlan``
(when, on which kind of connection, and whether the target was to blame) or None:

1. Never once any byte of the response (a 1xx included) went to the client, and never when the
   request body was streamed: it was not kept, so it cannot be sent twice.
2. A request a pooled keep-alive connection lost before any response byte (the upstream closed
   it while it sat idle: aiohttp #7297) is sent once more, at once, on a fresh connection, when
   its method is idempotent (GET, HEAD, OPTIONS): whatever the route's policy, and without
   blaming the target, whose connection simply aged out.
3. Anything else follows the route's ``retry:`` policy, if it has one: the failure's kind
   (``connect``; ``reset``: closed, reset or timed out before the response completed) or the
   response's status, its methods, its attempts, the route's total timeout, and the budget; then
   after a full-jitter backoff, to another target when the group has one.

The budget is a token bucket refilled by traffic: each request the route saw adds ``budget``
tokens, time adds ``MIN_PER_SECOND``, each retry spends one. So a failing upstream receives at
most ``1 + budget`` times the requests it would have had without retries (plus a trickle),
instead of ``attempts`` times: retries cannot turn an outage into a storm (Finagle's budget).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from fastgw._proxy import FAILURE_CAUSES, Exchange, RouteCore
from fastgw.config.schema import RetryConfig
from fastgw.http.wire import IDEMPOTENT

MIN_PER_SECOND = 3.0  # retries allowed per second whatever the traffic, so a quiet route can retry
BURST = 10.0  # most tokens saved up


class RetryPlan(NamedTuple):
    delay: float  # seconds before it is sent again
    fresh: bool  # on a newly opened connection (even at the pool's limit)
    blame: bool  # the target failed: observe it, count the attempt, avoid it when there is a choice


STALE = RetryPlan(0.0, True, False)


class RetryRules:
    """A route's retry rules: the universal ones above, and its ``retry:`` policy if any."""

    __slots__ = ("policy",)

    def __init__(self, policy: RetryPolicy | None) -> None:
        self.policy = policy

    def after(self, exchange: Exchange, cause: int, status: int) -> RetryPlan | None:
        """May this failed attempt be sent again, and how? ``cause`` is the failure's kind
        (``FAILURE_CAUSES``), ``status`` the upstream's 5xx when that was the failure."""
        if exchange.response_started or exchange.interim_sent:
            return None
        if exchange.content_length > 0 or exchange.chunked or exchange.body_received:
            return None
        kind = FAILURE_CAUSES[cause]
        if kind == "stale" and exchange.method in IDEMPOTENT and not exchange.retried_stale:
            exchange.retried_stale = True
            return STALE
        policy = self.policy
        if policy is None:
            return None
        if exchange.total_deadline and time.monotonic() >= exchange.total_deadline:
            return None
        if not policy.allows(exchange, "reset" if kind == "stale" else kind, status):
            return None
        return RetryPlan(policy.delay(exchange.tries + 1), False, True)


class RetryPolicy:
    """A route's ``retry:``, and its budget."""

    __slots__ = ("config", "denied", "methods", "route", "seen", "spent", "stamp", "tokens")

    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self.route: RouteCore | None = None  # the route whose requests earn the budget (set once)
        self.methods = None if config.methods is None else frozenset(m.encode() for m in config.methods)
        self.tokens = BURST
        self.seen = 0  # route.requests when the bucket was last refilled
        self.stamp = time.monotonic()
        self.spent = 0  # retries made, and refused by the budget: for metrics and tests
        self.denied = 0

    def allows(self, exchange: Exchange, kind: str, status: int) -> bool:
        """``kind`` is "connect" or "reset", or "status" with the upstream's ``status``. Spends a
        token when the answer is yes."""
        config = self.config
        if exchange.tries + 1 >= config.attempts:
            return False
        if self.methods is not None and exchange.method not in self.methods:
            return False
        if (kind not in config.when) if kind != "status" else (status not in config.statuses):
            return False
        return self._spend()

    def delay(self, retry: int) -> float:
        """Full-jitter exponential backoff before retry number ``retry`` (1, 2, ...)."""
        import random  # here: only a retry needs it (PERF: memory of every process)

        ceiling = min(self.config.max_backoff, self.config.backoff * 2 ** (retry - 1))
        return random.uniform(0, ceiling)

    def _spend(self) -> bool:
        requests = self.route.requests if self.route is not None else 0
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
