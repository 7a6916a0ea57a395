# -- concurrency limits --------------------------------------------------------------------------------

@cython.final
cdef class Limiter:
    """At most ``limit`` requests in flight (a route's, or an upstream's), up to ``queue_max`` more
    waiting at most ``queue_timeout`` seconds for a slot, the rest answered 503 at once: a slow
    upstream cannot take every connection, and a burst waits briefly instead of failing."""

    def __init__(self, str name, int limit, int queue_max, double queue_timeout) -> None:
        self.name = name
        self.limit = limit
        self.queue_max = queue_max
        self.queue_timeout = queue_timeout
        self.active = 0
        self.waiting = deque()  # (exchange, timer handle)
        self.refused = 0

    cdef bint admit(self, Exchange exchange) except -1:
        """True: a slot is taken. False: the exchange waits for one, or was answered 503."""
        if self.active < self.limit:
            self.active += 1
            return True
        if len(self.waiting) < self.queue_max:
            timer = asyncio.get_running_loop().call_later(self.queue_timeout, self._expire, exchange)
            self.waiting.append((exchange, timer))
            return False
        self.refused += 1
        exchange.answer_fault(
            UpstreamFault(f"{self.name}: {self.limit} requests in flight, {self.queue_max} waiting", 503),
            [(b"Retry-After", b"1")],
        )
        return False

    cdef int release(self) except -1:
        """A slot is free: hand it to the oldest waiter still there, else keep it free."""
        cdef Exchange exchange
        while self.waiting:
            exchange, timer = self.waiting.popleft()
            timer.cancel()
            if exchange.state != X_DONE:
                # The slot passes on without ever being free; the waiter resumes on the next turn
                # of the loop, not inside whatever released it.
                asyncio.get_running_loop().call_soon(exchange._forward_admitted)
                return 0
        self.active -= 1
        return 0

    cdef int forget(self, Exchange exchange) except -1:
        """The exchange ended while waiting here."""
        for entry in self.waiting:
            if entry[0] is exchange:
                entry[1].cancel()
                self.waiting.remove(entry)
                break
        return 0

    def _expire(self, Exchange exchange) -> None:
        for entry in self.waiting:
            if entry[0] is exchange:
                self.waiting.remove(entry)
                self.refused += 1
                exchange.answer_fault(
                    UpstreamFault(f"{self.name}: no request slot within {self.queue_timeout:g}s", 503),
                    [(b"Retry-After", b"1")],
                )
                return
