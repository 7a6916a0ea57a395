"""The per-process limiters: token bucket and sliding window, over one dict of key -> state.

Both allow ``limit`` requests per ``window`` seconds for each key. ``now`` is passed in (the
plugin passes the process's coarse clock; tests pass their own), so the arithmetic is exact and
testable. A hit is one dict lookup and a few float operations on a small state updated in place;
the only allocation is the key itself (made by the caller) and a key's state when it is new
(a BucketState or WindowState: C doubles).

- **Token bucket**: ``limit`` tokens at most, refilled continuously at ``limit / window`` per
  second; a request takes one. Bursts up to ``limit``, then a steady rate.
- **Sliding window** (the weighted two-window counter): windows are aligned to multiples of
  ``window``; a request is admitted while ``previous * (1 - elapsed / window) + current`` stays
  within ``limit``. Exact in the first window, a close approximation of a true sliding log after,
  at two numbers per key.

Memory is bounded by ``max_keys``: when a new key would exceed it, idle keys (a full bucket, a
window with nothing left to count) are dropped, then the oldest ones until a quarter is free, so
the sweep's cost is spread over many inserts.

``hit`` answers the requests left after this one, or -1 when it is refused. ``reset_in`` and
``retry_in`` say, for the headers, how long until the key's quota is whole again (bucket full,
window over) and how long until a refused key is admitted again.

The Redis scripts in ``redis_store`` implement the same arithmetic on the server.

PERF: compiled (cdef classes, C doubles): a hit is on the hot path of every rate-limited request,
and in Python the limiter's arithmetic and the reset for the headers cost about 1.5 us of a
request's CPU; here a fraction of that.
"""

from libc.math cimport ceil

DEFAULT_MAX_KEYS = 100_000


cdef class LocalLimiter:
    """Shared bookkeeping; subclasses define the arithmetic (fields in algorithms.pxd)."""

    def __init__(self, int limit, double window, Py_ssize_t max_keys=DEFAULT_MAX_KEYS) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.states = {}

    cpdef int hit(self, object key, double now) except -2:
        raise NotImplementedError

    cdef int admit(self, object key, double now, double* reset) except -2:
        cdef int remaining = self.hit(key, now)
        if remaining >= 0:
            reset[0] = self.reset_in(key, now)
        return remaining

    def admit_for_headers(self, key: object, double now) -> tuple:
        """``admit`` for Python callers (tests): (requests left or -1, reset_in when admitted)."""
        cdef double reset = -1.0
        cdef int remaining = self.admit(key, now, &reset)
        return remaining, reset

    cpdef double reset_in(self, object key, double now) except? -1.0:
        raise NotImplementedError

    cpdef double retry_in(self, object key, double now) except? -1.0:
        raise NotImplementedError

    cpdef bint is_idle(self, object state, double now) except -1:
        """Would forgetting this state change no answer?"""
        raise NotImplementedError

    cpdef int reset_seconds(self, object key, double now) except -1:
        """``reset_in`` in whole seconds, rounded up, for the headers."""
        return whole_seconds(self.reset_in(key, now))

    cpdef make_room(self, double now):
        states = self.states
        for key in [k for k, state in states.items() if self.is_idle(state, now)]:
            del states[key]
        excess = len(states) - self.max_keys * 3 // 4
        if excess > 0:  # still busy: forget the oldest keys (dicts keep insertion order)
            for key in list(states)[:excess]:
                del states[key]


cdef class BucketState:
    """A token bucket's key: its tokens at its last update. PERF: C doubles, not a list of
    Python floats (no float made or read per hit)."""

    def __init__(self, double tokens, double updated) -> None:
        self.tokens = tokens
        self.updated = updated


