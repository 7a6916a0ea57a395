"""The status page's graphs: the gateway's last 15 minutes, sampled from its own metrics.

A ``Sampler`` runs in the process that serves the admin API (the supervisor with ``--workers N``,
else the gateway's one process). Every ``period`` (a second) it takes the merged metric
families, the numbers ``/metrics`` shows summed across workers, and keeps one point made of the
differences since the previous sample:

- requests, 4xx, 5xx and client aborts, and latency quantiles (p50, p95, p99) from the latency
  histograms' bucket differences: overall, per route and per upstream (attempts per target);
- open client connections, and upstream pool connections in use and idle (gauges, as read);
- refusals by rate limits (429) and by authentication (401, 403), cache lookups and hits.

Points sit in a ring covering ``window`` (15 minutes). Nothing runs per request: the hot path
only keeps its C counters. The cost is one collection per period in every worker, the same work
as a ``/metrics`` scrape, and it grows with the routes and targets (measured: 0.1 ms with one
route, 4 ms with 100, 46 ms with 1,000, 0.9 s with 10,000), so the period stretches to keep
sampling under about 2% of a core (``SPACING_FACTOR``, as measured in this process), up to a
minute; each point carries its own ``dt``.

A point holds counts, not rates: the page divides by ``dt``, and the counts of every point add up
to exactly what the counters grew by (the tests check the page against ``/metrics`` that way).
Only the busiest ``KEPT`` routes and upstreams of each interval get their own entry (the
overall entry counts everything); a route with no request in an interval has none, an upstream
has one once it was tried or has pool connections.

Quantiles are read as Prometheus's ``histogram_quantile`` reads them: linear interpolation in
the bucket where the rank falls; a rank in the last (unbounded) bucket reads as its lower bound.
A counter that went down (a route removed and added back by reloads starts its counts again)
is read as restarted from zero.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastgw.observe.metrics import Families, Labels, samples_by

log = logging.getLogger("fastgw")

PERIOD = 1.0  # seconds between samples, at least
WINDOW = 900.0  # seconds of points kept: 15 minutes
KEPT = 32  # routes and upstreams with an entry of their own per point, the busiest first
SPACING_FACTOR = 50.0  # the period stretches to this many times what one sample cost (2%)
MAX_SPACING = 60.0  # ... but never past a minute (15 points in the window at least)
EWMA_DECAY = 10.0  # seconds: the time constant of each target's latency average
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

Buckets = dict[float, float]  # upper bound (math.inf last) -> cumulative count
Point = dict[str, object]  # JSON-ready


@dataclass(slots=True)
class Reading:
    """The counters and gauges a point is made from, at one moment (``at``: Unix time)."""

    at: float
    requests: dict[str, list[float]] = field(default_factory=dict)  # route: [n, 4xx, 5xx, aborts]
    route_latency: dict[str, Buckets] = field(default_factory=dict)
    attempts: dict[str, list[float]] = field(default_factory=dict)  # upstream: [n, 5xx, failed]
    upstream_latency: dict[str, Buckets] = field(default_factory=dict)
    target_time: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # (sum, n)
    pools: dict[str, list[float]] = field(default_factory=dict)  # upstream: [in use, idle]
    connections: float = 0.0
    limited: float = 0.0  # 429 answers
    denied: float = 0.0  # 401 and 403 answers
    cache: list[float] | None = None  # [lookups, hits], when a cache runs


def read(families: Families, at: float) -> Reading:
    """What a point needs of the families (see ``observe.metrics`` for their labels)."""
    reading = Reading(at)
    column = {"4xx": 1, "5xx": 2, "none": 3}
    for labels, value in samples_by(families, "fastgw_requests_total").items():
        named = dict(labels)
        counts = reading.requests.setdefault(named["route"], [0.0, 0.0, 0.0, 0.0])
        counts[0] += value
        if named["status"] in column:
            counts[column[named["status"]]] += value
    _read_buckets(families, "fastgw_request_duration_seconds", "route", reading.route_latency)
    for labels, value in samples_by(families, "fastgw_upstream_target_responses_total").items():
        named = dict(labels)
        counts = reading.attempts.setdefault(named["upstream"], [0.0, 0.0, 0.0])
        counts[0] += value
        if named["outcome"] in ("5xx", "failed"):
            counts[1 if named["outcome"] == "5xx" else 2] += value
    _read_buckets(families, "fastgw_upstream_target_duration_seconds", "upstream", reading.upstream_latency)
    sums = samples_by(families, "fastgw_upstream_target_duration_seconds", "_sum")
    for labels, count in samples_by(families, "fastgw_upstream_target_duration_seconds", "_count").items():
        named = dict(labels)
        reading.target_time[(named["upstream"], named["target"])] = (sums.get(labels, 0.0), count)
    upstreams_of: dict[str, list[str]] = {}
    for labels in samples_by(families, "fastgw_upstream_target_up"):
        named = dict(labels)
        upstreams_of.setdefault(named["target"], []).append(named["upstream"])
    for labels, value in samples_by(families, "fastgw_upstream_connections").items():
        named = dict(labels)
        if named["state"] in ("in_use", "idle"):
            for upstream in upstreams_of.get(named["target"], ()):
                pool = reading.pools.setdefault(upstream, [0.0, 0.0])
                pool[0 if named["state"] == "in_use" else 1] += value
    reading.connections = sum(samples_by(families, "fastgw_client_connections").values())
    for labels, value in samples_by(families, "fastgw_requests_denied_total").items():
        status = dict(labels)["status"]
        if status == "429":
            reading.limited += value
        else:
            reading.denied += value
    cache = samples_by(families, "fastgw_cache_requests_total")
    if cache:  # a route with a cache was compiled (the family itself is declared at import)
        reading.cache = [0.0, 0.0]
        for labels, value in cache.items():
            result = dict(labels)["result"]
            if result != "bypass":  # not cacheable: not a lookup
                reading.cache[0] += value
                reading.cache[1] += value if result in ("hit", "stale") else 0.0
    return reading


def _read_buckets(families: Families, name: str, by: str, into: dict[str, Buckets]) -> None:
    for labels, value in samples_by(families, name, "_bucket").items():
        key, bound = _key_and_bound(labels, by)
        buckets = into.setdefault(key, {})
        buckets[bound] = buckets.get(bound, 0.0) + value


def _key_and_bound(labels: Labels, by: str) -> tuple[str, float]:
    named = dict(labels)
    return named[by], float(named["le"])  # float("+Inf") is math.inf


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as Prometheus's ``histogram_quantile``
    computes it; None when it counted nothing."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == math.inf:
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _grown(now: list[float], before: list[float] | None) -> list[float]:
    """Counter differences; all of ``now`` when any went down (the counters started over)."""
    if before is None or any(n < b for n, b in zip(now, before, strict=True)):
        return list(now)
    return [n - b for n, b in zip(now, before, strict=True)]


def _grown_buckets(now: Buckets, before: Buckets | None) -> Buckets:
    if before is None or any(value < before.get(bound, 0.0) for bound, value in now.items()):
        return dict(now)
    return {bound: value - before.get(bound, 0.0) for bound, value in now.items()}


def _add_buckets(into: Buckets, more: Buckets) -> None:
    for bound, value in more.items():
        into[bound] = into.get(bound, 0.0) + value


def _latencies(buckets: Buckets) -> dict[str, float | None]:
    """p50, p95, p99 in milliseconds (None: nothing timed)."""
    out: dict[str, float | None] = {}
    for name, q in QUANTILES:
        value = quantile(q, buckets)
        out[name] = round(value * 1000.0, 3) if value is not None else None
    return out


def derive(before: Reading, now: Reading, kept: int = KEPT) -> Point:
    """The point for the interval between two readings."""
    total = [0.0, 0.0, 0.0, 0.0]
    total_buckets: Buckets = {}
    routes: dict[str, dict[str, object]] = {}
    for route, counts in now.requests.items():
        grown = _grown(counts, before.requests.get(route))
        total = [t + g for t, g in zip(total, grown, strict=True)]
        buckets = _grown_buckets(now.route_latency.get(route, {}), before.route_latency.get(route))
        _add_buckets(total_buckets, buckets)
        if grown[0]:
            routes[route] = {
                "n": grown[0],
                "n4": grown[1],
                "n5": grown[2],
                "aborts": grown[3],
                **_latencies(buckets),
            }
    upstreams: dict[str, dict[str, object]] = {}
    for upstream in {**now.attempts, **now.pools}:
        grown = _grown(now.attempts.get(upstream, [0.0, 0.0, 0.0]), before.attempts.get(upstream))
        buckets = _grown_buckets(
            now.upstream_latency.get(upstream, {}), before.upstream_latency.get(upstream)
        )
        pool = now.pools.get(upstream, [0.0, 0.0])
        upstreams[upstream] = {
            "n": grown[0], "n5": grown[1], "failed": grown[2], **_latencies(buckets),
            "in_use": pool[0], "idle": pool[1],
        }  # fmt: skip
    return {
        "t": round(now.at, 3),
        "dt": round(now.at - before.at, 3),
        "total": {
            "n": total[0],
            "n4": total[1],
            "n5": total[2],
            "aborts": total[3],
            **_latencies(total_buckets),
        },
        "routes": _busiest(routes, kept),
        "upstreams": _busiest(upstreams, kept),
        "connections": now.connections,
        "pool_in_use": sum(pool[0] for pool in now.pools.values()),
        "pool_idle": sum(pool[1] for pool in now.pools.values()),
        "limited": _grown([now.limited], [before.limited])[0],
        "denied": _grown([now.denied], [before.denied])[0],
        "cache": _cache(now.cache, before.cache),
    }


def _busiest(entries: dict[str, dict[str, object]], kept: int) -> dict[str, dict[str, object]]:
    """The ``kept`` entries with the most requests (an upstream with pool connections but no
    attempts is kept when there is room: its pool shows)."""
    if len(entries) <= kept:
        return entries
    ranked = sorted(entries.items(), key=lambda item: -float(item[1]["n"]))  # type: ignore[arg-type]
    return dict(ranked[:kept])


def _cache(now: list[float] | None, before: list[float] | None) -> dict[str, float] | None:
    if now is None:
        return None
    lookups, hits = _grown(now, before)
    return {"lookups": lookups, "hits": hits}


class Sampler:
    """Samples ``source`` (a control's merged families) into a ring of points, and keeps each
    target's latency average (``EWMA_DECAY``) from its attempts' times."""

    def __init__(
        self,
        source: Callable[[], Awaitable[Families]],
        period: float = PERIOD,
        window: float = WINDOW,
        kept: int = KEPT,
    ) -> None:
        self.source = source
        self.period = period
        self.window = window
        self.kept = kept
        self.spacing = period  # the period as stretched by what sampling costs
        self.points: deque[Point] = deque()
        self.target_latency: dict[tuple[str, str], float] = {}  # seconds, averaged
        self.latest: Families | None = None  # the families of the last sample
        self._last: Reading | None = None

    def add(self, families: Families, at: float) -> None:
        """Take one sample (``at``: Unix time)."""
        self.latest = families
        reading = read(families, at)
        before = self._last
        self._last = reading
        if before is None or at <= before.at:
            return  # the first reading (or a clock step back) is only where counting starts
        self.points.append(derive(before, reading, self.kept))
        self._average_latency(before, reading)
        while self.points and float(self.points[0]["t"]) <= at - self.window:  # type: ignore[arg-type]
            self.points.popleft()

    def _average_latency(self, before: Reading, now: Reading) -> None:
        keep = math.exp(-(now.at - before.at) / EWMA_DECAY)
        for key, (total, count) in now.target_time.items():
            old_total, old_count = before.target_time.get(key, (0.0, 0.0))
            if count < old_count:
                old_total, old_count = 0.0, 0.0
            if count > old_count:
                mean = (total - old_total) / (count - old_count)
                average = self.target_latency.get(key)
                self.target_latency[key] = mean if average is None else average * keep + mean * (1.0 - keep)

    def since(self, after: float) -> list[Point]:
        """The points taken after ``after`` (Unix time; 0: all of them)."""
        return [point for point in self.points if float(point["t"]) > after]  # type: ignore[arg-type]

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            started = time.monotonic()
            cpu = time.process_time()
            try:
                self.add(await self.source(), time.time())
            except Exception:  # a bug of ours must not end sampling for good
                log.exception("status page sampling failed")
            cost = time.process_time() - cpu
            self.spacing = min(max(self.period, cost * SPACING_FACTOR), MAX_SPACING)
            await asyncio.sleep(max(0.0, started + self.spacing - time.monotonic()))
