"""An upstream group: its targets, each with a pool, which of them are usable, and the choice of
target per request (delegated to its balancer, ``upstream/balance.py``).

What the hot path reads (``GroupCore``): ``single``, a target to send to without calling
``pick``, and ``observes``, whether to call ``observe(exchange)`` as each exchange ends. The group
keeps both consistent with its state:

- ``single`` is the usable target when exactly one is usable and the balancer only chooses
  (round robin with one target: the common case costs nothing); otherwise None, so ``pick`` runs,
  and with no usable target ``pick`` raises the 503.
- ``observes`` is True exactly when there are observers (a latency-aware balancer, outlier
  detection, a circuit breaker), so the hot path takes no timestamps for groups nobody watches.

Several monitors take targets out of rotation, each for its own reason (``"health"`` for active
checks and outlier ejection, ``"breaker"`` for an open circuit): a target is usable while no
reason holds it. A monitor may also *gate* a usable target (a half-open breaker lets only a few
trial requests through): ``pick`` then tells the gate each time it chooses that target.

Reloads: a group whose targets, pool, Host and balancer settings are unchanged takes over the
previous plan's ``Target`` objects and balancer, so in-flight counts (least-conn, p2c) and
latency estimates (ewma) carry on; requests still running on the old plan count on the same
objects. Usable/held state is re-applied by the monitors (``plan.activate_plan``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastgw._proxy import Exchange, GroupCore, Target
from fastgw.config.schema import TargetConfig, UpstreamConfig, UpstreamTimeouts
from fastgw.errors import UnavailableFault
from fastgw.upstream.balance import Balancer, make_balancer
from fastgw.upstream.pool import PoolKey, TargetPool

Observer = Callable[[Exchange], None]
Gate = Callable[[Target, Exchange | None], None]  # told each time pick chooses a gated target
RetryHint = Callable[[], float | None]  # seconds until a held target is tried again, if known


def adoptable_state(config: UpstreamConfig) -> tuple[object, ...]:
    """What must be equal for a new plan's group to take over a running group's targets."""
    return (config.targets, config.pool, config.host_header, config.balance)


class UpstreamGroup(GroupCore):
    """Targets of one upstream and the balancer that picks among the usable ones."""

    __slots__ = (
        "_gates", "_held", "_observers", "_retry_hints", "balancer", "config", "targets", "timeouts",
        "usable",
    )  # fmt: skip

    def __init__(
        self,
        config: UpstreamConfig,
        pool_for: Callable[[PoolKey], TargetPool],
        previous: UpstreamGroup | None = None,
    ) -> None:
        super().__init__()
        self.name = config.name
        self.config = config
        self.timeouts: UpstreamTimeouts = config.timeouts
        if previous is not None and adoptable_state(previous.config) == adoptable_state(config):
            self.targets: tuple[Target, ...] = previous.targets
            self.balancer: Balancer = previous.balancer
            for target in self.targets:
                pool_for(PoolKey(target.host, target.port, config.pool))  # the plan keeps the same pools
        else:
            self.targets = tuple(self._target(t, config, pool_for) for t in config.targets)
            self.balancer = make_balancer(config.balance, self.targets)
        self.usable: tuple[Target, ...] = self.targets  # in config order; replaced, never mutated
        self._held: dict[Target, frozenset[str]] = {}  # targets out of rotation, and why
        self._gates: dict[Target, Gate] = {}
        self._retry_hints: tuple[RetryHint, ...] = ()
        self._observers: tuple[Observer, ...] = ()
        if self.balancer.observes:
            self.add_observer(self.balancer.observe)
        self._update_single()

    @staticmethod
    def _target(t: TargetConfig, config: UpstreamConfig, pool_for: Callable[[PoolKey], TargetPool]) -> Target:
        pool = pool_for(PoolKey(t.host, t.port, config.pool))
        authority = f"[{t.host}]" if ":" in t.host else t.host
        host_header = (config.host_header or f"{authority}:{t.port}").encode("ascii")
        return Target(t.host, t.port, t.weight, pool, host_header)

    def pick(self, exchange: Exchange | None = None, exclude: Target | None = None) -> Target:
        """The target for one request; ``exclude`` is avoided (a retry) unless it is the only one."""
        targets = self.usable
        if not targets:
            raise self.unavailable()
        if exclude is not None and len(targets) > 1 and exclude in targets:
            targets = tuple(t for t in targets if t is not exclude)
        target = self.balancer.pick(targets, exchange)
        if self._gates:
            gate = self._gates.get(target)
            if gate is not None:
                gate(target, exchange)
        return target

    def unavailable(self) -> UnavailableFault:
        """The 503 a request gets while no target is in rotation (with Retry-After when known)."""
        reasons = frozenset().union(*self._held.values())
        hints = [hint for hint in (h() for h in self._retry_hints) if hint is not None]
        why = "circuit breaker open for every target" if reasons == {"breaker"} else "no healthy target"
        return UnavailableFault(f"{why} in upstream {self.name!r}", min(hints) if hints else None)

    def mark(self, target: Target, usable: bool, reason: str = "health") -> None:
        """Put a target in or out of rotation for one reason; it is usable while no reason holds it."""
        if target not in self.targets:
            raise ValueError(f"target {target.label} is not in upstream {self.name!r}")
        held = self._held.get(target, frozenset())
        held = held - {reason} if usable else held | {reason}
        if held:
            self._held[target] = held
        else:
            self._held.pop(target, None)
        if (target in self.usable) == (not held):
            return
        if not held:
            self.usable = tuple(t for t in self.targets if t is target or t in self.usable)
        else:
            self.usable = tuple(t for t in self.usable if t is not target)
        self._update_single()

    def held(self, target: Target) -> frozenset[str]:
        """Why a target is out of rotation (empty while it is usable)."""
        return self._held.get(target, frozenset())

    def gate(self, target: Target, gate: Gate | None) -> None:
        """Have ``gate`` told each time pick chooses ``target`` (None: stop)."""
        if gate is None:
            self._gates.pop(target, None)
        else:
            self._gates[target] = gate
        self._update_single()

    def add_retry_hint(self, hint: RetryHint) -> None:
        """When every target is out, the 503's Retry-After is the soonest of the hints."""
        self._retry_hints = (*self._retry_hints, hint)

    def _update_single(self) -> None:
        # PERF: with one usable target and a balancer that only chooses, skip pick() entirely.
        # A gated target must go through pick (its gate counts the trials).
        usable = self.usable
        only = len(usable) == 1 and self.balancer.only_chooses and not self._gates
        self.single = usable[0] if only else None

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(exchange)`` as each exchange sent to this group ends."""
        self._observers = (*self._observers, observer)
        self.observes = True

    def observe(self, exchange: Exchange) -> None:
        """Called by the hot path as each exchange sent to this group ends, when ``observes``."""
        for observer in self._observers:
            observer(exchange)