cdef class TokenBucket(LocalLimiter):
    """State per key: a BucketState."""

    cpdef int hit(self, object key, double now) except -2:
        cdef double reset
        return self.admit(key, now, &reset)

    cdef int admit(self, object key, double now, double* reset) except -2:
        # PERF: the reset for the headers from the state just updated (one lookup, not two):
        # at ``now`` the bucket holds exactly what the hit left in it.
        cdef BucketState state = self.states.get(key)
        cdef double tokens
        if state is None:
            if len(self.states) >= self.max_keys:
                self.make_room(now)
            self.states[key] = BucketState(self.limit - 1.0, now)
            reset[0] = (self.limit - (self.limit - 1.0)) * self.window / self.limit
            return self.limit - 1
        tokens = state.tokens + (now - state.updated) * self.limit / self.window
        if tokens > self.limit:
            tokens = self.limit
        state.updated = now
        if tokens < 1.0:
            state.tokens = tokens
            return -1
        state.tokens = tokens - 1.0
        reset[0] = (self.limit - (tokens - 1.0)) * self.window / self.limit
        return <int>(tokens - 1.0)

    cdef double _tokens(self, object key, double now) except? -1.0:
        cdef BucketState state = self.states.get(key)
        if state is None:
            return self.limit
        return min(<double>self.limit, state.tokens + (now - state.updated) * self.limit / self.window)

    cpdef double reset_in(self, object key, double now) except? -1.0:
        return (self.limit - self._tokens(key, now)) * self.window / self.limit

    cpdef double retry_in(self, object key, double now) except? -1.0:
        return max(0.0, (1.0 - self._tokens(key, now)) * self.window / self.limit)

    cpdef bint is_idle(self, object state, double now) except -1:
        cdef BucketState bucket = <BucketState?>state
        return bucket.tokens + (now - bucket.updated) * self.limit / self.window >= self.limit


cdef class WindowState:
    """A sliding window's key: the number of its current window, the previous window's count
    and the current one's. PERF: C doubles, as BucketState."""

    def __init__(self, double index, double previous, double current) -> None:
        self.index = index
        self.previous = previous
        self.current = current


cdef class SlidingWindow(LocalLimiter):
    """State per key: a WindowState."""

    cpdef int hit(self, object key, double now) except -2:
        cdef double reset
        return self.admit(key, now, &reset)

    cdef int admit(self, object key, double now, double* reset) except -2:
        cdef double window = self.window
        cdef double index = (now // window)  # windows are numbered, not compared by float start times
        cdef WindowState state = self.states.get(key)
        cdef double used, current
        if state is None:
            if len(self.states) >= self.max_keys:
                self.make_room(now)
            state = WindowState(index, 0.0, 0.0)
            self.states[key] = state
        elif state.index != index:
            # PERF: roll over in place: the current count becomes the previous one only when
            # the windows are adjacent; after a longer silence both are zero.
            state.previous = state.current if index - state.index == 1.0 else 0.0
            state.current = 0.0
            state.index = index
        current = state.current
        used = state.previous * (1.0 - (now - index * window) / window) + current
        if used + 1.0 > self.limit:
            return -1
        state.current = current + 1.0
        reset[0] = (index + 1.0) * window - now  # reset_in's arithmetic, without its lookup
        return <int>(self.limit - used - 1.0)

    cdef tuple _counts(self, object key, double now):
        """(window start, previous count, current count) as ``hit`` would see them at ``now``."""
        cdef double index = now // self.window
        cdef double start = index * self.window
        cdef WindowState state = self.states.get(key)
        if state is None or index - state.index > 1.0:
            return start, 0.0, 0.0
        if state.index != index:
            return start, state.current, 0.0
        return start, state.previous, state.current

    cpdef double reset_in(self, object key, double now) except? -1.0:
        return (now // self.window + 1.0) * self.window - now

    cpdef double retry_in(self, object key, double now) except? -1.0:
        return sliding_retry_in(*self._counts(key, now), self.limit, self.window, now)

    cpdef bint is_idle(self, object state, double now) except -1:
        return now // self.window - (<WindowState?>state).index > 1.0


cpdef double sliding_retry_in(
    double start, double previous, double current, int limit, double window, double now
):
    """Seconds from ``now`` until ``previous * weight + current + 1 <= limit`` holds again.

    While the current count leaves room, only the previous window's weight has to fall; else it
    takes the next window, where the current count becomes the decaying previous one.
    """
    cdef double elapsed
    if current + 1.0 <= limit:
        if previous <= 0.0:
            return 0.0
        elapsed = window * (1.0 - (limit - 1.0 - current) / previous)
        return max(0.0, start + elapsed - now)
    elapsed = window * (1.0 - (limit - 1.0) / current) if current > 0 else 0.0
    return start + window + max(0.0, elapsed) - now


cpdef int whole_seconds(double seconds):
    """A delay in whole seconds, rounded up (a client that waits that long is not early)."""
    return max(0, <int>ceil(seconds - 1e-9))
