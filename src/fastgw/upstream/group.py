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

Reloads: a group whose targets, discovery, pool, Host and balancer settings are unchanged takes
over the previous plan's ``Target`` objects and balancer, so in-flight counts (least-conn, p2c)
and latency estimates (ewma) carry on; requests still running on the old plan count on the same
objects. Usable/held state is re-applied by the monitors (``plan.activate_plan``).

Discovery (``discovery/feed.py``) changes the targets while the group serves: ``set_targets``
diffs the new set against the current one. A target whose address and weight stay keeps its
``Target`` (pool, in-flight count, per-target counters, balancer state); a new one gets a pool;
one that leaves is out of ``targets`` and ``usable`` at once, so no new request goes to it, while
requests already sent to it finish on the ``Target`` they hold (its pool closes each connection
as it comes back, when no other group shares the pool). A changed weight is a new ``Target``:
``Target.weight`` is fixed once made. Target watchers (health monitors, breakers) hear of each
change in the same loop callback, so a target that must pass a health check first is held out
before any request can see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from fastgw._proxy import Exchange, GroupCore, Target
from fastgw.config.schema import UpstreamConfig, UpstreamTimeouts
from fastgw.errors import UnavailableFault
from fastgw.upstream.balance import Balancer, make_balancer
from fastgw.upstream.pool import PoolKey, TargetPool

Observer = Callable[[Exchange], None]
# Told of each change of the targets: (added, removed, joining: added to a running set).
TargetWatcher = Callable[[tuple[Target, ...], tuple[Target, ...], bool], None]
Gate = Callable[[Target, Exchange | None], None]  # told each time pick chooses a gated target
RetryHint = Callable[[], float | None]  # seconds until a held target is tried again, if known


def adoptable_state(config: UpstreamConfig) -> tuple[object, ...]:
    """What must be equal for a new plan's group to take over a running group's targets."""
    return (config.targets, config.discovery, config.pool, config.host_header, config.balance)


class PoolShelf(Protocol):
    """Where a group gets and gives back pools at run time (``plan.LiveState``)."""

    def pool_for(self, key: PoolKey, upstream: str) -> TargetPool: ...
    def release_pool(self, pool: TargetPool) -> None: ...


class UpstreamGroup(GroupCore):
    """Targets of one upstream and the balancer that picks among the usable ones."""

    __slots__ = (
        "_gates", "_held", "_observers", "_retry_hints", "_shelf", "_watchers",
        "balancer", "config", "targets", "timeouts", "usable",
    )  # fmt: skip

    def __init__(
        self,
        config: UpstreamConfig,
        pool_for: Callable[[PoolKey, str], TargetPool],
        previous: UpstreamGroup | None = None,
        shelf: PoolShelf | None = None,
    ) -> None:
        super().__init__()
        self.name = config.name
        self.config = config
        self.timeouts: UpstreamTimeouts = config.timeouts
        self._shelf = shelf  # pools of the targets discovery adds and removes, at run time
        if previous is not None and adoptable_state(previous.config) == adoptable_state(config):
            self.targets: tuple[Target, ...] = previous.targets
            self.balancer: Balancer = previous.balancer
            for target in self.targets:
                pool_for(
                    PoolKey(target.host, target.port, config.pool, config.tls, config.protocol), self.name
                )  # the same pools
        else:
            self.targets = tuple(self._target(t.host, t.port, t.weight, pool_for) for t in config.targets)
            self.balancer = make_balancer(config.balance, self.targets)
        self.usable: tuple[Target, ...] = self.targets  # in config order; replaced, never mutated
        self._held: dict[Target, frozenset[str]] = {}  # targets out of rotation, and why
        self._gates: dict[Target, Gate] = {}
        self._retry_hints: tuple[RetryHint, ...] = ()
        self._observers: tuple[Observer, ...] = ()
        self._watchers: tuple[TargetWatcher, ...] = ()
        if self.balancer.observes:
            self.add_observer(self.balancer.observe)
        self._update_single()

    def _target(
        self, host: str, port: int, weight: int, pool_for: Callable[[PoolKey, str], TargetPool]
    ) -> Target:
        config = self.config
        pool = pool_for(PoolKey(host, port, config.pool, config.tls, config.protocol), self.name)
        authority = f"[{host}]" if ":" in host else host
        host_header = (config.host_header or f"{authority}:{port}").encode("ascii")
        return Target(host, port, weight, pool, host_header)

    def set_targets(self, discovered: Sequence[tuple[str, int, int]], joining: bool) -> None:
        """Serve the static targets and ``discovered`` (host, port, weight) from now on, as a diff
        (see the module docstring). ``joining``: the set replaces one that served (not the start),
        so target watchers may hold new targets until they are checked."""
        static = [(t.host, t.port, t.weight) for t in self.config.targets]
        taken = {(host, port) for host, port, _ in static}
        wanted = static + [a for a in discovered if (a[0], a[1]) not in taken]
        assert self._shelf is not None, "a group whose targets change needs a pool shelf"
        pool_for = self._shelf.pool_for
        current = {(t.host, t.port, t.weight): t for t in self.targets}
        targets = tuple(current.get(a) or self._target(*a, pool_for) for a in dict.fromkeys(wanted))
        if targets == self.targets:
            return
        kept = set(targets)
        added = tuple(t for t in targets if t not in set(self.targets))
        removed = tuple(t for t in self.targets if t not in kept)
        self.targets = targets
        for target in removed:
            self._held.pop(target, None)
            self._gates.pop(target, None)
        self.usable = tuple(t for t in targets if t not in self._held)
        self.balancer.targets_changed(targets)
        self._update_single()
        for watcher in self._watchers:
            watcher(added, removed, joining)
        for target in removed:
            self._shelf.release_pool(target.pool)  # type: ignore[arg-type]  # a TargetPool, made here

    def add_target_watcher(self, watcher: TargetWatcher) -> None:
        """Call ``watcher(added, removed, joining)`` after each change of the targets."""
        self._watchers = (*self._watchers, watcher)

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
        if not self.targets:
            why = "no target discovered"
        elif reasons == {"breaker"}:
            why = "circuit breaker open for every target"
        else:
            why = "no healthy target"
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
