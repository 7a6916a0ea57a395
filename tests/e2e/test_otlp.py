"""Span export over OTLP/HTTP JSON, end to end: ``fastgw run`` sends one SERVER span per request to
a real receiver process (``tests/support/otlp_receiver.py``), with the trace and span ids the
client and the upstream saw; a collector that is down or stuck costs requests nothing."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunGateway, Upstream, gateway_doc, scrape_metrics, wait_for
from tests.e2e.test_ops import TRACE, TRACEPARENT, _forwarded, _get
from tests.support.ports import free_port, wait_for_port
from tests.support.procs import ProcessReaper

RECEIVER = Path(__file__).resolve().parents[1] / "support" / "otlp_receiver.py"
CLIENT_SPAN = "00f067aa0ba902b7"


class Receiver(Upstream):
    """The OTLP receiver process: a port and its JSON answers, as the test upstream's."""

    def spans(self) -> list[dict[str, Any]]:
        return list(self.get_json("/spans"))

    def exports(self) -> list[dict[str, Any]]:
        return list(self.get_json("/exports"))


StartReceiver = Callable[..., Receiver]


@pytest.fixture
def start_receiver(procs: ProcessReaper) -> StartReceiver:
    """Factory: ``start_receiver(port=0, hang=False)`` -> Receiver (a fresh process each call)."""

    def start(port: int = 0, hang: bool = False) -> Receiver:
        argv = [sys.executable, str(RECEIVER), "--port", str(port), *(["--hang"] if hang else [])]
        proc = procs.start(argv, ready_line="listening")
        return Receiver(proc, int(proc.wait_for_output("listening").split()[1]))

    return start


def _traced_doc(upstream: Upstream, collector_port: int, **otlp: Any) -> dict[str, Any]:
    doc = gateway_doc(upstream.port, upstream={"timeouts": {"read": "300ms"}})
    doc["tracing"] = {
        "otlp": {"endpoint": f"http://127.0.0.1:{collector_port}/v1/traces", "flush_interval": "50ms", **otlp}
    }
    return doc


def _with_admin(doc: dict[str, Any]) -> int:
    admin_port = free_port()
    doc["admin"] = {"bind": f"127.0.0.1:{admin_port}"}
    return admin_port


def _dropped(admin_port: int, reason: str) -> float:
    return scrape_metrics(admin_port).get(("fastgw_tracing_spans_dropped_total", (("reason", reason),)), 0.0)


def _upstream_traceparent(response: Any) -> tuple[str, str]:
    """(trace id, span id) of the traceparent the upstream received."""
    [value] = _forwarded(response, "traceparent")
    trace, span, _ = TRACEPARENT.fullmatch(value).groups()  # type: ignore[union-attr]
    return trace, span


def test_one_server_span_per_request_with_the_ids_the_client_and_upstream_saw(
    run_gateway: RunGateway, upstream_proc: Upstream, start_receiver: StartReceiver
) -> None:
    receiver = start_receiver()
    doc = _traced_doc(upstream_proc, receiver.port, service_name="edge", headers={"x-api-key": "k1"})
    gw = run_gateway(doc)
    # Not sampled by the client: not exported (sent first, so its span would arrive first).
    assert _get(gw.port, "/echo/u", [("traceparent", f"00-{TRACE}-{CLIENT_SPAN}-00")]).status == 200
    continued = _get(gw.port, "/echo/c?q=1", [("traceparent", f"00-{TRACE}-{CLIENT_SPAN}-01")])
    started = _get(gw.port, "/echo/s")
    failed = _get(gw.port, "/status/503")
    timed_out = _get(gw.port, "/hang")
    assert (continued.status, started.status, failed.status, timed_out.status) == (200, 200, 503, 504)

    spans = wait_for(lambda: len(got := receiver.spans()) >= 4 and got, 10, "four spans")
    assert len(spans) == 4
    by_path = {span["attrs"]["url.path"]: span for span in spans}
    assert set(by_path) == {"/echo/c", "/echo/s", "/status/503", "/hang"}

    span = by_path["/echo/c"]
    assert (span["traceId"], span["spanId"]) == _upstream_traceparent(continued)
    assert span["traceId"] == TRACE and span["parentSpanId"] == CLIENT_SPAN
    assert span["name"] == "GET all" and span["kind"] == 2 and "status" not in span
    assert span["attrs"] == {
        "http.request.method": "GET",
        "url.path": "/echo/c",
        "url.scheme": "http",
        "client.address": "127.0.0.1",
        "fastgw.request_id": _forwarded(continued, "x-request-id")[0],
        "fastgw.listener": "main",
        "network.protocol.name": "http",
        "network.protocol.version": "1.1",
        "server.address": "test.local",  # the Host the client asked for
        "http.response.status_code": 200,
        "http.route": "/{*rest}",
        "fastgw.route": "all",
        "fastgw.upstream": "up",
        "fastgw.upstream.target": f"127.0.0.1:{upstream_proc.port}",
    }
    assert span["resource"]["service.name"] == "edge"
    assert int(span["startTimeUnixNano"]) < int(span["endTimeUnixNano"])

    span = by_path["/echo/s"]
    assert (span["traceId"], span["spanId"]) == _upstream_traceparent(started)
    assert "parentSpanId" not in span and span["traceId"] != TRACE

    span = by_path["/status/503"]
    assert span["status"] == {"code": 2} and span["attrs"]["http.response.status_code"] == 503
    assert span["attrs"]["error.type"] == "503"

    span = by_path["/hang"]
    assert span["status"]["code"] == 2 and "timed out" in span["status"]["message"]
    assert span["attrs"]["http.response.status_code"] == 504 and span["attrs"]["error.type"].endswith("Fault")

    exports = receiver.exports()
    assert all(e["headers"]["x-api-key"] == "k1" for e in exports)
    assert all(e["headers"]["content-type"] == "application/json" for e in exports)


