"""A client that breaks, leaves or stalls mid-exchange: it gets a precise answer where it can still
read one, the upstream request it started is aborted at once (never left waiting for a body or a
reader), no failure is counted against a healthy target, and the end is recorded as what it was.
Real sockets, a real upstream process; the gateway's own counters read on its loop."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_upstream
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]


def wait_until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def upstream_busy(gw: RunningGateway) -> int:
    """Upstream connections the gateway holds for requests (in use, not idle), over all pools."""
    return int(gw.call(lambda: sum(pool.in_use for pool in gw.gateway.plan.pools.values())))


def in_flight(gw: RunningGateway) -> int:
    return int(
        gw.call(lambda: sum(t.in_flight for g in gw.gateway.plan.upstreams.values() for t in g.targets))
    )


def route_requests(gw: RunningGateway) -> dict[tuple[str, str], int]:
    return dict(gw.call(lambda: gw.gateway.plan.routes[0].stats.snapshot()["requests"]))


def log_lines(path: Path, gw: RunningGateway) -> list[dict[str, Any]]:
    gw.call(lambda: gw.gateway.access_log.flush())  # type: ignore[union-attr]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def three() -> Iterator[list[int]]:
    """Ports of three upstream processes, shared by this module's tests."""
    started = [start_upstream() for _ in range(3)]
    yield [port for _, port in started]
    for proc, _ in started:
        proc.stop()


def three_targets_with_outliers(ports: list[int], **listener: Any) -> dict[str, Any]:
    """Three healthy targets, each ejected after one failure: a failure wrongly counted against
    any of them shows at once."""
    doc = gateway_config(ports[0], **listener)
    doc["upstreams"]["up"] = {
        "targets": [f"127.0.0.1:{port}" for port in ports],
        "outlier": {"consecutive_failures": 1, "max_ejected_percent": 100},
        "timeouts": {"send": "30s", "read": "30s"},
    }
    return doc


def send_timeouts(gw: RunningGateway) -> dict[str, int]:
    """``fastgw_client_send_timeouts_total`` by state."""
    family = gw.call(gw.gateway.collect).get("fastgw_client_send_timeouts_total")
    if family is None:
        return {}
    return {dict(key[1])["state"]: int(value) for key, value in family.samples.items()}


def ejected(gw: RunningGateway) -> list[str]:
    group = gw.gateway.plan.upstreams["up"]
    return list(gw.call(lambda: [t.label for t in group.targets if group.held(t)]))


# -- a request body the client breaks ------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_chunk",
    [
        b"FFFFFFFFFFFFFFFFF0\r\n",  # a chunk size that overflows 64 bits
        b"5\nhello\r\n",  # a bare LF ending the chunk-size line
        b"zz\r\n",  # not hex at all
    ],
)
def test_a_malformed_chunk_after_the_head_is_400_at_once_and_the_upstream_is_not_blamed(
    make_gateway: Make, three: list[int], bad_chunk: bytes
) -> None:
    gw = make_gateway(three_targets_with_outliers(three))
    for _ in range(3):  # one per target under round robin: any blame would eject one
        with connect(gw.port) as sock:
            sock.sendall(build_request("POST", "/sink", [("Transfer-Encoding", "chunked")]))
            sock.sendall(b"4\r\ngood\r\n")
            time.sleep(0.1)  # the head and a good chunk went upstream
            sock.sendall(bad_chunk)
            sock.settimeout(5)  # the upstream would wait 30 s for the rest of the body
            response = read_response(sock)
            assert response.status == 400
            assert "malformed request body" in response.json()["error"]
            assert sock.recv(100) == b""  # and the connection ends: nothing after it is read
    wait_until(lambda: upstream_busy(gw) == 0 and in_flight(gw) == 0, what="the upstream requests aborted")
    assert ejected(gw) == []


