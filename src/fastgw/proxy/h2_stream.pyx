# -- HTTP/2 from clients: one request stream, the Downstream of its exchange ----------------------------
#
# The request head arrives as HPACK-decoded fields (nghttp2 has checked them: pseudo-headers,
# lower-case names, no connection-specific fields, values without CR/LF/NUL, content-length
# against the DATA). It is written out as the HTTP/1.1 head it stands for (the request line from
# :method and :path, Host from :authority, cookie crumbs joined as RFC 9113 8.2.3 says, chunked
# framing when the length is not known) and read by the same code as an HTTP/1.1 head
# (request_head.pyx), so that every rule (limits, forwarded headers, request ids, trace
# context, underscores, mTLS facts) holds for both protocols by construction.
#
# The response goes out as HEADERS (the upstream's lines with lower-case names, the gateway's own
# fields) and DATA read from a queue of body pieces by nghttp2 as the client's flow-control
# windows allow. A queue over the listener's buffer pauses the exchange's upstream reads; a queue
# the client's window keeps from moving for the send timeout resets the stream.

cdef tuple STATUS_TEXT = tuple([b"%d" % code for code in range(1000)])


cdef nghttp2_ssize _read_body(
    nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags,
    nghttp2_data_source* source, void* user_data,
) noexcept:
    try:
        return (<H2Stream>source.ptr).take(buf, length, data_flags)
    except BaseException:
        try:
            log.error("internal error in an HTTP/2 response", exc_info=True)
        except BaseException:
            pass
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE  # this stream is reset; the others go on


cdef inline bint _is(const char* s, size_t n, const char* literal, size_t m) noexcept nogil:
    return n == m and memcmp(s, literal, m) == 0


cdef bint connection_specific(const char* s, Py_ssize_t n) noexcept nogil:
    """A field HTTP/2 forbids (RFC 9113 8.2.2), in any case: never sent to an HTTP/2 client."""
    if n == 10:
        return _ieq(s, "connection", 10) or _ieq(s, "keep-alive", 10)
    if n == 16:
        return _ieq(s, "proxy-connection", 16)
    if n == 17:
        return _ieq(s, "transfer-encoding", 17)
    return n == 7 and _ieq(s, "upgrade", 7)


