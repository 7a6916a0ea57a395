# fastgw.http._clock: table of contents.
#
# The code and its theory of operation are in _clock.pyx; the typed face is _clock.pyi.
# Time for the hot path (two clocks read in C), the Date header line, and one timer wheel per
# event loop on which every connection files its deadlines without a timer of its own.


cdef double monotonic() noexcept nogil   # CLOCK_MONOTONIC, to the nanosecond: latencies
cdef double coarse() noexcept nogil      # CLOCK_MONOTONIC_COARSE (a few ms behind): deadlines
cdef bytes date_line()                   # b"Date: <IMF-fixdate>\r\n", re-rendered once a second


cdef class Timed:
    # Something with a deadline filed on a TimerWheel (a connection, a pool's waiters).
    cdef double wheel_at                 # when the wheel slot it is filed in fires; 0: not filed
    cdef long long wheel_slot            # that slot's absolute index (valid while wheel_at != 0)

    cpdef expire(self, double now)       # the wheel's slot fired: act if a deadline passed, or
                                         # file again for the next one


cdef class TimerWheel:
    cdef list slots                      # SLOTS lists of Timed, slot i covers [i*W, (i+1)*W)
    cdef long long cursor                # the next slot (absolute index) to fire
    cdef Py_ssize_t filed                # entries in the slots (stale ones included)
    cdef object loop
    cdef object handle                   # the loop timer of the next tick, None when idle
    cdef long long armed_slot            # the slot it is armed for: the first that holds an entry
    cdef bint ticking                    # inside _tick: filing does not arm (_tick arms at its end)
    cdef readonly long long ticks        # slots passed (tests: the wheel really runs)
    cdef readonly long long wakeups      # times the loop timer ran _tick

    cdef int file(self, Timed item, double at) except -1
    cdef int unfile(self, Timed item) except -1
    cdef int _arm(self, long long slot) except -1
    cdef long long _first_filled(self) except -1
    cdef int _fire(self) except -1


cpdef TimerWheel running_wheel()         # the wheel of the running event loop (made on first use)
