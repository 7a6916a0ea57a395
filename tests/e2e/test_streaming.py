"""Large bodies stream through ``fastgw run`` with bounded memory, in both directions.

DESIGN "Flow control everywhere": when the client reads slowly the gateway pauses reading from
the upstream, when the upstream reads slowly it pauses reading from the client, so memory per
connection is bounded by the configured buffers whatever the body size. Each test moves far more
bytes than the bound on the gateway's resident memory growth (sampled every 50 ms from
``/proc/PID/status``), and checks every byte end to end by length and SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import time

import pytest

from tests.e2e.conftest import GatewayProc, RssSampler, RunGateway, Upstream, gateway_doc, rss_bytes
from tests.support.rawhttp import build_request, connect, read_response
from tests.support.upstream_server import pattern_chunks, pattern_sha256

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
BIG = 200 * MiB
SLOW_READ = 50 * MiB
MAX_GROWTH = 50 * MiB  # far below BIG: the body is never held whole
SLOW_READER_MAX_GROWTH = 20 * MiB  # below SLOW_READ minus what the kernel's buffers can absorb


@functools.cache
def expected_sha256(n: int) -> str:
    return pattern_sha256(n)


@pytest.fixture
def streaming_gateway(run_gateway: RunGateway, upstream_proc: Upstream) -> GatewayProc:
    routes = [
        # the same upstream with a short read timeout, for the timeout tests below
        {
            "id": "short",
            "path": "/short/{*rest}",
            "upstream": "up",
            "strip_prefix": "/short",
            "timeouts": {"read": "1s"},
        },
        {"id": "all", "path": "/{*rest}", "upstream": "up"},
    ]
    doc = gateway_doc(upstream_proc.port, routes, buffer_bytes="256KiB", limits={"max_body_bytes": "1GiB"})
    gw = run_gateway(doc)
    # Warm up: imports, the pool's first upstream connection, the first response's allocations.
    for _ in range(3):
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/echo/warmup"))
            assert read_response(sock).status == 200
    return gw


def _send_body(sock: socket.socket, size: int, chunked: bool) -> None:
    for piece in pattern_chunks(size):
        sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body bytes already read) of one response head."""
    data = bytearray()
    while (end := data.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed inside the response head: {bytes(data)!r}"
        data += chunk
    lines = data[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, bytes(data[end + 4 :])


def _read_body_digest(
    sock: socket.socket, first: bytes, length: int, pace: float = 0.0, paced_bytes: int = 0
) -> tuple[int, str]:
    """Read ``length`` body bytes (``first`` already read), hashing them; the first
    ``paced_bytes`` in 16 KiB reads with ``pace`` seconds between them. (bytes read, sha256)."""
    digest = hashlib.sha256(first)
    received = len(first)
    buffer = bytearray(256 * 1024)
    view = memoryview(buffer)
    while received < length:
        slow = received < paced_bytes
        n = sock.recv_into(view, min(16 * 1024 if slow else len(buffer), length - received))
        if n == 0:
            break
        digest.update(view[:n])
        received += n
        if slow:
            time.sleep(pace)
    return received, digest.hexdigest()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_200mb_upload_streams_with_bounded_memory(streaming_gateway: GatewayProc, framing: str) -> None:
    chunked = framing == "chunked"
    header = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(BIG))
    started = time.monotonic()
    with RssSampler(streaming_gateway.pid) as rss, connect(streaming_gateway.port, timeout=30) as sock:
        sock.sendall(build_request("POST", "/sink", [header]))
        _send_body(sock, BIG, chunked)
        response = read_response(sock, timeout=30)
    assert response.status == 200, response.raw[:500]
    assert response.json() == {"body_len": BIG, "body_sha256": expected_sha256(BIG)}
    assert rss.growth < MAX_GROWTH, (
        f"gateway RSS grew {rss.growth / MiB:.1f} MiB ({rss.baseline / MiB:.1f} -> {rss.peak / MiB:.1f}) "
        f"uploading {BIG / MiB:.0f} MiB ({framing}) in {time.monotonic() - started:.1f}s"
    )


def test_200mb_download_streams_with_bounded_memory(streaming_gateway: GatewayProc) -> None:
    started = time.monotonic()
    with RssSampler(streaming_gateway.pid) as rss, connect(streaming_gateway.port, timeout=30) as sock:
        sock.sendall(build_request("GET", f"/bytes/{BIG}"))
        status, headers, first = _read_head(sock)
        assert status == 200
        assert headers.get("content-length") == str(BIG)
        received, sha = _read_body_digest(sock, first, BIG)
    assert (received, sha) == (BIG, expected_sha256(BIG))
    assert rss.growth < MAX_GROWTH, (
        f"gateway RSS grew {rss.growth / MiB:.1f} MiB ({rss.baseline / MiB:.1f} -> {rss.peak / MiB:.1f}) "
        f"downloading {BIG / MiB:.0f} MiB in {time.monotonic() - started:.1f}s"
    )


def test_slow_reading_client_pauses_the_upstream(streaming_gateway: GatewayProc) -> None:
    # A client that does not read: without flow control the gateway would read the whole
    # upstream body into memory while waiting for it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: a small window
    sock.settimeout(30)
    with sock, RssSampler(streaming_gateway.pid) as rss:
        sock.connect(("127.0.0.1", streaming_gateway.port))
        sock.sendall(build_request("GET", f"/bytes/{SLOW_READ}"))
        time.sleep(1.0)  # not reading at all
        stalled_growth = rss_bytes(streaming_gateway.pid) - rss.baseline
        status, headers, first = _read_head(sock)
        assert status == 200 and headers.get("content-length") == str(SLOW_READ)
        # then a slow reader for about a second, then full speed
        received, sha = _read_body_digest(sock, first, SLOW_READ, pace=0.002, paced_bytes=4 * MiB)
    assert (received, sha) == (SLOW_READ, expected_sha256(SLOW_READ))
    assert stalled_growth < SLOW_READER_MAX_GROWTH, (
        f"RSS grew {stalled_growth / MiB:.1f} MiB while the client did not read"
    )
    assert rss.growth < SLOW_READER_MAX_GROWTH, (
        f"gateway RSS grew {rss.growth / MiB:.1f} MiB ({rss.baseline / MiB:.1f} -> {rss.peak / MiB:.1f}) "
        f"serving {SLOW_READ / MiB:.0f} MiB to a slow reader"
    )


# -- the upstream read timeout measures the upstream, not the transfer ------------------------------
# ``timeouts.read`` is "response head, and longest pause in the body" of the upstream's response.
# Time spent streaming a request body the upstream is reading, or paused because the *client*
# reads slowly (the gateway stopped reading the upstream on purpose), is not the upstream stalling.

READ_TIMEOUT = 1.0


def test_read_timeout_does_not_cut_an_upload_in_progress(streaming_gateway: GatewayProc) -> None:
    # A 2.5 MiB upload at about 1 MiB/s: the upstream reads every byte as it comes and answers
    # right after the last one, so nothing ever waits READ_TIMEOUT for the upstream.
    size = 5 * MiB // 2
    started = time.monotonic()
    with connect(streaming_gateway.port, timeout=10) as sock:
        sock.sendall(build_request("POST", "/short/sink", [("Content-Length", str(size))]))
        try:
            for piece in pattern_chunks(size, 16 * 1024):
                sock.sendall(piece)
                time.sleep(0.015)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway gave up on the upload: its answer says why
        response = read_response(sock, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status == 200, (
        f"upload cut after {elapsed:.1f}s with {response.status} {response.body[:200]!r}; "
        f"the upstream was reading all along (read timeout {READ_TIMEOUT}s)"
    )
    assert response.json() == {"body_len": size, "body_sha256": expected_sha256(size)}


def test_read_timeout_does_not_cut_a_download_paused_by_the_client(streaming_gateway: GatewayProc) -> None:
    # The client stops reading for longer than the read timeout; the gateway pauses the upstream
    # (flow control). When the client reads again, the rest of the body must follow.
    size = 20 * MiB
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", streaming_gateway.port))
        sock.sendall(build_request("GET", f"/short/bytes/{size}"))
        time.sleep(2.5 * READ_TIMEOUT)
        status, headers, first = _read_head(sock)
        assert status == 200 and headers.get("content-length") == str(size)
        try:
            received, sha = _read_body_digest(sock, first, size)
        except ConnectionResetError:
            received, sha = -1, ""
    assert received == size, (
        f"download cut at {received} of {size} bytes after the client paused "
        f"{2.5 * READ_TIMEOUT}s (read timeout {READ_TIMEOUT}s; the upstream never stalled)"
    )
    assert sha == expected_sha256(size)
