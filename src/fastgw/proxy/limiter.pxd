# A concurrency limit with a bounded wait queue, a route's or an upstream's (limiter.pyx).

cdef class Limiter:
    cdef readonly str name               # "route 'x'" or "upstream 'y'", for the 503 message
    cdef readonly int limit
    cdef readonly int queue_max
    cdef readonly double queue_timeout
    cdef public int active               # slots taken
    cdef object waiting                  # deque[(Exchange, TimerHandle)]
    cdef public long long refused        # answered 503 (full, or waited too long)

    cdef bint admit(self, Exchange exchange) except -1   # True: a slot; False: waiting, or 503
    cdef int release(self) except -1
    cdef int forget(self, Exchange exchange) except -1
