"""The gateway's metrics: collected from the counters where they live, merged, rendered as text.

Nothing here runs per request. Requests are counted in C as they end (``RequestStats`` on each
route and listener, ``PoolCore`` counters per target); ``collect`` reads them into ``Family``
records only when someone scrapes. With ``--workers N`` each worker collects its own families,
the supervisor asks every worker for them (``server/control.py``) and ``merge`` adds them up, so
a scrape sees the whole gateway. Each family says how to merge: counters, histograms and
connection gauges add up; a target is reported up only if every worker sees it up (``min``); a
per-worker setting is the same in each (``max``); a state that each worker has on its own, such
as a circuit breaker's, is kept apart by a ``worker`` label (``worker``: the worker's slot, 0 to
N-1, which a replacement takes over; see ``label_worker``).

Counters never go back, even when a worker dies: the supervisor keeps each worker's counters as
last collected (``counters_of``), or as the worker sent them when it drained, and adds those of
the workers gone to every later scrape. Gauges of a worker gone are dropped: they described it.

Rendered in the Prometheus text exposition format (version 0.0.4).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fastgw._proxy import LATENCY_BOUNDS, TUNNEL_BOUNDS, RequestStats
from fastgw.errors import ConfigError
from fastgw.observe.counters import COUNTERS, CounterRegistry
from fastgw.upstream.breaker import State

if TYPE_CHECKING:
    from fastgw.plan import Plan

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]  # (name suffix such as "_bucket" or "", labels)
UNMATCHED = "(unmatched)"  # the route label of requests that matched no route


@dataclass(slots=True)
class Family:
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    merge: Literal["sum", "min", "max", "worker"] = "sum"
    samples: dict[SampleKey, float] = field(default_factory=dict)

    def add(self, labels: Labels, value: float, suffix: str = "") -> None:
        key = (suffix, labels)
        self.samples[key] = self.samples.get(key, 0.0) + value


Families = dict[str, Family]


Trigger = Literal["start", "admin", "signal", "watch", "supervisor"]  # what loaded a configuration
RELOAD_FAILURES_KEPT = 5


@dataclass(frozen=True, slots=True)
class ReloadFailure:
    """A reload that kept the running configuration: when, what asked, and what was wrong where."""

    at: float  # Unix time
    trigger: Trigger
    file: str | None
    key_path: str  # "" when the file as a whole was the problem (unreadable, not YAML)
    message: str


@dataclass(slots=True)
class ReloadRecord:
    """Configuration loads and their outcome, kept where reloads are decided: when and by what
    the running configuration was loaded, the counts, and the last failures with their key
    paths (for the status page)."""

    succeeded: int = 0
    failed: int = 0
    last_ok: bool = True
    last_error: str | None = None
    loaded_at: float = field(default_factory=time.time)
    loaded_by: Trigger = "start"  # admin: POST /reload; signal: SIGHUP; watch: --watch or etcd
    failures: deque[ReloadFailure] = field(default_factory=lambda: deque(maxlen=RELOAD_FAILURES_KEPT))
    applied_revision: int | None = None  # of a versioned source (etcd): the one running
    rejected_revision: int | None = None  # the last one a reload refused

    def success(self, trigger: Trigger, revision: int | None = None) -> None:
        self.succeeded += 1
        self.last_ok = True
        self.last_error = None
        self.loaded_at = time.time()
        self.loaded_by = trigger
        self.applied_revision = revision

    def failure(self, error: ConfigError, trigger: Trigger, revision: int | None = None) -> None:
        self.failed += 1
        self.last_ok = False
        self.last_error = str(error)
        self.failures.append(ReloadFailure(time.time(), trigger, error.file, error.path, error.message))
        if revision is not None and revision != self.applied_revision:
            self.rejected_revision = revision


def _add_counts_by_listener(
    families: Families, name: str, help_text: str, label: str, counts: Mapping[str, Mapping[str, int]] | None
) -> None:
    """A counter family of ``counts`` (by listener, by ``label``), when there is any."""
    if not counts:
        return
    family = families[name] = Family("counter", help_text)
    for listener, by_value in counts.items():
        for value, n in by_value.items():
            family.add((("listener", listener), (label, value)), n)


def collect_gateway(
    plan: Plan,
    unrouted: Iterable[RequestStats],
    handshakes: Mapping[str, Mapping[tuple[str | None, str | None, bool], int]] | None = None,
    connections: Mapping[str, int] | None = None,
    h2_events: Mapping[str, Mapping[str, int]] | None = None,
    handshake_failures: Mapping[str, Mapping[str, int]] | None = None,
    send_timeouts: Mapping[str, Mapping[str, int]] | None = None,
) -> Families:
    """One process's families: requests (``unrouted``: each listener's counters of requests
    that matched no route), latencies, pools, targets, TLS handshakes (``handshakes``: by
    listener, by (version, cipher, resumed)), open client connections (``connections``, by
    listener), HTTP/2 defences that acted (``h2_events``: by listener, by kind), TLS handshakes
    that failed (``handshake_failures``: by listener, by reason), client connections cut by the
    send timeout (``send_timeouts``: by listener, by state), plugin counters."""
    families: Families = {}
    open_connections = families["fastgw_client_connections"] = Family(
        "gauge", "Client connections open, by listener."
    )
    for listener, count in (connections or {}).items():
        open_connections.add((("listener", listener),), count)
    requests = families["fastgw_requests_total"] = Family(
        "counter", "Requests by route, method and status class (none: the client left first)."
    )
    denied = families["fastgw_requests_denied_total"] = Family(
        "counter", "Requests answered 401, 403 or 429 (authentication and rate limits), by route."
    )
    total = families["fastgw_request_duration_seconds"] = Family(
        "histogram", "From the request head parsed to the last response byte written, by route."
    )
    upstream = families["fastgw_upstream_duration_seconds"] = Family(
        "histogram", "From the request head written upstream to the end of its response, by route."
    )
    stats: list[tuple[str, RequestStats]] = [(route.id, route.stats) for route in plan.routes]
    stats += [(UNMATCHED, listener_stats) for listener_stats in unrouted]
    for route_id, route_stats in stats:
        snap = route_stats.snapshot()
        for (method, status_class), n in snap["requests"].items():
            requests.add((("route", route_id), ("method", method), ("status", status_class)), n)
        for status, n in snap["denied"].items():
            if n:
                denied.add((("route", route_id), ("status", str(status))), n)
        if route_id != UNMATCHED:
            _add_histogram(total, (("route", route_id),), *snap["total"])
            _add_histogram(upstream, (("route", route_id),), *snap["upstream"])
    if handshakes:
        tls = families["fastgw_tls_handshakes_total"] = Family(
            "counter",
            "TLS handshakes completed on a listener, by protocol version, cipher suite and whether"
            " a session was resumed (a ticket) rather than made anew.",
        )
        for listener, by_kind in handshakes.items():
            for (version, cipher, resumed), n in by_kind.items():
                labels = (
                    ("version", version or ""),
                    ("cipher", cipher or ""),
                    ("resumed", str(resumed).lower()),
                )
                tls.add((("listener", listener), *labels), n)
    _add_counts_by_listener(
        families,
        "fastgw_tls_handshake_failures_total",
        "TLS handshakes on a listener that did not finish, by reason: OpenSSL's in lower case"
        " (unsupported_protocol, no_shared_cipher, peer_did_not_return_a_certificate,"
        " http_request, wrong_version_number...), timeout, closed.",
        "reason",
        handshake_failures,
    )
    _add_counts_by_listener(
        families,
        "fastgw_http2_refusals_total",
        "HTTP/2 streams or connections the gateway refused or cut off, by listener and why:"
        " rapid_reset, flood, settings_flood, continuation_flood, header_list_too_large,"
        " header_timeout, preface_timeout, stream_send_stalled, bad_preface, protocol_error...",
        "kind",
        h2_events,
    )
    _add_counts_by_listener(
        families,
        "fastgw_client_send_timeouts_total",
        "Client connections cut (RST) because the client took nothing for a whole send timeout, by"
        " listener and state: responding (its response cut short) or closing (the whole response"
        " handed over, the connection closing with bytes the client never took).",
        "state",
        send_timeouts,
    )
    _collect_tunnels(plan, families)
    _collect_upstreams(plan, families)
    _collect_plugin_counters(COUNTERS, families)
    return families


def _add_histogram(
    family: Family,
    labels: Labels,
    buckets: list[int],
    total: float,
    le_labels: tuple[tuple[str, str], ...] | None = None,
) -> None:
    # PERF: one per route and per target on every collection (each second while the status page
    # samples): the le labels are made once, and the buckets go straight into the samples.
    samples = family.samples
    running = 0
    for le, count in zip(le_labels or _LE_LABELS, buckets, strict=True):
        running += count
        key = ("_bucket", (*labels, le))
        samples[key] = samples.get(key, 0.0) + running
    family.add(labels, running, "_count")
    family.add(labels, total, "_sum")


def _collect_tunnels(plan: Plan, families: Families) -> None:
    """Per route that upgrades (WebSocket): its tunnels open, opened, how they ended, the bytes
    they passed each way, and how long they lasted. A tunnel's request is also counted in
    fastgw_requests_total (status 101) when it ends, and timed to its 101."""
    routes = [(route.id, route.tunnel.stats.snapshot()) for route in plan.routes if route.tunnel is not None]
    if not routes:
        return
    open_now = families["fastgw_tunnels_open"] = Family(
        "gauge", "Upgraded connections (WebSocket) open now, by route."
    )
    opened = families["fastgw_tunnels_opened_total"] = Family(
        "counter", "Upgraded connections opened (the upstream answered 101), by route."
    )
    closed = families["fastgw_tunnels_closed_total"] = Family(
        "counter",
        "Tunnels ended, by route and why: client or upstream (that side closed first), reset,"
        " idle (no byte within the route's tunnel idle_timeout), lifetime (its max_lifetime),"
        " drain (closed with 1001 when the drain timeout passed).",
    )
    passed = families["fastgw_tunnel_bytes_total"] = Family(
        "counter",
        "Bytes passed through tunnels, by route and direction: in (from clients to the upstream),"
        " out (from the upstream to clients).",
    )
    duration = families["fastgw_tunnel_duration_seconds"] = Family(
        "histogram", "How long tunnels lasted, from the 101 to the close of both connections, by route."
    )
    for route_id, snap in routes:
        at: Labels = (("route", route_id),)
        open_now.add(at, snap["open"])
        opened.add(at, snap["opened"])
        for cause, n in snap["ended"].items():
            if n:
                closed.add((*at, ("reason", cause)), n)
        passed.add((*at, ("direction", "in")), snap["bytes_in"])
        passed.add((*at, ("direction", "out")), snap["bytes_out"])
        buckets, seconds = snap["duration"]
        _add_histogram(duration, at, buckets, seconds, _TUNNEL_LE_LABELS)


def _collect_upstreams(plan: Plan, families: Families) -> None:
    pool_gauge = families["fastgw_upstream_connections"] = Family(
        "gauge", "Upstream connections per target: idle in the pool, in use, open (both, and connecting)."
    )
    opened = families["fastgw_upstream_connections_opened_total"] = Family(
        "counter", "Upstream connections opened, per target."
    )
    reused = families["fastgw_upstream_connections_reused_total"] = Family(
        "counter", "Requests sent on a pooled keep-alive connection (HTTP/2: on an open one), per target."
    )
    connect_errors = families["fastgw_upstream_connect_errors_total"] = Family(
        "counter", "Failed upstream connection attempts, per target."
    )
    streams = families["fastgw_upstream_streams"] = Family(
        "gauge",
        "HTTP/2 upstreams (protocol h2c, h2): streams per target in use, and the streams its"
        " connections taking new ones may carry at once (the servers' limits, or pool.max_streams).",
    )
    for pool in plan.pools.values():
        at: Labels = (("target", pool.label),)
        if pool.max_streams:
            # An HTTP/2 pool: connections are shared; in_use counts streams (below).
            idle = sum(1 for session in pool.sessions if not session.active)
            pool_gauge.add((*at, ("state", "idle")), idle)
            pool_gauge.add((*at, ("state", "in_use")), len(pool.sessions) - idle)
            streams.add((*at, ("state", "in_use")), pool.in_use)
            streams.add((*at, ("state", "limit")), sum(s.limit for s in pool.sessions if s.usable))
        else:
            pool_gauge.add((*at, ("state", "idle")), len(pool.idle))
            pool_gauge.add((*at, ("state", "in_use")), pool.in_use)
        pool_gauge.add((*at, ("state", "open")), pool.open)
        opened.add(at, pool.opened)
        reused.add(at, pool.reused)
        connect_errors.add(at, pool.connect_errors)
    up = families["fastgw_upstream_target_up"] = Family(
        "gauge", "1 while a target is in rotation (health checks, outlier detection), else 0.", "min"
    )
    in_flight = families["fastgw_upstream_requests_in_flight"] = Family(
        "gauge", "Requests sent to a target and not finished."
    )
    responses = families["fastgw_upstream_target_responses_total"] = Family(
        "counter",
        "Attempts sent to a target (retries each count), by outcome: the response's status class,"
        " failed (connect error, reset, timeout, malformed response) or none (the client left or"
        " the gateway ended it before an answer).",
    )
    latency = families["fastgw_upstream_target_duration_seconds"] = Family(
        "histogram",
        "From the request head written to a target to the end of its response, per attempt that"
        " reached the target (a failed connect sent nothing to time).",
    )
    for name, group in plan.upstreams.items():
        for target in group.targets:
            labels = (("upstream", name), ("target", target.label))
            up.add(labels, 1.0 if target in group.usable else 0.0)
            in_flight.add(labels, target.in_flight)
            snap = target.snapshot()
            for outcome, n in snap["responses"].items():
                if n:
                    responses.add((*labels, ("outcome", outcome)), n)
            _add_histogram(latency, labels, *snap["latency"])
    _collect_limiters(plan, families)
    _collect_breakers(plan, families)
    _collect_discovery(plan, families)


def _collect_limiters(plan: Plan, families: Families) -> None:
    """Concurrency limits count in each worker process: with ``--workers N`` a limit of
    ``max_in_flight`` lets N times that many requests through the gateway. The slots in use add
    up to the gateway's; the limit is shown as what it is, per worker."""
    refused = families["fastgw_concurrency_refused_total"] = Family(
        "counter", "Requests answered 503 by a route's or an upstream's concurrency limit."
    )
    in_use = families["fastgw_concurrency_slots_in_use"] = Family(
        "gauge", "Requests holding a slot of a concurrency limit, in all worker processes together."
    )
    limit = families["fastgw_concurrency_limit_per_worker"] = Family(
        "gauge",
        "max_in_flight of a concurrency limit: each worker process enforces it on its own, so the"
        " gateway admits up to this times fastgw_workers_reporting.",
        "max",
    )
    seen = set()
    for route in plan.routes:
        for limiter in route.limiters:
            if id(limiter) not in seen:
                seen.add(id(limiter))
                at = (("limit", limiter.name),)
                refused.add(at, limiter.refused)
                in_use.add(at, limiter.active)
                limit.add(at, limiter.limit)


