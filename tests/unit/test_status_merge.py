"""With ``--workers N`` the supervisor puts each worker's view side by side: targets (the worst
state any worker sees, every state seen, in-flight summed) and recent errors (by time, the newest
kept, each with its worker)."""

from __future__ import annotations

from typing import Any

from fastgw.observe.recent_errors import merge_entries
from fastgw.observe.targets import merge_states, state_of


def _view(**changes: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "upstream": "up", "target": "10.0.0.1:80", "weight": 1, "source": "static", "in_rotation": True,
        "held_by": [], "in_flight": 1, "check": None, "ejected_for": None, "breaker": None,
        "balancer_ewma_ms": None,
    }  # fmt: skip
    view.update(changes)
    view["state"] = state_of(view)
    return view


def test_state_of_names_the_worst_verdict_of_one_process() -> None:
    assert state_of(_view()) == "healthy"
    assert state_of(_view(check={"up": False, "against": 0})) == "failing_checks"
    assert state_of(_view(check={"up": False, "against": 0}, ejected_for=3.0)) == "ejected"
    open_breaker = {"state": "open", "trial_in": 2.0, "trials_left": None}
    assert state_of(_view(ejected_for=3.0, breaker=open_breaker)) == "breaker_open"
    half_open = {"state": "half_open", "trial_in": None, "trials_left": 1}
    assert state_of(_view(breaker=half_open)) == "breaker_half_open"


def test_targets_merge_to_one_row_with_each_workers_view() -> None:
    open_breaker = {"state": "open", "trial_in": 2.0, "trials_left": None}
    rows = merge_states(
        [
            (1, [_view(in_flight=2, breaker=open_breaker, in_rotation=False), _view(target="10.0.0.2:80")]),
            (0, [_view(in_flight=3), _view(target="10.0.0.2:80", check={"up": False, "against": 1})]),
        ]
    )
    assert [(r["target"], r["state"], r["states"], r["in_flight"], r["in_rotation"]) for r in rows] == [
        ("10.0.0.1:80", "breaker_open", ["breaker_open", "healthy"], 5, False),
        ("10.0.0.2:80", "failing_checks", ["failing_checks", "healthy"], 2, True),
    ]
    assert [w["worker"] for w in rows[0]["workers"]] == [0, 1]  # in worker order


def test_errors_merge_by_time_keeping_the_newest() -> None:
    def entry(at: float) -> dict[str, object]:
        return {"at": at, "status": 502}

    merged = merge_entries([(0, [entry(1.0), entry(4.0)]), (1, [entry(2.0), entry(3.0), entry(5.0)])], size=4)
    assert [(e["at"], e["worker"]) for e in merged] == [(2.0, 1), (3.0, 1), (4.0, 0), (5.0, 1)]
