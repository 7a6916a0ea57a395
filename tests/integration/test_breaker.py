"""Circuit breakers with the gateway in front of real upstream processes (rules in
``upstream/breaker.py``): a breaker opens after failures in a row or a failure ratio, an open
breaker on every target answers 503 with Retry-After without touching the upstream, trial requests
close or reopen it, only the allowed number of trials goes through, another target takes the
traffic of a broken one, and a reload keeps the state of an unchanged upstream.

``/status/500`` makes a target fail one request; ``/echo`` succeeds."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fastgw.observe.metrics import render, samples_by
from fastgw.upstream.breaker import State, UpstreamBreaker
from tests.e2e.conftest import Upstream, wait_for
from tests.support.gateway import RunningGateway
from tests.support.ports import free_port
from tests.support.procs import reaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.upstream_server import start_upstream_process

Make = Callable[..., RunningGateway]


@pytest.fixture
def upstreams() -> Iterator[Callable[[int], list[Upstream]]]:
    with reaper() as processes:
        yield lambda count: [Upstream(*start_upstream_process(processes=processes)) for _ in range(count)]


def label(upstream: Upstream) -> str:
    return f"127.0.0.1:{upstream.port}"


def document(targets: list[Upstream], **breaker: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"catalog": {"targets": [label(t) for t in targets], "breaker": breaker}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "catalog"}],
    }


def get(gw: RunningGateway, target: str = "/echo/x") -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target))
        return read_response(sock, timeout=10)


def breaker(gw: RunningGateway) -> UpstreamBreaker:
    (only,) = gw.gateway.plan.breakers.values()
    return only


def state(gw: RunningGateway, target: Upstream) -> State:
    watched = breaker(gw)
    return State(gw.call(watched.state_of, label(target)))


def requests(upstream: Upstream) -> int:
    return upstream.stats()["requests"]


def test_opens_after_failures_in_a_row_then_503_with_retry_after(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=3, open_for="30s"))
    assert [get(gw, "/status/500").status for _ in range(2)] == [500, 500]
    assert get(gw).status == 200  # a success ends the streak
    assert [get(gw, "/status/500").status for _ in range(3)] == [500, 500, 500]
    assert state(gw, up) is State.OPEN
    before = requests(up)
    r = get(gw)
    assert r.status == 503
    assert "circuit breaker open for every target in upstream 'catalog'" in r.json()["error"]
    assert 25 <= int(r.header("Retry-After") or 0) <= 30
    assert requests(up) == before  # an open breaker answers at once, without the upstream


def test_a_successful_trial_closes_it(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1, open_for="200ms"))
    assert get(gw, "/status/502").status == 502
    assert get(gw).status == 503
    wait_for(lambda: state(gw, up) is State.HALF_OPEN, 5, "the breaker to let a trial through")
    assert get(gw).status == 200
    assert state(gw, up) is State.CLOSED
    assert [get(gw).status for _ in range(3)] == [200, 200, 200]


def test_a_failed_trial_reopens_it(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1, open_for="200ms"))
    assert get(gw, "/status/500").status == 500
    wait_for(lambda: state(gw, up) is State.HALF_OPEN, 5, "the breaker to let a trial through")
    assert get(gw, "/status/500").status == 500  # the trial reached the upstream and failed
    assert state(gw, up) is State.OPEN
    assert get(gw).status == 503


def test_half_open_lets_only_the_trials_through(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1, open_for="200ms", trial_requests=1))
    assert get(gw, "/status/500").status == 500
    wait_for(lambda: state(gw, up) is State.HALF_OPEN, 5, "the breaker to let a trial through")
    trial: list[RawResponse] = []
    slow = threading.Thread(target=lambda: trial.append(get(gw, "/slow/400")))
    slow.start()
    wait_for(lambda: requests(up) >= 2, 5, "the trial to reach the upstream")
    assert get(gw).status == 503  # the only trial is still running
    slow.join(10)
    assert trial[0].status == 200
    assert state(gw, up) is State.CLOSED
    assert get(gw).status == 200


def test_several_trials_must_all_succeed(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1, open_for="200ms", trial_requests=3))
    assert get(gw, "/status/500").status == 500
    wait_for(lambda: state(gw, up) is State.HALF_OPEN, 5, "the breaker to let trials through")
    assert [get(gw).status for _ in range(2)] == [200, 200]
    assert state(gw, up) is State.HALF_OPEN
    assert get(gw).status == 200
    assert state(gw, up) is State.CLOSED


def test_failure_ratio_in_the_window(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1000, failure_ratio=0.5, min_requests=10, window="1m"))
    for i in range(9):  # 4 or 5 failures of 9: under min_requests, not judged yet
        assert get(gw, "/status/500" if i % 2 == 0 else "/echo/x").status in (200, 500)
    assert state(gw, up) is State.CLOSED
    assert get(gw).status == 200  # 10 exchanges, 5 failures: half of them
    assert state(gw, up) is State.OPEN
    assert get(gw).status == 503


def test_failure_ratio_below_the_threshold_keeps_it_closed(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1000, failure_ratio=0.5, min_requests=10, window="1m"))
    for i in range(30):  # one failure in three
        get(gw, "/status/500" if i % 3 == 0 else "/echo/x")
    assert state(gw, up) is State.CLOSED


def test_another_target_takes_the_traffic_of_a_broken_one(make_gateway: Make, upstreams: Any) -> None:
    good, bad = upstreams(2)
    gw = make_gateway(document([good, bad], failures=2, open_for="30s"))
    bad.proc.stop()  # connect refused from now on
    statuses = [get(gw).status for _ in range(20)]
    assert statuses.count(502) == 2  # two failures in a row open it; nothing else is lost
    assert state(gw, bad) is State.OPEN and state(gw, good) is State.CLOSED
    assert all(s == 200 for s in statuses[statuses.index(502) + 3 :])


def test_a_reload_keeps_the_state_of_an_unchanged_upstream(
    make_gateway: Make, upstreams: Any, tmp_path: Path
) -> None:
    (up,) = upstreams(1)
    doc = document([up], failures=1, open_for="30s")
    gw = make_gateway(doc)
    assert get(gw, "/status/500").status == 500
    assert get(gw).status == 503
    path = tmp_path / "reloaded.yaml"
    doc["routes"].append({"id": "more", "path": "/more/{*rest}", "upstream": "catalog"})
    path.write_text(yaml.safe_dump(doc))
    gw.reload(str(path))
    assert get(gw).status == 503  # still open: same breaker, same timer
    doc["upstreams"]["catalog"]["breaker"]["open_for"] = "20s"  # a changed breaker starts afresh
    path.write_text(yaml.safe_dump(doc))
    gw.reload(str(path))
    assert get(gw).status == 200


def test_a_trial_whose_client_left_gives_its_place_back(make_gateway: Make, upstreams: Any) -> None:
    (up,) = upstreams(1)
    gw = make_gateway(document([up], failures=1, open_for="200ms", trial_requests=1))
    assert get(gw, "/status/500").status == 500
    wait_for(lambda: state(gw, up) is State.HALF_OPEN, 5, "the breaker to let a trial through")
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/slow/5000"))
        wait_for(lambda: requests(up) >= 2, 5, "the trial to reach the upstream")
        assert get(gw).status == 503  # the only trial is running
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # leave with a reset
    # The client left: the trial says nothing about the target, and another request takes its place
    # (long before the abandoned one would have been answered).
    wait_for(lambda: get(gw).status == 200, 2, "a new trial to go through")
    assert state(gw, up) is State.CLOSED


def test_breaker_states_are_in_the_metrics(make_gateway: Make, upstreams: Any) -> None:
    good, bad = upstreams(2)
    gw = make_gateway(document([good, bad], failures=1, open_for="30s"))
    bad.proc.stop()
    wait_for(lambda: get(gw).status == 502 or state(gw, bad) is State.OPEN, 5, "a failure on the dead target")
    assert state(gw, bad) is State.OPEN
    text = gw.call(lambda: render(gw.gateway.collect()))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def gauge(target: Upstream, which: str) -> float:
        at = (("state", which), ("target", label(target)), ("upstream", "catalog"))
        return samples[("fastgw_upstream_breaker_state", at)]

    assert [gauge(bad, s) for s in ("closed", "open", "half_open")] == [0, 1, 0]
    assert [gauge(good, s) for s in ("closed", "open", "half_open")] == [1, 0, 0]


def test_every_attempt_is_counted_per_target_by_outcome(
    make_gateway: Make, upstreams: Callable[[int], list[Upstream]]
) -> None:
    """fastgw_upstream_target_responses_total and the per-target latency histogram: a healthy
    target's 2xx and a dead one's failures (a retry sends each request on), per attempt."""
    (good,) = upstreams(1)
    dead = free_port()
    doc = document([good])
    doc["upstreams"]["catalog"]["targets"].append(f"127.0.0.1:{dead}")
    doc["routes"][0]["retry"] = {"attempts": 2, "when": ["connect"]}
    gw = make_gateway(doc)
    for _ in range(4):
        assert get(gw).status == 200  # round robin: two of them met the dead target first
    families = gw.call(gw.gateway.collect)
    responses = samples_by(families, "fastgw_upstream_target_responses_total")
    at_good = (("upstream", "catalog"), ("target", label(good)))
    at_dead = (("upstream", "catalog"), ("target", f"127.0.0.1:{dead}"))
    assert responses == {(*at_good, ("outcome", "2xx")): 4, (*at_dead, ("outcome", "failed")): 2}
    counts = samples_by(families, "fastgw_upstream_target_duration_seconds", "_count")
    assert counts == {at_good: 4, at_dead: 0}  # a connection never made sent no request to time
