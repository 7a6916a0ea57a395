# -- HTTP/2 to upstreams: one exchange's stream, and its request's header fields ----------------------
#
# The H2UpstreamStream is an exchange's UpstreamSide on an H2UpstreamConnection (h2_upstream.pyx,
# whose opening comment tells a stream's life): what the exchange calls (begin, the request body,
# backpressure both ways, drop), the request body's queue nghttp2 reads DATA from, the ways the
# stream ends, and its deadlines. The request's HEADERS are built from the exchange's forwarded
# header lines by the functions below (names lower-cased, the connection-specific ones left out).

@cython.final
cdef class H2UpstreamStream(UpstreamSide):
    """One exchange's stream on an H2UpstreamConnection (see the section's opening comment).

    One deadline at a time, as the HTTP/1.1 side's: the send timeout while the request body goes
    up (refreshed as nghttp2 takes it), the head timeout until the response head, then the read
    timeout between DATA; none while the client reads slowly (the route's total timeout runs)."""

    # -- UpstreamSide: what the exchange calls ---------------------------------------------------------
    cdef int begin(self, Exchange x, double now) except -1:
        cdef RouteCore route = x.route
        cdef H2UpstreamConnection session = self.session
        cdef list pending = x.pending
        self.exchange = x
        self.read_timeout = route.read_timeout
        self.send_timeout = route.send_timeout
        self.head_timeout = route.head_timeout
        self.sending = not x.request_done
        self.out_eof = x.request_done
        if pending:
            for piece in pending:
                self.out.append(piece)
                self.out_size += PyBytes_GET_SIZE(<bytes>piece)
            pending.clear()
        self.arm(now)
        if session.closed or session.session == NULL:
            asyncio.get_running_loop().call_soon(self._not_started)  # not from inside attach()
            return 0
        return session.submit(self, x)

    def _not_started(self) -> None:
        if self.exchange is not None:
            self.lose(F_STALE, NOT_STARTED, 502)

    cdef int send_body(self, bytes data) except -1:
        cdef Exchange x = self.exchange
        self.out.append(data)
        self.out_size += PyBytes_GET_SIZE(data)
        if self.out_size > x.listener.buffer_bytes and not self.write_paused:
            self.write_paused = True  # the stream's window (or the socket) is not keeping up
            x.upstream_write_paused()
        if self.sending:
            self.arm(x.client.now)  # progress: the send timeout counts from the last piece
        if self.deferred and not self.closed and self.id:
            self.deferred = False
            nghttp2_session_resume_data(self.session.session, self.id)
        return self.session.flush()

    cdef int end_request(self) except -1:
        if self.out_eof:
            return 0
        self.out_eof = True
        if self.deferred and not self.closed and self.id:
            self.deferred = False
            nghttp2_session_resume_data(self.session.session, self.id)
        return self.session.flush()

    cdef int pause_response(self) except -1:
        """Backpressure from a slow client: DATA is no longer acknowledged (the stream's window
        closes), and no read deadline (the server is not stalled)."""
        self.reading_paused = True
        if self.exchange is not None:
            self.set_deadline(self.exchange.total_deadline)
        return 0

    cdef int resume_response(self) except -1:
        if not self.reading_paused:
            return 0
        self.reading_paused = False
        if self.unconsumed:
            self.consume(self.unconsumed)
            self.unconsumed = 0
            self.session.flush()
        self.arm(_now())
        return 0

    cdef int drop(self) except -1:
        """The exchange gives it up (its client left or was answered otherwise): RST_STREAM
        CANCEL tells the server to stop (a gRPC call is cancelled)."""
        self.detach()
        self.reset(NGHTTP2_CANCEL)
        return 0

    cdef int park(self, double idle_deadline) except -1:
        return 0  # a stream is never idle in a pool: its connection is

    cdef int unpark(self) except -1:
        return 0

    cpdef close(self):
        self.reset(NGHTTP2_CANCEL)

    # -- the rest ----------------------------------------------------------------------------------------
    cdef Py_ssize_t take(self, uint8_t* buf, size_t length, uint32_t* flags) except -1:
        """nghttp2 reads the request body for a DATA frame of at most ``length`` bytes (the
        windows allow that much)."""
        cdef Py_ssize_t n = take_pieces(self.out, &self.out_offset, buf, length)
        self.out_size -= n
        cdef Exchange x = self.exchange
        if self.out_size == 0:
            if self.out_eof:
                flags[0] |= NGHTTP2_DATA_FLAG_EOF
                if self.sending:
                    self.sending = False
                    self.arm(_now())  # all sent: the head timeout from now
            elif n == 0:
                self.deferred = True
                return NGHTTP2_ERR_DEFERRED
        if n and self.sending:
            self.arm(_now())  # progress
        if self.write_paused and x is not None and self.out_size <= x.listener.buffer_bytes // 2:
            self.write_paused = False
            x.upstream_write_resumed()
        return n

    cdef int complete(self) except -1:
        """END_STREAM: the response is complete (its trailers handed over first)."""
        cdef Exchange x = self.exchange
        if x is None:
            return 0
        if self.trailers is not None:
            x.on_upstream_trailers(self.trailers)
            self.trailers = None
        cdef bint unsent = not self.out_eof or self.out_size
        self.session.served += 1
        self.served = 1
        self.detach()
        if unsent:
            self.reset(NGHTTP2_CANCEL)  # answered before the request ended: the rest is not wanted
        x.on_upstream_complete(True)
        return 0

    cdef int lose(self, int cause, str what, int status) except -1:
        """This attempt failed here: unbind, reset the stream, give the room back, then tell the
        exchange (which may retry elsewhere)."""
        cdef Exchange x = self.exchange
        if x is None:
            return 0
        self.detach()
        self.reset(NGHTTP2_CANCEL)
        x.on_upstream_failed(cause, what, status)
        return 0

    cdef int internal_error(self) except -1:
        """Our own code raised while handling its response: the exchange answers 500 (or is cut)."""
        cdef Exchange x = self.exchange
        if x is None:
            return 0
        self.detach()
        self.reset(NGHTTP2_INTERNAL_ERROR)
        x.conn = None
        x.fail(UpstreamFault("internal error", 500))
        return 0

    cdef int detach(self) except -1:
        """Unbind from the exchange and give the connection its room back (once)."""
        self.exchange = None
        self.deadline = 0.0
        if self.out_size:
            self.out.clear()
            self.out_size = self.out_offset = 0
        if self.wheel_at != 0.0:
            self.session.wheel.unfile(self)  # else the wheel keeps it until its slot fires
        if not self.released:
            self.released = True
            self.pool.release_conn(self)
        return 0

    cdef int reset(self, uint32_t error_code) except -1:
        cdef H2UpstreamConnection session = self.session
        if self.id and not self.closed and not session.closed and session.session != NULL:
            nghttp2_submit_rst_stream(session.session, NGHTTP2_FLAG_NONE, self.id, error_code)
            session.flush()
        return 0

    cdef int consume(self, Py_ssize_t n) except -1:
        if n and self.id and self.session.session != NULL:
            nghttp2_session_consume(self.session.session, self.id, n)
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

    cdef int set_deadline(self, double at) except -1:
        self.deadline = at
        self.session.wheel.file(self, at)
        return 0

    cpdef expire(self, double now):
        """The wheel's call: time the exchange out when its deadline passed."""
        if self.exchange is None or not self.deadline:
            return
        if now < self.deadline:
            self.session.wheel.file(self, self.deadline)
            return
        self.deadline = 0.0
        self.lose(F_TIMEOUT, None, 504)


