"""An upstream group: its targets, each with a pool, and the choice of target per request."""

from __future__ import annotations

from collections.abc import Callable

from fastgw._proxy import Exchange, GroupCore, Target
from fastgw.config.schema import UpstreamConfig, UpstreamTimeouts
from fastgw.upstream.pool import PoolKey, TargetPool


class UpstreamGroup(GroupCore):
    """Targets of one upstream, picked by smooth weighted round robin (nginx's algorithm: even
    spreading, no bursts to the heaviest target)."""

    __slots__ = ("_current", "config", "name", "targets", "timeouts")

    def __init__(self, config: UpstreamConfig, pool_for: Callable[[PoolKey], TargetPool]) -> None:
        super().__init__()
        self.name = config.name
        self.config = config
        self.timeouts: UpstreamTimeouts = config.timeouts
        self.targets: list[Target] = []
        for t in config.targets:
            pool = pool_for(PoolKey(t.host, t.port, config.pool))
            authority = f"[{t.host}]" if ":" in t.host else t.host
            host_header = (config.host_header or f"{authority}:{t.port}").encode("ascii")
            self.targets.append(Target(t.host, t.port, t.weight, pool, host_header))
        self._current = [0] * len(self.targets)
        # PERF: the common single-target upstream skips the balancer entirely.
        self.single = self.targets[0] if len(self.targets) == 1 else None

    def pick(self, exchange: Exchange | None = None, exclude: Target | None = None) -> Target:
        """The target for one request (the exchange is there for balancers that key on it)."""
        single = self.single
        if single is not None:
            return single
        best = -1
        total = 0
        current = self._current
        for i, target in enumerate(self.targets):
            if target is exclude:
                continue
            current[i] += target.weight
            total += target.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return self.targets[0]
        current[best] -= total
        return self.targets[best]

    def observe(self, exchange: Exchange) -> None:
        """Called as each exchange sent to this group ends, when ``observes`` is set."""
