"""The circuit breaker's pieces without sockets: its config, the per-target state machine, the
rolling failure window, and how an upstream group combines reasons to hold a target out, gates
half-open targets and answers 503 with Retry-After (rules in ``upstream/breaker.py``)."""

from __future__ import annotations

import pytest

from fastgw._proxy import PoolCore, Target
from fastgw.config.schema import BreakerConfig, TargetConfig, UpstreamConfig
from fastgw.errors import UnavailableFault
from fastgw.upstream.breaker import Circuit, FailureWindow, State
from fastgw.upstream.group import UpstreamGroup
from fastgw.upstream.pool import TargetPool
from tests.support.config_docs import error_of, parse, with_value

UP = "upstreams.catalog"


# -- config --------------------------------------------------------------------------------------


def test_breaker_defaults_and_fields() -> None:
    assert parse(with_value(f"{UP}.breaker", {})).upstreams["catalog"].breaker == BreakerConfig()
    fields = {
        "failures": 3,
        "failure_ratio": 0.25,
        "window": "30s",
        "min_requests": 50,
        "open_for": "1m",
        "trial_requests": 2,
        "count_5xx": False,
    }
    assert parse(with_value(f"{UP}.breaker", fields)).upstreams["catalog"].breaker == BreakerConfig(
        failures=3,
        failure_ratio=0.25,
        window=30.0,
        min_requests=50,
        open_for=60.0,
        trial_requests=2,
        count_5xx=False,
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("failures", 0, "expected an integer from 1 to 1000, found 0"),
        ("failure_ratio", 0, "expected a fraction greater than 0 and at most 1, like 0.5, found 0"),
        ("failure_ratio", 1.5, "expected a fraction greater than 0 and at most 1, like 0.5, found 1.5"),
        ("open_for", "soon", "expected a duration like 30, '250ms', '1.5s', '2m' or '1h', found 'soon'"),
        ("trial_requests", 0, "expected an integer from 1 to 100, found 0"),
    ],
)
def test_breaker_errors(key: str, value: object, message: str) -> None:
    assert error_of(with_value(f"{UP}.breaker.{key}", value)) == f"gw.yaml: {UP}.breaker.{key}: {message}"


def test_breaker_unknown_key() -> None:
    assert error_of(with_value(f"{UP}.breaker", {"duration_of_break": 5})) == (
        f"gw.yaml: {UP}.breaker: unknown key 'duration_of_break'; expected one of: failures,"
        " failure_ratio, window, min_requests, open_for, trial_requests, count_5xx"
    )


# -- the state machine ---------------------------------------------------------------------------


def test_failures_in_a_row_open_it_and_a_success_resets_the_streak() -> None:
    circuit = Circuit(BreakerConfig(failures=3))
    assert not circuit.record(True, 0.0) and not circuit.record(True, 0.0)
    assert not circuit.record(False, 0.0)
    assert not circuit.record(True, 0.0) and not circuit.record(True, 0.0)
    assert circuit.record(True, 0.0)


def test_ratio_is_judged_only_past_min_requests_and_inside_the_window() -> None:
    circuit = Circuit(BreakerConfig(failures=1000, failure_ratio=0.5, min_requests=4, window=10.0))
    assert [circuit.record(failed, 0.0) for failed in (True, True, True)] == [False, False, False]
    assert circuit.record(False, 0.0)  # 3 of 4: judged now
    late = Circuit(BreakerConfig(failures=1000, failure_ratio=0.5, min_requests=4, window=10.0))
    for failed in (True, True, True):
        late.record(failed, 0.0)
    assert not late.record(False, 20.0)  # the three failures left the window: 0 of 1


def test_failure_window_slides() -> None:
    window = FailureWindow(10.0)
    window.record(True, 0.5)
    window.record(False, 5.5)
    assert window.totals(9.9) == (2, 1)
    assert window.totals(10.5) == (1, 0)  # the slice of 0.5 s is more than 10 s old
    assert window.totals(16.0) == (0, 0)


