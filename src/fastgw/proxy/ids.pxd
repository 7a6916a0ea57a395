# Request ids and W3C trace context (ids.pyx).

cdef class RequestIds:
    # A per-process random prefix (made after fork) and a counter, formatted in C; the same
    # object's splitmix64 state makes trace and span ids.
    cdef readonly bytes prefix
    cdef readonly unsigned long long number
    cdef unsigned long long random_state

    cpdef bytes next(self)
    cdef unsigned long long random64(self) noexcept

cdef bint valid_request_id(const char* s, Py_ssize_t n) noexcept        # [A-Za-z0-9._:-]{1,128}
cdef bint valid_traceparent(const char* s, Py_ssize_t n) noexcept nogil
cdef bytes render_traceparent(RequestIds ids, const char* client, unsigned long long sample_max)
