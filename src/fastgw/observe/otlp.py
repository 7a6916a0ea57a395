"""Span export: one OpenTelemetry SERVER span per request, sent as OTLP/HTTP JSON in batches.

Off unless configured (``tracing: {otlp: ...}``); then the hot path's cost when a request ends
is one call to ``SpanExport.record``: it checks the sampled flag of the gateway's traceparent and
appends a tuple of the exchange's fields to a list. Everything else happens in one background
task per process (started in the worker, after fork): every ``flush_interval``, or as soon as a
batch is full, it turns up to ``batch`` records into spans, encodes them with orjson and POSTs
them to the collector with aiohttp (already a dependency: no OpenTelemetry SDK, no protobuf).

Bounded, never blocking: the list holds at most ``queue`` records; more are dropped and counted
(``fastgw_tracing_spans_dropped_total{reason="queue_full"}``). A batch the collector refuses or
does not answer within ``timeout`` is dropped and counted too (``reason="export_failed"``), never
retried: while the collector is down the gateway keeps serving and keeps only the newest spans.
The first failure of an outage logs one warning; the first success after it logs that export
works again and how many spans were lost meanwhile.

Sampling follows OpenTelemetry's default ``ParentBased(TraceIdRatioBased(sample))``: a trace the
client continues keeps the client's sampled flag; for a trace the gateway starts, the flag is
decided in C from the trace id (``_proxy._render_traceparent``) and forwarded upstream, so the
services behind the gateway sample the same traces. Only sampled requests are recorded.

A span's ids come from the traceparent the gateway sent upstream: its trace id, its span id (the
parent the upstream sees), and as parent the span id of the client's traceparent when the trace
was continued. Attributes follow the OpenTelemetry HTTP server semantic conventions; status is
ERROR for a 5xx answer or an upstream failure. On reload a changed ``tracing`` section starts a
new exporter; the old one hands its queue and its late records to the new one (or drops them
when export was turned off) and stops after the batch it may be sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from fastgw import __version__
from fastgw.config.schema import OtlpConfig
from fastgw.observe.counters import Counter, declare_counter

if TYPE_CHECKING:
    import aiohttp  # imported when export starts: a gateway without tracing never loads it

log = logging.getLogger("fastgw")

SPAN_KIND_SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_CODE_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode
_SAMPLED = ord("1")  # the traceparent's flags byte (index 54) when the trace is sampled
# HTTP methods the semantic conventions name; any other is reported as "_OTHER".
_KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)

# What ``record`` keeps of an exchange, read in the batch (indices of the tuple):
# traceparent sent upstream, client's traceparent or None, start and end (monotonic seconds),
# status (0: none sent), method, path, host, route (RoutePlan or None), target (or None),
# client address, upstream fault (or None), request id, listener (ListenerPlan).
SpanRecord = tuple[Any, ...]


def sample_max(ratio: float) -> int:
    """The largest lower half of a new trace id that is sampled at ``ratio`` (0 < ratio <= 1)."""
    return min(int(ratio * 2**64), 2**64) - 1


class SpanExport:
    """One process's span exporter for one ``tracing.otlp`` configuration."""

    def __init__(self, config: OtlpConfig) -> None:
        self.config = config
        self.sample_max = sample_max(config.sample)  # read when set on the listeners' Observers
        self.queue: list[SpanRecord] = []
        self.limit = config.queue
        self.batch = config.batch
        self.wake = asyncio.Event()  # set when a batch is full: send now, not at the interval
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.retired = False
        self.successor: SpanExport | None = None
        self.failing = False  # in an outage: warned once, quiet until an export succeeds
        self.lost_in_outage = 0
        dropped = declare_counter(
            "fastgw_tracing_spans_dropped_total",
            "Spans not exported: queue_full (the collector is slower than the traffic or down),"
            " export_failed (a batch it refused or did not answer), rejected (it said so).",
            ("reason",),
        )
        self.dropped_full: Counter = dropped.labels("queue_full")
        self.dropped_failed: Counter = dropped.labels("export_failed")
        self.dropped_rejected: Counter = dropped.labels("rejected")
        self.exported: Counter = declare_counter(
            "fastgw_tracing_spans_exported_total", "Spans the OTLP collector accepted."
        ).labels()
        self.scope = {"name": "fastgw", "version": __version__}
        self.headers = {"Content-Type": "application/json", **dict(config.headers)}

    # -- the hot path ----------------------------------------------------------------------------
    def record(self, exchange: Any, status: int, now: float) -> None:
        """Called by the exchange as it ends (status 0: no response was sent)."""
        traceparent = exchange.traceparent
        if traceparent is None or traceparent[54] != _SAMPLED:
            return  # the listener does not trace, or this trace is not sampled
        if self.retired:
            if self.successor is not None:
                self.successor.record(exchange, status, now)
            return
        queue = self.queue
        if len(queue) >= self.limit:
            self.dropped_full.inc()
            return
        queue.append(
            (
                traceparent,
                exchange.client_traceparent,
                exchange.received_at,
                now,
                status,
                exchange.method,
                exchange.path,
                exchange.host,
                exchange.route,
                exchange.target,
                exchange.client_ip,
                exchange.upstream_error,
                exchange.request_id,
                exchange.listener,
                exchange.client.protocol,
                exchange.client.tls_version,
                exchange.client.tls_cipher,
            )
        )
        if len(queue) == self.batch:
            self.wake.set()

    # -- the background task ---------------------------------------------------------------------
    def start(self) -> None:
        """Start exporting, on the running loop of the process that serves (after fork)."""
        if self.task is None and not self.stopping:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="otlp span export")

    async def _run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as session:
            while not self.stopping:
                if len(self.queue) < self.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.config.flush_interval)
                self.wake.clear()
                await self._send_queued(session)
            await self._send_queued(session)  # what was queued when asked to stop

    async def _send_queued(self, session: aiohttp.ClientSession) -> None:
        while self.queue:
            records = self.queue[: self.batch]
            del self.queue[: self.batch]
            if not await self._send(session, records) and self.stopping:
                # Shutting down and the collector is not answering: do not wait once per batch.
                self.dropped_failed.inc(len(self.queue))
                self.lost_in_outage += len(self.queue)
                self.queue.clear()

    async def _send(self, session: aiohttp.ClientSession, records: Sequence[SpanRecord]) -> bool:
        import aiohttp  # loaded by _run already: a dictionary lookup

        body = orjson.dumps(self.encode(records, time.time_ns() - time.monotonic_ns()))
        try:
            async with session.post(self.config.endpoint, data=body) as response:
                answer = await response.read()
                if not 200 <= response.status < 300:
                    raise ExportRefused(f"HTTP {response.status} {response.reason or ''}".rstrip())
        except (aiohttp.ClientError, TimeoutError, ExportRefused) as exc:
            self.dropped_failed.inc(len(records))
            self.lost_in_outage += len(records)
            if not self.failing:
                self.failing = True
                log.warning(
                    "tracing: cannot export spans to %s (%s); dropping them until it answers",
                    self.config.endpoint,
                    _describe(exc),
                )
            return False
        rejected = _rejected_spans(answer)
        self.exported.inc(len(records) - rejected)
        if rejected:
            self.dropped_rejected.inc(rejected)
        if self.failing:
            self.failing = False
            log.warning(
                "tracing: exporting spans to %s again; %d were dropped meanwhile",
                self.config.endpoint,
                self.lost_in_outage,
            )
        self.lost_in_outage = 0
        return True

    # -- lifecycle -------------------------------------------------------------------------------
    def retire(self, successor: SpanExport | None) -> None:
        """A reload replaced this exporter: hand the queue and late records on, then stop."""
        self.retired = True
        self.successor = successor
        if successor is not None:
            for record in self.queue[: max(0, successor.limit - len(successor.queue))]:
                successor.queue.append(record)
        self.queue.clear()
        self.stopping = True
        self.wake.set()

    async def close(self, within: float) -> None:
        """Send what is queued (one try per batch while the collector answers), then stop;
        waits at most ``within`` seconds (what is left of the drain), whatever the collector does."""
        self.stopping = True
        self.wake.set()
        if self.task is None:
            return
        done, _ = await asyncio.wait({self.task}, timeout=within) if within > 0 else (set(), set())
        if not done:
            self.task.cancel()
            self.dropped_failed.inc(len(self.queue))
            self.queue.clear()

    # -- OTLP/HTTP JSON (the protobuf JSON mapping: hex ids, int64 as strings, enums as integers) --
    def encode(self, records: Sequence[SpanRecord], wall_offset_ns: int) -> dict[str, object]:
        """An ExportTraceServiceRequest; ``wall_offset_ns`` turns monotonic times into Unix time."""
        spans = [_span(record, wall_offset_ns) for record in records]
        # The process id tells the workers' spans apart (each worker exports its own).
        resource = {
            "attributes": [
                _string("service.name", self.config.service_name),
                _int("process.pid", os.getpid()),
            ]
        }
        return {
            "resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": self.scope, "spans": spans}]}]
        }


