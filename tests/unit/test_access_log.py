"""The compiled access log without sockets: real exchanges through a gateway whose transports do
nothing (as ``bench/hot_path.py`` drives it), their lines compared byte for byte with the line
orjson makes of the same fields (the reference, kept here only); sampling, the size and time
flushes, reopening after rotation, and a retired log handing late lines on."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._proxy import ClientProtocol, Exchange, TlsFacts, UpstreamConnection
from fastgw.config import parse_config
from fastgw.config.schema import ACCESS_LOG_FIELDS, AccessLogConfig
from fastgw.errors import ConnectFault
from fastgw.observe.access_log import AccessLog, access_log_for
from fastgw.plan import compile_plan
from fastgw.server.listener import ListenerServer

REQUEST = b"GET /items/1?page=2 HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: t\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- the reference: the line as orjson made it before the log was compiled -------------------------
def _ms(seconds: float) -> float:
    return int(seconds * 1000000.0) / 1000.0


def reference_line(x: Any, status: int, now: float, fields: tuple[str, ...] = ACCESS_LOG_FIELDS) -> bytes:
    tp, route, target, query, fault = x.traceparent, x.route, x.target, x.query, x.upstream_error
    sent = x.upstream_sent_at
    at = time.time() - (now - x.received_at)
    values = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(at))) + f".{int(at * 1000) % 1000:03d}Z",
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
    return orjson.dumps({name: values[name] for name in fields}) + b"\n"


# -- a gateway with no-op transports -----------------------------------------------------------------
class NullTransport:
    def write(self, data: bytes) -> None: ...
    def writelines(self, data: Any) -> None: ...
    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_reading(self) -> bool:
        return True

    def close(self) -> None: ...
    def abort(self) -> None: ...


class HoldingLog(AccessLog):
    """Holds the exchanges that end instead of logging them: a test changes their fields, then
    logs them with ``AccessLog.record``."""

    def __init__(self, config: AccessLogConfig) -> None:
        super().__init__(config)
        self.ended: list[tuple[Exchange, int, float]] = []

    def record(self, x: Exchange, status: int, now: float) -> None:
        self.ended.append((x, status, now))


@dataclass
class Gateway:
    one_request: Callable[[], None]
    server: ListenerServer
    log_path: Path
    held: list[tuple[Exchange, int, float]] = field(default_factory=list)

    def exchange(self) -> tuple[Exchange, int, float]:
        """One request proxied to its end: its exchange, status and end time."""
        log = self.server.observers.access_log
        assert isinstance(log, HoldingLog)
        self.one_request()
        return log.ended.pop()


def make_gateway(tmp_path: Path, holding: bool = True, **options: Any) -> Gateway:
    log_path = tmp_path / "access.log"
    doc = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": ["127.0.0.1:9"]}},
        "routes": [{"id": "items", "path": "/items/{id}", "upstream": "up"}],
        "access_log": {"sink": str(log_path), **options},
    }
    plan = compile_plan(parse_config(doc, "gw.yaml"))
    assert plan.config.access_log is not None
    server = ListenerServer(next(iter(plan.listeners.values())))
    server.observers.access_log = (HoldingLog if holding else AccessLog)(plan.config.access_log)
    client = ClientProtocol(server)
    client.connection_made(NullTransport())  # type: ignore[arg-type]
    pool = next(iter(plan.pools.values()))
    conn = UpstreamConnection(pool)
    conn.connection_made(NullTransport())  # type: ignore[arg-type]
    pool.open = 1
    conn.reusable = True
    pool.idle.add(conn)

    def one_request() -> None:
        client.data_received(REQUEST)
        assert client.active is not None and client.active.conn is not None
        client.active.conn.data_received(RESPONSE)  # type: ignore[attr-defined]

    return Gateway(one_request, server, log_path)


def on_a_loop(work: Callable[[], Any]) -> Any:
    """``work`` run inside a running loop (connections file their timers on its wheel; the log
    arms its flush timer on it), and the loop closed after."""

    async def run() -> Any:
        return work()

    return asyncio.run(run())


def written_line(log: AccessLog, path: Path, x: Exchange, status: int, now: float) -> bytes:
    path.unlink(missing_ok=True)
    log.reopen()
    AccessLog.record(log, x, status, now)
    log.flush()
    return path.read_bytes()


def same_but_time(line: bytes, reference: bytes) -> None:
    """Byte for byte, but for the time (taken at another instant): that must be within 2 s."""
    stamp = re.compile(rb'"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"')
    ours, theirs = stamp.search(line), stamp.search(reference)
    if theirs is None:
        assert line == reference
        return
    assert ours is not None, line
    gap = datetime.fromisoformat(ours.group(1).decode()) - datetime.fromisoformat(theirs.group(1).decode())
    assert abs(gap.total_seconds()) < 2.0
    assert stamp.sub(b"T", line) == stamp.sub(b"T", reference)


# -- the line --------------------------------------------------------------------------------------
def logged_line(
    tmp_path: Path, change: Callable[[Exchange], Any] = lambda x: None, **options: Any
) -> tuple[bytes, bytes]:
    """One request through a gateway logging ``options``' fields, its exchange changed by
    ``change`` (which may return another status): the compiled line and the reference's."""

    def work() -> tuple[bytes, bytes]:
        gw = make_gateway(tmp_path, **options)
        log = gw.server.observers.access_log
        assert log is not None
        x, status, now = gw.exchange()
        changed = change(x)
        status = status if changed is None else changed
        line = written_line(log, gw.log_path, x, status, now)
        return line, reference_line(x, status, now, log.config.fields)

    return on_a_loop(work)  # type: ignore[no-any-return]


