"""Upstream health: active checks and passive outlier detection, run once per worker process.

Theory of operation
-------------------
Every upstream with ``health:`` or ``outlier:`` has one ``UpstreamHealth`` monitor per worker
process, holding one ``TargetHealth`` per target address (``host:port``). A target is *in
rotation* while two independent verdicts allow it:

* **checked up** (active checks, ``health:``). One task per monitor probes all its targets at
  once every ``interval``: ``GET path`` on a fresh connection with ``Connection: close`` and the
  Host its proxied requests carry; a probe passes when a status line with one of ``statuses``
  arrives within ``timeout``. An up target goes down after ``unhealthy_after`` failed probes in
  a row; a down one comes back after ``healthy_after`` passed probes in a row. Targets start up
  (traffic flows at once) and the first round runs immediately, so a target that is dead at
  start is out after ``unhealthy_after`` rounds.
* **not ejected** (passive outlier detection, ``outlier:``). The group calls ``observe`` as each
  exchange it served ends. A transport failure (connect refused or timed out, reset, malformed or
  timed-out response) is a failure, and so is a 5xx response with ``count_5xx``; any other
  response ends the streak. The 503 our own pool raises when no connection frees up within
  ``acquire_timeout`` says nothing about the target and counts as neither. After
  ``consecutive_failures`` in a row the target is ejected for ``base_ejection * 2**(n - 1)``
  seconds, capped at ``max_ejection``, where n counts its ejections in a row; a loop timer
  readmits it. n starts over once a target stayed in rotation for ``max_ejection`` after its
  last readmission, so only a target that keeps failing is kept out longer and longer.

  The ejection limit follows Envoy's ``max_ejection_percent``: at most
  ``max(1, targets * max_ejected_percent // 100)`` targets are ejected at once. In addition,
  outlier detection never ejects the last target in rotation unless the percentage is 100: with
  no target left every request gets a 503, while a suspect target may still answer some (Envoy's
  panic threshold makes the same trade). Active checks have no such guard: a target failing its
  health endpoint is out, and with every target out the group answers 503 "no healthy target".

Verdicts reach the group through ``group.mark(target, usable)``, only when a target's combined
verdict changes, and every change is logged once. The only per-request work is ``observe``: a
dict lookup and a few comparisons; timers and probes run on the loop, never in a request.

Discovery: the group tells its monitor of each change of its targets (``targets_changed``): a new
address starts up, or, with ``discovery.require_health_check`` and joining a running set, down
until its first probe (sent at once) passes; an address that left is forgotten, its timers
cancelled, and a probe of it still under way changes nothing.

Reloads: monitors are keyed by ``HealthKey`` (cf. ``PoolKey``): the upstream's name, its static
target addresses, the Host it sends and its ``health``/``outlier`` settings; weights, pool and
timeouts may change freely. A plan compiled with the same key adopts the running monitor, and when that
plan is swapped in, ``serve`` re-applies the verdicts to its new group: the checker keeps running
and an ejected target stays out for the rest of its ejection. A changed key starts afresh (every
target up); ``plan.retire_plan`` stops the monitors the new plan did not adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from fastgw._proxy import Exchange, Target
from fastgw.config.schema import HealthCheckConfig, OutlierConfig, UpstreamConfig

log = logging.getLogger("fastgw")

_OWN_POOL_LIMIT = 503  # status of our pool's acquire timeout: the target is not at fault
_DRAIN_LIMIT = 64 * 1024  # response bytes a probe reads after the status line before closing
_MAX_DOUBLINGS = 32  # 2**32 base ejections is past any sane max_ejection: no float overflow


class HealthKey(NamedTuple):
    """What makes a running monitor valid for a new plan's upstream (see the module docstring)."""

    upstream: str
    addresses: tuple[tuple[str, int], ...]  # sorted and unique: order and weights do not matter
    host_header: str | None
    health: HealthCheckConfig | None
    outlier: OutlierConfig | None
    check_joiners: bool = False  # a target discovery adds to a running set waits for one passed probe

    @classmethod
    def of(cls, config: UpstreamConfig) -> HealthKey | None:
        """The key of an upstream's monitor, or None when it has neither checks nor detection."""
        if config.health is None and config.outlier is None:
            return None
        addresses = tuple(sorted({(t.host, t.port) for t in config.targets}))
        check_joiners = config.discovery is not None and config.discovery.require_health_check
        return cls(config.name, addresses, config.host_header, config.health, config.outlier, check_joiners)


