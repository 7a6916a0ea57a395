"""The process model of ``fastgw run``: SO_REUSEPORT workers, supervision, graceful drain.

``--workers N`` forks N workers that each bind the listener's port with SO_REUSEPORT; the kernel
spreads new connections over them by a hash of the 4-tuple, so 40 connections from distinct
source ports reach both of two workers (all on one: probability 2**-39). Which worker accepted a
connection is read from ``/proc``: the server-side socket of each ESTABLISHED connection on the
gateway's port (``/proc/net/tcp``) is held open by exactly one worker (``/proc/PID/fd``).

On SIGTERM/SIGINT a gateway drains: it stops accepting (new connections are refused), closes idle
keep-alive connections at once, lets requests in flight finish within the drain timeout, then
exits 0. The supervisor forwards the signal to every worker and exits 0 after they did.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.e2e.conftest import (
    GatewayProc,
    RunGateway,
    Upstream,
    accepted_inodes,
    child_pids,
    gateway_doc,
    listening_inodes,
    socket_inodes,
    wait_for,
    write_config,
)
from tests.support.ports import free_port
from tests.support.rawhttp import NoResponse, build_request, connect, read_response

CONNECTIONS = 40
DRAIN = 10.0  # seconds; much longer than any request these tests make


def _get(port: int, target: str = "/echo/x", close: bool = True) -> int:
    headers = [("Connection", "close")] if close else []
    with connect(port) as sock:
        sock.sendall(build_request("GET", target, headers))
        return read_response(sock).status


def _open_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections, each having completed one request (so it was accepted)."""
    socks = []
    try:
        for i in range(count):
            sock = connect(port)
            socks.append(sock)
            sock.sendall(build_request("GET", f"/echo/conn/{i}"))
            assert read_response(sock).status == 200
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _accepted_by(pids: list[int], port: int) -> dict[int, int]:
    """How many of the established connections on ``port`` each process holds."""
    established = accepted_inodes(port)
    return {pid: len(socket_inodes(pid) & established) for pid in pids}


def _spread(pids: list[int], port: int, count: int) -> dict[int, int]:
    """Open ``count`` connections (one request each), count which process accepted each, close them."""
    socks = _open_connections(port, count)
    try:
        return _accepted_by(pids, port)
    finally:
        for sock in socks:
            sock.close()


def _wait_workers(gw: GatewayProc, count: int) -> list[int]:
    """The supervisor's worker pids, once it has exactly ``count``."""

    def workers() -> list[int] | None:
        pids = child_pids(gw.pid)
        return pids if len(pids) == count else None

    return list(wait_for(workers, 10, f"{count} workers"))