# -- the request's header fields -------------------------------------------------------------------------

cdef inline size_t _set_nv(nghttp2_nv* nva, size_t n, const char* name, size_t namelen, const char* value,
                           size_t valuelen) noexcept:
    nva[n].name = <uint8_t*>name
    nva[n].namelen = namelen
    nva[n].value = <uint8_t*>value
    nva[n].valuelen = valuelen
    nva[n].flags = NGHTTP2_NV_FLAG_NONE  # nghttp2 copies both when the request is submitted
    return n + 1


cdef Py_ssize_t _count_lines(bytes block) noexcept:
    cdef const char* p = PyBytes_AS_STRING(block)
    cdef const char* end = p + PyBytes_GET_SIZE(block)
    cdef Py_ssize_t count = 0
    while p < end:
        p = <const char*>memchr(p, b"\n", end - p)
        if p == NULL:
            return count + 1
        count += 1
        p += 1
    return count


cdef bint _connection_specific(const char* s, Py_ssize_t n) noexcept nogil:
    """Fields HTTP/2 forbids (RFC 9113 8.2.2) or that the pseudo-headers and framing replace:
    ``s`` is lower-case."""
    if n == 10:
        return memcmp(s, b"connection", 10) == 0 or memcmp(s, b"keep-alive", 10) == 0
    if n == 2:
        return memcmp(s, b"te", 2) == 0  # "trailers" is added back for gRPC
    if n == 4:
        return memcmp(s, b"host", 4) == 0  # :authority says it
    if n == 7:
        return memcmp(s, b"upgrade", 7) == 0
    if n == 14:
        return memcmp(s, b"content-length", 14) == 0  # ours follows from the request's framing
    if n == 16:
        return memcmp(s, b"proxy-connection", 16) == 0
    if n == 17:
        return memcmp(s, b"transfer-encoding", 17) == 0
    return False


