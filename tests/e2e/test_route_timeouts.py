"""Per-route upstream timeouts (``UpstreamConnection.arm`` in ``_proxy.pyx``), through ``fastgw run``
in front of a real upstream process: ``head`` until the response head, ``read`` between body
reads, ``total`` for the whole exchange. Deadlines fire within a few milliseconds of their time
(the timer wheel, ``_clock.pyx``), never before it; the upper bounds below leave room for a
loaded machine.
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import RunGateway, Upstream, gateway_doc
from tests.e2e.test_upstream_pool import assert_json_error, request


def timed_doc(upstream: int, timeouts: dict[str, Any]) -> dict[str, Any]:
    return gateway_doc(upstream, [{"id": "t", "path": "/{*rest}", "upstream": "up", "timeouts": timeouts}])


def test_head_timeout_is_504_and_leaves_the_read_timeout_to_the_body(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    gw = run_gateway(timed_doc(upstream_proc.port, {"head": "300ms", "read": "3s"}))
    started = time.monotonic()
    doc = assert_json_error(request(gw.port, target="/slow/2000"), 504)
    assert 0.3 <= time.monotonic() - started < 1.2 and doc["error"] == "upstream 'up' timed out"
    # The head came at once; the body's 1 s pause is under the read timeout: a complete answer.
    response = request(gw.port, target="/slowbody/1000")
    assert response.status == 200 and response.complete and len(response.body) == 1024


def test_without_head_the_read_timeout_bounds_the_head(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    gw = run_gateway(timed_doc(upstream_proc.port, {"read": "300ms"}))
    started = time.monotonic()
    assert_json_error(request(gw.port, target="/slow/2000"), 504)
    assert 0.3 <= time.monotonic() - started < 1.2


def test_total_timeout_bounds_the_whole_exchange(run_gateway: RunGateway, upstream_proc: Upstream) -> None:
    gw = run_gateway(timed_doc(upstream_proc.port, {"total": "500ms", "read": "5s"}))
    started = time.monotonic()
    doc = assert_json_error(request(gw.port, target="/slow/3000"), 504)
    assert 0.5 <= time.monotonic() - started < 1.5 and "total timeout" in doc["error"]
    # Here the head went out before the total ran out: the only honest signal left is a close.
    response = request(gw.port, target="/slowbody/3000")
    assert response.status == 200 and not response.complete
    assert request(gw.port, target="/echo/fast").status == 200