def test_a_malformed_chunk_after_the_response_began_cuts_the_response(
    make_gateway: Make, three: list[int]
) -> None:
    gw = make_gateway(three_targets_with_outliers(three))
    with connect(gw.port) as sock:
        # The upstream answers before it reads the body: the response is under way.
        sock.sendall(build_request("POST", "/answer-first", [("Transfer-Encoding", "chunked")]))
        sock.settimeout(5)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")  # the response is under way
        sock.sendall(b"FFFFFFFFFFFFFFFFF0\r\n")
        received = head
        while data := sock.recv(65536):
            received += data
        assert not received.endswith(b"0\r\n\r\n")  # never passed off as complete
    wait_until(lambda: upstream_busy(gw) == 0, what="the upstream request aborted")
    assert ejected(gw) == []


def test_a_client_fin_in_the_middle_of_a_body_aborts_the_upstream_request_at_once(
    make_gateway: Make, three: list[int]
) -> None:
    gw = make_gateway(three_targets_with_outliers(three, timeouts={"body": "30s"}))
    with connect(gw.port) as sock:
        sock.sendall(build_request("POST", "/sink", [("Content-Length", "1000")]) + b"x" * 100)
        wait_until(lambda: upstream_busy(gw) == 1, what="the request upstream")
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)  # not the 30 s body timeout
        response = read_response(sock)
        assert response.status == 400
        assert "before the request body was complete" in response.json()["error"]
    wait_until(lambda: upstream_busy(gw) == 0 and in_flight(gw) == 0, what="the upstream request aborted")
    assert ejected(gw) == []


# -- a client that leaves before its response ------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_client_that_leaves_before_its_response_is_a_client_abort(
    make_gateway: Make, three: list[int], tmp_path: Path, how: str
) -> None:
    log = tmp_path / "access.log"
    doc = three_targets_with_outliers(three)
    doc["access_log"] = {"sink": str(log), "sample": 0.01}  # sampling never hides an abort
    gw = make_gateway(doc)
    sock = connect(gw.port)
    sock.sendall(build_request("GET", "/hang"))
    wait_until(lambda: upstream_busy(gw) == 1, what="the request upstream")
    if how == "fin":
        sock.shutdown(socket.SHUT_WR)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    # The upstream call is cancelled: its connection closed, not left to run to completion.
    wait_until(lambda: upstream_busy(gw) == 0 and in_flight(gw) == 0, what="the upstream request cancelled")
    sock.close()
    assert route_requests(gw) == {("GET", "none"): 1}
    (line,) = log_lines(log, gw)
    assert line["status"] == 0 and line["path"] == "/hang"
    assert line["error"] == "client closed the connection before the response"
    assert ejected(gw) == []


def test_a_half_closed_client_still_gets_a_response_already_on_its_way(
    make_gateway: Make, upstream: int
) -> None:
    gw = make_gateway(gateway_config(upstream))
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/slowbody/300"))
        sock.settimeout(5)
        assert sock.recv(12) == b"HTTP/1.1 200"  # the head went out
        sock.shutdown(socket.SHUT_WR)
        rest = b""
        while data := sock.recv(65536):
            rest += data
    assert rest.endswith(b"0\r\n\r\n") or len(rest) > 1000  # the whole body, then the close


