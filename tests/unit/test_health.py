"""Upstream health logic without sockets: check thresholds, the outlier state machine, the ejection
limit, and a monitor steering a recording group (see the rules in ``upstream/health.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from fastgw._proxy import PoolCore, Target
from fastgw.config import parse_config
from fastgw.config.schema import HealthCheckConfig, OutlierConfig, TargetConfig, UpstreamConfig
from fastgw.errors import UpstreamFault
from fastgw.plan import compile_plan, retire_plan
from fastgw.upstream.health import (
    CheckStreak,
    HealthKey,
    OutlierStreak,
    UpstreamHealth,
    ejection_limit,
    probe_request,
    status_of,
    status_passes,
)

# -- active check thresholds -------------------------------------------------------------------


def test_check_goes_down_only_after_unhealthy_after_failures_in_a_row() -> None:
    streak = CheckStreak(healthy_after=2, unhealthy_after=3)
    assert streak.up
    results = [False, False, True, False, False]  # a pass in between starts the count over
    assert [streak.record(r) for r in results] == [False] * 5 and streak.up
    assert streak.record(False) is True and not streak.up  # the third failure in a row


def test_check_comes_back_only_after_healthy_after_passes_in_a_row() -> None:
    streak = CheckStreak(healthy_after=2, unhealthy_after=1)
    assert streak.record(False) and not streak.up
    assert not streak.record(True) and not streak.record(False) and not streak.record(True)
    assert not streak.up
    assert streak.record(True) and streak.up
    assert not streak.record(True)  # agreeing results change nothing


# -- outlier state machine ---------------------------------------------------------------------

OUTLIER = OutlierConfig(consecutive_failures=3, base_ejection=10.0, max_ejection=50.0)


def test_ejection_after_consecutive_failures_and_a_success_resets_the_streak() -> None:
    streak = OutlierStreak(OUTLIER)
    assert [streak.record(f) for f in (True, True, False, True, True)] == [False] * 5
    assert streak.record(True) is True  # three in a row
    streak.eject(0.0)
    assert streak.ejected and streak.failures == 0
    assert [streak.record(True) for _ in range(5)] == [False] * 5  # already out: no second ejection


def test_ejection_doubles_while_the_target_keeps_failing_and_is_capped() -> None:
    streak = OutlierStreak(OUTLIER)
    now = 0.0
    durations = []
    for _ in range(5):
        duration = streak.eject(now)
        durations.append(duration)
        now += duration
        streak.readmit(now)
        now += 1.0  # fails again soon after coming back
    assert durations == [10.0, 20.0, 40.0, 50.0, 50.0]


def test_ejection_count_starts_over_after_max_ejection_in_rotation() -> None:
    streak = OutlierStreak(OUTLIER)
    streak.eject(0.0)
    streak.readmit(10.0)
    assert streak.eject(59.0) == 20.0  # 49 s back in rotation: still the same run of trouble
    streak.readmit(79.0)
    assert streak.eject(79.0 + OUTLIER.max_ejection) == 10.0  # long enough in rotation: clean again


def test_huge_ejection_counts_do_not_overflow() -> None:
    streak = OutlierStreak(OUTLIER)
    streak.ejections = 5000
    assert streak.eject(0.0) == OUTLIER.max_ejection


@pytest.mark.parametrize(
    ("targets", "percent", "limit"),
    [(1, 50, 1), (2, 50, 1), (3, 50, 1), (4, 50, 2), (10, 10, 1), (10, 35, 3), (3, 100, 3), (20, 1, 1)],
)
def test_ejection_limit_is_the_percentage_but_at_least_one(targets: int, percent: int, limit: int) -> None:
    assert ejection_limit(targets, percent) == limit


# -- probe pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 503 Service Unavailable\r\n", 503),
        (b"HTTP/1.1 204\r\n", 204),
        (b"HTTP/1.1 20\r\n", None),
        (b"HTTP/1.1 2x0 Bad\r\n", None),
        (b"SSH-2.0-OpenSSH_9.6\r\n", None),
        (b"", None),
    ],
)
def test_status_of(line: bytes, status: int | None) -> None:
    assert status_of(line) == status


def test_status_passes_any_range() -> None:
    ranges = ((200, 299), (404, 404))
    assert [status_passes(s, ranges) for s in (199, 200, 299, 300, 404, 500)] == [
        False, True, True, False, True, False,
    ]  # fmt: skip


def test_probe_request_carries_the_targets_host_and_closes() -> None:
    assert probe_request("/healthz?deep=1", b"api.internal") == (
        b"GET /healthz?deep=1 HTTP/1.1\r\nHost: api.internal\r\nUser-Agent: fastgw-health-check\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n"
    )


# -- the monitor, steering a recording group ---------------------------------------------------


class RecordingGroup:
    """The group interface a monitor uses, recording what it is told."""

    def __init__(self, *ports: int) -> None:
        self.targets = [Target("127.0.0.1", port, 1, PoolCore(1, 1.0), b"up") for port in ports]
        self.usable = {t.label: True for t in self.targets}
        self.marks: list[tuple[str, bool]] = []
        self.observers: list[Callable[[Any], None]] = []
        self.watchers: list[Callable[..., None]] = []

    def mark(self, target: Target, usable: bool) -> None:
        assert target in self.targets, "marked a target of another group"
        self.usable[target.label] = usable
        self.marks.append((target.label, usable))

    def add_observer(self, observer: Callable[[Any], None]) -> None:
        self.observers.append(observer)

    def add_target_watcher(self, watcher: Callable[..., None]) -> None:
        self.watchers.append(watcher)

    def end(self, port: int, status: int = 200, error: UpstreamFault | None = None) -> None:
        """An exchange sent to the target at ``port`` ended."""
        target = next(t for t in self.targets if t.port == port)
        exchange = SimpleNamespace(target=target, upstream_status=status, upstream_error=error)
        for observer in self.observers:
            observer(exchange)

    def fail(self, port: int, times: int = 1) -> None:
        for _ in range(times):
            self.end(port, 502, UpstreamFault("connect to 127.0.0.1 failed: refused", 502))


def monitor_for(*ports: int, outlier: OutlierConfig | None = OUTLIER) -> UpstreamHealth:
    config = UpstreamConfig(
        name="up", targets=tuple(TargetConfig("127.0.0.1", p) for p in ports), outlier=outlier
    )
    key = HealthKey.of(config)
    assert key is not None
    return UpstreamHealth(key)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_monitor_ejects_after_consecutive_failures_and_readmits_after_the_ejection() -> None:
    async def scenario() -> None:
        fast = replace(OUTLIER, base_ejection=0.05, max_ejection=1.0)
        monitor, group = monitor_for(1, 2, outlier=fast), RecordingGroup(1, 2)
        monitor.serve(group)
        assert len(group.observers) == 1 and not monitor.running  # no checks configured: no task
        group.fail(1, 2)
        group.end(1, 200)  # a success ends the streak
        group.fail(1, 2)
        assert group.marks == []
        group.fail(1)
        assert group.marks == [("127.0.0.1:1", False)]
        await asyncio.sleep(0.1)
        assert group.marks == [("127.0.0.1:1", False), ("127.0.0.1:1", True)]
        monitor.stop()

    run(scenario)


def test_5xx_counts_only_when_configured_and_our_own_pool_limit_never() -> None:
    async def scenario() -> None:
        monitor, group = monitor_for(1, 2), RecordingGroup(1, 2)
        monitor.serve(group)
        for _ in range(5):  # waiting for our own pool's connection limit: neither failure nor success
            group.end(1, 503, UpstreamFault("no free connection to 127.0.0.1:1", 503))
        group.end(1, 500)
        group.end(1, 503)
        assert group.marks == []
        group.end(1, 599)
        assert group.marks == [("127.0.0.1:1", False)]

        lenient = replace(OUTLIER, count_5xx=False)
        monitor2, group2 = monitor_for(1, 2, outlier=lenient), RecordingGroup(1, 2)
        monitor2.serve(group2)
        for _ in range(10):
            group2.end(1, 500)
        assert group2.marks == []
        group2.fail(1, 3)
        assert group2.marks == [("127.0.0.1:1", False)]
        monitor.stop()
        monitor2.stop()

    run(scenario)


def test_at_most_max_ejected_percent_and_never_the_last_target_in_rotation() -> None:
    async def scenario() -> None:
        monitor, group = monitor_for(1, 2, 3, 4), RecordingGroup(1, 2, 3, 4)  # 50% of 4: two
        monitor.serve(group)
        for port in (1, 2, 3):
            group.fail(port, 3)
        assert group.usable == {
            "127.0.0.1:1": False, "127.0.0.1:2": False, "127.0.0.1:3": True, "127.0.0.1:4": True,
        }  # fmt: skip
        group.fail(3, 10)  # still at the limit: the streak waits
        assert group.usable["127.0.0.1:3"]

        single, only = monitor_for(1), RecordingGroup(1)
        single.serve(only)
        only.fail(1, 10)
        assert only.marks == []  # the last target in rotation stays, whatever it does
        monitor.stop()
        single.stop()

    run(scenario)


def test_max_ejected_percent_100_may_eject_every_target() -> None:
    async def scenario() -> None:
        monitor, group = (
            monitor_for(1, 2, outlier=replace(OUTLIER, max_ejected_percent=100)),
            RecordingGroup(1, 2),
        )
        monitor.serve(group)
        group.fail(1, 3)
        group.fail(2, 3)
        assert group.usable == {"127.0.0.1:1": False, "127.0.0.1:2": False}
        monitor.stop()

    run(scenario)


def test_a_new_group_inherits_the_verdicts_and_a_stopped_monitor_ignores_late_exchanges() -> None:
    async def scenario() -> None:
        monitor = monitor_for(1, 2)
        old = RecordingGroup(1, 2)
        monitor.serve(old)
        old.fail(2, 3)
        new = RecordingGroup(2, 1)  # a reload: new Target objects, another order
        monitor.serve(new)
        assert new.marks == [("127.0.0.1:2", False)]
        old.end(2, 200)  # an exchange of the old plan still feeds the same verdicts
        assert monitor.states["127.0.0.1:2"].outlier.failures == 0  # type: ignore[union-attr]
        monitor.stop()
        new.fail(1, 10)
        assert new.marks == [("127.0.0.1:2", False)]
        with pytest.raises(RuntimeError, match="stopped"):
            monitor.serve(RecordingGroup(1, 2))

    run(scenario)


# -- keys and adoption across reloads ------------------------------------------------------------

HEALTH = HealthCheckConfig(path="/health")


def test_health_key_ignores_what_health_does_not_depend_on() -> None:
    base = UpstreamConfig("up", (TargetConfig("a", 1), TargetConfig("b", 2)), health=HEALTH)
    key = HealthKey.of(base)
    assert key is not None
    reordered = replace(base, targets=(TargetConfig("b", 2, weight=5), TargetConfig("a", 1)))
    assert HealthKey.of(reordered) == key
    for changed in (
        replace(base, health=replace(HEALTH, path="/ready")),
        replace(base, outlier=OutlierConfig()),
        replace(base, targets=(TargetConfig("a", 1),)),
        replace(base, host_header="api.internal"),
        replace(base, name="other"),
    ):
        assert HealthKey.of(changed) != key
    assert HealthKey.of(replace(base, health=None)) is None


def _document(path: str, weight: int = 1) -> dict[str, Any]:
    return {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "upstreams": {
            "up": {
                "targets": [{"address": "127.0.0.1:9001", "weight": weight}, "127.0.0.1:9002"],
                "health": {"path": path},
            },
            "plain": {"targets": ["127.0.0.1:9003"]},
        },
        "routes": [{"path": "/", "upstream": "up"}, {"path": "/p", "upstream": "plain"}],
    }


def test_a_reload_adopts_the_monitor_of_an_unchanged_upstream_and_retires_a_changed_one() -> None:
    first = compile_plan(parse_config(_document("/health"), "a.yaml"))
    (monitor,) = first.health.values()
    assert monitor.name == "up"
    reweighted = compile_plan(parse_config(_document("/health", weight=3), "b.yaml"), first)
    assert list(reweighted.health.values()) == [monitor]
    retire_plan(first, reweighted)
    assert not monitor.stopped

    changed = compile_plan(parse_config(_document("/ready", weight=3), "c.yaml"), reweighted)
    (fresh,) = changed.health.values()
    assert fresh is not monitor
    retire_plan(reweighted, changed)
    assert monitor.stopped and not fresh.stopped
