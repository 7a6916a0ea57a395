# cython: language_level=3
"""Time for the hot path: two clocks read in C, the Date line, and a timer wheel per event loop.

Deadlines without timers. Every connection has deadlines (head, body, keep-alive, upstream read,
client send, idle in a pool) that move on almost every request. Arming a ``loop.call_later`` for
each costs a TimerHandle and heap work per change; sweeping every connection on a coarse tick
costs nothing per request but fires up to a tick late (the old 250 ms tick fired a 500 ms head
timeout anywhere in 0.30–0.50 s, since the deadline was also computed from the stale tick).

So: a deadline is a float the owner keeps, computed from ``coarse()`` (the kernel's coarse
monotonic clock plus its resolution: one vDSO read of a few ns, never behind the precise clock,
at most one jiffy ahead). The owner *files* itself
on its loop's ``TimerWheel`` at that time. The wheel is ``SLOTS`` lists, slot ``i`` holding what
is due in ``[i*W, (i+1)*W)``; a loop timer fires each slot once its interval has fully passed,
so nothing fires early and nothing fires more than ``W`` (plus the loop's own latency) late.

Filing is lazy, so moving a deadline usually costs one comparison:

- an item filed for time ``t`` whose deadline moves *later* stays filed at ``t``; when that slot
  fires, ``expire(now)`` sees the deadline has not passed and files the item again;
- a deadline that moves *earlier* takes the item out of its slot and files it in the earlier one;
- deadlines beyond the wheel's horizon are filed in its last slot and filed again from there.

An item is in at most one slot, and the wheel holds it: an owner that is done (a closed
connection) ``unfile``s itself, so the wheel never keeps its memory alive. Without that, every
connection closed within the horizon would stay referenced until its slot fired: at a thousand
TLS handshakes a second, hundreds of megabytes of closed connections.

The loop timer is armed for the end of the first slot that holds an entry, not every ``W``: a
gateway whose deadlines are all far (keep-alive idle, pool idle: beyond the horizon) wakes once
per horizon, not 200 times a second, and one with nothing filed never. Entries are filed no
earlier than needed (a deadline that moves later stays where it is), so the first filled slot
is rarely moved: only a deadline earlier than every other one re-arms the timer.
"""

cimport cython

import asyncio
import time
import weakref

cdef extern from *:
    """
    #include <time.h>
    #ifndef CLOCK_MONOTONIC_COARSE
    #define CLOCK_MONOTONIC_COARSE CLOCK_MONOTONIC
    #endif
    static double fastgw_read_clock(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    static double fastgw_clock_resolution(clockid_t id) {
        struct timespec ts;
        clock_getres(id, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    static long long fastgw_wall_second(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME_COARSE, &ts);
        return (long long)ts.tv_sec;
    }
    """
    ctypedef int clockid_t
    clockid_t CLOCK_MONOTONIC
    clockid_t CLOCK_MONOTONIC_COARSE
    double fastgw_read_clock(clockid_t id) nogil
    double fastgw_clock_resolution(clockid_t id) nogil
    long long fastgw_wall_second() nogil


cdef enum:
    SLOTS = 1024  # with W = 5 ms: a horizon of 5.12 s; later deadlines are filed again
cdef double W = 0.005      # slot width: the most a deadline fires late, beside the loop's latency

SLOT_SECONDS = W


cdef double _held = 0.0  # tests: coarse() reads this instead while set (see hold())
cdef double _coarse_resolution = fastgw_clock_resolution(CLOCK_MONOTONIC_COARSE)  # one jiffy


cdef double monotonic() noexcept nogil:
    return fastgw_read_clock(CLOCK_MONOTONIC)


cdef double coarse() noexcept nogil:
    """Never earlier than the precise clock: the coarse reading plus its resolution (so a deadline
    computed from it never fires before its time, and at most that resolution after)."""
    if _held != 0.0:
        return _held
    return fastgw_read_clock(CLOCK_MONOTONIC_COARSE) + _coarse_resolution


def now() -> float:
    """The coarse monotonic clock deadlines and rate limits are computed with (the clock of
    ``time.monotonic``, a few milliseconds behind it at most)."""
    return coarse()


def hold(at: float | None) -> None:
    """For tests of time-driven plugin logic without sockets: ``now()`` reads ``at`` until
    ``hold(None)``. Never used by the gateway itself."""
    global _held
    _held = at or 0.0


# -- the Date header line (RFC 9110 6.6.1) ------------------------------------------------------

cdef tuple _DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
cdef tuple _MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


cpdef bytes http_date(long long second):
    """IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), in English whatever the locale; not
    email.utils' formatdate, which loads the email package (half a megabyte) for this."""
    t = time.gmtime(second)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec
    )


cdef long long _date_second = -1
cdef bytes _date_line = b""


cdef bytes date_line():
    """PERF: the line changes once a second; between changes this is a clock read and a compare."""
    global _date_second, _date_line
    cdef long long second = fastgw_wall_second()
    if second != _date_second:
        _date_second = second
        _date_line = b"Date: " + http_date(second) + b"\r\n"
    return _date_line