def _start_slow(port: int, count: int, ms: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = connect(port, timeout=DRAIN + 5)
        sock.sendall(build_request("GET", f"/slow/{ms}"))
        socks.append(sock)
    return socks


def _wait_upstream_requests(upstream: Upstream, count: int) -> None:
    wait_for(lambda: upstream.stats()["requests"] >= count, 10, f"{count} requests at the upstream")


def _assert_refused(port: int) -> None:
    for _ in range(5):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _draining_lines(gw: GatewayProc) -> int:
    return gw.proc.stderr().count(": draining")


def _exists(pid: int) -> bool:
    """Is ``pid`` a live process (not a zombie waiting to be reaped)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


# -- workers ---------------------------------------------------------------------------------------


def test_two_workers_both_accept_connections(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port), workers=2)
    workers = _wait_workers(gw, 2)
    assert sorted({pid for pid, _ in gw.listening_lines()}) == workers
    counts = _spread(workers, gw.port, CONNECTIONS)
    assert sum(counts.values()) == CONNECTIONS, counts
    assert all(n > 0 for n in counts.values()), f"connections per worker: {counts}"


def test_request_ids_are_unique_across_workers(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    # The generated X-Request-Id must identify one request: two workers must never hand out the
    # same id (each worker numbers its requests from 1, so the per-process prefix must differ).
    gw = run_gateway(gateway_doc(upstream_proc.port), workers=2)
    workers = _wait_workers(gw, 2)
    ids = []
    socks = []
    try:
        for i in range(CONNECTIONS):
            sock = connect(gw.port)
            socks.append(sock)
            sock.sendall(build_request("GET", f"/echo/id/{i}"))
            echoed = dict((name.lower(), value) for name, value in read_response(sock).json()["headers"])
            ids.append(echoed["x-request-id"])
        counts = _accepted_by(workers, gw.port)
    finally:
        for sock in socks:
            sock.close()
    assert all(n > 0 for n in counts.values()), f"both workers must have answered: {counts}"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, (
        f"{len(duplicates)} request ids handed out twice by different workers: {duplicates[:5]}"
    )


def test_killed_worker_is_replaced_and_port_keeps_serving(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port), workers=2)
    victim, survivor = _wait_workers(gw, 2)
    socks = _open_connections(gw.port, 4)  # some clients are connected when it dies
    for sock in socks:
        sock.close()

    victim_listener = listening_inodes(gw.port) & socket_inodes(victim)
    assert victim_listener
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in child_pids(gw.pid), 5, "the killed worker to be gone")
    # The kernel releases a dead process's listening socket a moment after the process is gone
    # (a deferred close); a connection queued on it in that moment is reset, whatever the gateway
    # does. Wait for that socket to be gone too.
    wait_for(lambda: not listening_inodes(gw.port) & victim_listener, 5, "the killed worker's socket")
    # The surviving worker serves while the replacement starts.
    assert [_get(gw.port) for _ in range(10)] == [200] * 10

    workers = _wait_workers(gw, 2)
    assert survivor in workers and victim not in workers
    (replacement,) = set(workers) - {survivor}
    gw.proc.wait_for_output(f"worker {victim} exited with -9; starting a new one", 5, stderr=True)
    wait_for(lambda: (replacement, gw.port) in gw.listening_lines(), 10, "the new worker's listener")
    assert gw.proc.alive

    counts = _spread(workers, gw.port, CONNECTIONS)
    assert all(n > 0 for n in counts.values()), f"the replacement must take connections too: {counts}"

    # And the supervisor still drains and exits cleanly afterwards.
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_exit(DRAIN) == 0
    assert child_pids(gw.pid) == []


def test_replacement_worker_serves_the_reloaded_configuration(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    # SIGHUP reloads every worker. A worker started later (to replace one that died) must serve
    # the configuration the others run, not the one the supervisor was started with.
    def doc(version: str) -> dict[str, object]:
        route = {"id": "v", "path": "/version", "upstream": "up", "rewrite": f"/echo/{version}"}
        return gateway_doc(upstream_proc.port, [route], port=port)

    def versions(count: int) -> list[str]:
        seen = []
        for _ in range(count):
            with connect(gw.port) as sock:
                sock.sendall(build_request("GET", "/version", [("Connection", "close")]))
                seen.append(read_response(sock).json()["path"])
        return seen

    port = free_port()
    gw = run_gateway(doc("v1"), workers=2)
    victim, survivor = _wait_workers(gw, 2)
    write_config(gw.config_path.parent, doc("v2"), gw.config_path.name)
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.proc.stderr().count("configuration reloaded") >= 2, 5, "both workers to reload")
    assert set(versions(CONNECTIONS)) == {"/echo/v2"}

    os.kill(victim, signal.SIGKILL)
    (replacement,) = set(_wait_workers_replacing(gw, victim)) - {survivor}
    wait_for(lambda: (replacement, gw.port) in gw.listening_lines(), 10, "the new worker's listener")
    seen = versions(CONNECTIONS)
    assert seen.count("/echo/v1") == 0, (
        f"{seen.count('/echo/v1')} of {CONNECTIONS} requests were answered with the configuration "
        "from before the reload (by the replacement worker)"
    )


def _wait_workers_replacing(gw: GatewayProc, victim: int) -> list[int]:
    def workers() -> list[int] | None:
        pids = child_pids(gw.pid)
        return pids if len(pids) == 2 and victim not in pids else None

    return list(wait_for(workers, 10, f"a worker replacing {victim}"))


def test_workers_exit_when_the_supervisor_dies(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    # If the supervisor is killed (OOM killer, SIGKILL), nobody restarts, reloads or stops the
    # workers any more, yet they keep the port: a gateway started again then shares the port
    # (SO_REUSEPORT) with orphans still running the old configuration. Workers must notice
    # their parent is gone and drain.
    gw = run_gateway(gateway_doc(upstream_proc.port), workers=2)
    workers = _wait_workers(gw, 2)
    os.kill(gw.pid, signal.SIGKILL)
    assert gw.wait_exit(5) == -signal.SIGKILL
    deadline = time.monotonic() + 3
    while any(map(_exists, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in workers if _exists(pid)]
    still_serving = orphans and _get(gw.port) == 200
    assert not orphans, (
        f"workers {orphans} outlived their supervisor by 3s (serving port {gw.port}: {bool(still_serving)})"
    )


# -- drain -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "sig", "group"),
    [
        (1, signal.SIGTERM, False),
        (2, signal.SIGTERM, False),
        (1, signal.SIGINT, False),
        (2, signal.SIGINT, False),
        (2, signal.SIGINT, True),  # Ctrl-C in a terminal: every process of the group gets it
        (2, signal.SIGTERM, True),  # as a service manager stopping the whole control group
    ],
    ids=[
        "single-SIGTERM",
        "workers2-SIGTERM",
        "single-SIGINT",
        "workers2-SIGINT",
        "workers2-SIGINT-to-group",
        "workers2-SIGTERM-to-group",
    ],
)
def test_graceful_drain_finishes_in_flight_requests(
    run_gateway: RunGateway, upstream_proc: Upstream, workers: int, sig: signal.Signals, group: bool
) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port, timeouts={"drain": f"{DRAIN}s"}), workers=workers)
    worker_pids = _wait_workers(gw, 2) if workers > 1 else [gw.pid]
    in_flight = _start_slow(gw.port, 6, 1500)
    try:
        _wait_upstream_requests(upstream_proc, 6)
        if workers > 1:
            counts = _accepted_by(worker_pids, gw.port)
            assert sum(counts.values()) == 6, counts

        signalled = time.monotonic()
        if group:
            os.killpg(gw.pid, sig)
        else:
            gw.proc.send_signal(sig)
        wait_for(lambda: _draining_lines(gw) >= workers, 5, "every worker to log 'draining'")
        # The drain has started: the listening sockets are closed.
        _assert_refused(gw.port)

        for sock in in_flight:
            response = read_response(sock, timeout=DRAIN)
            assert response.status == 200, response.raw[:300]
            assert response.complete
            assert response.json()["path"] == "/slow/1500"
            assert response.header("Connection") == "close"
            assert sock.recv(1) == b""  # and then the connection ends

        assert gw.wait_exit(DRAIN) == 0
        elapsed = time.monotonic() - signalled
    finally:
        for sock in in_flight:
            sock.close()
    assert elapsed < DRAIN, f"exit took {elapsed:.1f}s, the drain timeout is {DRAIN}s"
    assert "drain timeout" not in gw.proc.stderr()
    assert "Traceback" not in gw.proc.stderr()
    wait_for(lambda: not any(map(_exists, worker_pids)), 2, f"workers {worker_pids} gone")


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers2"])
def test_idle_keepalive_connections_close_at_drain_start(
    run_gateway: RunGateway, upstream_proc: Upstream, workers: int
) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port, timeouts={"drain": f"{DRAIN}s"}), workers=workers)
    if workers > 1:
        _wait_workers(gw, 2)
    idle = _open_connections(gw.port, 8)
    slow = _start_slow(gw.port, 1, 3000)[0]  # keeps the gateway draining for 3 s
    try:
        _wait_upstream_requests(upstream_proc, 9)  # the slow one is in flight

        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        for sock in idle:
            sock.settimeout(DRAIN)
            assert sock.recv(1) == b"", "an idle keep-alive connection must just be closed"
        closed_after = time.monotonic() - signalled
        assert closed_after < 1.5, f"idle connections closed {closed_after:.2f}s after SIGTERM"
        assert gw.proc.alive  # closed by the drain, not by the process exiting

        response = read_response(slow, timeout=DRAIN)
        assert response.status == 200 and response.complete
        assert gw.wait_exit(DRAIN) == 0
    finally:
        for sock in [*idle, slow]:
            sock.close()


@pytest.mark.parametrize(
    ("drain", "at_least", "below"), [("1s", 0.9, 3.0), (0, 0.0, 1.0)], ids=["1s", "zero"]
)
def test_drain_timeout_cuts_requests_that_take_too_long(
    run_gateway: RunGateway, upstream_proc: Upstream, drain: object, at_least: float, below: float
) -> None:
    gw = run_gateway(gateway_doc(upstream_proc.port, timeouts={"drain": drain}))
    (sock,) = _start_slow(gw.port, 1, 6000)
    with sock:
        _wait_upstream_requests(upstream_proc, 1)
        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.wait_exit(5) == 0
        elapsed = time.monotonic() - signalled
        # Nothing was answered: the client sees the connection end, never a made-up response.
        with pytest.raises((NoResponse, ConnectionResetError)):
            read_response(sock, timeout=5)
    assert at_least <= elapsed < below, f"exit {elapsed:.2f}s after SIGTERM with drain timeout {drain}"
    assert "drain timeout: closing 1 connections still busy" in gw.proc.stderr()
