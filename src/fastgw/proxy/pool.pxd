# The synchronous half of a target's keep-alive pool (pool.pyx); upstream.pool.TargetPool adds
# opening connections and waiting for one, and files its waiters' deadlines (it is Timed). An
# HTTP/2 pool (max_streams > 0) hands out streams on a few shared connections instead.

cdef class PoolCore(Timed):
    cdef public Shelf idle               # idle connections, the last parked taken first
    cdef public int open                 # connections open or being opened
    cdef public int in_use
    cdef public object waiters           # deque[(Future, deadline)]
    cdef public long long opened
    cdef public long long reused
    cdef public long long connect_errors
    cdef public int max_idle
    cdef public double idle_timeout
    cdef public int max_streams          # HTTP/2: streams per connection at most; 0: an HTTP/1.1 pool
    cdef public list sessions            # HTTP/2: its connections (H2UpstreamConnection), oldest first

    cdef UpstreamSide take_idle_conn(self)
    cdef int release_conn(self, UpstreamSide conn) except -1
    cdef UpstreamSide take_stream(self)
    cpdef int serve_waiters(self) except -1