class Steered(Protocol):
    """What a monitor needs of an upstream group (``UpstreamGroup`` provides it)."""

    @property
    def targets(self) -> Sequence[Target]: ...
    def mark(self, target: Target, usable: bool) -> None: ...
    def add_observer(self, observer: Callable[[Exchange], None]) -> None: ...
    def add_target_watcher(
        self, watcher: Callable[[tuple[Target, ...], tuple[Target, ...], bool], None]
    ) -> None: ...


# -- the two verdicts, as pure state machines ----------------------------------------------------


class CheckStreak:
    """Active-check thresholds: the verdict flips only after enough results in a row disagree."""

    __slots__ = ("first", "healthy_after", "run", "unhealthy_after", "up")

    def __init__(self, healthy_after: int, unhealthy_after: int) -> None:
        self.healthy_after = healthy_after
        self.unhealthy_after = unhealthy_after
        self.up = True
        self.run = 0  # consecutive results contradicting ``up``
        self.first = False  # down until one probe passes (a target joining a discovered set)

    def await_first(self) -> None:
        """Start down; the first passed probe puts it up (``healthy_after`` does not apply)."""
        self.up = False
        self.run = 0
        self.first = True

    def record(self, passed: bool) -> bool:
        """Count one probe result; True when it flipped ``up``."""
        if passed == self.up:
            self.run = 0
            return False
        self.run += 1
        needed = 1 if self.first else self.healthy_after if passed else self.unhealthy_after
        if self.run < needed:
            return False
        self.up = passed
        self.run = 0
        self.first = False
        return True


class OutlierStreak:
    """Passive detection for one target: its failure streak and the length of its next ejection."""

    __slots__ = ("config", "ejected", "ejections", "failures", "readmitted_at")

    def __init__(self, config: OutlierConfig) -> None:
        self.config = config
        self.failures = 0  # consecutive failed exchanges
        self.ejected = False
        self.ejections = 0  # ejections in a row
        self.readmitted_at = 0.0

    def record(self, failed: bool) -> bool:
        """Count one ended exchange; True when the streak calls for an ejection."""
        if not failed:
            self.failures = 0
            return False
        self.failures += 1
        return not self.ejected and self.failures >= self.config.consecutive_failures

    def eject(self, now: float) -> float:
        """Take the target out; for base * 2**(n - 1) seconds at the n-th ejection in a row, capped."""
        config = self.config
        if self.ejections and now - self.readmitted_at >= config.max_ejection:
            self.ejections = 0  # it stayed in rotation long enough: its record is clean again
        self.ejections += 1
        self.ejected = True
        self.failures = 0
        doublings = min(self.ejections - 1, _MAX_DOUBLINGS)
        return float(min(config.base_ejection * 2**doublings, config.max_ejection))

    def readmit(self, now: float) -> None:
        self.ejected = False
        self.failures = 0
        self.readmitted_at = now


def attempt_failed(exchange: Exchange, count_5xx: bool) -> bool | None:
    """Did the target fail this ended exchange? None when it says nothing about the target: no
    response and no upstream error (the client left first), or the 503 of our own pool's limit."""
    error = exchange.upstream_error
    if error is not None:
        return None if error.status == _OWN_POOL_LIMIT else True
    status = exchange.upstream_status  # not what the client got: the gateway may have answered
    if status == 0:
        return None
    return status >= 500 and count_5xx


def failure_summary(exchange: Exchange) -> str:
    """What went wrong, for the log line of an ejection or an opened breaker."""
    error = exchange.upstream_error
    return str(error) if error is not None else f"status {exchange.upstream_status}"