def _collect_breakers(plan: Plan, families: Families) -> None:
    """Per target of an upstream with ``breaker:``, its circuit state as three 0/1 gauges (one
    per state). Each worker process has its own breakers: merged, they keep a ``worker`` label."""
    if not plan.breakers:
        return
    state = families["fastgw_upstream_breaker_state"] = Family(
        "gauge",
        "Circuit breaker state per target and worker process (each has its own breakers): 1 for the"
        " state it is in, else 0.",
        "worker",
    )
    for breaker in plan.breakers.values():
        for label, target in breaker.states.items():
            current = target.circuit.state
            for each in State:
                at = (("upstream", breaker.name), ("target", label), ("state", each.value))
                state.add(at, 1.0 if each is current else 0.0)


def target_sources(plan: Plan) -> dict[tuple[str, str], str]:
    """Where each target of each upstream came from, by (upstream, target label): static (the
    config) or the registry that lists it."""
    discovered: dict[str, dict[str, str]] = {}
    for feed in plan.feeds.values():
        discovered[feed.name] = {
            label: f"{feed.source} ({origin})" for label, origin in feed.origins().items()
        }
    sources: dict[tuple[str, str], str] = {}
    for name, group in plan.upstreams.items():
        static = {(t.host, t.port) for t in group.config.targets}
        for target in group.targets:
            where = (
                "static"
                if (target.host, target.port) in static
                else discovered.get(name, {}).get(target.label)
            )
            sources[(name, target.label)] = where or "discovery"
    return sources


