# -- the HTTP/1.1 upstream side --------------------------------------------------------------------

cdef Py_ssize_t UPSTREAM_MAX_HEAD = 64 * 1024  # a response head (nginx's proxy_buffer_size is 4-8 KiB)
cdef str CLOSED_EARLY = "closed the connection before the response completed"


@cython.final
cdef class UpstreamConnection(UpstreamSide):
    """One keep-alive HTTP/1.1 connection to a target, serving one exchange at a time.

    States: connecting -> idle (in its pool) -> bound (``exchange`` set) -> idle ... -> closed.
    While bound, its response parser drives the exchange: ``on_upstream_head`` with the parsed
    head's lines (where they lie in the parser's buffer), ``on_upstream_body`` per piece,
    ``on_upstream_complete`` at the end; after each read the exchange flushes to its client. It
    renders the request head itself, and frames the request body (re-chunked when its length
    is not known). It goes back to its pool only when request and response both ended cleanly
    with known framing; bytes arriving while idle, or a close, make it unusable.

    One deadline at a time: the send timeout while the request body streams up (refreshed by
    progress), the head timeout until the response head, then the read timeout between reads;
    none while the gateway itself paused reading for a slow client (the route's total timeout
    still runs); while idle, the pool's idle timeout."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.transport = None
        self.outlet.fd = -1
        self.exchange = None
        self.parser = HttpParser(False, UPSTREAM_MAX_HEAD, MAX_RESPONSE_FIELDS)
        self.interim = False
        self.served = 0
        self.received = False
        self.closed = False
        self.deadline = 0.0
        self.read_timeout = 60.0
        self.send_timeout = 60.0
        self.sending = False
        self.chunked = False
        self.reading_paused = False
        self.reusable = False
        self.close_delimited = False

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write_bound = transport.write
        outlet_open(&self.outlet, transport)
        self.wheel = running_wheel()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.outlet.fd = -1
        self.deadline = 0.0
        cdef Exchange exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            self.pool.release_conn(self)
            # A pooled connection the upstream had already closed is not the request's failure
            # (the retry rules send it once more on a fresh one when that is safe).
            cause = F_STALE if not self.received and self.served > 0 else F_RESET
            exchange.on_upstream_failed(cause, CLOSED_EARLY, 502)
        self.pool.forget(self)
        self.wheel.unfile(self)  # a closed connection is not kept alive by its last deadline

    def data_received(self, data) -> None:
        cdef Exchange exchange = self.exchange
        if exchange is None:
            # An idle connection must be silent; anything else means it is out of sync.
            self.close()
            return
        self.received = True
        self.now = _now()
        if not self.sending and not self.reading_paused:
            self.arm(self.now)  # progress: the next pause is timed from now
        cdef HttpParser parser = self.parser
        parser.feed(data if type(data) is bytes else bytes(data))
        cdef int event
        try:
            while self.exchange is exchange:
                event = parser.next()
                if event == EV_MORE:
                    break
                if event == EV_HEAD:
                    self.on_head(exchange, parser)
                elif event == EV_BODY:
                    exchange.on_upstream_body(body_piece(parser))
                elif event == EV_DONE:
                    self.on_message_complete(exchange, parser)
                else:
                    parser.release()
                    self.lose(0, response_problem(event), 502)
                    return
            else:
                if parser.pos < parser.end:
                    self.reusable = False  # bytes after the response: a reply nobody asked for
        except Exception:
            # Not the upstream's fault: our own code raised. Log it and answer 500.
            parser.release()
            log.error("internal error handling an upstream response", exc_info=True)
            if self.exchange is exchange:
                self.exchange = None
                self.abort()
                exchange.conn = None
                self.pool.release_conn(self)
                exchange.fail(UpstreamFault("internal error", 500))
            return
        parser.release()
        if self.exchange is exchange:
            exchange.on_upstream_flush()
        elif not self.closed:
            # The response ended inside this read. Releasing only now, after the parser returned,
            # means no other exchange can be handed this connection while its old read is parsed.
            # (A connection dropped on the way was released by whoever dropped it.)
            self.pool.release_conn(self)

    def eof_received(self) -> bool:
        cdef Exchange exchange = self.exchange
        if exchange is not None and self.close_delimited:
            # A body framed by the close ends here (llhttp would only confirm it).
            self.detach(False)
            exchange.on_upstream_complete(False)
            if not self.closed:  # else whoever closed it (a failing body filter) released it
                self.pool.release_conn(self)
        # uvloop closes the transport on return, and drops what is written to it from now until
        # connection_lost: so must the direct path (the pool may hand the connection out once
        # more in between; that request is then retried or failed as before).
        self.outlet.fd = -1
        return False

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- parser events -----------------------------------------------------------------------
    cdef int on_head(self, Exchange x, HttpParser parser) except -1:
        cdef int status = parser.status()
        cdef HeadLines lines
        lines.base = parser.head
        lines.names = parser.st.names
        lines.values = parser.st.values
        lines.count = parser.st.count
        lines.reason = parser.st.target
        if status < 200 and status != 101:
            self.interim = True  # 1xx: passed on (or not) by the exchange; the final head follows
            x.on_upstream_interim(status, &lines)
            return 0
        if not self.got_head:
            self.got_head = True
            if self.head_timeout and not self.reading_paused:
                self.arm(self.now)  # from here the read timeout applies between reads
        # Neither a length nor chunked framing: the body ends when the upstream closes.
        self.close_delimited = not (
            parser.st.skip_body or status == 204 or status == 304 or parser.framed()
        )
        x.on_upstream_head(status, &lines)
        return 0

    cdef int on_message_complete(self, Exchange x, HttpParser parser) except -1:
        if self.interim:
            self.interim = False
            return 0
        self.detach(parser.keep_alive() and x.request_done)
        x.on_upstream_complete(self.reusable)
        return 0

    # -- UpstreamSide: what the exchange calls -------------------------------------------------
    cdef int begin(self, Exchange x, double now) except -1:
        """Bind to ``x``: its head and the body pieces it holds go up in one write."""
        cdef RouteCore route = x.route
        self.exchange = x
        self.received = False
        self.close_delimited = False
        self.interim = False
        self.parser.st.skip_body = x.method == _HEAD  # llhttp cannot know the request was a HEAD
        self.read_timeout = route.read_timeout
        self.send_timeout = route.send_timeout
        self.head_timeout = route.head_timeout
        self.got_head = False
        self.chunked = x.chunked
        self.sending = not x.request_done
        self.arm(now)
        cdef bytes head = self.render_head(x)
        cdef list pending = x.pending
        cdef list out
        if not pending and not (self.chunked and x.request_done):
            self.write(head)
            return 0
        out = [head]
        if pending:
            for piece in pending:
                if self.chunked:
                    out += (chunk_header(PyBytes_GET_SIZE(<bytes>piece)), piece, CRLF)
                else:
                    out.append(piece)
            pending.clear()
        if self.chunked and x.request_done:
            out.append(LAST_CHUNK)  # trailers are not forwarded
            self.sending = False
        self.outlet.queued = True  # writelines may leave some in the transport
        self.transport.writelines(out)
        return 0

    cdef int send_body(self, bytes data) except -1:
        if self.chunked:
            self.write(chunk_header(PyBytes_GET_SIZE(data)))
            self.write(data)
            self.write(CRLF)
        else:
            self.write(data)
        if self.sending:
            self.arm(self.exchange.client.now)  # progress: the send timeout counts from the last write
        return 0

    cdef int end_request(self) except -1:
        """The whole request went up: from now on the head/read timeouts apply."""
        if not self.sending:
            return 0
        if self.chunked:
            self.write(LAST_CHUNK)  # trailers are not forwarded
        self.sending = False
        self.arm(_now())
        return 0

    cdef int pause_response(self) except -1:
        """Backpressure from a slow client: the upstream is not stalled, so no read deadline."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.reading_paused = True
            if self.exchange is not None:
                self.set_deadline(self.exchange.total_deadline)
        return 0

    cdef int resume_response(self) except -1:
        if not self.reading_paused:
            return 0  # PERF: our own flag, not transport.is_reading(): detach() asks every response
        self.reading_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self.arm(_now())
        return 0

    cdef int drop(self) except -1:
        self.exchange = None
        self.detach(False)
        self.abort()
        self.pool.release_conn(self)
        return 0

    cdef int park(self, double idle_deadline) except -1:
        self.set_deadline(idle_deadline)
        return 0

    cdef int unpark(self) except -1:
        self.deadline = 0.0
        return 0

    # -- the rest ------------------------------------------------------------------------------
    cdef bytes render_head(self, Exchange x):
        """The request head sent upstream: ours, never the client's bytes as they came."""
        cdef RouteCore route = x.route
        cdef bytes path = route.path_upstream(x.path, x.params)
        cdef bytes host = x.host_header if route.preserve_host and x.host_header else x.target.host_header
        cdef list extra = x.upstream_headers
        cdef bytes name, value
        cdef int cl_width = 0
        cdef Py_ssize_t size = (
            PyBytes_GET_SIZE(x.method) + 1 + PyBytes_GET_SIZE(path) + PyBytes_GET_SIZE(x.query)
            + 17 + PyBytes_GET_SIZE(host) + 2 + PyBytes_GET_SIZE(x.pass_block) + 2
        )
        if x.chunked:
            size += PyBytes_GET_SIZE(TRANSFER_CHUNKED)
        elif x.content_length >= 0:
            cl_width = dec_digits(<unsigned long long>x.content_length)
            size += 16 + cl_width + 2
        if extra:
            for name, value in extra:
                size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef char* p = PyBytes_AS_STRING(out)
        p = put(p, x.method)
        p[0] = b" "
        p = put(p + 1, path)
        p = put(p, x.query)
        p = put_c(p, " HTTP/1.1\r\nHost: ", 17)
        p = put(p, host)
        p = put_c(p, "\r\n", 2)
        p = put(p, x.pass_block)
        if x.chunked:
            p = put(p, TRANSFER_CHUNKED)
        elif x.content_length >= 0:
            p = put_c(p, "Content-Length: ", 16)
            p = put_dec(p, <unsigned long long>x.content_length, cl_width)
            p = put_c(p, "\r\n", 2)
        if extra:
            for name, value in extra:
                p = put_line(p, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
        p = put_c(p, "\r\n", 2)
        check_end(p, out)
        return out

    cdef int write(self, bytes data) except -1:
        """PERF: the transport's bound write, looked up once per connection."""
        outlet_write(&self.outlet, self.write_bound, self.transport, data)
        return 0

    cdef int arm(self, double now) except -1:
        """Set the deadline that applies now (see the class's docstring)."""
        cdef Exchange x = self.exchange
        if x is None:
            self.deadline = 0.0
            return 0
        self.set_deadline(upstream_deadline(
            x, now, self.reading_paused, self.sending, self.got_head, self.send_timeout, self.head_timeout,
            self.read_timeout,
        ))  # fmt: skip
        return 0

    cdef int lose(self, int cause, str what, int status) except -1:
        """This attempt failed here (malformed, timed out): unbind, abort, give the pool its
        slot back, then tell the exchange (which may retry on another connection)."""
        cdef Exchange x = self.exchange
        self.exchange = None
        self.detach(False)
        self.abort()
        self.pool.release_conn(self)
        x.on_upstream_failed(cause, what, status)
        return 0

    cdef int detach(self, bint reusable) except -1:
        """Unbind from the exchange. Called from inside a parser callback, the pool takes the
        connection back when ``data_received`` returns; elsewhere, whoever detached releases it."""
        self.exchange = None
        self.deadline = 0.0
        self.served += 1
        self.reusable = reusable and not self.closed
        if reusable:
            self.resume_response()  # so an idle connection still notices the upstream closing
        return 0

    cdef int set_deadline(self, double at) except -1:
        self.deadline = at
        self.wheel.file(self, at)
        return 0

    cpdef close(self):
        self.closed = True
        self.outlet.fd = -1
        if self.transport is not None:
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        self.outlet.fd = -1
        if self.transport is not None:
            self.transport.abort()

    cpdef expire(self, double now):
        """The wheel's call: time out the exchange, or close an idle connection, when due."""
        if self.closed or not self.deadline:
            return
        if now < self.deadline:
            self.wheel.file(self, self.deadline)
            return
        self.deadline = 0.0
        if self.exchange is not None:
            self.lose(F_TIMEOUT, None, 504)
        else:
            self.close()  # idle past the pool's idle timeout


cdef double upstream_deadline(
    Exchange x, double now, bint paused, bint sending, bint got_head, double send_timeout, double head_timeout,
    double read_timeout,
) noexcept:
    """When an upstream side's attempt times out, as of ``now`` (both protocols' rule): the send
    timeout while the request body goes up, the head timeout until the response head, then the
    read timeout between reads; only the route's total timeout while the client reads slowly
    (``paused``); never past the total timeout."""
    if paused:
        return x.total_deadline
    cdef double at = now + (
        send_timeout if sending else head_timeout if not got_head and head_timeout else read_timeout
    )
    if x.total_deadline and x.total_deadline < at:
        at = x.total_deadline
    return at


cdef str response_problem(int event):
    """Why an upstream response was refused (the client gets 502 naming the upstream, then this)."""
    if event == EV_HEAD_TOO_BIG:
        return "sent a response head over 64 KiB"
    if event == EV_TOO_MANY_FIELDS:
        return "sent too many response headers"
    return "sent a malformed response"