def test_a_proxied_request_s_line_is_orjson_s_line(tmp_path: Path) -> None:
    line, reference = logged_line(tmp_path)
    same_but_time(line, reference)
    values = json.loads(line)
    assert (values["status"], values["path"], values["query"], values["route"]) == (
        200,
        "/items/1",
        "page=2",
        "items",
    )
    assert values["upstream"] == "127.0.0.1:9" and values["protocol"] == "HTTP/1.1"


byte_text = st.binary(max_size=40)
text = st.one_of(st.none(), st.text(max_size=30))


@settings(max_examples=150, deadline=None)
@given(
    path=byte_text,
    host=byte_text,
    query=st.one_of(st.just(b""), byte_text.map(lambda b: b"?" + b)),
    request_id=byte_text,
    method=st.sampled_from([b"GET", b"PURGE", b'M\xe9"\\']),
    consumer=st.one_of(text, st.integers(-(2**62), 2**62)),
    abort=text,
    fault=st.one_of(st.none(), st.text(max_size=30)),
    took=st.floats(0.0, 1e5),
    upstream=st.floats(0.0, 1e5),
    started=st.booleans(),
    traced=st.booleans(),
    sizes=st.tuples(st.integers(0, 2**62), st.integers(0, 2**62)),
    status=st.sampled_from([0, 200, 404, 502, 599]),
    protocol=st.sampled_from(["1.1", "2", "1.0", '3\n"x']),
    tls=st.tuples(text, text),
)
def test_any_field_values_make_orjson_s_line(tmp_path_factory: pytest.TempPathFactory, **v: Any) -> None:
    """The compiled line escapes and formats each field as orjson did: request bytes as Latin-1,
    quotes, backslashes and control characters escaped, milliseconds as shortest decimals."""

    def change(x: Exchange) -> int:
        now = x.received_at  # the harness's exchanges end within the same clock read or so
        x.path, x.host, x.query = v["path"], v["host"], v["query"]
        x.request_id, x.method = v["request_id"], v["method"]
        x.consumer, x.abort_reason = v["consumer"], v["abort"]
        x.upstream_error = None if v["fault"] is None else ConnectFault(v["fault"])
        x.received_at, x.upstream_sent_at = now - v["took"], now - v["upstream"] if v["upstream"] else 0.0
        x.response_started = v["started"]
        x.traceparent = TRACEPARENT if v["traced"] else None
        x.body_received, x.bytes_sent = v["sizes"]
        x.client.protocol, x.client.tls = v["protocol"], TlsFacts(*v["tls"], None, b"")
        return int(v["status"])

    line, reference = logged_line(tmp_path_factory.mktemp("log"), change)
    same_but_time(line, reference)


@pytest.mark.parametrize(
    "fields", [("status",), ("path", "status", "time"), ("error", "consumer", "request_id", "upstream_ms")]
)
def test_configured_fields_come_in_their_order(tmp_path: Path, fields: tuple[str, ...]) -> None:
    line, reference = logged_line(tmp_path, fields=list(fields))
    assert list(json.loads(line)) == list(fields)
    same_but_time(line, reference)