def ejection_limit(targets: int, max_ejected_percent: int) -> int:
    """How many of ``targets`` may be ejected at once: the percentage, but at least one (Envoy)."""
    return max(1, targets * max_ejected_percent // 100)


# -- one target ----------------------------------------------------------------------------------


class TargetHealth:
    """One target address of a monitored upstream: its verdicts and the current group's targets."""

    __slots__ = ("check", "host", "label", "marked", "outlier", "port", "request", "targets", "timer")

    def __init__(self, target: Target, key: HealthKey) -> None:
        self.label = target.label
        self.host = target.host
        self.port = target.port
        self.targets: list[Target] = [target]  # the serving group's targets at this address
        self.check = CheckStreak(key.health.healthy_after, key.health.unhealthy_after) if key.health else None
        self.outlier = OutlierStreak(key.outlier) if key.outlier else None
        self.request = probe_request(key.health.path, target.host_header) if key.health else b""
        self.marked = True  # what the group was last told
        self.timer: asyncio.TimerHandle | None = None  # the pending readmission

    @property
    def usable(self) -> bool:
        """Both verdicts allow it."""
        return (self.check is None or self.check.up) and (self.outlier is None or not self.outlier.ejected)


# -- the monitor ---------------------------------------------------------------------------------


class UpstreamHealth:
    """Health of one upstream in this process: the checker task, outlier detection, the verdicts."""

    def __init__(self, key: HealthKey) -> None:
        self.key = key
        self.name = key.upstream
        self.states: dict[str, TargetHealth] = {}  # by target label
        self._group: Steered | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    def serve(self, group: Steered) -> None:
        """Steer ``group`` (the plan being swapped in) from now on; start the checker if it is not
        running. Call on the worker's loop, never at compile time: a plan that fails to compile
        must not take the running plan's monitors."""
        if self.stopped:
            raise RuntimeError(f"the health monitor of upstream {self.name!r} was stopped")
        self._loop = loop = asyncio.get_running_loop()
        self._group = group
        at: dict[str, list[Target]] = {}  # an address listed twice is one server: one verdict
        for target in group.targets:
            at.setdefault(target.label, []).append(target)
        for label in [label for label in self.states if label not in at]:
            self._forget(label)  # discovery removed it while another plan served
        for label, targets in at.items():
            state = self.states.get(label)
            if state is None:
                state = self.states[label] = TargetHealth(targets[0], self.key)
            state.targets = targets
            if not state.marked:  # a new group starts with every target usable
                for target in targets:
                    group.mark(target, False)
        if self.key.outlier is not None:
            group.add_observer(self.observe)
        group.add_target_watcher(self.targets_changed)
        if self.key.health is not None and self._task is None:
            self._task = loop.create_task(self._check_forever(self.key.health), name=f"health {self.name}")

    def stop(self) -> asyncio.Task[None] | None:
        """Stop checking and ejecting; the checker task, cancelled, for a caller that must await it."""
        self.stopped = True
        for state in self.states.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    @property
    def running(self) -> bool:
        """The checker task is alive (tests and the admin side read it)."""
        return self._task is not None and not self._task.done()

    # -- discovery: the group's targets changed ------------------------------------------------

    def targets_changed(self, added: tuple[Target, ...], removed: tuple[Target, ...], joining: bool) -> None:
        if self.stopped or self._group is None:
            return
        for target in added:  # first: a changed weight is the same address, its verdict kept
            state = self.states.get(target.label)
            if state is not None:
                state.targets.append(target)
                if not state.marked:
                    self._group.mark(target, False)
                continue
            state = self.states[target.label] = TargetHealth(target, self.key)
            if joining and self.key.check_joiners and state.check is not None:
                state.check.await_first()
                self._steer(state)
                assert self._loop is not None and self.key.health is not None
                self._loop.create_task(self._probe_now(state, self.key.health))
        for target in removed:
            state = self.states.get(target.label)
            if state is not None:
                state.targets = [t for t in state.targets if t is not target]
                if not state.targets:
                    self._forget(target.label)

    def _forget(self, label: str) -> None:
        state = self.states.pop(label)
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None

    async def _probe_now(self, state: TargetHealth, check: HealthCheckConfig) -> None:
        """The first probe of a joining target, without waiting for the next round."""
        problem = await probe(state.host, state.port, state.request, check)
        self._checked(state, problem)

    # -- passive: called by the group as each exchange ends (per request: keep it cheap) --------

    def observe(self, exchange: Exchange) -> None:
        if self.stopped:
            return  # an exchange of a retired plan finished late
        target = exchange.target
        if target is None:
            return
        state = self.states.get(target.label)
        if state is None or state.outlier is None:
            return
        failed = attempt_failed(exchange, state.outlier.config.count_5xx)
        if failed is not None and state.outlier.record(failed):
            self._eject(state, failure_summary(exchange))

    def _eject(self, state: TargetHealth, last: str) -> None:
        outlier = state.outlier
        assert outlier is not None and self._loop is not None
        config = outlier.config
        states = self.states.values()
        if sum(1 for s in states if s.outlier and s.outlier.ejected) >= ejection_limit(
            len(self.states), config.max_ejected_percent
        ):
            return  # the streak stays: the next failure asks again
        if (
            config.max_ejected_percent < 100
            and state.usable
            and not any(s.usable for s in states if s is not state)
        ):
            return  # never take out the last target in rotation (see the module docstring)
        failures = outlier.failures
        duration = outlier.eject(self._loop.time())
        state.timer = self._loop.call_later(duration, self._readmit, state)
        log.warning(
            "upstream %s: target %s ejected for %gs after %d failures in a row (last: %s)",
            self.name, state.label, duration, failures, last,
        )  # fmt: skip
        self._steer(state)

    def _readmit(self, state: TargetHealth) -> None:
        assert state.outlier is not None and self._loop is not None
        state.timer = None
        state.outlier.readmit(self._loop.time())
        log.info("upstream %s: target %s readmitted after its ejection", self.name, state.label)
        self._steer(state)

    # -- active ----------------------------------------------------------------------------------

    async def _check_forever(self, check: HealthCheckConfig) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            states = list(self.states.values())
            try:
                problems = await asyncio.gather(*(probe(s.host, s.port, s.request, check) for s in states))
                for state, problem in zip(states, problems, strict=True):
                    self._checked(state, problem)
            except Exception:  # a bug of ours must not end health checking for good
                log.exception("upstream %s: health check round failed", self.name)
            await asyncio.sleep(max(0.0, started + check.interval - loop.time()))

    def _checked(self, state: TargetHealth, problem: str | None) -> None:
        check = state.check
        assert check is not None
        if self.stopped or self.states.get(state.label) is not state:
            return  # the target left while it was probed
        if not check.record(problem is None):
            return
        if check.up:
            log.info(
                "upstream %s: target %s is healthy again (%d checks passed in a row)",
                self.name, state.label, check.healthy_after,
            )  # fmt: skip
        else:
            log.warning(
                "upstream %s: target %s is unhealthy (%d checks failed in a row; last: %s)",
                self.name, state.label, check.unhealthy_after, problem,
            )  # fmt: skip
        self._steer(state)

    # -- both ------------------------------------------------------------------------------------

    def _steer(self, state: TargetHealth) -> None:
        """Tell the group when the combined verdict changed."""
        usable = state.usable
        if usable == state.marked or self._group is None:
            return
        state.marked = usable
        for target in state.targets:
            self._group.mark(target, usable)
        if not usable and not any(s.marked for s in self.states.values()):
            log.warning("upstream %s: no target in rotation; requests get 503 until one recovers", self.name)


async def stop_monitors(monitors: Iterable[UpstreamHealth]) -> None:
    """Stop monitors and wait until their checkers ended (drain: nothing is left on the loop)."""
    tasks = [task for monitor in monitors if (task := monitor.stop()) is not None]
    await asyncio.gather(*tasks, return_exceptions=True)


# -- one probe -----------------------------------------------------------------------------------


def probe_request(path: str, host_header: bytes) -> bytes:
    """The request head of an active check (the path was validated as printable ASCII)."""
    return b"".join(
        [
            b"GET ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ", host_header,
            b"\r\nUser-Agent: fastgw-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        ]
    )  # fmt: skip


def status_of(line: bytes) -> int | None:
    """The status of an HTTP/1.x status line (``HTTP/1.1 200 OK``), or None."""
    code = line[9:12]
    if line[:5] != b"HTTP/" or line[8:9] != b" " or len(code) != 3 or not code.isdigit():
        return None
    return int(code)


def status_passes(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= status <= high for low, high in ranges)


async def probe(host: str, port: int, request: bytes, check: HealthCheckConfig) -> str | None:
    """One active check of one target: None when it passed, else what went wrong (for the log)."""
    deadline = asyncio.get_running_loop().time() + check.timeout
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            line = await reader.readline()
        status = status_of(line)
        if status is None:
            return f"not an HTTP response: {line[:40]!r}" if line else "closed without a response"
        # Read the little rest (bounded in size and time) so that closing does not reset the
        # upstream while it is still writing, which some servers log as an error.
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout_at(deadline):
                left = _DRAIN_LIMIT
                while left > 0 and (data := await reader.read(left)):
                    left -= len(data)
        return None if status_passes(status, check.statuses) else f"status {status}"
    except TimeoutError:
        return f"no response within {check.timeout:g}s"
    except (OSError, ValueError) as exc:  # ValueError: a status line longer than the stream limit
        return str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc) or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