def current_date_line() -> bytes:
    return date_line()


# -- the timer wheel -------------------------------------------------------------------------------

cdef class Timed:
    """Base of what files deadlines on a wheel; ``expire`` is called when its slot fires."""

    cpdef expire(self, double now):
        pass


@cython.final
cdef class TimerWheel:
    def __init__(self, loop) -> None:
        self.slots = [[] for _ in range(SLOTS)]
        self.cursor = <long long>(coarse() / W)
        self.filed = 0
        self.loop = loop
        self.handle = None
        self.armed_slot = 0
        self.ticking = False
        self.ticks = 0
        self.wakeups = 0

    cdef int file(self, Timed item, double at) except -1:
        """Have ``item.expire`` called once ``at`` has passed (within one slot); ``at`` <= 0:
        nothing. Cheap when the item is already filed no later than ``at``."""
        cdef long long slot
        if at <= 0.0:
            return 0
        if item.wheel_at != 0.0:
            if item.wheel_at <= at + W:
                return 0  # an entry no later than this one's slot will fire and file it again
            self.unfile(item)  # moved earlier: out of the later slot, into the earlier one
        slot = <long long>(at / W)
        if slot < self.cursor:
            slot = self.cursor  # already due: the next tick
        elif slot >= self.cursor + SLOTS:
            slot = self.cursor + SLOTS - 1  # beyond the horizon: filed again from the last slot
        (<list>self.slots[slot % SLOTS]).append(item)
        item.wheel_at = (slot + 1) * W
        item.wheel_slot = slot
        self.filed += 1
        if self.ticking:
            return 0  # _tick arms once it is done, for the first filled slot
        if self.handle is None:
            self._arm(slot)
        elif slot < self.armed_slot:
            self.handle.cancel()  # due before every other entry: wake for it
            self._arm(slot)
        return 0

    cdef int unfile(self, Timed item) except -1:
        """Take ``item`` off the wheel (its deadline is gone: the connection closed)."""
        if item.wheel_at == 0.0:
            return 0
        cdef list slot = <list>self.slots[item.wheel_slot % SLOTS]
        cdef Py_ssize_t i
        for i in range(len(slot) - 1, -1, -1):  # a slot holds few items: the newest filed last
            if slot[i] is item:
                del slot[i]
                self.filed -= 1
                break
        item.wheel_at = 0.0
        return 0

    cdef int _arm(self, long long slot) except -1:
        # The loop's clock and ours are both CLOCK_MONOTONIC. The loop timer's resolution is a
        # millisecond and uvloop reads its clock once per iteration, so a timer may run a little
        # before the slot's end: never ask for less than a millisecond ahead (no busy loop).
        self.armed_slot = slot
        self.handle = self.loop.call_at(max((slot + 1) * W, monotonic() + 0.001), self._tick)
        return 0

    cdef long long _first_filled(self) except -1:
        """The first slot from the cursor that holds an entry (filed > 0: there is one)."""
        cdef list slots = self.slots
        cdef long long slot
        for slot in range(self.cursor, self.cursor + SLOTS):
            if <list>slots[slot % SLOTS]:
                return slot
        return self.cursor + SLOTS - 1

    def _tick(self) -> None:
        """Fire every slot whose interval has passed, then arm for the first one left."""
        self.handle = None
        self.wakeups += 1
        self.ticking = True
        try:
            self._fire()
        finally:
            self.ticking = False
        if self.filed > 0:
            self._arm(self._first_filled())

    cdef int _fire(self) except -1:
        cdef double now = monotonic()
        cdef long long last = <long long>(now / W)  # slots before this one have fully passed
        cdef list due
        cdef Timed item
        cdef double fires_at
        while self.cursor < last:
            due = <list>self.slots[self.cursor % SLOTS]
            fires_at = (self.cursor + 1) * W
            self.cursor += 1
            self.ticks += 1
            if not due:
                continue
            self.slots[(self.cursor - 1) % SLOTS] = []
            self.filed -= len(due)
            for item in due:
                if item.wheel_at != fires_at:
                    continue  # filed again since (by an earlier item's expire): not due
                item.wheel_at = 0.0
                try:
                    item.expire(now)
                except Exception:
                    # A bug in one owner must not stop every other deadline.
                    import logging
                    logging.getLogger("fastgw").exception("deadline handler %r failed", item)
        return 0

    @property
    def pending(self) -> int:
        """Items filed (each is in one slot at most)."""
        return self.filed


_wheels: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimerWheel]" = weakref.WeakKeyDictionary()


cpdef TimerWheel running_wheel():
    """The running loop's wheel. Connections look it up once, when they are made: a process
    normally runs one loop, but tests run several gateways, each on its own loop and thread."""
    loop = asyncio.get_running_loop()
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = TimerWheel(loop)
    return wheel


def file(Timed item, double at) -> None:
    """``running_wheel().file(item, at)`` for Python owners (a pool's waiters)."""
    running_wheel().file(item, at)


def unfile(Timed item) -> None:
    """``running_wheel().unfile(item)`` for Python owners."""
    running_wheel().unfile(item)