def _collect_discovery(plan: Plan, families: Families) -> None:
    """Where each target came from, and each discovery feed's state (``discovery/feed.py``).
    Every worker process follows its registries itself: targets and errors add up across them,
    the age of a set is the oldest worker's, a set's size the largest."""
    source = families["fastgw_upstream_target_source"] = Family(
        "gauge",
        "1 per target and where it came from: static (the config) or the registry that lists it.",
        "max",
    )
    for (name, label), where in target_sources(plan).items():
        source.add((("upstream", name), ("target", label), ("source", where)), 1.0)
    if not plan.feeds:
        return
    count = families["fastgw_discovery_targets"] = Family(
        "gauge", "Targets in the set a registry last gave (as applied), per upstream.", "max"
    )
    stale = families["fastgw_discovery_stale_seconds"] = Family(
        "gauge",
        "0 while the registry answers; else how old the set served is (the last error, or an answer"
        " below min_targets, kept it).",
        "max",
    )
    confirmed = families["fastgw_discovery_last_success_timestamp_seconds"] = Family(
        "gauge", "Unix time the registry last answered a set that was applied (or confirmed).", "min"
    )
    errors = families["fastgw_discovery_errors_total"] = Family(
        "counter", "Failed registry lookups and answers refused by the floor, per upstream."
    )
    answers = families["fastgw_discovery_answers_total"] = Family(
        "counter", "Registry answers by outcome: changed (applied), unchanged, below_floor (refused)."
    )
    last_error = families["fastgw_discovery_last_error_timestamp_seconds"] = Family(
        "gauge", "Unix time of the last discovery error, labelled with it.", "max"
    )
    for feed in plan.feeds.values():
        at: Labels = (("upstream", feed.name), ("provider", feed.config.provider))
        count.add(at, len(feed.instances or ()))
        stale.add(at, feed.stale_seconds)
        if feed.confirmed_at is not None:
            confirmed.add(at, feed.confirmed_at)
        errors.add(at, feed.errors)
        for outcome, n in feed.answers.items():
            answers.add((*at, ("outcome", outcome)), n)
        if feed.last_error is not None and feed.last_error_at is not None:
            last_error.add((*at, ("error", feed.last_error)), feed.last_error_at)


