"""Upstream connection reuse and upstream failure shapes, through ``fastgw run``.

Pool rules (``upstream/pool.py``, ``_proxy.pyx``): an idle pooled connection the upstream
closed must not be used, or (in the race where it closes just as we reuse it) an idempotent
request without a body is retried once on a fresh connection; a request with a body is never sent
twice (aiohttp #7297). The upstream's ``/stats`` counts the requests it actually parsed.

Failure rules (DESIGN "Errors are values on the wire"): before the response head went to the
client, a failure is one small JSON error (502 refused/reset/malformed, 504 timeout); after it,
the only honest signal is closing the connection, never a complete-looking body.
"""

from __future__ import annotations

import contextlib
import re
import time

import pytest

from tests.e2e.conftest import GatewayProc, RunGateway, StartUpstream, Upstream, gateway_doc
from tests.support.ports import free_port
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.upstream_server import RESET_DECLARED, RESET_SENT, SLOWBODY_SIZE, pattern

IDLE_CLOSE = 0.3


def request(port: int, method: str = "GET", target: str = "/echo/x", body: bytes = b"") -> RawResponse:
    with connect(port) as sock:
        sock.sendall(build_request(method, target, body=body))
        return read_response(sock, head=method == "HEAD")


def assert_json_error(response: RawResponse, status: int) -> dict[str, str]:
    assert response.status == status, response.raw[:500]
    assert response.complete
    assert response.header("Content-Type") == "application/json"
    doc = response.json()
    assert doc["error"] and doc["request_id"] == response.header("X-Request-Id"), doc
    return dict(doc)


# -- stale pooled connections ----------------------------------------------------------------------


@pytest.fixture
def idle_closing(start_upstream: StartUpstream) -> Upstream:
    return start_upstream(idle_close=IDLE_CLOSE)


def test_get_after_upstream_closed_the_pooled_connection(
    run_gateway: RunGateway, idle_closing: Upstream
) -> None:
    gw = run_gateway(gateway_doc(idle_closing.port))
    assert request(gw.port, target="/echo/first").status == 200
    time.sleep(2 * IDLE_CLOSE)  # the upstream closed the connection the gateway pooled
    before = idle_closing.stats()
    response = request(gw.port, target="/echo/second")
    assert response.status == 200, response.raw[:500]
    assert response.json()["path"] == "/echo/second"
    after = idle_closing.stats()
    assert after["connections_opened"] - before["connections_opened"] == 1  # a fresh connection
    assert 1 <= after["requests"] - before["requests"] <= 2  # at most one retry


def test_post_after_upstream_closed_the_pooled_connection_is_never_sent_twice(
    run_gateway: RunGateway, idle_closing: Upstream
) -> None:
    gw = run_gateway(gateway_doc(idle_closing.port))
    body = pattern(5000)
    assert request(gw.port, "POST", "/echo/first", body).status == 200
    time.sleep(2 * IDLE_CLOSE)
    before = idle_closing.stats()["requests"]
    response = request(gw.port, "POST", "/echo/second", body)
    seen = idle_closing.stats()["requests"] - before
    assert response.status in (200, 502), response.raw[:500]
    assert seen <= 1, f"the upstream saw the POST {seen} times"
    if response.status == 200:
        assert seen == 1
        assert response.json()["body_len"] == len(body)
    else:
        assert_json_error(response, 502)


