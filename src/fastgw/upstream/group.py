"""An upstream group: its targets, each with a pool, which of them are usable, and the choice of
target per request (delegated to its balancer, ``upstream/balance.py``).

What the hot path reads (``GroupCore``): ``single``, a target to send to without calling
``pick``, and ``observes``, whether to call ``observe(exchange)`` as each exchange ends. The group
keeps both consistent with its state:

- ``single`` is the usable target when exactly one is usable and the balancer only chooses
  (round robin with one target: the common case costs nothing); otherwise None, so ``pick`` runs,
  and with no usable target ``pick`` raises the 503.
- ``observes`` is True exactly when there are observers (a latency-aware balancer, outlier
  detection), so the hot path takes no timestamps for groups nobody watches.
"""

from __future__ import annotations

from collections.abc import Callable

from fastgw._proxy import Exchange, GroupCore, Target
from fastgw.config.schema import UpstreamConfig, UpstreamTimeouts
from fastgw.errors import UpstreamFault
from fastgw.upstream.balance import Balancer, make_balancer
from fastgw.upstream.pool import PoolKey, TargetPool

Observer = Callable[[Exchange], None]


class UpstreamGroup(GroupCore):
    """Targets of one upstream and the balancer that picks among the usable ones."""

    __slots__ = ("_observers", "balancer", "config", "name", "targets", "timeouts", "usable")

    def __init__(self, config: UpstreamConfig, pool_for: Callable[[PoolKey], TargetPool]) -> None:
        super().__init__()
        self.name = config.name
        self.config = config
        self.timeouts: UpstreamTimeouts = config.timeouts
        targets = []
        for t in config.targets:
            pool = pool_for(PoolKey(t.host, t.port, config.pool))
            authority = f"[{t.host}]" if ":" in t.host else t.host
            host_header = (config.host_header or f"{authority}:{t.port}").encode("ascii")
            targets.append(Target(t.host, t.port, t.weight, pool, host_header))
        self.targets: tuple[Target, ...] = tuple(targets)
        self.usable: tuple[Target, ...] = self.targets  # in config order; replaced, never mutated
        self.balancer: Balancer = make_balancer(config.balance, self.targets)
        self._observers: tuple[Observer, ...] = ()
        if self.balancer.observes:
            self.add_observer(self.balancer.observe)
        self._update_single()

    def pick(self, exchange: Exchange | None = None, exclude: Target | None = None) -> Target:
        """The target for one request; ``exclude`` is avoided (a retry) unless it is the only one."""
        targets = self.usable
        if not targets:
            raise UpstreamFault(f"no healthy target in upstream {self.name!r}", 503)
        if exclude is not None and len(targets) > 1 and exclude in targets:
            targets = tuple(t for t in targets if t is not exclude)
        return self.balancer.pick(targets, exchange)

    def mark(self, target: Target, usable: bool) -> None:
        """Put a target in or out of rotation (health checks, outlier ejection)."""
        if target not in self.targets:
            raise ValueError(f"target {target.label} is not in upstream {self.name!r}")
        if (target in self.usable) == usable:
            return
        if usable:
            self.usable = tuple(t for t in self.targets if t is target or t in self.usable)
        else:
            self.usable = tuple(t for t in self.usable if t is not target)
        self._update_single()

    def _update_single(self) -> None:
        # PERF: with one usable target and a balancer that only chooses, skip pick() entirely.
        usable = self.usable
        self.single = usable[0] if len(usable) == 1 and self.balancer.only_chooses else None

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(exchange)`` as each exchange sent to this group ends."""
        self._observers = (*self._observers, observer)
        self.observes = True

    def remove_observer(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o != observer)
        self.observes = bool(self._observers)

    def observe(self, exchange: Exchange) -> None:
        """Called by the hot path as each exchange sent to this group ends, when ``observes``."""
        for observer in self._observers:
            observer(exchange)
