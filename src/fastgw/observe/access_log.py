"""The access log: one JSON line per request, buffered and written in batches.

Off unless configured (``access_log:``), and then the hot path's only cost when a request ends
is one call to ``AccessLog.record``: it samples, builds the line with orjson and appends it to a
buffer. The buffer is written with one ``os.write`` when it holds ``buffer_bytes`` or when
``flush_interval`` has passed since its first line, never once per request. Writes to a regular
file block only for the copy into the page cache; a slow stdout pipe is written the same way.

A request that ended in an error has its ``error`` field set (the upstream fault's message), so
each error is logged once, on the request's own line, with its request id. Sampling keeps every
5xx, every request that got no response and every client abort (whose ``error`` says why).

On reload, an unchanged ``access_log`` section keeps the same log; a changed one starts a new
log and the old one flushes, closes its file, and passes the lines of requests still finishing
on old connections to the new one (or drops them when the new config has no access log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

import orjson

from fastgw.config.schema import ACCESS_LOG_FIELDS, AccessLogConfig

log = logging.getLogger("fastgw")


def _ms(seconds: float) -> float:
    # PERF: whole microseconds as milliseconds; round(x, 3) costs 5x more.
    return int(seconds * 1000000.0) / 1000.0


def line_values(x: Any, status: int, now: float) -> dict[str, object]:
    """Every field of one request's line (``ACCESS_LOG_FIELDS``), from the exchange, the status
    it ended with (0: none) and the precise end time. PERF: one function with the fields inline,
    not a call per field: the access log runs this once per request."""
    tp = x.traceparent
    route = x.route
    target = x.target
    query = x.query
    fault = x.upstream_error
    sent = x.upstream_sent_at
    return {
        "time": _wall_time(time.time() - (now - x.received_at)),
        "request_id": x.request_id.decode("latin-1"),
        "client": x.client_ip,
        "method": x.method.decode("latin-1"),
        "host": x.host.decode("latin-1"),
        "path": x.path.decode("latin-1"),
        "query": query[1:].decode("latin-1") if query else None,
        "listener": x.listener.name,
        "route": route.id if route is not None else None,
        "upstream": target.label if target is not None else None,
        "status": status,
        "bytes_in": x.body_received,
        "bytes_out": x.bytes_sent,
        "duration_ms": _ms(now - x.received_at),
        "upstream_ms": _ms(now - sent) if x.response_started and sent > 0.0 else None,
        "trace_id": tp[3:35].decode() if tp is not None else None,
        "span_id": tp[36:52].decode() if tp is not None else None,
        "consumer": x.consumer,
        "error": str(fault) if fault is not None else x.abort_reason,
        "protocol": "HTTP/" + x.client.protocol,
        "tls_version": x.client.tls_version,
        "tls_cipher": x.client.tls_cipher,
    }


_last_milli = -1
_last_text = ""


def _wall_time(at: float) -> str:
    """RFC 3339 in UTC with milliseconds, formatted once per millisecond (busy gateways end many
    requests within one)."""
    global _last_milli, _last_text
    milli = int(at * 1000.0)
    if milli != _last_milli:
        _last_milli = milli
        second, rest = divmod(milli, 1000)
        _last_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{rest:03d}Z"
    return _last_text


class AccessLog:
    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        # The line holds the configured fields in their order; all of them: no copy needed.
        self.names: tuple[str, ...] | None = None if config.fields == ACCESS_LOG_FIELDS else config.fields
        self.sample = config.sample
        # PERF: lines are appended to one bytearray. Keeping each line as its own bytes object
        # made every orjson.dumps pay a fresh allocation (2 us a line, measured), 5x the encoding.
        self.buffer = bytearray()
        self.fd = -1  # opened on the first write, in the process that writes (after fork)
        self.timer: asyncio.TimerHandle | None = None
        self.successor: AccessLog | None = None
        self.retired = False
        self.write_errors = 0

    def record(self, exchange: Any, status: int, now: float) -> None:
        """Called by the exchange as it ends (status 0: no response was sent)."""
        if self.retired:
            if self.successor is not None:
                self.successor.record(exchange, status, now)
            return
        if (
            self.sample < 1.0
            and 0 < status < 500
            and exchange.abort_reason is None  # client aborts are always logged
            and random.random() >= self.sample
        ):
            return
        buffer = self.buffer
        values = line_values(exchange, status, now)
        names = self.names
        buffer += orjson.dumps(values if names is None else {name: values[name] for name in names})
        buffer += b"\n"
        if len(buffer) >= self.config.buffer_bytes:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.config.flush_interval, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:
        """Write what is buffered, in one call (a short write is completed, never dropped)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.buffer:
            return
        data = memoryview(self.buffer)
        self.buffer = bytearray()
        try:
            if self.fd < 0:
                self.fd = self._open()
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1:  # once: a broken sink must not flood the error log
                log.error("access log %s: %s", self.config.sink, exc)

    def _open(self) -> int:
        if self.config.sink == "stdout":
            return 1
        return os.open(self.config.sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def retire(self, successor: AccessLog | None) -> None:
        """A reload replaced this log: write what is left, close the file, pass on late lines."""
        self.flush()
        self.retired = True
        self.successor = successor
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1


def access_log_for(config: AccessLogConfig | None, running: AccessLog | None) -> AccessLog | None:
    """The log a (re)loaded configuration asks for: the running one when its section is unchanged."""
    if config is None:
        return None
    if running is not None and running.config == config:
        return running
    return AccessLog(config)
