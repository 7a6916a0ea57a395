"""Every upstream target's state at a glance, for the status page: read from the live objects.

``target_states`` reads one process: each target of each upstream group, whether it is in
rotation and what holds it out, its active-check verdict, its outlier ejection (with the time
left), its circuit breaker (with the time to the next trial), requests in flight, and the
latency estimate of an ``ewma`` balancer, and where it came from (the configuration, or the
registry that lists it). Health monitors and breakers run in each worker
process, so with ``--workers N`` the supervisor asks every worker and ``merge_states`` puts the
answers side by side: one row per target with each worker's view, and a summary ``state`` (the
worst any worker sees) with the ``states`` that apply.

Nothing here runs per request: only when the page (or anyone) asks.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastgw.observe.metrics import target_sources
from fastgw.upstream.balance import PeakEwma
from fastgw.upstream.breaker import State

if TYPE_CHECKING:
    from fastgw.plan import Plan

TargetView = dict[str, Any]  # JSON-ready

# The summary states, worst first: the one shown is the worst any worker sees.
SEVERITY = ("breaker_open", "ejected", "failing_checks", "breaker_half_open", "healthy")


def target_states(plan: Plan, now: float | None = None) -> list[TargetView]:
    """One process's view of every target, in configuration order (``now``: the loop's clock)."""
    if now is None:
        now = asyncio.get_running_loop().time()
    monitors = {monitor.name: monitor for monitor in plan.health.values()}
    breakers = {breaker.name: breaker for breaker in plan.breakers.values()}
    sources = target_sources(plan)
    views = []
    for name, group in plan.upstreams.items():
        monitor = monitors.get(name)
        breaker = breakers.get(name)
        balancer = group.balancer
        for target in group.targets:
            view: TargetView = {
                "upstream": name,
                "target": target.label,
                "weight": target.weight,
                "source": sources[(name, target.label)],
                "in_rotation": target in group.usable,
                "held_by": sorted(group.held(target)),
                "in_flight": target.in_flight,
                "check": None,
                "ejected_for": None,
                "breaker": None,
                "balancer_ewma_ms": None,
            }
            health = monitor.states.get(target.label) if monitor is not None else None
            if health is not None and health.check is not None:
                check = health.check
                view["check"] = {"up": check.up, "against": check.run}  # results in a row against it
            if health is not None and health.outlier is not None and health.outlier.ejected:
                timer = health.timer
                view["ejected_for"] = round(max(0.0, timer.when() - now), 3) if timer is not None else None
            circuit_of = breaker.states.get(target.label) if breaker is not None else None
            if circuit_of is not None:
                circuit = circuit_of.circuit
                state = circuit.state
                view["breaker"] = {
                    "state": state.value,
                    "trial_in": round(circuit.reopens_in(now), 3) if state is State.OPEN else None,
                    "trials_left": circuit.trials_left if state is State.HALF_OPEN else None,
                }
            if isinstance(balancer, PeakEwma):
                # The balancer samples on time.monotonic(), as the exchange times its attempts.
                estimate = balancer.estimate(target, time.monotonic())
                view["balancer_ewma_ms"] = round(estimate * 1000.0, 3) if estimate is not None else None
            view["state"] = state_of(view)
            views.append(view)
    return views


def state_of(view: TargetView) -> str:
    """The one state that says most about a target in one process (see ``SEVERITY``)."""
    breaker = view["breaker"]
    if breaker is not None and breaker["state"] == State.OPEN.value:
        return "breaker_open"
    if view["ejected_for"] is not None:
        return "ejected"
    if view["check"] is not None and not view["check"]["up"]:
        return "failing_checks"
    if breaker is not None and breaker["state"] == State.HALF_OPEN.value:
        return "breaker_half_open"
    return "healthy"


def merge_states(parts: list[tuple[int, list[TargetView]]]) -> list[TargetView]:
    """Each worker's views (``(worker slot, views)``) as one row per target: in flight summed,
    the worst state as ``state``, every state seen in ``states``, each worker's view in
    ``workers``."""
    rows: dict[tuple[str, str], TargetView] = {}
    for worker, views in sorted(parts, key=lambda part: part[0]):
        for view in views:
            key = (view["upstream"], view["target"])
            row = rows.get(key)
            if row is None:
                row = rows[key] = {
                    "upstream": view["upstream"],
                    "target": view["target"],
                    "weight": view["weight"],
                    "source": view["source"],
                    "in_flight": 0,
                    "in_rotation": True,
                    "workers": [],
                }
            row["in_flight"] += view["in_flight"]
            row["in_rotation"] = row["in_rotation"] and view["in_rotation"]
            row["workers"].append({**view, "worker": worker})
    for row in rows.values():
        seen = {view["state"] for view in row["workers"]}
        row["states"] = [state for state in SEVERITY if state in seen]
        row["state"] = row["states"][0] if row["states"] else "healthy"
    return list(rows.values())
