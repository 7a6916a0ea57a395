"""Upstream health with the gateway in front of real upstream processes (rules in
``upstream/health.py``): active checks take a target whose health endpoint fails out of rotation
and bring it back, they run per interval and not per request, outlier detection ejects a target
that died, no target left is a 503 naming the upstream, a reload keeps the verdicts and the
running checker of an unchanged upstream, and draining stops the checks.

The upstreams' ``/health`` answers the status set with ``/health/set/{code}`` and counts the
probes it received; probes are not counted in ``/stats``, so ``requests()`` is proxied traffic.
"""

from __future__ import annotations

import asyncio
import copy
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
import yaml

from fastgw.config.schema import HealthCheckConfig
from fastgw.upstream.health import UpstreamHealth, probe, probe_request
from tests.e2e.conftest import Upstream, wait_for
from tests.support.gateway import RunningGateway
from tests.support.ports import free_port
from tests.support.procs import reaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response
from tests.support.upstream_server import start_upstream_process

Make = Callable[..., RunningGateway]

INTERVAL = 0.1
CHECKS = {
    "path": "/health",
    "interval": INTERVAL,
    "timeout": INTERVAL,
    "healthy_after": 2,
    "unhealthy_after": 2,
}
EJECT_AFTER = 2
OUTLIER = {"consecutive_failures": EJECT_AFTER, "base_ejection": "30s"}  # stays out for the test


class Backend(Upstream):
    """One upstream process behind the gateway, with its health controls."""

    @property
    def label(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_health(self, status: int) -> int:
        """Make its ``/health`` answer ``status``; how many probes it had received until then."""
        return int(self.get_json(f"/health/set/{status}")["checks"])

    def checks(self) -> int:
        return int(self.get_json("/health/checks")["checks"])

    def requests(self) -> int:
        return self.stats()["requests"]


@pytest.fixture
def backends() -> Iterator[Callable[[int], list[Backend]]]:
    """Factory: ``backends(n)`` starts n upstream processes; all are stopped after the test."""
    with reaper() as processes:
        yield lambda count: [Backend(*start_upstream_process(processes=processes)) for _ in range(count)]


def document(targets: list[Backend], **upstream: Any) -> dict[str, Any]:
    """One listener, the upstream ``catalog`` over ``targets`` (more keys in ``upstream``), one route."""
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"catalog": {"targets": [t.label for t in targets], **upstream}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "catalog"}],
    }


def get(gw: RunningGateway, target: str = "/echo/x", timeout: float = 10.0) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target))
        return read_response(sock, timeout=timeout)


def statuses(gw: RunningGateway, count: int) -> list[int]:
    return [get(gw).status for _ in range(count)]


def monitor(gw: RunningGateway) -> UpstreamHealth:
    (only,) = gw.gateway.plan.health.values()
    return only


def in_rotation(gw: RunningGateway) -> dict[str, bool]:
    watched = monitor(gw)
    return dict(gw.call(lambda: {label: state.usable for label, state in watched.states.items()}))


def eject_dead(gw: RunningGateway, dead: Backend) -> None:
    """Send traffic until outlier detection ejected ``dead``: exactly EJECT_AFTER requests fail."""
    failed = 0
    for _ in range(60):
        status = get(gw).status
        assert status in (200, 502)
        failed += status == 502
        if not in_rotation(gw)[dead.label]:
            break
    assert failed == EJECT_AFTER and not in_rotation(gw)[dead.label]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/health", None),
        ("/status/204", None),
        ("/status/503", "status 503"),
        ("/status/404", "status 404"),
        ("/hang", "no response within 0.2s"),
        ("/early-close", "closed without a response"),
        ("/malformed", "not an HTTP response: b'HTTP/1.1 2x0 Bad\\r\\n'"),
    ],
)
def test_one_probe(upstream: int, loop_kind: str, path: str, problem: str | None) -> None:
    check = HealthCheckConfig(path=path, interval=1.0, timeout=0.2)
    request = probe_request(path, f"127.0.0.1:{upstream}".encode())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop_kind == "uvloop" else None) as runner:
        assert runner.run(probe("127.0.0.1", upstream, request, check)) == problem
        refused = runner.run(probe("127.0.0.1", free_port(), request, check))
    assert refused is not None and "no response" not in refused


