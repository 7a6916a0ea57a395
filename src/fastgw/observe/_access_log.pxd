# fastgw.observe._access_log: table of contents (the code and its theory are in _access_log.pyx).

cimport cython

from fastgw._proxy cimport Exchange


cdef class AccessLog:
    cdef readonly object config          # config.schema.AccessLogConfig
    cdef int* fields                     # the configured fields' codes (F_*), in line order
    cdef int field_count
    cdef double sample                   # fraction kept of requests that may be sampled away
    cdef unsigned long long rng          # xorshift64* state for sampling (0: not seeded yet)
    cdef char* buffer                    # lines not written yet ...
    cdef Py_ssize_t size                 # ... their bytes ...
    cdef Py_ssize_t capacity             # ... and what the allocation holds
    cdef Py_ssize_t buffer_bytes         # a buffer this full is written at once
    cdef readonly int fd                 # opened on the first write, in the process that writes
    cdef object timer                    # asyncio.TimerHandle of the pending timed flush, or None
    cdef readonly AccessLog successor    # a retired log's replacement (late lines go there)
    cdef readonly bint retired
    cdef readonly int write_errors
    cdef long long time_second           # the second whose text is in time_text ...
    cdef char time_text[20]              # ... "YYYY-MM-DDTHH:MM:SS"

    cpdef record(self, Exchange x, int status, double now)  # the hot path's one call
    # The line's writers. PERF: final, so called directly (no vtable) and inlined by the compiler.
    @cython.final
    cdef int append_line(self, Exchange x, int status, double now) except -1
    @cython.final
    cdef int reserve(self, Py_ssize_t more) except -1
    @cython.final
    cdef int put_field(self, int code, Exchange x, int status, double now) except -1
    @cython.final
    cdef double next_random(self)
    @cython.final
    cdef int put_null(self) except -1
    @cython.final
    cdef int put_literal(self, bytes json) except -1
    @cython.final
    cdef int put_number(self, long long value) except -1
    @cython.final
    cdef int put_raw(self, const char* data, Py_ssize_t n, bint latin1) except -1
    @cython.final
    cdef int put_bytes(self, object data, Py_ssize_t start, Py_ssize_t end) except -1
    @cython.final
    cdef int put_text(self, object value) except -1
    @cython.final
    cdef int put_time(self, double ago) except -1
