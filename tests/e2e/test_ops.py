"""Operations, end to end: metrics against known traffic across workers, W3C trace context, the
access log, the admin API and reloads (admin, SIGHUP, --watch, under wrk load), the status page."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import RunGateway, Upstream, admin_call, gateway_doc, scrape_metrics, wait_for
from tests.support.ports import free_port, wait_for_port
from tests.support.rawhttp import build_request, connect, read_response

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")


def _ops_doc(upstream: Upstream, **ops: Any) -> tuple[dict[str, Any], int]:
    admin_port = free_port()
    doc = gateway_doc(upstream.port)
    doc["admin"] = {"bind": f"127.0.0.1:{admin_port}", **ops.pop("admin", {})}
    doc.update(ops)
    return doc, admin_port


def _get(port: int, target: str, headers: list[tuple[str, str]] | None = None) -> Any:
    with connect(port) as sock:
        sock.sendall(build_request("GET", target, [*(headers or []), ("Connection", "close")]))
        return read_response(sock)


def _forwarded(response: Any, name: str) -> list[str]:
    return [v for n, v in json.loads(response.body)["headers"] if n.lower() == name]


# -- metrics -----------------------------------------------------------------------------------------


def test_metrics_count_known_traffic_across_two_workers(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    doc, admin_port = _ops_doc(upstream_proc)
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)
    prefixes = set()
    for i in range(40):  # fresh connections: the kernel spreads them over both workers
        response = _get(gw.port, f"/echo/{i}")
        assert response.status == 200
        prefixes.add(_forwarded(response, "x-request-id")[0][:12])  # a per-worker random prefix
    for code in (401, 403, 429, 503):
        assert _get(gw.port, f"/status/{code}").status == code
    assert len(prefixes) == 2, "both workers served: the scrape must add them up"
    m = scrape_metrics(admin_port)
    route = (("method", "GET"), ("route", "all"))
    assert m[("fastgw_requests_total", (*route, ("status", "2xx")))] == 40
    assert m[("fastgw_requests_total", (*route, ("status", "4xx")))] == 3
    assert m[("fastgw_requests_total", (*route, ("status", "5xx")))] == 1
    for code in ("401", "403", "429"):
        assert m[("fastgw_requests_denied_total", (("route", "all"), ("status", code)))] == 1
    assert m[("fastgw_request_duration_seconds_count", (("route", "all"),))] == 44
    assert m[("fastgw_upstream_duration_seconds_count", (("route", "all"),))] == 44
    assert m[("fastgw_request_duration_seconds_bucket", (("le", "+Inf"), ("route", "all")))] == 44
    target = (("target", f"127.0.0.1:{upstream_proc.port}"),)
    opened = m[("fastgw_upstream_connections_opened_total", target)]
    reused = m[("fastgw_upstream_connections_reused_total", target)]
    assert opened >= 2 and opened + reused == 44  # one connection per request: new or pooled
    assert m[("fastgw_upstream_connections", (("state", "in_use"), *target))] == 0
    assert m[("fastgw_upstream_target_up", (*target, ("upstream", "up")))] == 1
    assert m[("fastgw_workers_reporting", ())] == 2
    assert _get(gw.port, "/nothing/here", [("Host", "")]).status in (400, 404)


# -- trace context ---------------------------------------------------------------------------------


def test_trace_context_is_continued_started_and_forwarded(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port))
    incoming = f"00-{TRACE}-00f067aa0ba902b7-01"
    continued = _get(gw.port, "/echo/a", [("traceparent", incoming), ("tracestate", "congo=t61rcWkgMzE")])
    [forwarded] = _forwarded(continued, "traceparent")  # the client's line replaced, not repeated
    trace, span, flags = TRACEPARENT.fullmatch(forwarded).groups()  # type: ignore[union-attr]
    assert (trace, flags) == (TRACE, "01") and span != "00f067aa0ba902b7"
    assert _forwarded(continued, "tracestate") == ["congo=t61rcWkgMzE"]

    unsampled = _get(gw.port, "/echo/b", [("traceparent", f"00-{TRACE}-00f067aa0ba902b7-00")])
    assert _forwarded(unsampled, "traceparent")[0].endswith("-00")

    spans = set()
    for bad in (
        None,
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"ff-{TRACE}-00f067aa0ba902b7-01",
        "00-XYZ",
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",
    ):
        started = _get(
            gw.port,
            "/echo/c",
            [*([("traceparent", bad)] if bad else []), ("tracestate", "congo=t61rcWkgMzE")],
        )
        [value] = _forwarded(started, "traceparent")
        new_trace, new_span, new_flags = TRACEPARENT.fullmatch(value).groups()  # type: ignore[union-attr]
        assert new_trace != TRACE and new_trace != "0" * 32 and new_flags == "01"
        spans.add(new_span)
        # W3C Trace Context 3.3: tracestate belongs to the traceparent it came with, which a new
        # trace does not continue.
        assert _forwarded(started, "tracestate") == []
    assert len(spans) == 5


def test_trace_context_can_be_turned_off_per_listener(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port, trace_context=False))
    incoming = f"00-{TRACE}-00f067aa0ba902b7-01"
    passed = _get(gw.port, "/echo/a", [("traceparent", incoming), ("tracestate", "congo=t61rcWkgMzE")])
    assert _forwarded(passed, "traceparent") == [incoming]
    assert _forwarded(passed, "tracestate") == ["congo=t61rcWkgMzE"]
    alone = _get(gw.port, "/echo/b", [("tracestate", "congo=t61rcWkgMzE")])  # not ours to judge
    assert _forwarded(alone, "traceparent") == [] and _forwarded(alone, "tracestate") == ["congo=t61rcWkgMzE"]


# -- access log ------------------------------------------------------------------------------------


def test_access_log_writes_one_json_line_per_request(
    run_gateway: RunGateway, upstream_proc: Upstream, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.log"
    doc = gateway_doc(upstream_proc.port, upstream={"timeouts": {"read": "300ms"}})
    doc["access_log"] = {
        "sink": str(log_path),
        "flush_interval": "50ms",
        "fields": [
            "request_id",
            "method",
            "path",
            "route",
            "upstream",
            "status",
            "bytes_out",
            "duration_ms",
            "upstream_ms",
            "trace_id",
            "error",
        ],
    }
    gw = run_gateway(doc)
    ok = _get(gw.port, "/echo/1", [("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")])
    timed_out = _get(gw.port, "/hang")
    missing = _get(gw.port, "/x", [("Host", "a b")])  # refused before routing: no exchange, no line
    assert (ok.status, timed_out.status, missing.status) == (200, 504, 400)

    lines = wait_for(
        lambda: (
            log_path.exists() and log_path.read_text().splitlines()[1:] and log_path.read_text().splitlines()
        ),
        10,
        "two access log lines",
    )
    first, second = (json.loads(line) for line in lines)
    assert first == {
        "request_id": _forwarded(ok, "x-request-id")[0],
        "method": "GET",
        "path": "/echo/1",
        "route": "all",
        "upstream": f"127.0.0.1:{upstream_proc.port}",
        "status": 200,
        "bytes_out": first["bytes_out"],
        "duration_ms": first["duration_ms"],
        "upstream_ms": first["upstream_ms"],
        "trace_id": TRACE,
        "error": None,
    }
    assert first["bytes_out"] > len(ok.body) and 0 < first["upstream_ms"] <= first["duration_ms"]
    assert second["status"] == 504 and second["request_id"] == timed_out.header("x-request-id")
    assert "timed out" in second["error"]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_lines_still_buffered_at_shutdown_are_written(
    run_gateway: RunGateway, upstream_proc: Upstream, tmp_path: Path, workers: int, stop: signal.Signals
) -> None:
    """Lines wait in the buffer (an hour, 1 MiB): stopping the gateway writes them, in every worker."""
    log_path = tmp_path / "access.log"
    doc = gateway_doc(upstream_proc.port)
    doc["access_log"] = {
        "sink": str(log_path),
        "flush_interval": "1h",
        "buffer_bytes": "1MiB",
        "fields": ["path"],
    }
    gw = run_gateway(doc, workers=workers)
    for i in range(20):  # spread over the workers by the kernel (SO_REUSEPORT)
        assert _get(gw.port, f"/echo/{i}").status == 200
    assert not log_path.exists() or log_path.read_text() == ""  # buffered, not written
    os.kill(gw.pid, stop)
    assert gw.wait_exit(20) == 0
    paths = sorted(json.loads(line)["path"] for line in log_path.read_text().splitlines())
    assert paths == sorted(f"/echo/{i}" for i in range(20))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_after_rotation_writes_to_a_new_file(
    run_gateway: RunGateway, upstream_proc: Upstream, tmp_path: Path, workers: int
) -> None:
    """logrotate moves the file, then SIGHUP: later lines go to a new file at the configured path."""
    log_path = tmp_path / "access.log"
    doc = gateway_doc(upstream_proc.port)
    doc["access_log"] = {"sink": str(log_path), "flush_interval": "50ms", "fields": ["path"]}
    gw = run_gateway(doc, workers=workers)
    assert _get(gw.port, "/echo/before").status == 200
    wait_for(lambda: log_path.exists() and "/echo/before" in log_path.read_text(), 10, "the first line")
    rotated = log_path.rename(tmp_path / "access.log.1")
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: gw.proc.stderr().count("configuration reloaded") >= workers, 10, "the reload")
    for i in range(10):  # to every worker
        assert _get(gw.port, f"/echo/after{i}").status == 200
    wait_for(lambda: log_path.exists() and log_path.read_text().count("/echo/after") == 10, 10, "new lines")
    assert "/echo/after" not in rotated.read_text()


# -- admin API and reload --------------------------------------------------------------------------


def test_admin_api_answers_json_and_reloads(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    doc, admin_port = _ops_doc(upstream_proc)
    gw = run_gateway(doc)
    wait_for_port(admin_port)
    assert admin_call(admin_port, "/healthz") == (200, {"status": "ok"})
    assert admin_call(admin_port, "/readyz") == (200, {"status": "ready"})
    assert _get(gw.port, "/echo/1").status == 200
    status, routes = admin_call(admin_port, "/routes")
    assert status == 200 and [
        (r["id"], r["requests"], r["requests_by_status"]) for r in routes["routes"]
    ] == [("all", 1, {"2xx": 1})]
    status, upstreams = admin_call(admin_port, "/upstreams")
    [target] = upstreams["upstreams"][0]["targets"]
    assert target["up"] is True and target["pool"]["opened"] == 1 and target["pool"]["idle"] == 1
    assert admin_call(admin_port, "/nope") == (404, {"error": "no admin endpoint /nope"})
    assert admin_call(admin_port, "/reload")[0] == 405

    doc["routes"].append(
        {"id": "extra", "path": "/extra/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}"}
    )
    gw.config_path.write_text(yaml.safe_dump(doc))
    assert admin_call(admin_port, "/reload", "POST") == (200, {"ok": True, "routes": 2})
    assert _get(gw.port, "/extra/x").status == 200

    gw.config_path.write_text(
        yaml.safe_dump({**doc, "routes": [{"id": "bad", "path": "/x", "upstream": "nowhere"}]})
    )
    status, answer = admin_call(admin_port, "/reload", "POST")
    assert status == 400 and answer["ok"] is False
    assert answer["error"].startswith(
        f"{gw.config_path}: routes[0].upstream: expected the name of an upstream"
    )
    assert _get(gw.port, "/extra/x").status == 200  # the running configuration stayed
    m = scrape_metrics(admin_port)
    assert m[("fastgw_config_reloads_total", (("result", "success"),))] == 1
    assert m[("fastgw_config_reloads_total", (("result", "failure"),))] == 1
    assert m[("fastgw_config_last_reload_successful", ())] == 0
    assert "routes[0].upstream" in gw.proc.stderr()


def test_admin_token_is_required_when_set(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    doc, admin_port = _ops_doc(upstream_proc, admin={"token": "s3cret"})
    run_gateway(doc)
    wait_for_port(admin_port)
    assert admin_call(admin_port, "/healthz") == (200, {"status": "ok"})  # for probes, without a token
    for path in ("/metrics", "/routes", "/upstreams"):
        status, answer = admin_call(admin_port, path)
        assert status == 401 and "token" in answer["error"]
        assert admin_call(admin_port, path, token="wrong")[0] == 401
        assert admin_call(admin_port, path, token="s3cret")[0] == 200
    assert admin_call(admin_port, "/reload", "POST")[0] == 401


def _authorized(port: int, authorization: str | None) -> tuple[int, str | None]:
    """GET /metrics with this Authorization header (or none): the status and WWW-Authenticate."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(
            "GET", "/metrics", headers={} if authorization is None else {"Authorization": authorization}
        )
        response = conn.getresponse()
        response.read()
        return response.status, response.headers.get("WWW-Authenticate")
    finally:
        conn.close()


