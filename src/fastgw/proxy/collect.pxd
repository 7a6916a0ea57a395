# An in-process client side (collect.pyx): the gateway's own calls (an aggregate's backends)
# made through the same exchange, pools, balancers, breakers and retries as proxied requests,
# the response gathered in memory.

cdef class Collector(Downstream):
    cdef object future                   # Future[Collected]
    cdef Exchange x
    cdef Py_ssize_t max_body
    cdef int status
    cdef list headers
    cdef list body
    cdef Py_ssize_t size
    cdef object fault                    # why the gateway cut the response (too large), or None