def test_half_open_trials_close_or_reopen() -> None:
    circuit = Circuit(BreakerConfig(trial_requests=2, open_for=5.0))
    circuit.open(100.0)
    assert circuit.state is State.OPEN and circuit.reopens_in(102.0) == 3.0
    circuit.half_open()
    assert circuit.admit_trial() and not circuit.admit_trial()  # the second is the last let through
    assert circuit.trial_ended(None) is None and circuit.trials_left == 1  # a place given back
    assert circuit.trial_ended(False) is None
    assert circuit.trial_ended(False) is State.CLOSED
    circuit.half_open()
    assert circuit.trial_ended(True) is State.OPEN


def test_an_open_circuit_ignores_late_results() -> None:
    circuit = Circuit(BreakerConfig(failures=1))
    circuit.open(0.0)
    assert not circuit.record(True, 0.0)


# -- the group: reasons, gates, 503 --------------------------------------------------------------


def group_of(*ports: int) -> UpstreamGroup:
    config = UpstreamConfig(name="catalog", targets=tuple(TargetConfig("127.0.0.1", p) for p in ports))
    return UpstreamGroup(config, lambda key, _upstream: TargetPool(key))


def test_a_target_is_usable_only_when_no_reason_holds_it() -> None:
    group = group_of(1, 2)
    a, b = group.targets
    group.mark(a, False, "health")
    group.mark(a, False, "breaker")
    group.mark(a, True, "health")
    assert group.usable == (b,) and group.held(a) == {"breaker"}
    group.mark(a, True, "breaker")
    assert group.usable == (a, b) and group.held(a) == frozenset()


def test_every_target_held_by_breakers_is_a_503_with_retry_after() -> None:
    group = group_of(1)
    group.add_retry_hint(lambda: 2.2)
    group.add_retry_hint(lambda: None)
    group.mark(group.targets[0], False, "breaker")
    with pytest.raises(UnavailableFault) as info:
        group.pick()
    assert info.value.status == 503
    assert info.value.message == "circuit breaker open for every target in upstream 'catalog'"
    assert info.value.headers == [(b"Retry-After", b"3")]


def test_no_hint_no_retry_after() -> None:
    group = group_of(1)
    group.mark(group.targets[0], False)
    with pytest.raises(UnavailableFault) as info:
        group.pick()
    assert info.value.message == "no healthy target in upstream 'catalog'" and info.value.headers is None


def test_a_gated_target_goes_through_pick_and_its_gate() -> None:
    group = group_of(1)
    (only,) = group.targets
    assert group.single is only  # the fast path: no pick at all
    told: list[Target] = []
    group.gate(only, lambda target, exchange: told.append(target))
    assert group.single is None
    assert group.pick() is only and told == [only]
    group.gate(only, None)
    assert group.single is only


def test_targets_and_balancer_carry_over_to_an_unchanged_group() -> None:
    old = group_of(1, 2)
    old.targets[0].in_flight = 7
    same = UpstreamGroup(old.config, lambda key, _upstream: TargetPool(key), old)
    assert same.targets is old.targets and same.balancer is old.balancer
    assert same.targets[0].in_flight == 7
    changed = UpstreamGroup(group_of(1, 3).config, lambda key, _upstream: TargetPool(key), old)
    assert changed.targets[0] is not old.targets[0] and changed.balancer is not old.balancer


def test_pools_of_adopted_targets_stay_in_the_plan() -> None:
    old = group_of(1)
    seen: list[PoolCore] = []

    def pool_for(key: object, upstream: str) -> TargetPool:
        pool = old.targets[0].pool
        seen.append(pool)
        assert isinstance(pool, TargetPool)
        return pool

    UpstreamGroup(old.config, pool_for, old)
    assert seen == [old.targets[0].pool]