def test_admin_bearer_scheme_ignores_case_and_a_401_says_how_to_authenticate(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    # RFC 9110 section 11.1: the auth scheme is case-insensitive. RFC 9110 section 15.5.2 and
    # RFC 6750 section 3: a 401 carries a WWW-Authenticate challenge; the error code says why
    # when a bearer token was sent, and is left out when none was.
    doc, admin_port = _ops_doc(upstream_proc, admin={"token": "s3cret"})
    run_gateway(doc)
    wait_for_port(admin_port)
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert _authorized(admin_port, f"{scheme} s3cret")[0] == 200, scheme
    challenge = 'Bearer realm="fastgw-admin"'
    assert _authorized(admin_port, None) == (401, challenge)
    assert _authorized(admin_port, "Basic czNjcmV0") == (401, challenge)
    assert _authorized(admin_port, "Bearer wrong") == (401, f'{challenge}, error="invalid_token"')
    assert _authorized(admin_port, "bearer s3cre") == (401, f'{challenge}, error="invalid_token"')
    assert _authorized(admin_port, "Bearer") == (401, f'{challenge}, error="invalid_request"')
    assert _authorized(admin_port, "s3cret") == (401, challenge)


def test_sighup_reloads_every_worker(run_gateway: RunGateway, upstream_proc: Upstream, procs: Any) -> None:
    doc, admin_port = _ops_doc(upstream_proc)
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)

    def reloads(result: str) -> float:
        return scrape_metrics(admin_port)[("fastgw_config_reloads_total", (("result", result),))]

    doc["routes"].append(
        {"id": "added", "path": "/added/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}"}
    )
    gw.config_path.write_text(yaml.safe_dump(doc))
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: reloads("success") == 1, 10, "the SIGHUP reload")
    assert all(_get(gw.port, f"/added/{i}").status == 200 for i in range(20))  # on both workers
    assert len(gw.worker_pids()) == 2


