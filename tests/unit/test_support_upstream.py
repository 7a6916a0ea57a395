"""The test-support code works: the upstream server's behaviours, raw HTTP parsing, processes.

The upstream runs as a real child process (as the gateway's integration tests use it) and is
spoken to with raw sockets, so both sides of the support code are proven together.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from tests.support.ports import free_port, wait_for_port
from tests.support.procs import reaper, start_process
from tests.support.rawhttp import (
    NoResponse,
    build_request,
    connect,
    encode_chunked,
    parse_responses,
    read_response,
    read_response_async,
    send_raw,
)
from tests.support.upstream_server import (
    SLOWBODY_SIZE,
    pattern,
    pattern_chunks,
    pattern_sha256,
    start_upstream_process,
    start_upstream_server,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """The port of one upstream server process shared by this module's tests."""
    with reaper(report=False) as processes:
        _, port = start_upstream_process(processes=processes)
        yield port


def get(target: str, *headers: tuple[str, str], method: str = "GET") -> bytes:
    return build_request(method, target, headers)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- the upstream server -------------------------------------------------------------------------


def test_pattern() -> None:
    assert pattern(600) == bytes(i % 251 for i in range(600))
    assert pattern_sha256(300_000) == hashlib.sha256(bytes(i % 251 for i in range(300_000))).hexdigest()


def test_echo_reports_the_request_as_received(upstream: int) -> None:
    request = b"GET /echo/a%2Fb?x=1&y HTTP/1.1\r\nHost: h\r\nX-B: 2\r\nx-a:  1 \r\n\r\n"
    with connect(upstream) as sock:
        sock.sendall(request + request)
        first, second = read_response(sock), read_response(sock)
    assert first.status == 200 and first.header("Content-Type") == "application/json"
    echo = first.json()
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/a%2Fb?x=1&y"
    assert echo["headers"] == [["Host", "h"], ["X-B", "2"], ["x-a", "1"]]
    assert (echo["body_len"], echo["body_sha256"]) == (0, hashlib.sha256(b"").hexdigest())
    assert echo["requests_on_conn"] == 1
    assert second.json()["conn_id"] == echo["conn_id"]
    assert second.json()["requests_on_conn"] == 2
    assert first.header("X-Conn-Id") == str(echo["conn_id"])


def test_echo_reads_content_length_and_chunked_bodies(upstream: int) -> None:
    body = b"hello world" * 1000
    sha = hashlib.sha256(body).hexdigest()
    fixed = build_request("POST", "/echo", body=body)
    chunked = build_request(
        "PUT",
        "/echo",
        [("Transfer-Encoding", "chunked")],
        encode_chunked([body[:5], body[5:7000], body[7000:]], [("X-Trailer", "t")]),
    )
    with connect(upstream) as sock:
        sock.sendall(fixed + chunked)
        for method in ("POST", "PUT"):
            echo = read_response(sock).json()
            assert (echo["method"], echo["body_len"], echo["body_sha256"]) == (
                method,
                len(body),
                sha,
            )


@pytest.mark.parametrize("split", [1, 7, 16, 40])
def test_requests_split_anywhere(upstream: int, split: int) -> None:
    data = build_request("POST", "/echo", body=b"abcdef")
    pieces = [data[i : i + split] for i in range(0, len(data), split)]
    (response,) = parse_responses(send_raw(upstream, [*pieces, get("/close")], delay=0.001))[:1]
    assert response.json()["body_len"] == 6


def test_status(upstream: int) -> None:
    with connect(upstream) as sock:
        sock.sendall(get("/status/201") + get("/status/204") + get("/status/304") + get("/status/599"))
        created, no_content, not_modified, odd = (read_response(sock) for _ in range(4))
    assert (created.status, created.reason, created.body) == (201, "Created", b"status 201")
    assert (no_content.status, no_content.body, no_content.header("Content-Length")) == (
        204,
        b"",
        None,
    )
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert (odd.status, odd.body) == (599, b"status 599")