cdef struct RequestFields:
    char* lower                          # where the next lower-case name is written
    const char* rid                      # the listener's request-id header name, lower-case
    Py_ssize_t rid_len
    bint grpc                            # a Content-Type application/grpc came


cdef size_t _add_field(
    nghttp2_nv* nva, size_t n, const char* name, Py_ssize_t namelen, const char* value, Py_ssize_t valuelen,
    RequestFields* fields,
) noexcept:
    """One header line as a field: its name copied lower-case to ``fields.lower`` (advanced past
    it), left out when connection-specific; ``fields.grpc`` set for Content-Type application/grpc.
    PERF: a value new on every request (the request id, traceparent) is not put in the HPACK
    table, where it would only push out the fields that repeat."""
    cdef char* out = fields.lower
    cdef Py_ssize_t i
    cdef char c
    for i in range(namelen):
        c = name[i]
        out[i] = c + 32 if 65 <= c <= 90 else c
    if namelen == 0 or _connection_specific(out, namelen):
        return n
    fields.lower = out + namelen
    if namelen == 12 and valuelen >= 16 and memcmp(out, b"content-type", 12) == 0 and _ieq(value, "application/grpc", 16):
        fields.grpc = True
    n = _set_nv(nva, n, out, namelen, value, valuelen)
    if (namelen == fields.rid_len and memcmp(out, fields.rid, namelen) == 0) or (
        namelen == 11 and memcmp(out, b"traceparent", 11) == 0
    ):
        nva[n - 1].flags = NGHTTP2_NV_FLAG_NO_INDEX
    return n


cdef size_t _pass_fields(nghttp2_nv* nva, size_t n, const char* p, Py_ssize_t size, RequestFields* fields) noexcept:
    """The forwarded header lines ("Name: value\\r\\n", as request_head.pyx and plugins wrote them)."""
    cdef const char* end = p + size
    cdef const char* line_end
    cdef const char* colon
    cdef const char* value
    cdef const char* value_end
    while p < end:
        line_end = <const char*>memchr(p, b"\r", end - p)
        if line_end == NULL:
            line_end = end
        colon = <const char*>memchr(p, b":", line_end - p)
        if colon != NULL:
            value = colon + 1
            while value < line_end and (value[0] == b" " or value[0] == b"\t"):
                value += 1
            value_end = line_end
            while value_end > value and ((value_end - 1)[0] == b" " or (value_end - 1)[0] == b"\t"):
                value_end -= 1
            n = _add_field(nva, n, p, colon - p, value, value_end - value, fields)
        p = line_end + 2
    return n