def test_the_time_is_when_the_request_came(tmp_path: Path) -> None:
    def an_hour_ago(x: Exchange) -> None:
        x.received_at -= 3600.0

    line, _ = logged_line(tmp_path, an_hour_ago, fields=["time"])
    logged = datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp()
    assert abs(logged - (time.time() - 3600.0)) < 2.0


# -- sampling --------------------------------------------------------------------------------------
def test_sampling_keeps_errors_unanswered_requests_and_client_aborts(tmp_path: Path) -> None:
    def work() -> list[Any]:
        gw = make_gateway(tmp_path, sample=0.01, fields=["status", "error"])
        x, _, now = gw.exchange()
        log = gw.server.observers.access_log
        assert log is not None
        for status in (200, 404, 502, 0):
            for _ in range(1000):
                AccessLog.record(log, x, status, now)
        x.abort_reason = "client closed the connection before the response"
        for _ in range(1000):
            AccessLog.record(log, x, 200, now)  # the head went out, then the client left
        log.flush()
        return [json.loads(line) for line in gw.log_path.read_text().splitlines()]

    lines = on_a_loop(work)
    kept = {status: sum(1 for line in lines if line["status"] == status and line["error"] is None)
            for status in (200, 404, 502, 0)}  # fmt: skip
    aborts = sum(1 for line in lines if line["error"] is not None)
    assert kept[502] == kept[0] == aborts == 1000  # never sampled away
    assert 0 < kept[200] < 100 and 0 < kept[404] < 100  # about 10 of 1,000 each


# -- when lines are written ------------------------------------------------------------------------
LINE = b'{"path":"/items/1"}\n'


def test_lines_wait_for_a_full_buffer(tmp_path: Path) -> None:
    def work() -> None:
        gw = make_gateway(tmp_path, holding=False, buffer_bytes="4KiB", flush_interval="1h", fields=["path"])
        log = gw.server.observers.access_log
        assert log is not None
        for _ in range(4096 // len(LINE)):
            gw.one_request()
        assert not gw.log_path.exists() and log.buffered == 4096 // len(LINE) * len(LINE)  # no write per line
        gw.one_request()  # the line that fills it: all written, in one write
        assert gw.log_path.read_bytes() == LINE * (4096 // len(LINE) + 1) and log.buffered == 0

    on_a_loop(work)


def test_lines_wait_at_most_the_flush_interval(tmp_path: Path) -> None:
    async def work() -> None:
        gw = make_gateway(tmp_path, holding=False, flush_interval="50ms", fields=["path"])
        gw.one_request()
        gw.one_request()
        assert not gw.log_path.exists()  # the loop has not turned: nothing written yet
        await asyncio.sleep(0.3)
        assert gw.log_path.read_bytes() == LINE * 2

    asyncio.run(work())


def test_a_reload_reopens_the_file_after_rotation(tmp_path: Path) -> None:
    def work() -> None:
        gw = make_gateway(tmp_path, holding=False, fields=["path"])
        log = gw.server.observers.access_log
        assert log is not None
        gw.one_request()
        log.flush()
        rotated = gw.log_path.rename(tmp_path / "access.log.1")
        gw.one_request()  # buffered: the reload writes it to the file it belongs to
        assert access_log_for(log.config, log) is log  # an unchanged section: the same log, reopened
        gw.one_request()
        log.flush()
        assert rotated.read_bytes() == LINE * 2
        assert gw.log_path.read_bytes() == LINE

    on_a_loop(work)


def test_a_retired_log_writes_its_lines_and_hands_late_ones_on(tmp_path: Path) -> None:
    config = AccessLogConfig(sink=str(tmp_path / "new.log"), fields=("status",))

    def work() -> None:
        gw = make_gateway(tmp_path, holding=False, fields=["path"])
        old = gw.server.observers.access_log
        assert old is not None
        gw.one_request()
        new = access_log_for(config, old)
        assert new is not None and new is not old
        old.retire(new)
        assert gw.log_path.read_bytes() == LINE and old.fd == -1 and old.retired
        gw.one_request()  # a request on an old connection ends after the reload
        new.flush()
        assert (tmp_path / "new.log").read_bytes() == b'{"status":200}\n'

    on_a_loop(work)