def test_head_gets_the_head_of_a_get(upstream: int) -> None:
    with connect(upstream) as sock:
        sock.sendall(get("/bytes/1000", method="HEAD") + get("/chunked/10", method="HEAD") + get("/echo"))
        sized = read_response(sock, head=True)
        chunked = read_response(sock, head=True)
        after = read_response(sock)
    assert (sized.status, sized.header("Content-Length"), sized.body) == (200, "1000", b"")
    assert (chunked.header("Transfer-Encoding"), chunked.body) == ("chunked", b"")
    assert after.json()["requests_on_conn"] == 3


def test_bytes_and_chunked(upstream: int) -> None:
    n = 300_001
    with connect(upstream) as sock:
        sock.sendall(get(f"/bytes/{n}") + get(f"/chunked/{n}") + get("/chunked/0"))
        sized, chunked, empty = (read_response(sock) for _ in range(3))
    assert sized.header("Content-Length") == str(n) and sized.body == pattern(n)
    assert chunked.header("Transfer-Encoding") == "chunked" and chunked.body == pattern(n)
    assert chunked.complete and chunked.raw.endswith(b"\r\n0\r\n\r\n")
    assert empty.body == b"" and empty.raw.endswith(b"\r\n\r\n0\r\n\r\n")


def test_large_download_is_not_buffered_by_the_server() -> None:
    with reaper(report=False) as processes:
        proc, port = start_upstream_process(processes=processes)
        before = rss_bytes(proc.pid)
        with connect(port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(get(f"/bytes/{200 * MiB}"))
            time.sleep(0.5)  # the client reads nothing: the server must stop writing
            assert rss_bytes(proc.pid) - before < 20 * MiB
            received = 0
            digest = hashlib.sha256()
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            head, _, rest = head.partition(b"\r\n\r\n")
            digest.update(rest)
            received = len(rest)
            while received < 200 * MiB:
                chunk = sock.recv(4 * MiB)
                assert chunk
                digest.update(chunk)
                received += len(chunk)
        assert received == 200 * MiB and digest.hexdigest() == pattern_sha256(200 * MiB)


def test_sink_streams_a_large_upload() -> None:
    size = 100 * MiB
    with reaper(report=False) as processes:
        proc, port = start_upstream_process(processes=processes)
        before = rss_bytes(proc.pid)
        with connect(port) as sock:
            sock.sendall(build_request("POST", "/sink", [("Content-Length", str(size))]))
            for chunk in pattern_chunks(size):
                sock.sendall(chunk)
            response = read_response(sock)
        assert rss_bytes(proc.pid) - before < 20 * MiB
    assert response.json() == {"body_len": size, "body_sha256": pattern_sha256(size)}


def test_slow_and_slowbody(upstream: int) -> None:
    started = time.monotonic()
    with connect(upstream) as sock:
        sock.sendall(get("/slow/200"))
        assert read_response(sock).json()["path"] == "/slow/200"
        assert time.monotonic() - started >= 0.2

        sock.sendall(get("/slowbody/300"))
        time.sleep(0.1)
        first = sock.recv(65536)  # the head and half the body, and no more for a while
        assert first.endswith(b"\r\n\r\n" + pattern(SLOWBODY_SIZE)[: SLOWBODY_SIZE // 2])
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.settimeout(5)
        rest = b""
        while len(rest) < SLOWBODY_SIZE // 2:
            rest += sock.recv(65536)
        assert rest == pattern(SLOWBODY_SIZE)[SLOWBODY_SIZE // 2 :]


def test_hang_never_answers(upstream: int) -> None:
    with connect(upstream) as sock:
        sock.sendall(get("/hang"))
        with pytest.raises(TimeoutError):
            read_response(sock, timeout=0.3)


@pytest.mark.parametrize("path", ["/reset-mid-body", "/reset-mid-chunked"])
def test_reset_mid_body(upstream: int, path: str) -> None:
    with connect(upstream) as sock:
        sock.sendall(get(path))
        received = b""
        with pytest.raises(ConnectionResetError):  # an RST, not a clean FIN
            while chunk := sock.recv(65536):
                received += chunk
    (response,) = parse_responses(received)
    assert response.status == 200 and not response.complete
    assert response.body == pattern(1000)
    if path == "/reset-mid-body":
        assert response.header("Content-Length") == "100000"
    else:
        assert response.header("Transfer-Encoding") == "chunked"
    with connect(upstream) as sock:  # read_response reports the cut as an incomplete body too
        sock.sendall(get(path))
        cut = read_response(sock)
    assert not cut.complete and cut.body == pattern(1000)


def test_close_malformed_early_close(upstream: int) -> None:
    closing = parse_responses(send_raw(upstream, get("/close") + get("/echo")))
    assert len(closing) == 1 and closing[0].header("Connection") == "close"
    assert send_raw(upstream, get("/malformed")) == b"HTTP/1.1 2x0 Bad\r\n\r\n"
    assert send_raw(upstream, get("/early-close")) == b""
    with connect(upstream) as sock:
        sock.sendall(get("/early-close"))
        with pytest.raises(NoResponse):
            read_response(sock)
    with connect(upstream) as sock:
        sock.sendall(get("/malformed"))
        with pytest.raises(ValueError, match="malformed status line"):
            read_response(sock)


def test_continue(upstream: int) -> None:
    with connect(upstream) as sock:
        sock.sendall(get("/continue"))
        response = read_response(sock)
    assert [(r.status, r.raw) for r in response.interim] == [(100, b"HTTP/1.1 100 Continue\r\n\r\n")]
    assert response.status == 200 and response.json()["path"] == "/continue"
    assert response.raw.startswith(b"HTTP/1.1 200 OK\r\n")


def test_expect_100_continue_before_the_body(upstream: int) -> None:
    with connect(upstream) as sock:
        sock.sendall(build_request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "3")]))
        sock.settimeout(5)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert read_response(sock).json()["body_len"] == 3


def test_http10_closes_unless_keep_alive(upstream: int) -> None:
    plain = build_request("GET", "/echo", version="HTTP/1.0")
    assert len(parse_responses(send_raw(upstream, plain + plain))) == 1
    kept = build_request("GET", "/echo", [("Connection", "keep-alive")], version="HTTP/1.0")
    with connect(upstream) as sock:
        sock.sendall(kept + kept)
        first, second = read_response(sock), read_response(sock)
    assert first.header("Connection") == "keep-alive"
    assert second.json()["requests_on_conn"] == 2


def test_stats_and_not_found(upstream: int) -> None:
    assert send_raw(upstream, get("/stats/reset") + get("/close")).count(b"HTTP/1.1 200") == 2
    with connect(upstream) as sock:
        sock.sendall(get("/echo") + get("/nope"))
        assert read_response(sock).status == 200
        missing = read_response(sock)
    assert (missing.status, missing.body) == (404, b"not found")
    with connect(upstream) as sock:
        sock.sendall(get("/stats"))
        assert read_response(sock).json() == {"connections_opened": 2, "requests": 3}
        sock.sendall(get("/stats/reset") + get("/stats"))
        read_response(sock)
        assert read_response(sock).json() == {"connections_opened": 0, "requests": 0}


def test_health_endpoint_answers_the_status_set_and_counts_only_its_probes(upstream: int) -> None:
    with connect(upstream) as sock:
        sock.sendall(get("/stats/reset") + get("/health/checks"))
        read_response(sock)
        before = read_response(sock).json()["checks"]
        sock.sendall(get("/health") + get("/health/set/503") + get("/health") + get("/health/set/99"))
        ok, changed, failing, refused = (read_response(sock) for _ in range(4))
        assert (ok.status, ok.json()) == (200, {"health": 200, "checks": before + 1})
        assert (changed.status, changed.json()) == (200, {"health": 503, "checks": before + 1})
        assert (failing.status, failing.json()) == (503, {"health": 503, "checks": before + 2})
        assert refused.status == 400
        sock.sendall(get("/health/set/200") + get("/health/checks") + get("/stats"))
        read_response(sock)
        assert read_response(sock).json() == {"health": 200, "checks": before + 2}
        assert read_response(sock).json() == {"connections_opened": 0, "requests": 0}  # none counted


def test_bad_request_gets_400_and_close(upstream: int) -> None:
    (response,) = parse_responses(send_raw(upstream, b"NONSENSE\r\n\r\n"))
    assert response.status == 400 and response.header("Connection") == "close"


def test_idle_close() -> None:
    with reaper(report=False) as processes:
        _, port = start_upstream_process(idle_close=0.3, processes=processes)
        with connect(port) as sock:
            sock.sendall(get("/echo"))
            assert read_response(sock).status == 200
            time.sleep(0.6)
            assert sock.recv(100) == b""  # the server closed the idle connection


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_in_process_server(loop_factory: object) -> None:
    async def main() -> None:
        server = await start_upstream_server()
        try:
            with connect(server.port) as sock:
                sock.sendall(get("/echo") + get("/reset-mid-body"))
                assert (await read_response_async(sock)).status == 200
                assert not (await read_response_async(sock)).complete
            assert server.stats() == {"connections_opened": 1, "requests": 2}
        finally:
            await server.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        runner.run(main())


def test_script_prints_the_port_it_was_given() -> None:
    port = free_port()
    script = str(Path(__file__).resolve().parents[1] / "support" / "upstream_server.py")
    with reaper(report=False) as processes:
        proc = processes.start([sys.executable, script, "--port", str(port)], ready_port=port)
        assert proc.wait_for_output("listening") == f"listening {port}"
        assert proc.stop() == 0


# -- rawhttp parsing -----------------------------------------------------------------------------


def test_parse_responses_framing() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nab\r\n0\r\nT: 1\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
        b"HTTP/1.0 200 OK\r\n\r\nuntil close"
    )
    fixed, chunked, not_modified, close_delimited = parse_responses(data)
    assert [r.status for r in fixed.interim] == [100]
    assert fixed.body == b"hi" and fixed.raw == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    assert (chunked.body, chunked.trailers, chunked.complete) == (b"ab", [("T", "1")], True)
    assert not_modified.body == b""
    assert (close_delimited.version, close_delimited.body) == ("HTTP/1.0", b"until close")
    truncated = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")[0]
    assert (truncated.body, truncated.complete) == (b"abc", False)