# -- a client that stops reading -------------------------------------------------------------------


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    make_gateway: Make, upstream: int, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    doc = gateway_config(upstream, timeouts={"send": "500ms"}, buffer_bytes="64KiB")
    doc["access_log"] = {"sink": str(log)}
    gw = make_gateway(doc)
    sock = connect(gw.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(build_request("GET", "/bytes/200000000"))  # 200 MB, never read
    wait_until(lambda: upstream_busy(gw) == 1, what="the request upstream")
    # Nothing is read: after the send timeout the gateway drops the client and the upstream
    # connection it held (before the fix both were held as long as the client kept quiet).
    wait_until(lambda: upstream_busy(gw) == 0 and gw.connection_count() == 0, 10, "the client dropped")
    sock.close()
    (line,) = log_lines(log, gw)
    assert line["status"] == 200  # the head went out: that is what the client got
    assert line["error"] == "client stopped reading: nothing sent within the send timeout"
    assert send_timeouts(gw) == {"responding": 1}


def test_a_closing_connection_whose_client_reads_nothing_is_cut_after_the_send_timeout(
    make_gateway: Make, upstream: int
) -> None:
    """The whole response is handed over and the connection closes (``Connection: close``), but
    the transport still holds part of it for a client that never reads: without a bound the
    socket would stay open for good."""
    gw = make_gateway(gateway_config(upstream, timeouts={"send": "500ms"}))
    server = gw.gateway.listeners["main"]
    sock = connect(gw.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_until(lambda: gw.connection_count() == 1, what="the connection accepted")

    def shrink_send_buffer() -> None:  # so the kernel takes little and the transport keeps the rest
        (client,) = server.connections
        client.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    gw.call(shrink_send_buffer)
    held: list[int] = []

    def transport_holds() -> bool:
        held[:] = gw.call(lambda: [c.transport.get_write_buffer_size() for c in server.connections])
        return bool(held and held[0])

    with sock:
        sock.sendall(build_request("GET", "/bytes/100000", [("Connection", "close")]))
        wait_until(transport_holds, what="response bytes held for the client")
        assert gw.call(lambda: [c.closed for c in server.connections]) == [True]  # closing, not gone
        started = time.monotonic()
        wait_until(lambda: gw.connection_count() == 0, 10, "the closing connection cut")
        assert time.monotonic() - started >= 0.3  # the send timeout, not at once
        sock.settimeout(5)
        received = b""
        with pytest.raises(ConnectionResetError):  # RST: the kernel does not hold the rest for it
            while chunk := sock.recv(65536):
                received += chunk
        assert len(received) < 100000  # cut, not finished
    assert send_timeouts(gw) == {"closing": 1}  # the exchange was logged whole: this records the cut


def test_a_slow_reader_that_keeps_reading_is_not_dropped(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream, timeouts={"send": "300ms"}, buffer_bytes="16KiB"))
    server = gw.gateway.listeners["main"]
    with connect(gw.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(build_request("GET", "/bytes/50000000"))
        sock.settimeout(5)
        paused = False
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # five send timeouts, reading a little each time
            assert sock.recv(16384)
            paused = paused or gw.call(lambda: any(c.write_paused for c in server.connections))
            time.sleep(0.1)
        assert paused  # the gateway really waited on this reader, more than once per timeout
        assert gw.connection_count() == 1  # progress, however slow, keeps the connection


# -- an answer the client can read -----------------------------------------------------------------


def test_a_refusal_while_the_client_still_sends_is_read_not_reset(make_gateway: Make, upstream: int) -> None:
    """The gateway answers 431 and closes with unread input: without a lingering close the kernel
    sends RST, which may destroy the answer; with it the client reads the 431, then a FIN."""
    gw = make_gateway(gateway_config(upstream, limits={"max_header_bytes": 4096}))
    with connect(gw.port) as sock:
        sock.settimeout(5)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000
        sock.sendall(head + b"b" * (1 << 20))  # and keeps sending: 1 MiB the gateway never reads
        response = read_response(sock)
        assert response.status == 431
        assert sock.recv(100) == b""  # a clean end, not ConnectionResetError


def test_a_413_before_the_body_is_read_reaches_a_client_still_sending(
    make_gateway: Make, upstream: int
) -> None:
    gw = make_gateway(gateway_config(upstream, limits={"max_body_bytes": 1000}))
    with connect(gw.port) as sock:
        sock.settimeout(5)
        body = b"x" * (2 << 20)
        sock.sendall(build_request("POST", "/sink", [("Content-Length", str(len(body)))]) + body)
        assert read_response(sock).status == 413
        assert sock.recv(100) == b""
