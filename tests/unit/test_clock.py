"""The timer wheel (``_clock.pyx``) on a real event loop: every deadline fires once it has
passed, never before, however it moved while filed (later, earlier, past the wheel's horizon);
an item unfiled is let go; an idle wheel stops ticking. No sockets: the owners are small
``Timed`` subclasses recording when they were told."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from fastgw.http import _clock


class Owner(_clock.Timed):
    """Keeps one deadline like a connection does: files it, and files it again if told early."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired: list[float] = []

    def move(self, deadline: float) -> None:
        self.deadline = deadline
        _clock.file(self, deadline)

    def expire(self, now: float) -> None:
        if not self.deadline:
            return
        if now < self.deadline:
            _clock.file(self, self.deadline)
            return
        self.fired.append(time.monotonic())
        self.deadline = 0.0


def run(loop_kind: str, scenario) -> None:  # type: ignore[no-untyped-def]
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_deadlines_fire_once_never_early_whichever_way_they_moved(loop_kind: str) -> None:
    async def scenario() -> None:
        now = _clock.now()
        plain = Owner(now + 0.05)
        later = Owner(now + 0.02)  # filed early, then moved later: filed once, told twice
        earlier = Owner(now + 0.3)  # moved earlier: filed again; the old entry goes stale
        cancelled = Owner(now + 0.03)
        for owner in (plain, later, earlier, cancelled):
            _clock.file(owner, owner.deadline)
        later.deadline = now + 0.15
        earlier.move(now + 0.08)
        cancelled.deadline = 0.0
        await asyncio.sleep(0.45)
        for owner, due in ((plain, now + 0.05), (later, now + 0.15), (earlier, now + 0.08)):
            assert len(owner.fired) == 1
            assert owner.fired[0] >= due  # never early
        assert cancelled.fired == []

    run(loop_kind, scenario)


def test_a_deadline_beyond_the_horizon_is_filed_again_until_due() -> None:
    async def scenario() -> None:
        wheel = _clock.running_wheel()
        due = _clock.now() + 1024 * _clock.SLOT_SECONDS + 0.3  # past the wheel's horizon
        far = Owner(due)
        _clock.file(far, due)
        await asyncio.sleep(due - time.monotonic() + 0.1)
        assert len(far.fired) == 1 and far.fired[0] >= due
        assert wheel.ticks > 1024

    run("uvloop", scenario)


def test_an_idle_wheel_stops_ticking(loop_kind: str) -> None:
    async def scenario() -> None:
        wheel = _clock.running_wheel()
        owner = Owner(_clock.now() + 0.02)
        _clock.file(owner, owner.deadline)
        await asyncio.sleep(0.1)
        assert owner.fired and wheel.pending == 0
        ticks = wheel.ticks
        await asyncio.sleep(0.1)
        assert wheel.ticks == ticks  # nothing filed: no timer runs

    run(loop_kind, scenario)


def test_the_loop_wakes_for_the_first_filled_slot_not_every_slot(loop_kind: str) -> None:
    """A deadline half a second away wakes the loop once or twice (a timer may run a moment before
    its slot ends, and is armed again), not once per slot (a hundred times): an idle gateway with
    open connections sleeps until a deadline is due. The slots in between are still passed."""

    async def scenario() -> None:
        wheel = _clock.running_wheel()
        wakeups, ticks = wheel.wakeups, wheel.ticks
        due = _clock.now() + 0.5
        owner = Owner(due)
        _clock.file(owner, due)
        await asyncio.sleep(0.7)
        assert len(owner.fired) == 1 and owner.fired[0] >= due
        assert 1 <= wheel.wakeups - wakeups <= 3
        assert wheel.ticks - ticks >= 0.5 / _clock.SLOT_SECONDS - 2

    run(loop_kind, scenario)


def test_a_deadline_earlier_than_every_other_wakes_the_loop_sooner(loop_kind: str) -> None:
    """The timer is armed for a far deadline; one filed nearer than it moves the timer, and one
    filed later does not; each fires once, never early, the near one long before the far one."""

    async def scenario() -> None:
        wheel = _clock.running_wheel()
        now = _clock.now()
        far, near, later = Owner(now + 2.0), Owner(now + 0.1), Owner(now + 0.15)
        for owner in (far, near, later):
            _clock.file(owner, owner.deadline)
        await asyncio.sleep(0.4)
        assert len(near.fired) == 1 and near.fired[0] >= now + 0.1
        assert len(later.fired) == 1 and later.fired[0] >= now + 0.15
        assert far.fired == [] and wheel.pending == 1
        _clock.unfile(far)

    run(loop_kind, scenario)


def test_an_item_filed_again_from_its_expire_does_not_arm_a_second_timer(loop_kind: str) -> None:
    """Owners told early file themselves again from inside the wheel's run: the wheel arms one
    timer when that run ends, for the first filled slot (one woken run per due slot)."""

    async def scenario() -> None:
        wheel = _clock.running_wheel()
        now = _clock.now()
        owners = [Owner(now + 0.05) for _ in range(5)]
        for owner in owners:
            _clock.file(owner, owner.deadline)
        for owner in owners:
            owner.deadline = now + 0.3  # moved later: told at 0.05, filed again from expire
        wakeups = wheel.wakeups
        await asyncio.sleep(0.5)
        assert all(len(owner.fired) == 1 and owner.fired[0] >= now + 0.3 for owner in owners)
        assert wheel.wakeups - wakeups <= 5  # two due slots, each maybe woken early once

    run(loop_kind, scenario)


def test_a_wheel_per_loop() -> None:
    wheels = []

    async def scenario() -> None:
        wheels.append(_clock.running_wheel())
        assert _clock.running_wheel() is wheels[-1]

    run("uvloop", scenario)
    run("asyncio", scenario)
    assert wheels[0] is not wheels[1]


def test_the_date_line_is_an_imf_fixdate() -> None:
    line = _clock.current_date_line()
    assert line.startswith(b"Date: ") and line.endswith(b" GMT\r\n") and len(line) == 37


@pytest.mark.parametrize("second", [0, 784111777, 951782400, 1709164800, 1790000000, 4102444799])
def test_http_date_matches_the_standard_librarys_formatting(second: int) -> None:
    """RFC 9110 5.6.7's example, leap days, the year 2099; in English under any locale."""
    from email.utils import formatdate

    assert _clock.http_date(second) == formatdate(second, usegmt=True).encode()
    if second == 784111777:
        assert _clock.http_date(second) == b"Sun, 06 Nov 1994 08:49:37 GMT"


def test_the_wheel_holds_an_item_once_and_lets_go_when_unfiled(loop_kind: str) -> None:
    """Moving a deadline earlier leaves the item in one slot only; ``unfile`` takes it off, so a
    closed connection is not kept alive (memory) by the deadline it had."""
    import gc
    import weakref

    async def scenario() -> None:
        wheel = _clock.running_wheel()
        owner = Owner(_clock.now() + 3.0)
        _clock.file(owner, owner.deadline)
        owner.move(_clock.now() + 2.0)
        owner.move(_clock.now() + 1.0)
        assert wheel.pending == 1
        gone = weakref.ref(owner)
        _clock.unfile(owner)
        _clock.unfile(owner)  # twice: nothing more happens
        assert wheel.pending == 0
        del owner
        gc.collect()
        assert gone() is None
        kept = Owner(_clock.now() + 0.05)
        _clock.file(kept, kept.deadline)
        _clock.unfile(kept)
        await asyncio.sleep(0.15)
        assert kept.fired == []  # unfiled: never told

    run(loop_kind, scenario)
