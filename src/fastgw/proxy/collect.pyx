# -- the gateway's own calls, answered in memory ------------------------------------------------------

class Collected:
    """The response to one of the gateway's own calls: status, header pairs, the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, int status, list headers, bytes body) -> None:
        self.status = status
        self.headers = headers
        self.body = body


@cython.final
cdef class Collector(Downstream):
    """A client side in the gateway's own process: an aggregate route's backend call goes through
    an Exchange like any proxied request (the upstream's pools, balancer, health checks, circuit
    breakers, retries, timeouts and counters), and its response is gathered here, at most
    ``max_body`` bytes, into the future ``fetch`` returned."""

    def __init__(self, ListenerCore listener, Py_ssize_t max_body, future) -> None:
        self.listener = listener
        self.peer_ip = b""
        self.protocol = "1.1"  # what it sends upstream: the gateway's own call has no client
        self.trusted = False
        self.now = _now()
        self.observers = _NO_OBSERVERS
        self.future = future
        self.max_body = max_body
        self.status = 0
        self.headers = []
        self.body = []
        self.size = 0
        self.fault = None

    def _on_done(self, future) -> None:
        """The caller stopped waiting (the client left, a required call failed): the upstream
        request is dropped, like a client's that leaves."""
        if future.cancelled() and self.x is not None and self.x.state != X_DONE:
            self.x.client_lost("the gateway's own call was cancelled")

    cdef int send_continue(self, Exchange x) except -1:
        return 0

    cdef int send_interim(self, Exchange x, int status, HeadLines* lines) except -1:
        return 0

    cdef int send_head(self, Exchange x, ReplyHead* head) except -1:
        cdef HeadLines* lines = head.lines
        cdef int i
        self.status = head.status
        if head.kept != NULL:
            self.headers = list(<list>head.kept)
        else:
            for i in range(lines.count):
                if head.kinds[i] <= R_CL:
                    self.headers.append((
                        PyBytes_FromStringAndSize(lines.base + lines.names[i].off, lines.names[i].len),
                        PyBytes_FromStringAndSize(lines.base + lines.values[i].off, lines.values[i].len),
                    ))
        if head.added != NULL:
            self.headers += <list>head.added
        return 0

    cdef int send_body(self, Exchange x, bytes data) except -1:
        self.size += PyBytes_GET_SIZE(data)
        if self.size > self.max_body:
            self.fault = UpstreamFault(f"{x.upstream_name()} answered more than {self.max_body} bytes", 502)
            x.fail(self.fault)
            return 0
        x.bytes_sent += PyBytes_GET_SIZE(data)
        self.body.append(data)
        return 0

    cdef int send_end(self, Exchange x) except -1:
        if not self.future.done():
            self.future.set_result(Collected(self.status, self.headers, b"".join(self.body)))
        return 0

    cdef int send_error(self, Exchange x, object fault, list extra) except -1:
        if not self.future.done():
            self.future.set_exception(fault)
        return 0

    cdef int send_answer(self, Exchange x, object response) except -1:
        if not self.future.done():
            self.future.set_result(Collected(response.status, list(response.headers), response.body))
        return 0

    cdef int flush(self) except -1:
        return 0

    cdef int cut(self, Exchange x) except -1:
        if not self.future.done():
            fault = self.fault or x.upstream_error
            self.future.set_exception(
                fault if fault is not None else UpstreamFault(f"{x.upstream_name()} response cut", 502)
            )
        return 0

    cdef int pause_request(self, int reason) except -1:
        return 0

    cdef int resume_request(self, int reason) except -1:
        return 0

    cdef int exchange_ended(self, Exchange x) except -1:
        self.x = None
        return 0


def fetch(RouteCore route, object parent, bytes method, bytes path, bytes pass_block, Py_ssize_t max_body):
    """One request of the gateway's own (an aggregate's backend call) through ``route``'s
    upstream: ``method path`` with ``pass_block``'s header lines, for ``parent`` (whose request id
    it carries). A Future of its ``Collected`` response; an ``HttpFault`` when it fails (a 502,
    503 or 504 naming the upstream), as a proxied request would be answered. Cancelling the
    future drops the upstream request."""
    cdef Exchange client_request = <Exchange?>parent  # the hooks' context is the exchange
    future = asyncio.get_running_loop().create_future()
    cdef Collector collector = Collector(client_request.listener, max_body, future)
    cdef Exchange x = Exchange.__new__(Exchange)
    x.setup(collector)
    x.method = method
    x.method_slot = METHOD_NAMES.index(method.decode("ascii")) if method.decode("ascii") in METHOD_NAMES else 7
    x.path = path
    x.query = b""
    x.http_10 = False
    x.keep_alive = True
    x.host = b""
    x.host_header = b""
    x.content_length = -1
    x.chunked = False
    x.expect_continue = False
    x.request_id = client_request.request_id
    x.pass_block = pass_block
    x.request_done = True
    x.route = route
    x.state = X_HOOKS
    collector.x = x
    future.add_done_callback(collector._on_done)
    x.forward()
    return future
