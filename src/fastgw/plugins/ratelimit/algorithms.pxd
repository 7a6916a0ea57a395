# The per-process limiters (algorithms.pyx), for compiled callers (admission.pyx).

cdef class LocalLimiter:
    cdef readonly int limit
    cdef readonly double window
    cdef readonly Py_ssize_t max_keys
    cdef readonly dict states

    cpdef int hit(self, object key, double now) except -2
    cdef int admit(self, object key, double now, double* reset) except -2
        # hit, and when admitted, reset_in after it (at ``reset``) from the same lookup
    cpdef double reset_in(self, object key, double now) except? -1.0
    cpdef double retry_in(self, object key, double now) except? -1.0
    cpdef bint is_idle(self, object state, double now) except -1
    cpdef int reset_seconds(self, object key, double now) except -1
    cpdef make_room(self, double now)


cdef class BucketState:
    cdef readonly double tokens    # at the last update
    cdef readonly double updated   # the time of it


cdef class TokenBucket(LocalLimiter):
    cdef double _tokens(self, object key, double now) except? -1.0


cdef class WindowState:
    cdef readonly double index     # the number of the current window (now // window)
    cdef readonly double previous  # the previous window's count
    cdef readonly double current   # the current window's count


cdef class SlidingWindow(LocalLimiter):
    cdef tuple _counts(self, object key, double now)


cpdef int whole_seconds(double seconds)  # a delay in whole seconds, rounded up