class ExportRefused(Exception):
    """The collector answered an export request with a status other than 2xx."""


def _span(record: SpanRecord, wall_offset_ns: int) -> dict[str, object]:
    (traceparent, client, start, end, status, method, path, host, route, target, client_ip, fault,
     request_id, listener, protocol, tls_version, tls_cipher) = record  # fmt: skip
    method_name = method.decode("latin-1")
    known = method_name if method_name in _KNOWN_METHODS else "_OTHER"
    attributes = [_string("http.request.method", known)]
    if known == "_OTHER":
        attributes.append(_string("http.request.method_original", method_name))
    attributes += [
        _string("url.path", path.decode("latin-1")),
        _string("url.scheme", "https" if tls_version else "http"),
        _string("client.address", client_ip),
        _string("fastgw.request_id", request_id.decode("latin-1")),
        _string("fastgw.listener", listener.name),
        _string("network.protocol.name", "http"),
        _string("network.protocol.version", protocol),
    ]
    if host:
        attributes.append(_string("server.address", host.decode("latin-1")))
    if tls_version:  # OpenTelemetry's tls.* conventions: "TLSv1.3" is protocol tls, version 1.3
        attributes += [
            _string("tls.protocol.name", "tls"),
            _string("tls.protocol.version", tls_version.removeprefix("TLSv")),
            _string("tls.cipher", tls_cipher or ""),
        ]
    if status:
        attributes.append(_int("http.response.status_code", status))
    name = known
    if route is not None:
        name = f"{known} {route.id}"
        attributes += [
            _string("http.route", route.config.path),
            _string("fastgw.route", route.id),
            _string("fastgw.upstream", route.upstream.name),
        ]
    if target is not None:
        attributes.append(_string("fastgw.upstream.target", target.label))
    span: dict[str, object] = {
        "traceId": traceparent[3:35].decode(),
        "spanId": traceparent[36:52].decode(),
        "name": name,
        "kind": SPAN_KIND_SERVER,
        "startTimeUnixNano": str(int(start * 1e9) + wall_offset_ns),
        "endTimeUnixNano": str(int(end * 1e9) + wall_offset_ns),
        "attributes": attributes,
    }
    if client is not None:
        span["parentSpanId"] = client[36:52].decode()
    if fault is not None or status >= 500:
        attributes.append(_string("error.type", type(fault).__name__ if fault is not None else str(status)))
        span["status"] = {"code": STATUS_CODE_ERROR}
        if fault is not None:
            span["status"] = {"code": STATUS_CODE_ERROR, "message": str(fault)}
    return span


def _string(key: str, value: str) -> dict[str, object]:
    return {"key": key, "value": {"stringValue": value}}


def _int(key: str, value: int) -> dict[str, object]:
    return {"key": key, "value": {"intValue": str(value)}}


def _rejected_spans(answer: bytes) -> int:
    """``partialSuccess.rejectedSpans`` of an ExportTraceServiceResponse (0 when absent)."""
    try:
        parsed = orjson.loads(answer) if answer else None
        rejected = parsed["partialSuccess"]["rejectedSpans"] if isinstance(parsed, dict) else 0
        return int(rejected)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def span_export_for(config: OtlpConfig | None, running: SpanExport | None) -> SpanExport | None:
    """The exporter a (re)loaded configuration asks for: the running one when unchanged."""
    if config is None:
        return None
    if running is not None and running.config == config:
        return running
    return SpanExport(config)