def test_watch_reloads_a_changed_file(
    run_gateway: RunGateway, upstream_proc: Upstream, procs: Any, tmp_path: Path
) -> None:
    from tests.e2e.conftest import cli_env, fastgw_argv, write_config

    doc, admin_port = _ops_doc(upstream_proc)
    path = write_config(tmp_path, doc, "watched.yaml")
    procs.start(fastgw_argv("run", "-c", str(path), "--watch"), env=cli_env(), timeout=15)
    wait_for_port(admin_port)
    port = int(doc["listeners"][0]["bind"].rsplit(":", 1)[1])
    wait_for_port(port)
    assert (
        _get(port, "/later/x").status == 404
    )  # the catch-all route forwards it as it is: the upstream's 404
    doc["routes"] = [{"id": "later", "path": "/later/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}"}]
    path.write_text(yaml.safe_dump(doc))
    wait_for(lambda: _get(port, "/later/x").status == 200, 10, "the watched file's new route")
    assert admin_call(admin_port, "/routes")[1]["routes"][0]["id"] == "later"


# -- reload under load -----------------------------------------------------------------------------


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_reloads_under_wrk_load_lose_nothing(
    run_gateway: RunGateway, upstream_proc: Upstream, tmp_path: Path
) -> None:
    """wrk, 100 connections, 30 s; meanwhile three reloads (admin, SIGHUP, an invalid file)."""
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (scripts/test installs it)")
    doc, admin_port = _ops_doc(upstream_proc)
    doc["upstreams"]["up"]["pool"] = {"idle_timeout": "1s"}
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)
    pids = [gw.pid, *gw.worker_pids()]
    baseline = {pid: _fd_count(pid) for pid in pids}
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c100", "-d30s", f"http://127.0.0.1:{gw.port}/echo/load"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: scrape_metrics(admin_port)[("fastgw_workers_reporting", ())] == 2 and wrk.poll() is None,
            10,
            "load",
        )
        doc["routes"].append({"id": "r1", "path": "/r1", "upstream": "up"})
        gw.config_path.write_text(yaml.safe_dump(doc))
        assert admin_call(admin_port, "/reload", "POST")[1]["ok"] is True
        doc["routes"].append({"id": "r2", "path": "/r2", "upstream": "up"})
        gw.config_path.write_text(yaml.safe_dump(doc))
        os.kill(gw.pid, signal.SIGHUP)
        success = ("fastgw_config_reloads_total", (("result", "success"),))
        wait_for(lambda: scrape_metrics(admin_port)[success] == 2, 10, "the SIGHUP reload")
        gw.config_path.write_text("listeners: [")
        status, answer = admin_call(admin_port, "/reload", "POST")
        assert status == 400 and "invalid YAML" in answer["error"]
        out, _ = wrk.communicate(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    assert requests > 1000, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    m = scrape_metrics(admin_port)
    assert m[("fastgw_config_reloads_total", (("result", "success"),))] == 2
    assert m[("fastgw_config_reloads_total", (("result", "failure"),))] == 1
    assert gw.worker_pids() == pids[1:]  # no worker was replaced
    # Client connections closed and pooled upstream ones idle out (1 s): every fd opened for the
    # load is closed again.
    wait_for(lambda: all(_fd_count(pid) <= baseline[pid] for pid in pids), 15, "fds back to their baseline")
