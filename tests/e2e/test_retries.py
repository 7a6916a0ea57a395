"""Route retries (``upstream/retry.py``, ``Exchange.try_again`` in ``_proxy.pyx``), through ``fastgw run``
in front of real upstream processes.

Rules: a failed attempt is sent again only when the route's ``retry`` allows its cause (connect
error, reset/timeout before the head, or a listed 5xx status), only for its methods (idempotent
by default), only for a request without a body, never once any response byte went to the client,
to another target when there is one, and only while the retry budget has tokens.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import RunGateway, StartUpstream, Upstream, gateway_doc
from tests.e2e.test_upstream_pool import assert_json_error, request
from tests.support.ports import free_port


def retry_doc(targets: list[int], retry: dict[str, Any], target_path: str = "/{*rest}") -> dict[str, Any]:
    doc = gateway_doc(targets[0], [{"id": "r", "path": target_path, "upstream": "up", "retry": retry}])
    doc["upstreams"]["up"]["targets"] = [f"127.0.0.1:{port}" for port in targets]
    return doc


def counted(upstream: Upstream, before: dict[str, int]) -> int:
    return upstream.stats()["requests"] - before["requests"]


@pytest.fixture
def live(start_upstream: StartUpstream) -> Upstream:
    return start_upstream()


def test_connect_errors_are_retried_on_the_other_target(run_gateway: RunGateway, live: Upstream) -> None:
    dead = free_port()  # nothing listens: every connect is refused
    gw = run_gateway(retry_doc([dead, live.port], {"attempts": 2, "when": ["connect"], "backoff": 0}))
    before = live.stats()
    statuses = [request(gw.port, target=f"/echo/{i}").status for i in range(20)]
    assert statuses == [200] * 20  # round robin sends half of them to the dead target first
    assert counted(live, before) == 20


def test_a_post_is_never_replayed(run_gateway: RunGateway, live: Upstream) -> None:
    gw = run_gateway(retry_doc([live.port], {"attempts": 3, "when": [503], "backoff": 0}))
    before = live.stats()
    assert request(gw.port, "POST", "/status/503", body=b"x").status == 503
    assert counted(live, before) == 1
    before = live.stats()
    assert request(gw.port, "POST", "/status/503").status == 503  # not idempotent, even without body
    assert counted(live, before) == 1


def test_listed_statuses_are_retried_then_the_last_answer_is_forwarded(
    run_gateway: RunGateway, live: Upstream
) -> None:
    gw = run_gateway(retry_doc([live.port], {"attempts": 3, "when": [503], "backoff": "1ms"}))
    before = live.stats()
    response = request(gw.port, target="/status/503")
    assert response.status == 503 and response.body == b"status 503"
    assert counted(live, before) == 3
    before = live.stats()
    assert request(gw.port, target="/status/500").status == 500  # not listed: answered at once
    assert counted(live, before) == 1


def test_a_request_with_a_body_is_not_retried(run_gateway: RunGateway, live: Upstream) -> None:
    gw = run_gateway(retry_doc([live.port], {"attempts": 3, "when": [503], "methods": "*", "backoff": 0}))
    before = live.stats()
    assert request(gw.port, "PUT", "/status/503", body=b"payload").status == 503
    assert counted(live, before) == 1  # the body was streamed upstream, not kept


def test_reset_before_the_head_is_retried_and_after_it_never(run_gateway: RunGateway, live: Upstream) -> None:
    gw = run_gateway(retry_doc([live.port], {"attempts": 2, "when": ["reset"], "backoff": 0}))
    before = live.stats()
    assert_json_error(request(gw.port, target="/early-close"), 502)
    assert counted(live, before) == 2  # closed without answering, twice
    before = live.stats()
    response = request(gw.port, target="/reset-mid-body")
    assert response.status == 200 and not response.complete  # the head went out: a close, no retry
    assert counted(live, before) == 1


def test_the_retry_budget_caps_amplification(run_gateway: RunGateway, live: Upstream) -> None:
    gw = run_gateway(retry_doc([live.port], {"attempts": 3, "when": [503], "backoff": 0, "budget": 0}))
    before = live.stats()
    started = time.monotonic()
    for _ in range(60):
        assert request(gw.port, target="/status/503").status == 503
    elapsed = time.monotonic() - started
    # Without a budget 60 requests make 180 attempts. With budget 0 only the saved-up burst (10)
    # and the trickle of 3 per second may be retried.
    assert counted(live, before) <= 60 + 10 + 3 * elapsed + 1
    assert counted(live, before) >= 60 + 10


def test_attempts_one_means_no_retry(run_gateway: RunGateway, live: Upstream) -> None:
    gw = run_gateway(retry_doc([live.port], {"attempts": 1, "when": [503]}))
    before = live.stats()
    assert request(gw.port, target="/status/503").status == 503
    assert counted(live, before) == 1
