"""One upstream's discovered targets: a resolver watching a registry, and the feed that applies
what it finds to the upstream group.

Theory of operation
-------------------
A ``Resolver`` (one per provider module: ``dns``, ``etcd``, ``consul``, ``eureka``, ``static``)
knows how to follow one service of one registry. Its ``run(sink)`` publishes each *whole* set of
instances the registry gives (``sink.publish``), or says the registry answered and nothing
changed (``sink.confirm``), for as long as it can; it raises when the registry fails it (an
error, a timeout, a malformed answer), and returns only for a one-shot registry.

The ``ServiceFeed`` runs it as an asyncio task on the worker's loop, off the hot path:

- **retry**: after a failure it runs the resolver again after a full-jitter backoff (``retry:
  base``, doubling to ``max``); a success resets the backoff.
- **last known good**: a failure changes nothing in the group: the targets it has stay.
- **floor**: an answer with fewer than ``min_targets`` instances is not applied while a larger set
  is known (a registry restarted empty, a DNS zone half loaded); it counts as an error, so the
  feed reads as stale until the registry answers a set it can take.
- **diff**: a set that is applied goes to ``group.set_targets``, which keeps the ``Target`` (pool,
  in-flight count, latency estimate, health and breaker state) of every address that stays.

What it knows is read by metrics and the admin API (``observe/metrics.py``): the set and where
each target came from, when the registry last answered (``confirmed_at``), when the set last
changed, the last error, and counts of answers by outcome. *Stale* means: the last attempt
failed (or was refused by the floor), and the targets are as of ``confirmed_at``.

Reloads: feeds are keyed by ``DiscoveryKey`` (the upstream's name and its ``discovery``, which
holds the registry's settings). A plan compiled with the same key adopts the running feed, whose
task goes on undisturbed; ``serve`` hands it the new plan's group and applies the current set.
``plan.retire_plan`` stops the feeds the new plan did not adopt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from fastgw.config.schema import DiscoveryConfig, UpstreamConfig

if TYPE_CHECKING:
    import random

log = logging.getLogger("fastgw")

MAX_WEIGHT = 1000  # a registry's weights (SRV's 0-65535, Consul's) are clamped to 1..MAX_WEIGHT


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance a registry lists: where it is, its weight, and which entry it was."""

    host: str
    port: int
    weight: int = 1
    origin: str = ""  # the registry's name for it, e.g. "node n1, service id catalog-1"

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Sink(Protocol):
    """What a resolver reports to (the feed, or a one-shot collector)."""

    def publish(self, instances: Sequence[Instance]) -> None: ...
    def confirm(self) -> None: ...


class Resolver(ABC):
    """Follows one service of one registry (see the module docstring)."""

    @abstractmethod
    async def run(self, sink: Sink) -> None:
        """Publish every set the registry gives until cancelled; raise when the registry fails."""


class Steered(Protocol):
    """What a feed needs of an upstream group (``UpstreamGroup`` provides it)."""

    name: str

    def set_targets(self, addresses: Sequence[tuple[str, int, int]], joining: bool) -> None: ...


class DiscoveryKey(NamedTuple):
    upstream: str
    discovery: DiscoveryConfig

    @classmethod
    def of(cls, config: UpstreamConfig) -> DiscoveryKey | None:
        return cls(config.name, config.discovery) if config.discovery is not None else None


def normalized(instances: Sequence[Instance]) -> tuple[Instance, ...]:
    """One instance per address (the first listed, with the largest weight listed for it), weights
    clamped to 1..MAX_WEIGHT, sorted by address so that equal sets compare equal."""
    by_address: dict[tuple[str, int], Instance] = {}
    for instance in instances:
        weight = min(max(instance.weight, 1), MAX_WEIGHT)
        seen = by_address.get((instance.host, instance.port))
        if seen is None:
            by_address[(instance.host, instance.port)] = Instance(
                instance.host, instance.port, weight, instance.origin
            )
        elif weight > seen.weight:
            by_address[(instance.host, instance.port)] = Instance(seen.host, seen.port, weight, seen.origin)
    return tuple(by_address[address] for address in sorted(by_address))


