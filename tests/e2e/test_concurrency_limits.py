"""Concurrency limits (``Limiter`` in ``_proxy.pyx``), through ``fastgw run`` in front of a real
upstream process: at most ``max_in_flight`` requests per route or per upstream, a bounded queue
waiting at most ``queue_timeout`` for a slot, and 503 with ``Retry-After`` for the rest."""

from __future__ import annotations

import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.e2e.conftest import RunGateway, Upstream, gateway_doc
from tests.e2e.test_upstream_pool import assert_json_error, request
from tests.support.rawhttp import RawResponse, build_request, connect


def limited_doc(upstream: int, route: dict[str, Any] | None = None, **upstream_keys: Any) -> dict[str, Any]:
    routes = [
        {"id": "a", "path": "/a/{*rest}", "upstream": "up", "strip_prefix": "/a", **(route or {})},
        {"id": "b", "path": "/b/{*rest}", "upstream": "up", "strip_prefix": "/b"},
    ]
    return gateway_doc(upstream, routes, upstream=upstream_keys)


def concurrently(port: int, targets: list[str]) -> list[RawResponse]:
    """Send each request on its own connection, all at once (each thread starts ~20 ms apart so
    the order in which the gateway sees them is the list's order)."""

    def one(index_target: tuple[int, str]) -> RawResponse:
        index, target = index_target
        time.sleep(0.02 * index)
        return request(port, target=target)

    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(one, enumerate(targets)))


def test_route_limit_answers_503_beyond_it(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    gw = run_gateway(limited_doc(upstream_proc.port, {"concurrency": {"max_in_flight": 2}}))
    responses = concurrently(gw.port, ["/a/slow/600"] * 4)
    assert [r.status for r in responses] == [200, 200, 503, 503]
    for refused in responses[2:]:
        doc = assert_json_error(refused, 503)
        assert "route 'a'" in doc["error"] and refused.header("Retry-After") == "1"
    assert request(gw.port, target="/b/echo/x").status == 200  # other routes are not limited


def test_waiting_requests_get_the_slots_as_they_free(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    limit = {"max_in_flight": 2, "queue": 2, "queue_timeout": "5s"}
    gw = run_gateway(limited_doc(upstream_proc.port, {"concurrency": limit}))
    before = upstream_proc.stats()
    started = time.monotonic()
    responses = concurrently(gw.port, ["/a/slow/400"] * 4)
    assert [r.status for r in responses] == [200] * 4
    assert time.monotonic() - started >= 0.8  # two rounds of two, never four at once
    assert upstream_proc.stats()["connections_opened"] - before["connections_opened"] <= 2


def test_a_waiter_gives_up_after_queue_timeout(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    limit = {"max_in_flight": 1, "queue": 1, "queue_timeout": "200ms"}
    gw = run_gateway(limited_doc(upstream_proc.port, {"concurrency": limit}))
    first, second = concurrently(gw.port, ["/a/slow/1500", "/a/echo/x"])
    assert first.status == 200
    assert "no request slot within 0.2s" in assert_json_error(second, 503)["error"]


def test_upstream_limit_is_shared_by_its_routes(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    gw = run_gateway(limited_doc(upstream_proc.port, concurrency={"max_in_flight": 1}))
    first, second = concurrently(gw.port, ["/a/slow/600", "/b/echo/x"])
    assert first.status == 200
    assert "upstream 'up'" in assert_json_error(second, 503)["error"]


def test_a_client_that_leaves_frees_its_slot(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    gw = run_gateway(limited_doc(upstream_proc.port, {"concurrency": {"max_in_flight": 1}}))
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/a/hang"))
        time.sleep(0.2)  # the request holds the only slot
        # Leave with a reset (a plain close is a half-close, and the answer is still awaited).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.2)  # the gateway saw the reset
    assert request(gw.port, target="/a/echo/x").status == 200


def test_a_response_cut_mid_body_frees_its_slot(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    """The upstream resets after part of the body went to the client: the client's connection is
    closed (the only honest signal), and the slot and the target's in-flight count are freed."""
    gw = run_gateway(limited_doc(upstream_proc.port, {"concurrency": {"max_in_flight": 1}}))
    for _ in range(3):
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/a/reset-mid-body"))
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ")
            while sock.recv(65536):  # then the gateway closes the connection, short of the length
                pass
        assert request(gw.port, target="/a/echo/x").status == 200  # not 503: the slot came back