def test_failing_health_endpoint_takes_the_target_out_and_a_recovered_one_back(
    make_gateway: Make, backends: Callable[[int], list[Backend]], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = backends(2)
    gw = make_gateway(document([a, b], health=CHECKS))
    assert statuses(gw, 6) == [200] * 6 and a.requests() > 0 and b.requests() > 0

    seen = a.set_health(503)
    wait_for(lambda: not in_rotation(gw)[a.label], 5, "the failing target to go out", interval=0.005)
    # unhealthy_after failed probes did it (one more may have come in before we looked)
    assert 2 <= a.checks() - seen <= 3
    before = a.requests()
    assert statuses(gw, 10) == [200] * 10
    assert a.requests() == before, "a target out of rotation still got traffic"
    time.sleep(3 * INTERVAL)  # more failed probes: the transition was logged once, not per probe
    assert sum(f"target {a.label} is unhealthy" in r.getMessage() for r in caplog.records) == 1

    seen = a.set_health(200)
    wait_for(lambda: in_rotation(gw)[a.label], 5, "the recovered target to come back", interval=0.005)
    assert 2 <= a.checks() - seen <= 3
    assert statuses(gw, 10) == [200] * 10
    assert a.requests() > before


def test_checks_run_once_per_interval_whatever_the_traffic(
    make_gateway: Make, backends: Callable[[int], list[Backend]]
) -> None:
    a, b = backends(2)
    gw = make_gateway(document([a, b], health=CHECKS))
    started, checks_before, requests_before = time.monotonic(), a.checks(), a.requests()
    assert statuses(gw, 100) == [200] * 100
    elapsed = time.monotonic() - started
    assert a.requests() - requests_before >= 30
    assert a.checks() - checks_before <= elapsed / INTERVAL + 2


def test_outlier_detection_ejects_a_target_that_died(
    make_gateway: Make, backends: Callable[[int], list[Backend]]
) -> None:
    a, b, c = backends(3)
    gw = make_gateway(document([a, b, c], outlier=OUTLIER))
    assert statuses(gw, 6) == [200] * 6
    b.proc.stop()
    eject_dead(gw, b)
    assert statuses(gw, 20) == [200] * 20
    assert in_rotation(gw) == {a.label: True, b.label: False, c.label: True}


def test_no_target_in_rotation_is_a_503_naming_the_upstream(
    make_gateway: Make, backends: Callable[[int], list[Backend]]
) -> None:
    a, b = backends(2)
    gw = make_gateway(document([a, b], health=CHECKS))
    a.set_health(500)
    b.set_health(503)
    wait_for(lambda: not any(in_rotation(gw).values()), 5, "both targets to go out")
    response = get(gw, timeout=2.0)
    assert response.status == 503, response.raw[:500]
    assert response.header("Content-Type") == "application/json"
    assert "catalog" in response.json()["error"], response.json()
    b.set_health(200)
    wait_for(lambda: in_rotation(gw)[b.label], 5, "one target to come back")
    assert statuses(gw, 4) == [200] * 4


def test_a_reload_keeps_the_verdicts_and_checker_of_an_unchanged_upstream(
    make_gateway: Make, backends: Callable[[int], list[Backend]], tmp_path: Path
) -> None:
    a, b, c = backends(3)
    doc = document([a, b, c], health=CHECKS, outlier=OUTLIER)
    gw = make_gateway(doc)
    a.set_health(503)
    wait_for(lambda: not in_rotation(gw)[a.label], 5, "the failing target to go out")
    b.proc.stop()
    eject_dead(gw, b)
    old = monitor(gw)

    # Weights, pool settings and routes are not what health depends on.
    unrelated = copy.deepcopy(doc)
    unrelated["upstreams"]["catalog"]["targets"][2] = {"address": c.label, "weight": 3}
    unrelated["upstreams"]["catalog"]["pool"] = {"max_connections": 64}
    unrelated["routes"].insert(0, {"id": "extra", "path": "/extra", "upstream": "catalog"})
    path = tmp_path / "reloaded.yaml"
    path.write_text(yaml.safe_dump(unrelated))
    gw.reload(str(path))
    assert gw.gateway.plan is not gw.plan and monitor(gw) is old
    assert gw.call(lambda: old.running)
    assert in_rotation(gw) == {a.label: False, b.label: False, c.label: True}
    assert gw.call(lambda: old.states[b.label].outlier.ejected)  # type: ignore[union-attr]
    before = a.requests()
    assert statuses(gw, 20) == [200] * 20  # the dead target stays ejected, the failing one out
    assert a.requests() == before

    # Changed health settings start afresh; the old checker stops.
    changed = copy.deepcopy(unrelated)
    changed["upstreams"]["catalog"]["health"] = {**CHECKS, "unhealthy_after": 3}
    path.write_text(yaml.safe_dump(changed))
    gw.reload(str(path))
    fresh = monitor(gw)
    assert fresh is not old
    wait_for(lambda: not gw.call(lambda: old.running), 2, "the old checker to end")
    assert gw.call(lambda: fresh.running)


def test_draining_stops_the_checks(make_gateway: Make, backends: Callable[[int], list[Backend]]) -> None:
    (a,) = backends(1)
    gw = make_gateway(document([a], health=CHECKS))
    wait_for(lambda: a.checks() >= 2, 5, "probes to arrive")
    gw.stop()
    stopped_at = a.checks()
    time.sleep(3 * INTERVAL)
    assert a.checks() == stopped_at


def test_killing_one_of_three_targets_loses_no_request(
    make_gateway: Make, backends: Callable[[int], list[Backend]]
) -> None:
    # Retries send each failed attempt to another target; outlier detection then takes the dead
    # one out, so it stops costing even a retry.
    three = backends(3)
    doc = document(three, outlier=OUTLIER)
    doc["routes"][0]["retry"] = {"attempts": 3, "when": ["connect", "reset"], "backoff": 0}
    gw = make_gateway(doc)
    assert statuses(gw, 30) == [200] * 30
    dead, *alive = three
    dead.proc.stop(signal.SIGKILL)
    before = sum(b.requests() for b in alive)
    assert statuses(gw, 60) == [200] * 60  # under steady load, not one request lost
    assert sum(b.requests() for b in alive) - before == 60
    assert not in_rotation(gw)[dead.label]  # ejected after EJECT_AFTER failed attempts
