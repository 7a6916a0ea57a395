"""Circuit breakers: one per target of an upstream with ``breaker:``, per worker process.

Theory of operation
-------------------
A breaker watches the exchanges its target served (the group calls ``observe`` as each ends;
what counts as a failure is ``health.attempt_failed``: a transport error or timeout, or a 5xx
with ``count_5xx``) and moves through three states:

* **closed**: traffic flows. It opens after ``failures`` failures in a row, or, with
  ``failure_ratio``, when at least ``min_requests`` exchanges ended in the last ``window``
  seconds and that fraction of them failed.
* **open**: the target is out of rotation (``group.mark(target, False, "breaker")``) for
  ``open_for`` seconds. When every target of the group is out, requests get 503 with
  ``Retry-After`` set to when the first breaker will let a trial through.
* **half-open**: the target is back in rotation but gated: the first ``trial_requests``
  requests the balancer sends it go through, then it is held out again until they end. All of
  them succeeding closes the breaker; any failing reopens it for another ``open_for``. A trial
  that ends saying nothing about the target (the client left) gives its place back. As a safety
  net, trials still unanswered after ``max(open_for, 30s)`` are replaced by new ones, so a breaker
  can never stay half-open with no trial running.

This is Ocelot's QoS (ExceptionsAllowedBeforeBreaking, DurationOfBreak; its TimeoutValue is the
route's timeouts, whose expiry counts as a failure here) with Polly's advanced ratio breaker.
Unlike outlier ejection (``health.py``), a breaker may take out every target: the point is to
answer at once instead of queueing on an upstream that is down.

Reloads work as for health monitors: keyed by ``BreakerKey``, adopted while the upstream's name,
addresses and ``breaker:`` settings are unchanged, states and timers kept, verdicts re-applied to
the new plan's group by ``serve``. Discovery adding a target adds a closed breaker; removing one
forgets its breaker and cancels its timer (``targets_changed``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from fastgw._proxy import Exchange, Target
from fastgw.config.schema import BreakerConfig, UpstreamConfig
from fastgw.upstream.health import attempt_failed, failure_summary

log = logging.getLogger("fastgw")

_REASON = "breaker"  # what the group records as holding a target out
_BUCKETS = 10  # the ratio's window is counted in this many slices (a coarse rolling window)
_TRIAL_RENEWAL = 30.0  # at least this long before unanswered trials are replaced (slow requests)


class BreakerKey(NamedTuple):
    upstream: str
    addresses: tuple[tuple[str, int], ...]  # sorted and unique
    breaker: BreakerConfig

    @classmethod
    def of(cls, config: UpstreamConfig) -> BreakerKey | None:
        if config.breaker is None:
            return None
        return cls(config.name, tuple(sorted({(t.host, t.port) for t in config.targets})), config.breaker)


class Breakable(Protocol):
    """What a breaker needs of an upstream group (``UpstreamGroup`` provides it)."""

    @property
    def targets(self) -> Sequence[Target]: ...
    def mark(self, target: Target, usable: bool, reason: str = ...) -> None: ...
    def gate(self, target: Target, gate: Callable[[Target, Exchange | None], None] | None) -> None: ...
    def add_observer(self, observer: Callable[[Exchange], None]) -> None: ...
    def add_retry_hint(self, hint: Callable[[], float | None]) -> None: ...
    def add_target_watcher(
        self, watcher: Callable[[tuple[Target, ...], tuple[Target, ...], bool], None]
    ) -> None: ...


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class FailureWindow:
    """Exchanges and failures of the last ``window`` seconds, in ``_BUCKETS`` slices."""

    __slots__ = ("_slices", "slice_length")

    def __init__(self, window: float) -> None:
        self.slice_length = window / _BUCKETS
        self._slices: deque[list[int]] = deque()  # [slice number, exchanges, failures]

    def record(self, failed: bool, now: float) -> None:
        number = int(now / self.slice_length)
        slices = self._slices
        if not slices or slices[-1][0] != number:
            slices.append([number, 0, 0])
        slices[-1][1] += 1
        slices[-1][2] += failed
        while slices[0][0] <= number - _BUCKETS:
            slices.popleft()

    def totals(self, now: float) -> tuple[int, int]:
        """(exchanges, failures) in the window ending now."""
        oldest = int(now / self.slice_length) - _BUCKETS
        live = [s for s in self._slices if s[0] > oldest]
        return sum(s[1] for s in live), sum(s[2] for s in live)

    def clear(self) -> None:
        self._slices.clear()


class Circuit:
    """One target's breaker as a pure state machine (times are passed in: testable without a loop)."""

    __slots__ = ("config", "failures", "opened_at", "results_due", "state", "trials_left", "window")

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = State.CLOSED
        self.failures = 0  # in a row, while closed
        self.window = FailureWindow(config.window) if config.failure_ratio is not None else None
        self.opened_at = 0.0
        self.trials_left = 0  # half-open: requests still to let through
        self.results_due = 0  # half-open: trial results still to come

    def record(self, failed: bool, now: float) -> bool:
        """Count one ended exchange while closed; True when the breaker must open."""
        if self.state is not State.CLOSED:
            return False
        self.failures = self.failures + 1 if failed else 0
        if self.failures >= self.config.failures:
            return True
        if self.window is None:
            return False
        self.window.record(failed, now)
        exchanges, failures = self.window.totals(now)
        ratio = self.config.failure_ratio
        return ratio is not None and exchanges >= self.config.min_requests and failures >= ratio * exchanges

    def open(self, now: float) -> None:
        self.state = State.OPEN
        self.opened_at = now
        self.failures = 0
        self.trials_left = self.results_due = 0
        if self.window is not None:
            self.window.clear()

    def half_open(self) -> None:
        self.state = State.HALF_OPEN
        self.trials_left = self.results_due = self.config.trial_requests

    def admit_trial(self) -> bool:
        """A trial request goes through; False when that was the last one to let through."""
        self.trials_left -= 1
        return self.trials_left > 0

    def trial_ended(self, failed: bool | None) -> State | None:
        """A trial's outcome (None: it says nothing); the state to move to, if any."""
        if failed is None:
            self.trials_left += 1  # its place goes to another request
            return None
        if failed:
            return State.OPEN
        self.results_due -= 1
        return State.CLOSED if self.results_due <= 0 else None

    def close(self) -> None:
        self.state = State.CLOSED
        self.failures = 0
        self.trials_left = self.results_due = 0

    def reopens_in(self, now: float) -> float:
        """Seconds until an open breaker lets trials through."""
        return max(0.0, self.opened_at + self.config.open_for - now)


