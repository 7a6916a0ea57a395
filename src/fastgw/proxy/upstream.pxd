# The HTTP/1.1 upstream side (upstream.pyx): one keep-alive connection to a target, serving one
# exchange at a time. connecting -> idle (in its pool) -> bound (exchange set) -> idle ... -> closed.

cdef class UpstreamConnection(UpstreamSide):
    cdef public object transport
    cdef object write_bound              # transport.write, looked up once
    cdef Outlet outlet
    cdef public HttpParser parser        # one per connection, reused across responses
    cdef public bint interim             # the head parsed last was a 1xx
    cdef public double deadline          # bound: the exchange's timeout; idle: the pool's; 0 = none
    cdef TimerWheel wheel
    cdef public double read_timeout
    cdef public double send_timeout
    cdef public double head_timeout
    cdef public bint got_head            # the final response head arrived (then: read_timeout)
    cdef public bint sending             # the request body is still going up
    cdef public bint chunked             # ... re-framed chunked (its length was not known)
    cdef public bint reading_paused
    cdef public bint close_delimited     # the current response's body ends when the upstream closes

    cdef bytes render_head(self, Exchange x)
    cdef int write(self, bytes data) except -1
    cdef int arm(self, double now) except -1
    cdef int on_head(self, Exchange x, HttpParser parser) except -1
    cdef int on_message_complete(self, Exchange x, HttpParser parser) except -1
    cdef int lose(self, int cause, str what, int status) except -1
    cdef int detach(self, bint reusable) except -1
    cdef int set_deadline(self, double at) except -1
    cpdef abort(self)


cdef double upstream_deadline(Exchange x, double now, bint paused, bint sending, bint got_head,
                              double send_timeout, double head_timeout, double read_timeout) noexcept
