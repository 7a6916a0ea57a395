"""The access log: one JSON line per request, buffered and written in batches.

Off unless configured (``access_log:``), and then the hot path's only cost when a request ends
is one call to ``AccessLog.record``: it samples, builds the line with orjson and appends it to a
buffer. The buffer is written with one ``os.write`` when it holds ``buffer_bytes`` or when
``flush_interval`` has passed since its first line, never once per request. Writes to a regular
file block only for the copy into the page cache; a slow stdout pipe is written the same way.

A request that ended in an error has its ``error`` field set (the upstream fault's message), so
each error is logged once, on the request's own line, with its request id. Sampling keeps every
5xx and every request that got no response.

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
from collections.abc import Callable
from typing import Any

import orjson

from fastgw.config.schema import AccessLogConfig

log = logging.getLogger("fastgw")

Field = Callable[[Any, int, float], object]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _trace_id(exchange: Any) -> str | None:
    tp = exchange.traceparent
    return tp[3:35].decode() if tp is not None else None


def _span_id(exchange: Any) -> str | None:
    tp = exchange.traceparent
    return tp[36:52].decode() if tp is not None else None


def _upstream_ms(exchange: Any, status: int, now: float) -> float | None:
    if exchange.response_started and exchange.upstream_sent_at > 0.0:
        return _ms(now - exchange.upstream_sent_at)
    return None


def _error(exchange: Any, status: int, now: float) -> str | None:
    fault = exchange.upstream_error
    if fault is not None:
        return str(fault)
    return "client closed the connection before the response" if status == 0 else None


# What each field is, from the exchange, the status it ended with (0: none) and the precise end time.
FIELDS: dict[str, Field] = {
    "time": lambda x, s, now: _wall_time(time.time() - (now - x.received_at)),
    "request_id": lambda x, s, now: _text(x.request_id),
    "client": lambda x, s, now: x.client_ip,
    "method": lambda x, s, now: _text(x.method),
    "host": lambda x, s, now: _text(x.host),
    "path": lambda x, s, now: _text(x.path),
    "query": lambda x, s, now: _text(x.query[1:]) if x.query else None,
    "listener": lambda x, s, now: x.listener.name,
    "route": lambda x, s, now: x.route.id if x.route is not None else None,
    "upstream": lambda x, s, now: x.target.label if x.target is not None else None,
    "status": lambda x, s, now: s,
    "bytes_in": lambda x, s, now: x.body_received,
    "bytes_out": lambda x, s, now: x.bytes_sent,
    "duration_ms": lambda x, s, now: _ms(now - x.received_at),
    "upstream_ms": _upstream_ms,
    "trace_id": lambda x, s, now: _trace_id(x),
    "span_id": lambda x, s, now: _span_id(x),
    "consumer": lambda x, s, now: x.consumer,
    "error": _error,
}

_last_second = -1
_last_prefix = ""


def _wall_time(at: float) -> str:
    """RFC 3339 in UTC with milliseconds; the part up to the second is formatted once a second."""
    global _last_second, _last_prefix
    second = int(at)
    if second != _last_second:
        _last_second = second
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_last_prefix}.{int((at - second) * 1000):03d}Z"


class AccessLog:
    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        self.fields = tuple((name, FIELDS[name]) for name in config.fields)
        self.sample = config.sample
        self.buffer: list[bytes] = []
        self.size = 0
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
        if self.sample < 1.0 and 0 < status < 500 and random.random() >= self.sample:
            return
        line = orjson.dumps({name: field(exchange, status, now) for name, field in self.fields})
        self.buffer.append(line)
        self.size += len(line) + 1
        if self.size >= self.config.buffer_bytes:
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
        self.buffer.append(b"")
        data = memoryview(b"\n".join(self.buffer))
        self.buffer.clear()
        self.size = 0
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