class TargetBreaker:
    """One target address: its circuit, the group's targets there, the pending timer, the trials."""

    __slots__ = ("circuit", "label", "targets", "timer", "trials")

    def __init__(self, label: str, config: BreakerConfig) -> None:
        self.label = label
        self.circuit = Circuit(config)
        self.targets: list[Target] = []
        self.timer: asyncio.TimerHandle | None = None
        self.trials: set[Exchange] = set()  # the exchanges let through half-open, until they end


class UpstreamBreaker:
    """The breakers of one upstream in this process."""

    def __init__(self, key: BreakerKey) -> None:
        self.key = key
        self.name = key.upstream
        self.config = key.breaker
        self.states: dict[str, TargetBreaker] = {}  # by target label
        self._group: Breakable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopped = False

    def serve(self, group: Breakable) -> None:
        """Steer ``group`` (the plan being swapped in) from now on; on the worker's loop."""
        if self.stopped:
            raise RuntimeError(f"the circuit breakers of upstream {self.name!r} were stopped")
        self._loop = asyncio.get_running_loop()
        self._group = group
        for state in self.states.values():
            state.targets = []
        for target in group.targets:
            if target.label not in self.states:
                self.states[target.label] = TargetBreaker(target.label, self.config)
            self.states[target.label].targets.append(target)
        for label in [label for label, state in self.states.items() if not state.targets]:
            self._forget(label)  # discovery removed it while another plan served
        for state in self.states.values():
            self._apply(state)
        group.add_observer(self.observe)
        group.add_retry_hint(self.retry_in)
        group.add_target_watcher(self.targets_changed)

    def targets_changed(self, added: tuple[Target, ...], removed: tuple[Target, ...], joining: bool) -> None:
        """Discovery changed the group's targets: new addresses start closed; gone ones are forgotten."""
        if self.stopped or self._group is None:
            return
        for target in added:
            state = self.states.get(target.label)
            if state is None:
                state = self.states[target.label] = TargetBreaker(target.label, self.config)
            state.targets.append(target)
            self._apply(state)
        for target in removed:
            state = self.states.get(target.label)
            if state is not None:
                state.targets = [t for t in state.targets if t is not target]
                if not state.targets:
                    self._forget(target.label)

    def _forget(self, label: str) -> None:
        self._cancel_timer(self.states.pop(label))

    def stop(self) -> None:
        self.stopped = True
        for state in self.states.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None

    def state_of(self, label: str) -> State:
        return self.states[label].circuit.state

    def retry_in(self) -> float | None:
        """Seconds until the first open breaker lets a trial through (the 503's Retry-After)."""
        assert self._loop is not None
        now = self._loop.time()
        waits = [s.circuit.reopens_in(now) for s in self.states.values() if s.circuit.state is State.OPEN]
        if waits:
            return min(waits)
        # Half-open with every trial let through: the trials' answers decide, soon.
        return 1.0 if any(s.circuit.state is State.HALF_OPEN for s in self.states.values()) else None

    # -- per request: called by the group as each exchange ends --------------------------------

    def observe(self, exchange: Exchange) -> None:
        if self.stopped:
            return
        target = exchange.target
        state = self.states.get(target.label) if target is not None else None
        if state is None:
            return
        failed = attempt_failed(exchange, self.config.count_5xx)
        circuit = state.circuit
        if exchange in state.trials:
            state.trials.discard(exchange)
            if circuit.state is State.HALF_OPEN:
                self._trial_ended(state, failed, exchange)
            return
        if failed is None or circuit.state is not State.CLOSED:
            return  # an exchange sent before the breaker opened says nothing about now
        assert self._loop is not None
        if circuit.record(failed, self._loop.time()):
            self._open(state, failure_summary(exchange))

    def _trial(self, target: Target, exchange: Exchange | None) -> None:
        """The group's gate: the balancer chose a half-open target for this request."""
        state = self.states[target.label]
        if exchange is not None:
            state.trials.add(exchange)
        if not state.circuit.admit_trial():
            self._apply(state)  # every trial is out: held until they answer

    def _trial_ended(self, state: TargetBreaker, failed: bool | None, exchange: Exchange) -> None:
        move = state.circuit.trial_ended(failed)
        if move is State.OPEN:
            self._open(state, f"trial request failed: {failure_summary(exchange)}")
        elif move is State.CLOSED:
            state.circuit.close()
            self._cancel_timer(state)
            log.info("upstream %s: circuit breaker of %s closed after its trials", self.name, state.label)
            self._apply(state)
        else:
            self._apply(state)  # a place given back may let the target in again

    # -- transitions ------------------------------------------------------------------------------

    def _open(self, state: TargetBreaker, last: str) -> None:
        assert self._loop is not None
        state.circuit.open(self._loop.time())
        state.trials.clear()
        self._schedule(state, self._half_open, self.config.open_for)
        log.warning(
            "upstream %s: circuit breaker of %s opened for %gs (last failure: %s)",
            self.name, state.label, self.config.open_for, last,
        )  # fmt: skip
        self._apply(state)

    def _half_open(self, state: TargetBreaker) -> None:
        state.timer = None
        state.trials.clear()  # trials that never reported (renewal): their places are new ones
        state.circuit.half_open()
        # Every trial reports when its exchange ends; this only guards against one that never does.
        self._schedule(state, self._half_open, max(self.config.open_for, _TRIAL_RENEWAL))
        log.info("upstream %s: circuit breaker of %s half-open: trial requests", self.name, state.label)
        self._apply(state)

    def _schedule(self, state: TargetBreaker, then: Callable[[TargetBreaker], None], delay: float) -> None:
        assert self._loop is not None
        self._cancel_timer(state)
        state.timer = self._loop.call_later(delay, then, state)

    @staticmethod
    def _cancel_timer(state: TargetBreaker) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None

    def _apply(self, state: TargetBreaker) -> None:
        """Tell the group what the circuit allows: in rotation, out, or in behind the trial gate."""
        group = self._group
        if group is None:
            return
        circuit = state.circuit
        gated = circuit.state is State.HALF_OPEN and circuit.trials_left > 0
        usable = circuit.state is State.CLOSED or gated
        for target in state.targets:
            group.gate(target, self._trial if gated else None)
            group.mark(target, usable, _REASON)