def _collect_plugin_counters(registry: CounterRegistry, families: Families) -> None:
    for name, declared in registry.families.items():
        family = families[name] = Family("counter", declared.help)
        for values, counter in declared.children.items():
            family.add(tuple(zip(declared.label_names, values, strict=True)), counter.value)


def collect_reloads(record: ReloadRecord, workers: int) -> Families:
    """What the process deciding reloads knows: their outcome, and how many workers answered."""
    reloads = Family("counter", "Configuration reloads by result.")
    reloads.add((("result", "success"),), record.succeeded)
    reloads.add((("result", "failure"),), record.failed)
    last = Family("gauge", "1 if the last reload succeeded (or none was tried), else 0.")
    last.add((), 1.0 if record.last_ok else 0.0)
    loaded = Family("gauge", "Unix time the running configuration was loaded.")
    loaded.add((), record.loaded_at)
    counted = Family("gauge", "Worker processes serving that answered this scrape.")
    counted.add((), workers)
    families = {
        "fastgw_config_reloads_total": reloads,
        "fastgw_config_last_reload_successful": last,
        "fastgw_config_loaded_timestamp_seconds": loaded,
        "fastgw_workers_reporting": counted,
    }
    if record.applied_revision is not None:
        applied = families["fastgw_config_revision"] = Family(
            "gauge", "The revision of the configuration running (an etcd key's mod revision)."
        )
        applied.add((), record.applied_revision)
    if record.rejected_revision is not None:
        rejected = families["fastgw_config_rejected_revision"] = Family(
            "gauge", "The last revision of the configuration a reload refused (invalid), still in the source."
        )
        rejected.add((), record.rejected_revision)
    return families