@cython.final
cdef class H2Stream(Downstream):
    """One request stream of an HTTP/2 connection (see the section's opening comment)."""

    cdef int init(self, H2Connection conn, int32_t stream_id) except -1:
        cdef ClientProtocol client = conn.client
        self.conn = conn
        self.id = stream_id
        self.listener = client.listener
        self.peer_ip = client.peer_ip
        self.trusted = client.trusted
        self.now = client.now
        self.observers = client.observers
        self.protocol = "2"
        self.tls = client.tls
        self.draining = False
        self.last_host = client.last_host
        self.x = None
        self.closed = self.submitted = self.sent_end = False
        self.method = self.target = self.authority = self.host = None
        self.cookies = None
        self.head_size = 0
        self.field_count = 0
        self.oversize = False
        self.malformed = None
        self.has_length = False
        self.grpc = False
        self.grpc_timeout = 0.0
        self.out = []
        self.out_offset = self.out_size = 0
        self.out_eof = self.deferred = self.upstream_paused = False
        self.trailers = None
        self.paused = 0
        self.unconsumed = 0
        self.deadline = self.send_deadline = 0.0
        return 0

    # -- the request -------------------------------------------------------------------------------
    cdef int add_field(self, const char* name, size_t namelen, const char* value, size_t valuelen) except -1:
        """One decoded field of the request's header block."""
        if self.oversize:
            return 0
        self.head_size += namelen + valuelen + 32  # RFC 7541 4.1: what a header list costs
        self.field_count += 1
        if self.head_size > self.listener.max_header_bytes or self.field_count > self.listener.max_headers + 4:
            self.oversize = True  # answered 431; nothing more of it is kept (an HPACK bomb stops here)
            return 0
        if namelen and name[0] == b":":
            text = PyBytes_FromStringAndSize(value, valuelen)
            if _is(name, namelen, ":method", 7):
                self.method = text
            elif _is(name, namelen, ":path", 5):
                self.target = text
            elif _is(name, namelen, ":authority", 10):
                self.authority = text
            elif not _is(name, namelen, ":scheme", 7):  # the listener says the scheme (X-Forwarded-Proto)
                self.malformed = f"unsupported pseudo-header {PyBytes_FromStringAndSize(name, namelen)!r}"
            return 0
        if _is(name, namelen, "cookie", 6):
            if self.cookies is None:
                self.cookies = []
            self.cookies.append(PyBytes_FromStringAndSize(value, valuelen))
            return 0
        if _is(name, namelen, "host", 4):
            self.host = PyBytes_FromStringAndSize(value, valuelen)
            return 0
        if _is(name, namelen, "content-length", 14):
            self.has_length = True
        elif _is(name, namelen, "content-type", 12):
            self.grpc = valuelen >= 16 and memcmp(value, "application/grpc", 16) == 0
        elif _is(name, namelen, "grpc-timeout", 12):
            self.grpc_timeout = grpc_timeout_seconds(PyBytes_FromStringAndSize(value, valuelen))
        cdef bytearray scratch = self.conn.scratch
        cdef Py_ssize_t at = PyByteArray_GET_SIZE(scratch)
        PyByteArray_Resize(scratch, at + namelen + valuelen + 4)
        put_line(PyByteArray_AS_STRING(scratch) + at, name, namelen, value, valuelen)
        return 0

    cdef int start(self, bint end_stream) except -1:
        """The header block is complete: the request as an Exchange, started at once (streams do
        not wait for each other), or the answer that refuses it."""
        if self.oversize:
            return self.refuse(ClientFault("request header block too large", 431))
        if self.malformed is not None:
            return self.refuse(ClientFault(self.malformed))
        authority = self.authority if self.authority is not None else self.host
        if self.authority is not None and self.host is not None and self.host.lower() != self.authority.lower():
            return self.refuse(ClientFault(":authority and Host disagree"))
        if self.method is None or self.target is None:
            return self.refuse(ClientFault("missing :method or :path"))  # nghttp2 refuses these first
        cdef ListenerCore listener = self.listener
        cdef ClientProtocol client
        cdef HttpParser parser = self.conn.head_parser()
        parser.feed(self.http1_head(authority, end_stream))
        cdef int event = parser.next()
        cdef Exchange x
        try:
            if event != EV_HEAD:
                raise request_fault(parser, event, False)
            x = read_request_head(self, parser)
        except HttpFault as fault:
            parser.release()
            return self.refuse(fault)
        parser.release()
        client = self.conn.client
        client.last_host = self.last_host  # PERF: the connection's next streams repeat it (init
                                           # copies it from here)
        self.x = x
        if self.grpc_timeout > 0.0:
            x.total_deadline = self.now + self.grpc_timeout  # the client's deadline bounds the call
        if not x.request_done:
            self.set_deadline(self.now + listener.body_timeout)
        x.start()
        return 0

    cdef bytes http1_head(self, object authority, bint end_stream):
        """The HTTP/1.1 head this stream's request stands for, in one allocation."""
        cdef bytearray fields = self.conn.scratch
        cdef bytes cookie = b"; ".join(self.cookies) if self.cookies is not None else None
        cdef bint chunked = not end_stream and not self.has_length  # the length is not known ahead
        cdef Py_ssize_t size = (
            PyBytes_GET_SIZE(self.method) + PyBytes_GET_SIZE(self.target) + 12 + PyByteArray_GET_SIZE(fields) + 2
        )
        if authority is not None:
            size += 8 + PyBytes_GET_SIZE(<bytes>authority)
        if cookie is not None:
            size += 10 + PyBytes_GET_SIZE(cookie)
        if chunked:
            size += 28
        cdef bytes head = PyBytes_FromStringAndSize(NULL, size)
        cdef char* p = put(PyBytes_AS_STRING(head), self.method)
        p = put_c(p, " ", 1)
        p = put(p, self.target)
        p = put_c(p, " HTTP/1.1\r\n", 11)
        if authority is not None:
            p = put_line(p, "host", 4, PyBytes_AS_STRING(<bytes>authority), PyBytes_GET_SIZE(<bytes>authority))
        p = put_c(p, PyByteArray_AS_STRING(fields), PyByteArray_GET_SIZE(fields))
        if cookie is not None:
            p = put_line(p, "cookie", 6, PyBytes_AS_STRING(cookie), PyBytes_GET_SIZE(cookie))
        if chunked:
            p = put_c(p, "transfer-encoding: chunked\r\n", 28)
        p = put_c(p, "\r\n", 2)
        check_end(p, head)
        return head

    cdef int refuse(self, fault) except -1:
        """A request head refused before it became an exchange: the error answer, counted as
        unrouted, as an HTTP/1.1 connection answers one."""
        if self.observers.unrouted is not None:
            self.observers.unrouted.count(METHOD_SLOTS - 1, fault.status, -1.0, -1.0)
        body = error_body(fault.message, None)
        self.respond(fault.status, [(b"content-type", b"application/json")], body, False)
        return 0

    cdef int received(self, const uint8_t* data, size_t length) except -1:
        """DATA of the request body: to the exchange; its bytes acknowledged (the window opened
        again) only while the exchange takes more."""
        cdef Exchange x = self.x
        if x is None or x.state == X_DONE or x.request_done:
            self.consume(length)  # nobody wants it: acknowledged and dropped
            return 0
        x.on_client_body(PyBytes_FromStringAndSize(<const char*>data, length))
        if self.paused:
            self.unconsumed += length
        else:
            self.consume(length)
            self.set_deadline(_now() + self.listener.body_timeout)
        return 0

    cdef int request_ended(self) except -1:
        self.deadline = 0.0
        cdef Exchange x = self.x
        if x is not None and not x.request_done and x.state != X_DONE:
            x.on_client_complete()
        return 0

    cdef int consume(self, Py_ssize_t n) except -1:
        if n and self.conn.session != NULL:
            nghttp2_session_consume(self.conn.session, self.id, n)
        return 0

    cdef int ended(self, uint32_t error_code) except -1:
        """nghttp2 closed the stream: completed, or reset by either side."""
        self.closed = True
        self.deadline = self.send_deadline = 0.0
        self.conn.client.wheel.unfile(self)
        self.out = []
        self.out_size = 0
        cdef Exchange x = self.x
        if x is not None:
            self.x = None
            if x.state != X_DONE:
                x.client_lost(LEFT_DURING if self.submitted else LEFT_BEFORE)
        return 0

    cdef int abandon(self, str reason) except -1:
        cdef Exchange x = self.x
        self.x = None
        if x is not None and x.state != X_DONE:
            x.client_lost(reason)
        return 0

    # -- the response body's queue -----------------------------------------------------------------
    cdef Py_ssize_t take(self, uint8_t* buf, size_t length, uint32_t* flags) except -1:
        """nghttp2 reads the body for a DATA frame of at most ``length`` bytes."""
        cdef Py_ssize_t n = take_pieces(self.out, &self.out_offset, buf, length)
        self.out_size -= n
        if self.out_size == 0:
            self.send_deadline = 0.0
            if self.out_eof:
                flags[0] |= NGHTTP2_DATA_FLAG_EOF
                if self.trailers is not None:
                    flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
                    self.submit_trailers()
            elif n == 0:
                self.deferred = True
                return NGHTTP2_ERR_DEFERRED
        elif n:
            self.send_deadline = _now() + self.listener.send_timeout  # it moved: the timeout restarts
        if self.upstream_paused and self.out_size <= self.listener.buffer_bytes // 2 and self.x is not None:
            self.upstream_paused = False
            self.x.resume_upstream()
        return n

    cdef int queue(self, bytes data) except -1:
        if self.closed:
            return 0
        self.out.append(data)
        self.out_size += PyBytes_GET_SIZE(data)
        if self.send_deadline == 0.0:
            self.send_deadline = _now() + self.listener.send_timeout
            self.conn.client.wheel.file(self, self.send_deadline)
        if self.out_size > self.listener.buffer_bytes and not self.upstream_paused and self.x is not None:
            self.upstream_paused = True  # the client reads slower than the upstream sends
            self.x.pause_upstream()
        return self.resume()

    cdef int resume(self) except -1:
        if self.deferred and not self.closed and self.conn.session != NULL:
            self.deferred = False
            nghttp2_session_resume_data(self.conn.session, self.id)
        return 0

    # -- HEADERS -----------------------------------------------------------------------------------------
    cdef int submit(
        self, int status, list pairs, HeadLines* lines, const unsigned char* kinds, bint body
    ) except -1:
        """The response head (``status``, the upstream's passing ``lines``, then ``pairs``), with
        DATA to follow from the queue when ``body``."""
        if self.closed or self.conn.session == NULL:
            return 0
        cdef nghttp2_data_provider2 provider
        provider.source.ptr = <void*>self
        provider.read_callback = _read_body
        cdef size_t count = 0
        cdef char* names = NULL
        cdef nghttp2_nv* nva = self.fields(status, pairs, lines, kinds, &count, &names)
        try:
            rv = nghttp2_submit_response2(self.conn.session, self.id, nva, count, &provider if body else NULL)
        finally:
            free_fields(nva, names)
        if rv == 0:
            self.submitted = True
        else:
            log.debug("HTTP/2 response not submitted: %s", nghttp2_strerror(rv).decode())
        return 0

    cdef nghttp2_nv* fields(
        self, int status, list pairs, HeadLines* lines, const unsigned char* kinds, size_t* count, char** names
    ) except NULL:
        """The nv array of a head: ``:status``, the lines whose kinds pass, the pairs; names in
        lower case (HTTP/2 wants them so; an HTTP/1.1 upstream may send any case), connection-
        specific ones left out. The lower-case names are copies in one buffer (``names``; both
        freed by free_fields); values point into ``lines`` and ``pairs``, which outlive the
        submit call. The request id, new on every response, is never indexed by HPACK."""
        cdef Py_ssize_t most = 1 + len(pairs) + (lines.count if lines != NULL else 0)
        cdef Py_ssize_t names_size = 1
        cdef int i
        cdef bytes name, value
        if lines != NULL:
            for i in range(lines.count):
                names_size += lines.names[i].len
        for name, value in pairs:
            names_size += PyBytes_GET_SIZE(name)
        cdef nghttp2_nv* nva = <nghttp2_nv*>PyMem_Malloc(most * sizeof(nghttp2_nv))
        names[0] = <char*>PyMem_Malloc(names_size)
        if nva == NULL or names[0] == NULL:
            PyMem_Free(nva)
            PyMem_Free(names[0])
            raise MemoryError()
        cdef char* spare = names[0]
        cdef bytes code = <bytes>STATUS_TEXT[status if 0 <= status < 1000 else 500]
        nva[0].name = <uint8_t*>":status"
        nva[0].namelen = 7
        nva[0].value = <uint8_t*>PyBytes_AS_STRING(code)
        nva[0].valuelen = 3
        nva[0].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME
        cdef size_t n = 1
        if lines != NULL:
            for i in range(lines.count):
                if kinds[i] <= R_CL:
                    spare = add_field(&nva[n], spare, lines.base + lines.names[i].off, lines.names[i].len,
                                      lines.base + lines.values[i].off, lines.values[i].len)  # fmt: skip
                    n += 1
        cdef bytes rid = self.listener.request_id_lower
        for name, value in pairs:
            if connection_specific(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)):
                continue
            spare = add_field(&nva[n], spare, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name),
                              PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))  # fmt: skip
            if name is rid:
                nva[n].flags = NGHTTP2_NV_FLAG_NO_INDEX
            n += 1
        count[0] = n
        return nva

    cdef int respond(self, int status, list pairs, bytes body, bint head_only) except -1:
        """A whole response of the gateway's own (an error, a plugin's answer) on this stream."""
        pairs.append((b"content-length", b"%d" % PyBytes_GET_SIZE(body)))
        if body and not head_only:
            self.queue(body)
        self.out_eof = True
        self.submit(status, pairs, NULL, NULL, bool(body) and not head_only)
        self.conn.flush()
        return 0

    cdef int grpc_error(self, Exchange x, int status, str message) except -1:
        """The gateway's own refusal of a gRPC call, as gRPC clients read one: HTTP 200 and a
        trailers-only response whose grpc-status says why (the gRPC spec's mapping of HTTP
        statuses, with the gateway's limits as RESOURCE_EXHAUSTED)."""
        pairs = [
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"%d" % GRPC_STATUS_BY_HTTP.get(status, 2)),  # 2: UNKNOWN
            (b"grpc-message", grpc_message(message)),
            (self.listener.request_id_lower, x.request_id),
        ]
        self.out_eof = True
        self.submit(200, pairs, NULL, NULL, False)
        self.conn.flush()
        return 0

    cdef int submit_trailers(self) except -1:
        cdef size_t count = 0
        cdef char* names = NULL
        cdef nghttp2_nv* nva = self.fields(0, self.trailers, NULL, NULL, &count, &names)
        try:
            nghttp2_submit_trailer(self.conn.session, self.id, nva + 1, count - 1)  # no :status
        finally:
            free_fields(nva, names)
        self.trailers = None
        return 0

    cdef int reset(self, uint32_t error_code) except -1:
        if not self.closed and self.conn.session != NULL:
            nghttp2_submit_rst_stream(self.conn.session, NGHTTP2_FLAG_NONE, self.id, error_code)
            self.conn.flush()
        return 0

    # -- Downstream: the response, as the exchange hands it over -------------------------------------
    cdef int send_continue(self, Exchange x) except -1:
        return self.interim(100, [], NULL, NULL)

    cdef int send_interim(self, Exchange x, int status, HeadLines* lines) except -1:
        cdef unsigned char kinds[MAX_RESPONSE_FIELDS]
        cdef ReplyHead interim
        classify_response(lines, kinds, &interim, self.listener.request_id_lower)
        self.interim(status, [], lines, kinds)
        return 1

    cdef int interim(self, int status, list pairs, HeadLines* lines, const unsigned char* kinds) except -1:
        if self.closed or self.conn.session == NULL:
            return 0
        cdef size_t count = 0
        cdef char* names = NULL
        cdef nghttp2_nv* nva = self.fields(status, pairs, lines, kinds, &count, &names)
        try:
            nghttp2_submit_headers(self.conn.session, NGHTTP2_FLAG_NONE, self.id, NULL, nva, count, NULL)
        finally:
            free_fields(nva, names)
        return 0

    cdef int send_head(self, Exchange x, ReplyHead* head) except -1:
        cdef list pairs = []
        cdef HeadLines* lines = head.lines
        if head.kept != NULL:
            pairs += <list>head.kept
            lines = NULL
        if head.added != NULL:
            pairs += <list>head.added
        if head.add_date:
            date = date_line()
            pairs.append((b"date", date[6 : PyBytes_GET_SIZE(date) - 2]))  # b"Date: ...\r\n"
        pairs.append((self.listener.request_id_lower, x.request_id))
        self.submit(head.status, pairs, lines, head.kinds, not head.no_body)
        if head.no_body:
            self.out_eof = True
        return 0

    cdef int send_body(self, Exchange x, bytes data) except -1:
        x.bytes_sent += PyBytes_GET_SIZE(data)
        return self.queue(data)

    cdef int send_trailers(self, Exchange x, list pairs) except -1:
        self.trailers = pairs  # submitted once the body's last DATA is read (take)
        return 0

    cdef int send_end(self, Exchange x) except -1:
        self.out_eof = True
        return self.resume()

    cdef int send_error(self, Exchange x, object fault, list extra) except -1:
        if self.grpc:
            return self.grpc_error(x, fault.status, fault.message)
        body = error_body(fault.message, x.request_id)
        pairs = [(b"content-type", b"application/json"), *(extra or ()), (self.listener.request_id_lower, x.request_id)]
        x.bytes_sent += PyBytes_GET_SIZE(body)
        return self.respond(fault.status, pairs, body, x.method == _HEAD)

    cdef int send_answer(self, Exchange x, object response) except -1:
        if self.grpc and not 200 <= response.status < 300:
            return self.grpc_error(x, response.status, response.body.decode("utf-8", "replace")[:200])
        pairs = [(b"content-type", response.content_type)] if response.content_type else []
        pairs += response.headers
        if x.add_response_headers:
            pairs += x.add_response_headers
        pairs.append((self.listener.request_id_lower, x.request_id))
        x.bytes_sent += PyBytes_GET_SIZE(response.body)
        return self.respond(response.status, pairs, response.body, x.method == _HEAD)

    cdef int flush(self) except -1:
        cdef H2Connection conn = self.conn
        if len(conn.streams) > 1:  # others in flight: their answers may come in this same turn
            return conn.flush_soon()
        return conn.flush()

    cdef int cut(self, Exchange x) except -1:
        """The response cannot complete: the stream is reset, never ended cleanly."""
        self.x = None
        self.out = []
        self.out_size = 0
        return self.reset(NGHTTP2_INTERNAL_ERROR)

    cdef int pause_request(self, int reason) except -1:
        self.paused |= reason
        self.deadline = 0.0  # a held-back body is not a stalled client
        return 0

    cdef int resume_request(self, int reason) except -1:
        if not self.paused & reason:
            return 0
        self.paused &= ~reason
        if self.paused:
            return 0
        if self.unconsumed:
            self.consume(self.unconsumed)  # the window opens again: the client may send more
            self.unconsumed = 0
            self.conn.flush()
        if self.x is not None and not self.x.request_done:
            self.set_deadline(_now() + self.listener.body_timeout)
        return 0

    cdef int exchange_ended(self, Exchange x) except -1:
        if x is not self.x:
            return 0
        self.x = None
        self.deadline = 0.0
        if not x.request_done and self.sent_end:
            self.reset(NGHTTP2_NO_ERROR)  # answered; the rest of the request body is not wanted
        return 0

    # -- deadlines ---------------------------------------------------------------------------------------
    cdef int set_deadline(self, double at) except -1:
        self.deadline = at
        self.conn.client.wheel.file(self, at)
        return 0

    cpdef expire(self, double now):
        if self.closed:
            return
        cdef Exchange x = self.x
        if self.deadline and now >= self.deadline:
            self.deadline = 0.0
            if x is not None and not x.request_done and not self.paused:
                self.now = now
                x.fail(ClientFault("timed out reading the request", 408))
                self.conn.flush()
        if self.send_deadline and now >= self.send_deadline:
            self.send_deadline = 0.0
            if self.out_size:
                # The client's window kept the response from moving for a whole send timeout.
                self.conn.client.server.count_h2("stream_send_stalled")
                self.abandon(STALLED)
                self.reset(NGHTTP2_CANCEL)
                return
        if self.deadline:
            self.conn.client.wheel.file(self, self.deadline)
        if self.send_deadline:
            self.conn.client.wheel.file(self, self.send_deadline)