def test_sampling_decides_new_traces_by_id_and_tells_the_upstream(
    run_gateway: RunGateway, upstream_proc: Upstream, start_receiver: StartReceiver
) -> None:
    receiver = start_receiver()
    gw = run_gateway(_traced_doc(upstream_proc, receiver.port, sample=0.5))
    flagged = {}
    for i in range(40):
        [value] = _forwarded(_get(gw.port, f"/echo/{i}"), "traceparent")
        flagged[value[3:35]] = value.endswith("-01")
    sampled = {trace for trace, on in flagged.items() if on}
    assert 0 < len(sampled) < 40  # 40 fair coins: all alike once in 2**39 runs
    # A continued trace keeps the client's decision, whatever the ratio.
    kept = _get(gw.port, "/echo/kept", [("traceparent", f"00-{TRACE}-{CLIENT_SPAN}-01")])
    assert _forwarded(kept, "traceparent")[0].endswith("-01")

    def with_kept_trace() -> list[dict[str, Any]]:
        got = receiver.spans()
        return got if any(s["traceId"] == TRACE for s in got) else []

    spans = wait_for(with_kept_trace, 10, "the kept trace")
    assert {s["traceId"] for s in spans} == sampled | {TRACE}


def test_a_collector_that_is_down_costs_requests_nothing_and_warns_once(
    run_gateway: RunGateway, upstream_proc: Upstream, start_receiver: StartReceiver
) -> None:
    collector_port = free_port()  # nothing listens there yet
    doc = _traced_doc(upstream_proc, collector_port, batch=2)
    admin_port = _with_admin(doc)
    gw = run_gateway(doc)
    wait_for_port(admin_port)
    assert all(_get(gw.port, f"/echo/{i}").status == 200 for i in range(10))
    wait_for(lambda: _dropped(admin_port, "export_failed") == 10, 10, "ten spans dropped")
    assert gw.proc.stderr().count("cannot export spans") == 1  # five failed batches, one warning

    receiver = start_receiver(port=collector_port)
    assert all(_get(gw.port, f"/after/{i}").status == 404 for i in range(3))  # the upstream's 404
    wait_for(lambda: len(receiver.spans()) == 3, 10, "the spans after the outage")
    wait_for(lambda: "exporting spans" in gw.proc.stderr() and "again" in gw.proc.stderr(), 5, "recovery")
    assert "10 were dropped meanwhile" in gw.proc.stderr()
    assert gw.proc.stderr().count("cannot export spans") == 1
    m = scrape_metrics(admin_port)
    assert m[("fastgw_tracing_spans_exported_total", ())] == 3
    assert _dropped(admin_port, "export_failed") == 10 and _dropped(admin_port, "queue_full") == 0


def test_a_stuck_collector_never_blocks_requests_and_the_queue_stays_bounded(
    run_gateway: RunGateway, upstream_proc: Upstream, start_receiver: StartReceiver
) -> None:
    receiver = start_receiver(hang=True)
    doc = _traced_doc(upstream_proc, receiver.port, batch=2, queue=4, timeout="1m")
    doc["listeners"][0]["timeouts"] = {"drain": "1s"}
    admin_port = _with_admin(doc)
    gw = run_gateway(doc)
    wait_for_port(admin_port)
    assert all(_get(gw.port, f"/echo/{i}").status == 200 for i in range(12))
    # At most one batch (2) is in flight and the queue holds 4: the rest were dropped, not kept.
    assert _dropped(admin_port, "queue_full") >= 12 - 2 - 4
    # Shutting down waits for the stuck export no longer than the drain allows (not its 1m timeout).
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_exit(15) == 0


def test_each_worker_exports_its_own_spans_and_flushes_them_at_drain(
    run_gateway: RunGateway, upstream_proc: Upstream, start_receiver: StartReceiver
) -> None:
    receiver = start_receiver()
    # An hour between flushes: these spans can only leave with the drain (or a full batch).
    gw = run_gateway(_traced_doc(upstream_proc, receiver.port, flush_interval="1h"), workers=2)
    traces = set()
    for i in range(30):  # fresh connections: the kernel spreads them over both workers
        response = _get(gw.port, f"/echo/{i}")
        assert response.status == 200
        traces.add(_upstream_traceparent(response)[0])
    assert receiver.spans() == []
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_exit(20) == 0
    spans = receiver.spans()
    assert {s["traceId"] for s in spans} == traces and len(spans) == 30
    assert len({s["resource"]["process.pid"] for s in spans}) == 2  # both workers, each its own
