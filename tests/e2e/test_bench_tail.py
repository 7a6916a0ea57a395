"""The bench's constant-rate driver (``bench/peers/rate_driver.c``, built as ``python -m bench``
builds it) against a real upstream: every request due in the run is sent and timed, and a server
that stops answering is charged for every request that fell due while it did not (no coordinated
omission: wrk would have sent one request per connection and waited)."""

from __future__ import annotations

from bench.tail import constant_rate
from tests.e2e.conftest import Upstream


def test_every_due_request_is_sent_and_answered(upstream_proc: Upstream) -> None:
    run = constant_rate(upstream_proc.port, "/echo/1", rate=400, seconds=1.0, connections=8)
    assert run["requests"] == 400  # due at k / 400 for k < 400, all answered
    assert run["errors"] == 0 and 0 < run["p50"] <= run["p99"] <= run["p999"]


def test_a_server_that_stops_answering_is_charged_for_every_request_due_meanwhile(
    upstream_proc: Upstream,
) -> None:
    run = constant_rate(upstream_proc.port, "/hang", rate=200, seconds=1.0, connections=4)
    # 4 sent (one per connection, never answered), 196 never sendable: all 200 late, each counted
    # with what it had waited when the driver gave up (the 2 s drain after the 1 s run).
    assert run["requests"] == 0 and run["errors"] == 200
    assert run["p50"] >= 2000.0 and run["p999"] >= 2900.0  # ms: the first due waited the whole 3 s