class Backoff:
    """Full-jitter exponential backoff (AWS's "exponential backoff and jitter"): the n-th delay in
    a row is drawn from [0, min(max, base * 2**n)]."""

    __slots__ = ("attempts", "base", "most", "rng")

    def __init__(self, base: float, most: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.most = most
        self.attempts = 0
        if rng is None:
            import random  # here: only discovery needs it (PERF: memory of every process)

            rng = random.Random()
        self.rng = rng

    def next(self) -> float:
        ceiling = min(self.most, self.base * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class ServiceFeed:
    """The discovered targets of one upstream in this process (see the module docstring)."""

    def __init__(self, key: DiscoveryKey, resolver: Resolver) -> None:
        self.key = key
        self.name = key.upstream
        self.config = key.discovery
        self.source = self.config.describe()
        self.resolver = resolver
        self.instances: tuple[Instance, ...] | None = None  # as applied; None until the first answer
        self.healthy = False  # the last attempt succeeded and its answer was applied
        self.attempted = asyncio.Event()  # the first attempt ended, answered or failed
        self.confirmed_at: float | None = None  # wall clock of the registry's last answer applied
        self.changed_at: float | None = None  # wall clock of the last change of the set
        self.started_at = time.time()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.answers = {"changed": 0, "unchanged": 0, "below_floor": 0}
        self.errors = 0
        self.stopped = False
        self._group: Steered | None = None
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(self.config.retry_base, self.config.retry_max)

    # -- lifecycle (plan.activate_plan, plan.retire_plan) ---------------------------------------

    def serve(self, group: Steered) -> None:
        """Steer ``group`` (the plan being swapped in) from now on, with the set known so far;
        start following the registry if not yet. On the worker's loop."""
        if self.stopped:
            raise RuntimeError(f"the discovery feed of upstream {self.name!r} was stopped")
        self._group = group
        if self.instances is not None:
            group.set_targets(self._addresses(), joining=False)
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._follow(), name=f"discovery {self.name}")

    def stop(self) -> asyncio.Task[None] | None:
        """Stop following; the cancelled task, for a caller that must await it."""
        self.stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stale_seconds(self) -> float:
        """0 while healthy; else how old the set served is (since the start, if it has none)."""
        if self.healthy:
            return 0.0
        return max(0.0, time.time() - (self.confirmed_at or self.started_at))

    def origins(self) -> dict[str, str]:
        """Each discovered target's label and the registry's name for it."""
        return {instance.label: instance.origin for instance in self.instances or ()}

    # -- the task ----------------------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                await self.resolver.run(self)
                return  # a one-shot registry said all it has
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry failed us (or a bug of ours): retry later
                self._failed(_describe(exc))
            await asyncio.sleep(self._backoff.next())

    def _failed(self, error: str) -> None:
        self.errors += 1
        self.healthy = False
        self.last_error = error
        self.last_error_at = time.time()
        self.attempted.set()
        kept = f"keeping {len(self.instances)} targets" if self.instances is not None else "no targets yet"
        log.warning("upstream %s: discovery (%s) failed: %s; %s", self.name, self.source, error, kept)

    # -- Sink: called by the resolver ----------------------------------------------------------

    def confirm(self) -> None:
        """The registry answered and the set did not change."""
        if self.instances is None:
            return  # nothing known yet: a confirmation needs a set
        self._answered()
        self.answers["unchanged"] += 1

    def publish(self, instances: Sequence[Instance]) -> None:
        """A whole set from the registry: refused below the floor, else applied as a diff."""
        found = normalized(instances)
        current = self.instances
        if current is not None and len(found) < self.config.min_targets and len(found) < len(current):
            self.answers["below_floor"] += 1
            self._failed(
                f"the registry answered {len(found)} instances, below min_targets"
                f" ({self.config.min_targets}): not applied"
            )
            return
        self._answered()
        if found == current:
            self.answers["unchanged"] += 1
            return
        self.answers["changed"] += 1
        self.instances = found
        self.changed_at = time.time()
        log.info(
            "upstream %s: %d targets from %s: %s", self.name, len(found), self.source,
            ", ".join(i.label for i in found) or "none",
        )  # fmt: skip
        if self._group is not None:
            # The first set is the start (every target takes traffic); later ones join a set.
            self._group.set_targets(self._addresses(), joining=current is not None)

    def _answered(self) -> None:
        self.healthy = True
        self.confirmed_at = time.time()
        self._backoff.reset()
        self.attempted.set()

    def _addresses(self) -> list[tuple[str, int, int]]:
        return [(i.host, i.port, i.weight) for i in self.instances or ()]


def _describe(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
        return text or "timed out"
    return text or type(exc).__name__


class Collector:
    """A one-shot sink: the first set a resolver publishes (``fastgw routes --match``)."""

    def __init__(self) -> None:
        self.instances: tuple[Instance, ...] | None = None
        self.done = asyncio.Event()

    def publish(self, instances: Sequence[Instance]) -> None:
        self.instances = normalized(instances)
        self.done.set()

    def confirm(self) -> None:
        pass


async def resolve_once(resolver: Resolver, timeout: float) -> tuple[Instance, ...]:
    """The first set ``resolver`` finds, within ``timeout`` (TimeoutError, or the resolver's own
    error)."""
    sink = Collector()
    task = asyncio.get_running_loop().create_task(resolver.run(sink))
    waiting = asyncio.get_running_loop().create_task(sink.done.wait())
    try:
        done, _ = await asyncio.wait({task, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if sink.instances is not None:
            return sink.instances
        if task in done:
            task.result()  # the resolver's error
            return ()
        raise TimeoutError(f"no answer within {timeout:g}s")
    finally:
        for pending in (task, waiting):
            pending.cancel()
        await asyncio.gather(task, waiting, return_exceptions=True)
