"""The last errors and refusals, for the status page: a bounded ring filled as requests end.

Kept only when the admin listener is configured (the status page reads it); then the hot path
hands over each request that ended with a status of 400 or more, or with none (0: the client
left before a response): one C comparison on every other request. Of those, the ring keeps

- every 5xx (the upstream's, or the gateway's own: refused, reset, timeout, no usable target,
  a concurrency limit full, a plugin that failed),
- every client abort before a response,
- every 4xx the gateway answered itself (no route, wrong method, a body too large, a plugin's
  refusal: 401, 403, 429, ...), but not a 4xx the upstream answered: that is the application's
  answer, and the access log has it.

An entry holds the time, listener, route, method, status, reason, request id, the upstream and
target, and the duration: never the path's query, a header, a body or a credential (the request
id leads to the access log line when one is kept). Recording stores references and numbers only;
the text is made when the ring is read. The one reason that must be read at the moment itself is
a gateway 503 without an upstream fault: whether no target was in rotation or a concurrency limit
was full (both are decided in the same call that ends the request, so reading them then is exact).

With ``--workers N`` each worker keeps its own ring; the supervisor asks each for its entries and
merges them by time (``merge_entries``).
"""

from __future__ import annotations

import time
from collections import deque
from http import HTTPStatus
from typing import Any

RING_SIZE = 100  # entries per process; the page shows the newest of all workers together

# Record: (ended, status, listener, route, method, request id, target, upstream status,
#          upstream fault, abort reason, duration, reason decided at the time or None)
_Record = tuple[float, int, Any, Any, bytes, bytes, Any, int, Any, "str | None", float, "str | None"]


class RecentErrors:
    """One process's ring of recent errors and refusals (``record`` is the hot path's call)."""

    __slots__ = ("recorded", "ring")

    def __init__(self, size: int = RING_SIZE) -> None:
        self.ring: deque[_Record] = deque(maxlen=size)
        self.recorded = 0  # entries ever recorded (the ring holds the last ``size``)

    def record(self, x: Any, status: int, now: float) -> None:
        """Called by the exchange as it ends with ``status`` >= 400 or 0 (``now``: monotonic)."""
        upstream_status = x.upstream_status
        if 400 <= status < 500 and status == upstream_status:
            return  # the upstream's own 4xx
        route = x.route
        fault = x.upstream_error
        decided = None
        if status == 503 and fault is None and route is not None and x.abort_reason is None:
            decided = _why_unavailable(route)
        self.ring.append(
            (
                now, status, x.listener, route, x.method, x.request_id, x.target, upstream_status,
                fault, x.abort_reason, now - x.received_at, decided,
            )
        )  # fmt: skip
        self.recorded += 1

    def entries(self) -> list[dict[str, object]]:
        """The ring as JSON-ready entries, oldest first; ``at`` is Unix time."""
        offset = time.time() - time.monotonic()
        return [_entry(record, offset) for record in self.ring]


def _entry(record: _Record, offset: float) -> dict[str, object]:
    ended, status, listener, route, method, request_id, target, upstream_status = record[:8]
    fault, abort_reason, duration, decided = record[8:]
    return {
        "at": round(ended + offset, 3),
        "listener": listener.name,
        "route": route.id if route is not None else None,
        "method": method.decode("latin-1"),
        "status": status,
        "reason": decided or _reason(status, route, upstream_status, fault, abort_reason),
        "request_id": request_id.decode("latin-1"),
        "upstream": route.config.upstream if route is not None else None,
        "target": target.label if target is not None else None,
        "duration_ms": round(duration * 1000.0, 3),
    }


def _reason(status: int, route: Any, upstream_status: int, fault: object, abort_reason: str | None) -> str:
    """Why it ended as it did, in the words an operator looks for."""
    if abort_reason is not None:
        return f"client left: {abort_reason}"
    if status == 0:
        return "no response"
    if fault is not None:
        return str(fault)  # the upstream's failure, as the error body and access log name it
    if upstream_status and upstream_status == status:
        return f"the upstream answered {status}"
    if upstream_status:
        return f"answered {status} instead of the upstream's {upstream_status} (a response hook)"
    if route is None:
        if status == 404:
            return "no route matches"
        if status == 405:
            return "the path matches, not the method"
        return f"refused before routing: {_phrase(status)}"
    if status == 500:
        return "a plugin failed (see the error log)"
    plugins = ", ".join(type(p).name for p in route.plugins)
    if plugins:
        return f"{_phrase(status)}, answered by the route's plugins ({plugins})"
    return f"{_phrase(status)}, answered by the gateway"


def _phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _why_unavailable(route: Any) -> str:
    """A gateway 503 without an upstream fault: no target in rotation, or a limit full (read in the
    call that answered it)."""
    group = route.upstream
    usable = getattr(group, "usable", None)
    if usable is not None and not usable:
        return str(group.unavailable())
    for limiter in route.limiters:
        if limiter.active >= limiter.limit:
            return f"{limiter.name}: {limiter.limit} requests in flight (concurrency limit)"
    return "503 Service Unavailable, answered by the gateway"


def merge_entries(
    parts: list[tuple[int, list[dict[str, object]]]], size: int = RING_SIZE
) -> list[dict[str, Any]]:
    """Several workers' entries (``(worker slot, entries)``) as one list, oldest first, the newest
    ``size`` of them, each with its worker's slot."""
    merged = [{**entry, "worker": worker} for worker, entries in parts for entry in entries]
    merged.sort(key=lambda entry: float(entry["at"]))  # type: ignore[arg-type]
    return merged[-size:]
