"""``/metrics`` of ``fastgw run --workers 2`` while workers die, drain and keep their own state.

The supervisor sums the workers' families on each scrape (``Supervisor.families``). A counter
must never go back: Prometheus reads a decrease as a counter reset and ``rate()`` then counts the
whole value again. So the counters of a worker that is killed are carried as last scraped, and a
worker that drains sends its final counters before it exits. Per-worker states (circuit
breakers) are kept apart by a ``worker`` label instead of being summed, and a concurrency limit
is shown as what it is: per worker.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    GatewayProc,
    RunGateway,
    Upstream,
    accepted_inodes,
    admin_call,
    socket_inodes,
    wait_for,
)
from tests.e2e.test_ops import _ops_doc
from tests.e2e.test_workers import (
    _open_connections,
    _spread,
    _wait_upstream_requests,
    _wait_workers,
    _wait_workers_replacing,
)
from tests.support.ports import free_port, wait_for_port
from tests.support.rawhttp import build_request, connect, read_response

Sample = tuple[str, tuple[tuple[str, str], ...]]
CONNECTIONS = 40  # fresh connections from distinct ports: both workers get some (all on one: 2**-39)
OK = ("fastgw_requests_total", (("method", "GET"), ("route", "all"), ("status", "2xx")))


def _scrape(admin_port: int) -> tuple[dict[Sample, float], dict[Sample, float]]:
    """(the samples of counters and histograms, every sample), by name and sorted labels."""
    status, text = admin_call(admin_port, "/metrics")
    assert status == 200, text
    growing, every = {}, {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            every[key] = s.value
            if family.type in ("counter", "histogram"):
                growing[key] = s.value
    return growing, every


def _went_back(before: dict[Sample, float], after: dict[Sample, float]) -> dict[Sample, tuple[float, float]]:
    return {k: (v, after.get(k, 0.0)) for k, v in before.items() if after.get(k, 0.0) < v}


def _connection_to(worker: int, port: int, tries: int = 64) -> socket.socket:
    """A keep-alive connection (one request done) that ``worker`` accepted; others are closed."""
    for _ in range(tries):
        held = len(socket_inodes(worker) & accepted_inodes(port))
        (sock,) = _open_connections(port, 1)
        if len(socket_inodes(worker) & accepted_inodes(port)) > held:
            return sock
        sock.close()
    raise AssertionError(f"no connection of {tries} landed on worker {worker}")


def _start(run_gateway: RunGateway, doc: dict[str, Any], admin_port: int) -> tuple[GatewayProc, list[int]]:
    """``fastgw run --workers 2`` with this config, once its admin API and both workers are up."""
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)
    return gw, _wait_workers(gw, 2)


def test_counters_never_go_back_when_a_worker_is_killed(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    doc, admin_port = _ops_doc(upstream_proc)
    gw, workers = _start(run_gateway, doc, admin_port)
    served = _spread(workers, gw.port, CONNECTIONS)
    victim = max(served, key=lambda pid: served[pid])
    assert served[victim] > 0

    before, _ = _scrape(admin_port)
    assert before[OK] == CONNECTIONS
    os.kill(victim, signal.SIGKILL)
    _wait_workers_replacing(gw, victim)
    wait_for(lambda: _scrape(admin_port)[1][("fastgw_workers_reporting", ())] == 2, 10, "the new worker")
    after, every = _scrape(admin_port)
    back = _went_back(before, after)
    assert not back, f"{len(back)} samples went back (before, after), e.g. {sorted(back.items())[:3]}"
    assert after[OK] == CONNECTIONS
    assert every[("fastgw_workers_reporting", ())] == 2

    # And the scrapes after that add up the same way.
    for sock in _open_connections(gw.port, 4):
        sock.close()
    later, _ = _scrape(admin_port)
    assert not _went_back(after, later) and later[OK] == CONNECTIONS + 4


def test_a_worker_that_drains_sends_the_counters_of_its_last_requests(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    doc, admin_port = _ops_doc(upstream_proc)
    gw, (victim, _) = _start(run_gateway, doc, admin_port)
    for sock in _open_connections(gw.port, CONNECTIONS):
        sock.close()
    with _connection_to(victim, gw.port) as slow:
        scraped, _ = _scrape(admin_port)  # every request so far, the victim's as well
        sent = upstream_proc.stats()["requests"]
        slow.sendall(build_request("GET", "/slow/1000"))
        _wait_upstream_requests(upstream_proc, sent + 1)
        os.kill(victim, signal.SIGTERM)  # this worker alone drains: it finishes the slow request
        assert read_response(slow, timeout=10).status == 200
    _wait_workers_replacing(gw, victim)
    gw.proc.wait_for_output(f"worker {victim} exited with 0; starting a new one", 10, stderr=True)
    after, _ = _scrape(admin_port)
    assert not _went_back(scraped, after)
    assert after[OK] == scraped[OK] + 1, "the request the worker finished while draining must count"


def test_breaker_states_are_per_worker(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    # Each worker has its own breakers: summed, "closed" read 2 for one target. Per worker, each
    # target is in exactly one state.
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: every request to it fails
    good = f"127.0.0.1:{upstream_proc.port}"
    upstream = {"targets": [good, dead], "breaker": {"failures": 1, "open_for": "60s"}}
    doc, admin_port = _ops_doc(upstream_proc)
    doc["upstreams"]["up"] = upstream
    gw, _ = _start(run_gateway, doc, admin_port)
    _, every = _scrape(admin_port)

    def states(target: str, worker: str) -> list[float]:
        return [
            every[
                (
                    "fastgw_upstream_breaker_state",
                    (("state", s), ("target", target), ("upstream", "up"), ("worker", worker)),
                )
            ]
            for s in ("closed", "open", "half_open")
        ]

    for worker in ("0", "1"):
        assert states(good, worker) == [1, 0, 0] and states(dead, worker) == [1, 0, 0]

    for _ in range(CONNECTIONS):  # round robin in each worker: each sends some to the dead target
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/echo/x", [("Connection", "close")]))
            assert read_response(sock, timeout=10).status in (200, 502)
    _, every = _scrape(admin_port)
    for worker in ("0", "1"):
        assert states(good, worker) == [1, 0, 0] and states(dead, worker) == [0, 1, 0], worker
    breaker_samples = [k for k in every if k[0] == "fastgw_upstream_breaker_state"]
    assert len(breaker_samples) == 2 * 2 * 3  # targets x workers x states, nothing summed


def test_concurrency_limits_show_slots_in_use_and_the_limit_per_worker(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    doc, admin_port = _ops_doc(upstream_proc)
    doc["upstreams"]["up"]["concurrency"] = {"max_in_flight": 5}
    gw, _ = _start(run_gateway, doc, admin_port)
    limit = (("limit", "upstream 'up'"),)
    slow = []
    try:
        for _ in range(4):
            sock = connect(gw.port, timeout=10)
            sock.sendall(build_request("GET", "/slow/2000"))
            slow.append(sock)
        _wait_upstream_requests(upstream_proc, 4)
        _, every = _scrape(admin_port)
        assert every[("fastgw_concurrency_slots_in_use", limit)] == 4  # both workers' together
        assert every[("fastgw_concurrency_limit_per_worker", limit)] == 5  # not 10: it is per worker
        for sock in slow:
            assert read_response(sock, timeout=10).status == 200
    finally:
        for sock in slow:
            sock.close()
    _, every = _scrape(admin_port)
    assert every[("fastgw_concurrency_slots_in_use", limit)] == 0