def test_early_close_on_a_reused_connection_retries_get_once_never_post(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    # /early-close reads the request and closes without a byte of response: on a reused pooled
    # connection that looks exactly like a stale connection. A GET may be retried once on a fresh
    # connection (which fails the same way: 502); a POST must not be retried.
    gw = run_gateway(gateway_doc(upstream_proc.port))
    assert request(gw.port).status == 200  # pools one connection
    before = upstream_proc.stats()["requests"]
    assert_json_error(request(gw.port, "POST", "/early-close", b"payload"), 502)
    assert upstream_proc.stats()["requests"] - before == 1, "a POST was sent twice"

    assert request(gw.port).status == 200
    before = upstream_proc.stats()
    assert_json_error(request(gw.port, "GET", "/early-close"), 502)
    after = upstream_proc.stats()
    assert after["requests"] - before["requests"] == 2, "a GET on a reused connection is retried once"
    assert after["connections_opened"] - before["connections_opened"] == 1  # the retry's fresh one


def test_pooled_connection_is_reused_only_when_clean(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    # The upstream names its connection in X-Conn-Id. A connection whose response ended cleanly
    # is reused; one that said Connection: close, or whose response the client abandoned
    # half-read (the rest is still in flight), must never carry another request.
    gw = run_gateway(gateway_doc(upstream_proc.port))
    first = request(gw.port).header("X-Conn-Id")
    assert request(gw.port).header("X-Conn-Id") == first  # kept alive and reused

    closing = request(gw.port, target="/close")
    assert closing.status == 200
    after_close = request(gw.port)
    assert after_close.status == 200 and after_close.header("X-Conn-Id") != closing.header("X-Conn-Id")

    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", f"/bytes/{20 * 1024 * 1024}"))
        head = b""
        while b"\r\n\r\n" not in head:  # the head and a little of the body...
            chunk = sock.recv(65536)
            assert chunk
            head += chunk
        match = re.search(rb"\r\nX-Conn-Id: (\d+)\r\n", head)
        assert match, head[:300]
        abandoned = match[1].decode()
    # ...then the client went away
    time.sleep(0.2)
    for _ in range(3):
        response = request(gw.port)
        assert response.status == 200 and response.json()["path"] == "/echo/x"
        assert response.header("X-Conn-Id") != abandoned


# -- failure shapes --------------------------------------------------------------------------------


@pytest.fixture
def failing(run_gateway: RunGateway, upstream_proc: Upstream) -> GatewayProc:
    dead = free_port()  # nothing listens there
    doc = gateway_doc(
        upstream_proc.port,
        [
            {"id": "dead", "path": "/dead/{*rest}", "upstream": "dead"},
            {"id": "hang", "path": "/hang", "upstream": "up", "timeouts": {"read": "0.5s"}},
            {"id": "slowbody", "path": "/slowbody/{ms}", "upstream": "up", "timeouts": {"read": "0.5s"}},
            {"id": "all", "path": "/{*rest}", "upstream": "up"},
        ],
    )
    doc["upstreams"]["dead"] = {"targets": [f"127.0.0.1:{dead}"]}
    return run_gateway(doc)


def _still_serves(gw: GatewayProc) -> None:
    response = request(gw.port, target="/echo/after")
    assert response.status == 200 and response.json()["path"] == "/echo/after"


def _same_connection_after_error(gw: GatewayProc, target: str, status: int) -> None:
    """An error answered before the head leaves the client connection usable, or says close."""
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target))
        response = read_response(sock)
        assert_json_error(response, status)
        if (response.header("Connection") or "").lower() == "close":
            assert sock.recv(1) == b""
            return
        sock.sendall(build_request("GET", "/echo/same-connection"))
        assert read_response(sock).status == 200


def test_nothing_listening_is_502_naming_the_cause(failing: GatewayProc) -> None:
    started = time.monotonic()
    doc = assert_json_error(request(failing.port, target="/dead/x"), 502)
    assert time.monotonic() - started < 2
    assert "connect" in doc["error"] and "refused" in doc["error"].lower(), doc
    _same_connection_after_error(failing, "/dead/y", 502)
    _still_serves(failing)


def test_upstream_read_timeout_is_504(failing: GatewayProc) -> None:
    started = time.monotonic()
    doc = assert_json_error(request(failing.port, target="/hang"), 504)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0, f"504 after {elapsed:.2f}s with a 0.5s read timeout"
    assert "timed out" in doc["error"]
    _same_connection_after_error(failing, "/hang", 504)
    _still_serves(failing)


@pytest.mark.parametrize("target", ["/reset-mid-body", "/reset-mid-chunked", "/slowbody/3000"])
def test_failure_after_the_head_truncates_the_response(failing: GatewayProc, target: str) -> None:
    # The upstream resets mid-body (Content-Length, chunked), or stalls mid-body past the read
    # timeout: the head is already out, so the client must see the body cut short.
    expected_max = SLOWBODY_SIZE // 2 if target.startswith("/slowbody") else RESET_SENT
    with connect(failing.port) as sock:
        sock.sendall(build_request("GET", target))
        response = read_response(sock, timeout=5)
        assert response.status == 200, response.raw[:300]
        assert not response.complete, "a truncated upstream body must not look complete to the client"
        assert len(response.body) < RESET_DECLARED
        assert response.body == pattern(len(response.body))
        assert len(response.body) <= expected_max
        if target != "/reset-mid-body":  # bodies re-chunked by the gateway
            assert not response.raw.endswith(b"0\r\n\r\n")
        # and the connection is over (EOF or reset), not kept alive
        sock.settimeout(2)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    _still_serves(failing)


@pytest.mark.parametrize(("target", "cause"), [("/malformed", "malformed"), ("/early-close", "closed")])
def test_broken_upstream_response_is_502(failing: GatewayProc, target: str, cause: str) -> None:
    doc = assert_json_error(request(failing.port, target=target), 502)
    assert cause in doc["error"], doc
    _same_connection_after_error(failing, target, 502)
    _still_serves(failing)