# The gRPC status for a refusal the gateway answers itself (the gRPC spec's HTTP mapping, and
# RESOURCE_EXHAUSTED for the gateway's own limits: a rate limit, a body too large).
GRPC_STATUS_BY_HTTP = {
    400: 13,  # INTERNAL
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED: no route for this method
    405: 12,
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,
    431: 8,
    500: 13,
    502: 14,  # UNAVAILABLE
    503: 14,
    504: 4,
}
_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


cdef double grpc_timeout_seconds(bytes value):
    """A grpc-timeout header's value (1 to 8 digits and a unit), in seconds; 0 when malformed
    (the call then runs under the route's own timeouts)."""
    unit = _GRPC_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        return 0.0
    return int(digits) * unit


cdef bytes grpc_message(str message):
    """grpc-message is percent-encoded UTF-8 (everything outside printable ASCII, and '%')."""
    return "".join(
        c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode()) for c in message
    ).encode("ascii")


cdef char* add_field(
    nghttp2_nv* nv, char* spare, const char* name, Py_ssize_t namelen, const char* value, Py_ssize_t valuelen
) noexcept nogil:
    """One field, its name copied in lower case to ``spare`` (the names buffer); the rest of it."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(namelen):
        c = name[i]
        spare[i] = c + 32 if 65 <= c <= 90 else c
    nv.name = <uint8_t*>spare
    nv.namelen = namelen
    nv.value = <uint8_t*>value
    nv.valuelen = valuelen
    nv.flags = NGHTTP2_NV_FLAG_NONE
    return spare + namelen


cdef void free_fields(nghttp2_nv* nva, char* names) noexcept:
    PyMem_Free(names)
    PyMem_Free(nva)