def test_build_request() -> None:
    assert build_request("POST", "/x", [("A", "1")], b"body") == (
        b"POST /x HTTP/1.1\r\nHost: test.local\r\nA: 1\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert build_request(host=None) == b"GET / HTTP/1.1\r\n\r\n"
    assert encode_chunked([b"abc", b""]) == b"3\r\nabc\r\n0\r\n\r\n"


# -- processes and ports -------------------------------------------------------------------------


def test_start_process_reports_an_early_exit() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)exited before it was ready.*boom"):
        start_process([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], ready_line="x")


def test_start_process_times_out_and_kills() -> None:
    with pytest.raises(TimeoutError, match="not ready"):
        start_process([sys.executable, "-c", "import time; time.sleep(30)"], ready_line="x", timeout=0.3)


def test_stop_escalates_to_sigkill_and_the_reaper_stops_everything() -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = start_process([sys.executable, "-c", stubborn], ready_line="ready")
    assert proc.stop(timeout=0.3) == -9
    assert proc.output() == "ready\n"

    with pytest.raises(KeyError), reaper(report=False) as processes:
        left = processes.start(
            [sys.executable, "-c", "import time; print('up'); time.sleep(60)"],
            env={"FASTGW_TEST_VAR": "1"},
            ready_line="up",
        )
        raise KeyError("a failing test")
    assert not left.alive and left.returncode == -15


def test_ports() -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        wait_for_port(port, timeout=0.1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        wait_for_port(port, timeout=1)


def test_respond_answers_the_body_and_headers_asked_for(upstream: int) -> None:
    asked = (("X-Respond-Location", "http://elsewhere/x"), ("X-Respond-Content-Type", "text/plain"))
    with connect(upstream) as sock:
        sock.sendall(build_request("POST", "/respond/302", asked, body=b"moved"))
        r = read_response(sock)
        assert (r.status, r.body, r.header("Location")) == (302, b"moved", "http://elsewhere/x")
        assert r.header("Content-Type") == "text/plain" and r.header("Content-Length") == "5"
        chunked = (("X-Respond-Transfer-Encoding", "chunked"),)
        sock.sendall(build_request("POST", "/respond/200", chunked, body=pattern(100_000)))
        r = read_response(sock)
        assert r.header("Transfer-Encoding") == "chunked" and r.body == pattern(100_000)
