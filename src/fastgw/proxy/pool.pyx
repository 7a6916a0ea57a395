# -- a target's keep-alive pool, its synchronous half -----------------------------------------------

cdef class PoolCore(Timed):
    """The synchronous half of a target's keep-alive pool (``upstream/pool.py`` adds the async
    half): a LIFO idle list, the counters, and taking back a connection after a response.

    An HTTP/2 pool (``max_streams``) counts streams, not sockets: ``take_idle_conn`` hands out a
    new stream (``H2UpstreamStream``, the exchange's UpstreamSide) on the oldest of its
    connections that takes new streams and has room under its limit (the server's
    SETTINGS_MAX_CONCURRENT_STREAMS and ``max_streams``), so streams pack onto few connections;
    ``in_use`` counts streams, and a released stream's room goes to a waiter first."""

    def __init__(self, int max_idle, double idle_timeout, int max_streams=0) -> None:
        self.idle = Shelf()
        self.open = 0  # connections open or being opened
        self.in_use = 0
        self.waiters = deque()  # (future, deadline) of requests waiting for a connection
        self.opened = 0
        self.reused = 0
        self.connect_errors = 0
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_streams = max_streams
        self.sessions = []

    @property
    def stats(self) -> dict:
        """Counters read by metrics and tests."""
        return {"opened": self.opened, "reused": self.reused, "connect_errors": self.connect_errors}

    cdef UpstreamSide take_idle_conn(self):
        """The most recently used idle connection still open, or None (the synchronous fast path)."""
        if self.max_streams:
            return self.take_stream()
        cdef Shelf idle = self.idle
        cdef UpstreamSide conn
        while idle.count:
            conn = <UpstreamSide>idle.take()
            if not conn.closed:
                conn.unpark()
                self.in_use += 1
                self.reused += 1
                return conn
        return None

    def take_idle(self) -> UpstreamSide | None:
        return self.take_idle_conn()

    cdef int release_conn(self, UpstreamSide conn) except -1:
        """Take a connection back after a response; keep it only if it is clean and reusable."""
        self.in_use -= 1
        if self.max_streams:
            (<H2UpstreamStream>conn).session.stream_released()
            return self.serve_waiters() if self.waiters else 0
        if not conn.reusable or conn.closed:
            conn.close()
            return 0
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()[0]
            if not waiter.done():
                self.in_use += 1
                self.reused += 1
                waiter.set_result(conn)
                return 0
        if self.idle.count >= self.max_idle:
            conn.close()
            return 0
        conn.park(coarse() + self.idle_timeout)  # PERF: no precise read; a few ms early at most
        self.idle.put(conn)
        return 0

    cdef UpstreamSide take_stream(self):
        """(HTTP/2) A stream on the oldest connection with room for one, or None."""
        cdef H2UpstreamConnection session
        for session in self.sessions:  # PERF: a few connections, usually one
            if session.usable and session.active < session.limit:
                self.in_use += 1
                return session.open_stream()
        return None

    cpdef int serve_waiters(self) except -1:
        """(HTTP/2) Hand the waiters streams while a connection has room (a stream ended, a
        connection opened, or a server raised its limit)."""
        cdef UpstreamSide stream
        waiters = self.waiters
        while waiters:
            if waiters[0][0].done():
                waiters.popleft()
                continue
            stream = self.take_stream()
            if stream is None:
                return 0
            waiters.popleft()[0].set_result(stream)
        return 0

    def release(self, UpstreamSide conn) -> None:
        self.release_conn(conn)

    def give_back(self, UpstreamSide conn) -> None:
        """A waiter was cancelled after it was handed a connection: return it unused."""
        conn.reusable = not conn.closed
        self.release_conn(conn)