def label_worker(families: Families, index: int) -> Families:
    """One worker's families, its per-worker states (merge ``worker``) labelled with its slot."""
    labelled = dict(families)
    for name, family in families.items():
        if family.merge == "worker":
            samples = {
                (suffix, (*labels, ("worker", str(index)))): v
                for (suffix, labels), v in family.samples.items()
            }
            labelled[name] = Family(family.kind, family.help, family.merge, samples)
    return labelled


def counters_of(families: Families) -> Families:
    """The families that only grow (counters, histograms): what a worker gone leaves behind."""
    return {name: family for name, family in families.items() if family.kind != "gauge"}


def merge(parts: Iterable[Families]) -> Families:
    """Several processes' families as one gateway's."""
    merged: Families = {}
    for families in parts:
        for name, family in families.items():
            into = merged.get(name)
            if into is None:
                merged[name] = Family(family.kind, family.help, family.merge, dict(family.samples))
                continue
            for key, value in family.samples.items():
                old = into.samples.get(key)
                if old is None:
                    into.samples[key] = value
                elif into.merge == "min":
                    into.samples[key] = min(old, value)
                elif into.merge == "max":
                    into.samples[key] = max(old, value)
                else:
                    into.samples[key] = old + value
    return merged


def render(families: Families) -> str:
    """The Prometheus text format: HELP, TYPE, then the samples, families in name order."""
    lines: list[str] = []
    for name in sorted(families):
        family = families[name]
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for (suffix, labels), value in sorted(family.samples.items(), key=_sample_order):
            rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(
                f"{name}{suffix}{{{rendered}}} {_number(value)}"
                if labels
                else f"{name}{suffix} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def _sample_order(item: tuple[SampleKey, float]) -> tuple[Labels, int, float]:
    """Keep each histogram's buckets together and in bound order, then _count and _sum."""
    (suffix, labels), _ = item
    plain = tuple(pair for pair in labels if pair[0] != "le")
    le = next((float(v) for k, v in labels if k == "le"), 0.0)
    return plain, {"_bucket": 0, "_count": 1, "_sum": 2}.get(suffix, 0), le


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


_LE_LABELS = tuple(("le", _number(bound)) for bound in (*LATENCY_BOUNDS, math.inf))
_TUNNEL_LE_LABELS = tuple(("le", _number(bound)) for bound in (*TUNNEL_BOUNDS, math.inf))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def samples_by(families: Families, name: str, suffix: str = "") -> dict[Labels, float]:
    """A family's samples with one suffix, by labels (empty when the family is absent)."""
    family = families.get(name)
    if family is None:
        return {}
    return {labels: value for (s, labels), value in family.samples.items() if s == suffix}
