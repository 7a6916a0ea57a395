# -- HTTP/2 to upstreams --------------------------------------------------------------------------------
#
# An upstream with ``protocol: h2c`` (cleartext, prior knowledge) or ``h2`` (TLS, ALPN "h2") has
# pools of H2UpstreamConnections: one nghttp2 client session each (frames, HPACK, stream states
# and the response checks of RFC 9113 8.1 run in C; its callbacks land here). Its pool
# (pool.pyx) counts streams: every exchange sent there is bound to one H2UpstreamStream, its
# UpstreamSide, on the oldest connection with room; a new connection opens only when all are full
# (upstream/pool.py).
#
# A stream's life (the stream and its request's fields are in h2_upstream_stream.pyx): ``begin``
# submits HEADERS built from the exchange (:method, :scheme, :authority, :path, then the
# forwarded header lines with lower-case names and without the connection-specific ones RFC 9113
# 8.2.2 forbids, ``te: trailers`` for gRPC) and the request body as DATA read from a queue
# (``take``) as the stream's and the connection's windows allow; a queue over the listener's
# buffer holds the client back (``upstream_write_paused``). The
# response's HEADERS become HeadLines ("name: value" lines with Field offsets, as the HTTP/1.1
# parser leaves them), DATA goes to the exchange and is acknowledged (WINDOW_UPDATE) only while
# its client keeps up, trailers go to ``on_upstream_trailers``, END_STREAM completes it.
#
# Failures: RST_STREAM REFUSED_STREAM, a stream GOAWAY left unprocessed (nghttp2 closes it with
# REFUSED_STREAM) and a stream whose HEADERS never went out are F_STALE (never processed: the
# retry rules may send them again on another connection); another RST_STREAM, a closed
# connection and timeouts are failures like the HTTP/1.1 side's; ``drop`` resets the stream
# (CANCEL), which is how a client's cancellation reaches a gRPC server. A connection that got
# GOAWAY (or EOF) takes no new stream and closes when its last one ends; an idle one closes after
# the pool's idle_timeout. Timeouts are the HTTP/1.1 side's, per stream.

from cpython.mem cimport PyMem_Realloc

cdef int32_t _UP_STREAM_WINDOW = 1 << 20  # response bytes a server may send per stream unacknowledged
cdef int32_t _UP_CONNECTION_WINDOW = 1 << 24  # ... and per connection
cdef str NOT_STARTED = "closed the connection before the request was sent"

cdef nghttp2_session_callbacks* _upstream_callbacks = NULL


cdef nghttp2_session_callbacks* upstream_callbacks() except NULL:
    global _upstream_callbacks
    if _upstream_callbacks == NULL:
        if nghttp2_session_callbacks_new(&_upstream_callbacks) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(_upstream_callbacks, _up_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(_upstream_callbacks, _up_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(_upstream_callbacks, _up_frame_recv)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(_upstream_callbacks, _up_invalid_frame)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_upstream_callbacks, _up_data_chunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(_upstream_callbacks, _up_stream_close)
        nghttp2_session_callbacks_set_on_frame_send_callback(_upstream_callbacks, _up_frame_send)
    return _upstream_callbacks


cdef int _up_failed(void* stream) noexcept:
    """A bug of ours (or a plugin's) inside a callback: logged; the exchange of ``stream`` gets a
    500 (or a cut) and the stream a reset, as the HTTP/1.1 side does; without a stream, the
    connection ends (mem_recv fails, every stream with it)."""
    try:
        log.error("internal error in an HTTP/2 upstream connection", exc_info=True)
        if stream != NULL:
            (<H2UpstreamStream>stream).internal_error()
            return 0  # nghttp2 goes on with the connection's other streams
    except BaseException:
        pass
    return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _up_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* ud) noexcept:
    if frame.hd.type == NGHTTP2_HEADERS:
        (<H2UpstreamConnection>ud).head_len = 0
        (<H2UpstreamConnection>ud).head_size = 0
        (<H2UpstreamConnection>ud).head_status = 0
        (<H2UpstreamConnection>ud).head_count = 0
    return 0


cdef int _up_header(
    nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
    const uint8_t* value, size_t valuelen, uint8_t flags, void* ud,
) noexcept:
    if frame.hd.type != NGHTTP2_HEADERS:
        return 0
    cdef void* stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
    if stream == NULL:
        return 0
    try:
        (<H2UpstreamConnection>ud).header(<H2UpstreamStream>stream, name, namelen, value, valuelen)
    except BaseException:
        return _up_failed(stream)
    return 0


cdef int _up_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* ud) noexcept:
    cdef H2UpstreamConnection conn = <H2UpstreamConnection>ud
    cdef void* stream = NULL
    cdef uint8_t kind = frame.hd.type
    try:
        if kind == NGHTTP2_HEADERS or kind == NGHTTP2_DATA:
            stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
            if stream != NULL:
                if kind == NGHTTP2_HEADERS:
                    conn.headers_done(<H2UpstreamStream>stream, frame.hd.flags & NGHTTP2_FLAG_END_STREAM)
                elif frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                    (<H2UpstreamStream>stream).complete()
        elif kind == NGHTTP2_SETTINGS:
            if not frame.hd.flags & NGHTTP2_FLAG_ACK:
                conn.settings_changed()
        elif kind == NGHTTP2_RST_STREAM:
            stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
            if stream != NULL:
                (<H2UpstreamStream>stream).peer_reset = frame.rst_stream.error_code + 1
        elif kind == NGHTTP2_GOAWAY:
            conn.goaway_received()
    except BaseException:
        return _up_failed(stream)
    return 0


cdef int _up_invalid_frame(nghttp2_session* session, const nghttp2_frame* frame, int error, void* ud) noexcept:
    cdef void* stream = NULL
    if frame.hd.stream_id:
        stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
    if stream != NULL:
        (<H2UpstreamStream>stream).malformed = True  # nghttp2 resets the stream (PROTOCOL_ERROR)
    return 0


cdef int _up_data_chunk(
    nghttp2_session* session, uint8_t flags, int32_t stream_id, const uint8_t* data, size_t length, void* ud
) noexcept:
    cdef void* stream = nghttp2_session_get_stream_user_data(session, stream_id)
    try:
        if stream == NULL:
            nghttp2_session_consume(session, stream_id, length)
        else:
            (<H2UpstreamConnection>ud).data(<H2UpstreamStream>stream, data, length)
    except BaseException:
        return _up_failed(stream)
    return 0


cdef int _up_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* ud) noexcept:
    try:
        (<H2UpstreamConnection>ud).stream_closed(stream_id, error_code)
    except BaseException:
        return _up_failed(NULL)
    return 0


cdef int _up_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* ud) noexcept:
    cdef void* stream
    if frame.hd.type == NGHTTP2_HEADERS and frame.headers.cat == NGHTTP2_HCAT_REQUEST:
        stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
        if stream != NULL:
            (<H2UpstreamStream>stream).sent_head = True
    return 0


cdef nghttp2_ssize _up_read_body(
    nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags,
    nghttp2_data_source* source, void* user_data,
) noexcept:
    try:
        return (<H2UpstreamStream>source.ptr).take(buf, length, data_flags)
    except BaseException:
        try:
            log.error("internal error sending a request body upstream", exc_info=True)
        except BaseException:
            pass
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE  # this stream is reset; the others go on


@cython.final
cdef class H2UpstreamConnection(Timed):
    """One HTTP/2 connection to an upstream target (see the section's opening comment)."""

    def __cinit__(self):
        self.session = NULL
        self.head = NULL

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL
        if self.head != NULL:
            PyMem_Free(self.head)
            self.head = NULL

    def __init__(self, PoolCore pool, bint tls) -> None:
        self.pool = pool
        self.transport = None
        self.outlet.fd = -1
        self.wheel = None
        self.scheme = b"https" if tls else b"http"
        self.alpn_refused = None
        self.streams = {}
        self.touched = []
        self.active = 0
        self.limit = pool.max_streams
        self.taken = self.served = 0
        self.usable = self.closed = self.goaway = self.closing = False
        self.in_recv = self.in_send = self.want_flush = self.write_paused = False
        self.deadline = 0.0
        self.head_cap = 4096
        self.head = <char*>PyMem_Malloc(self.head_cap)
        if self.head == NULL:
            raise MemoryError()
        self.head_len = self.head_size = self.head_status = self.head_count = 0
        cdef nghttp2_option* option = NULL
        if nghttp2_option_new(&option) != 0:
            raise MemoryError()
        try:
            # Window updates follow what the exchanges' clients took, not what arrived: backpressure.
            nghttp2_option_set_no_auto_window_update(option, 1)
            # Until the server's SETTINGS come, streams past this wait inside nghttp2.
            nghttp2_option_set_peer_max_concurrent_streams(option, pool.max_streams)
            if nghttp2_session_client_new2(&self.session, upstream_callbacks(), <void*>self, option) != 0:
                raise MemoryError()
        finally:
            nghttp2_option_del(option)
        cdef nghttp2_settings_entry settings[3]
        settings[0].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        settings[0].value = 0
        settings[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        settings[1].value = _UP_STREAM_WINDOW
        settings[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        settings[2].value = UPSTREAM_MAX_HEAD
        nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, settings, 3)
        nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0, _UP_CONNECTION_WINDOW)

    # -- asyncio callbacks ---------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.write_bound = transport.write
        self.wheel = running_wheel()
        self.now = _now()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self.alpn_refused = ssl_object.selected_alpn_protocol() or "none"
            return  # the pool closes it and says why: not a byte of HTTP/2 went out
        outlet_open(&self.outlet, transport)
        self.usable = True
        self.flush()  # the preface and our SETTINGS go first

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.usable = False
        self.outlet.fd = -1
        self.deadline = 0.0
        cdef H2UpstreamStream stream
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                # HEADERS never written, or a reused connection lost before any answer (as the
                # HTTP/1.1 side's stale keep-alive connection): not processed. Else a reset.
                stale = not stream.sent_head or (not stream.received and stream.reused)
                stream.lose(F_STALE if stale else F_RESET, CLOSED_EARLY, 502)
        self.streams.clear()
        if self.alpn_refused is None:
            self.pool.forget(self)
        if self.wheel is not None:
            self.wheel.unfile(self)  # a closed connection is not kept alive by its idle deadline
        if self.session != NULL and not self.in_recv and not self.in_send:
            nghttp2_session_del(self.session)
            self.session = NULL

    def data_received(self, data) -> None:
        if self.closed or self.session == NULL:
            return
        self.now = _now()
        cdef bytes received = data if type(data) is bytes else bytes(data)
        cdef nghttp2_ssize n
        self.in_recv = True
        try:
            n = nghttp2_session_mem_recv2(
                self.session, <const uint8_t*>PyBytes_AS_STRING(received), PyBytes_GET_SIZE(received)
            )
        finally:
            self.in_recv = False
        if n < 0:
            log.debug("HTTP/2 upstream session ended: %s", nghttp2_strerror(<int>n).decode())
            self.abort()  # every stream still open fails in connection_lost
            return
        self.read_done()

    def eof_received(self) -> bool:
        self.usable = False  # uvloop closes the transport on return: connection_lost follows
        self.outlet.fd = -1
        return False

    def pause_writing(self) -> None:
        self.write_paused = True  # DATA waits in the streams' queues, which hold their clients back

    def resume_writing(self) -> None:
        self.write_paused = False
        self.flush()

    # -- the pool's side -----------------------------------------------------------------------------
    cdef H2UpstreamStream open_stream(self):
        """A stream for one exchange (submitted when it begins): room taken until it is released."""
        cdef H2UpstreamStream stream = H2UpstreamStream.__new__(H2UpstreamStream)
        stream.session = self
        stream.pool = self.pool
        stream.exchange = None
        stream.id = 0
        stream.closed = stream.received = stream.released = stream.sent_head = stream.got_head = False
        stream.touched = stream.malformed = stream.too_big = False
        stream.reusable = False
        stream.served = 0
        stream.peer_reset = 0
        stream.trailers = None
        stream.out = []
        stream.out_offset = stream.out_size = 0
        stream.out_eof = stream.deferred = stream.write_paused = stream.sending = False
        stream.reading_paused = False
        stream.unconsumed = 0
        stream.deadline = 0.0
        stream.reused = self.served > 0
        if self.taken:
            self.pool.reused += 1
        self.taken += 1
        self.active += 1
        self.deadline = 0.0  # not idle
        return stream

    cdef int stream_released(self) except -1:
        """A stream gave its room back: serve on, or idle (the pool's idle timeout), or close
        when no new stream may come (GOAWAY, EOF, a retired pool)."""
        self.active -= 1
        if self.active or self.closed:
            return 0
        if not self.usable or not self.pool.max_idle:
            self.shutdown()
            return 0
        self.deadline = coarse() + self.pool.idle_timeout  # PERF: no precise read; a few ms early at most
        self.wheel.file(self, self.deadline)
        return 0

    def unconsumed_bytes(self) -> int:
        """Response DATA its streams hold unacknowledged while their clients read slowly."""
        return sum((<H2UpstreamStream>stream).unconsumed for stream in self.streams.values())

    def retire(self) -> None:
        """No new streams (its pool is retired): close now if idle, else when the last one ends."""
        self.usable = False
        if self.active == 0:
            self.shutdown()

    cpdef expire(self, double now):
        """The wheel's call: close the connection once idle past the pool's idle timeout."""
        if self.closed or not self.deadline:
            return
        if now < self.deadline:
            self.wheel.file(self, self.deadline)
            return
        self.deadline = 0.0
        if self.active == 0:
            self.shutdown()

    # -- writing -------------------------------------------------------------------------------------
    cdef int submit(self, H2UpstreamStream stream, Exchange x) except -1:
        """The request's HEADERS (and its body's DATA to come, unless it has none)."""
        cdef RouteCore route = x.route
        cdef bytes path = route.path_upstream(x.path, x.params)
        if PyBytes_GET_SIZE(x.query):
            path += x.query
        cdef bytes authority = x.host_header if route.preserve_host and x.host_header else x.target.host_header
        cdef bytes block = x.pass_block
        cdef list extra = x.upstream_headers
        cdef Py_ssize_t most = 6 + _count_lines(block)
        cdef Py_ssize_t names_size = PyBytes_GET_SIZE(block)
        cdef bytes name, value
        if extra:
            most += len(extra)
            for name, value in extra:
                names_size += PyBytes_GET_SIZE(name)
        cdef char digits[24]
        cdef char* mem = <char*>PyMem_Malloc(most * sizeof(nghttp2_nv) + names_size + 1)
        if mem == NULL:
            raise MemoryError()
        cdef nghttp2_nv* nva = <nghttp2_nv*>mem
        cdef RequestFields fields
        fields.lower = mem + most * sizeof(nghttp2_nv)
        fields.rid = PyBytes_AS_STRING(x.listener.request_id_lower)
        fields.rid_len = PyBytes_GET_SIZE(x.listener.request_id_lower)
        fields.grpc = False
        cdef size_t n = 0
        cdef int32_t stream_id
        cdef nghttp2_data_provider2 provider
        try:
            n = _set_nv(nva, n, ":method", 7, PyBytes_AS_STRING(x.method), PyBytes_GET_SIZE(x.method))
            n = _set_nv(nva, n, ":scheme", 7, PyBytes_AS_STRING(self.scheme), PyBytes_GET_SIZE(self.scheme))
            n = _set_nv(nva, n, ":authority", 10, PyBytes_AS_STRING(authority), PyBytes_GET_SIZE(authority))
            n = _set_nv(nva, n, ":path", 5, PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path))
            n = _pass_fields(nva, n, PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block), &fields)
            if extra:
                for name, value in extra:
                    n = _add_field(nva, n, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name),
                                   PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), &fields)  # fmt: skip
            if not x.chunked and x.content_length >= 0:
                n = _set_nv(nva, n, "content-length", 14, digits,
                            put_dec(digits, <unsigned long long>x.content_length,
                                    dec_digits(<unsigned long long>x.content_length)) - digits)  # fmt: skip
            if fields.grpc:
                n = _set_nv(nva, n, "te", 2, "trailers", 8)  # gRPC servers refuse a request without it
            provider.source.ptr = <void*>stream
            provider.read_callback = _up_read_body
            stream_id = nghttp2_submit_request2(
                self.session, NULL, nva, n, NULL if stream.out_eof and not stream.out_size else &provider,
                <void*>stream,
            )  # fmt: skip
        finally:
            PyMem_Free(mem)
        if stream_id < 0:
            log.debug("HTTP/2 upstream request not submitted: %s", nghttp2_strerror(stream_id).decode())
            asyncio.get_running_loop().call_soon(stream._not_started)
            return 0
        stream.id = stream_id
        self.streams[stream_id] = stream
        return self.flush()

    cdef int flush(self) except -1:
        """Write what nghttp2 has queued. Not from inside mem_recv or mem_send (a read callback):
        then once it returns."""
        if self.in_recv or self.in_send:
            self.want_flush = True
            return 0
        if self.session == NULL or self.closed or self.write_paused:
            return 0
        cdef const uint8_t* data
        cdef nghttp2_ssize n = 0
        cdef list chunks = None
        cdef bytes first = None
        self.in_send = True
        try:
            while True:
                self.want_flush = False
                n = nghttp2_session_mem_send2(self.session, &data)
                if n < 0:
                    break
                if n == 0:
                    if not self.want_flush:
                        break
                    continue  # a read callback queued more (a body piece, a resumed stream)
                if first is None:
                    first = PyBytes_FromStringAndSize(<const char*>data, n)
                else:
                    if chunks is None:
                        chunks = [first]
                    chunks.append(PyBytes_FromStringAndSize(<const char*>data, n))
        finally:
            self.in_send = False
        if chunks is not None:
            outlet_write(&self.outlet, self.write_bound, self.transport, b"".join(chunks))
        elif first is not None:
            outlet_write(&self.outlet, self.write_bound, self.transport, first)
        if n < 0:
            log.debug("HTTP/2 upstream send failed: %s", nghttp2_strerror(<int>n).decode())
            self.abort()
        elif self.closing:
            self.close()  # its GOAWAY went out first
        return 0

    cdef int shutdown(self) except -1:
        """Close without a stream in flight: GOAWAY (NO_ERROR), then the connection."""
        self.usable = False
        self.deadline = 0.0
        if self.closed or self.closing:
            return 0
        self.closing = True
        if self.session != NULL:
            nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0)
        self.flush()
        if self.write_paused or self.session == NULL:
            self.close()  # what is buffered goes before the close
        return 0

    cpdef close(self):
        self.closed = True
        self.usable = False
        self.outlet.fd = -1
        if self.transport is not None:
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        self.usable = False
        self.outlet.fd = -1
        if self.transport is not None:
            self.transport.abort()

    # -- reading -------------------------------------------------------------------------------------
    cdef int read_done(self) except -1:
        """After a read: write what it made nghttp2 queue (WINDOW_UPDATEs, acknowledgements), and
        have each exchange that got something flush its client once (HTTP/1.1's one write per
        upstream read)."""
        if self.closed:
            return 0
        self.flush()
        cdef list touched = self.touched
        cdef H2UpstreamStream stream
        if touched:
            self.touched = []
            for stream in touched:
                stream.touched = False
                if stream.exchange is not None:
                    stream.exchange.on_upstream_flush()
        if self.session != NULL and not nghttp2_session_want_read(self.session) and not self.closed:
            self.close()  # a GOAWAY with an error, or both sides done: nothing more will come
        return 0

    cdef int header(
        self, H2UpstreamStream stream, const uint8_t* name, size_t namelen, const uint8_t* value, size_t valuelen
    ) except -1:
        """One decoded field of a response header block (the head, a 1xx, or trailers): kept as
        a line "name: value\\r\\n" in ``head`` (nghttp2 checked it: lower-case, no CR/LF/NUL)."""
        if stream.exchange is None or stream.too_big:
            return 0
        self.head_size += namelen + valuelen + 32
        if self.head_size > UPSTREAM_MAX_HEAD:
            stream.too_big = True
            return 0
        if namelen and name[0] == b":":
            if namelen == 7 and memcmp(name, b":status", 7) == 0 and valuelen == 3:
                self.head_status = (value[0] - 48) * 100 + (value[1] - 48) * 10 + (value[2] - 48)
            return 0
        if self.head_count == MAX_RESPONSE_FIELDS:
            stream.too_big = True
            return 0
        cdef Py_ssize_t need = self.head_len + namelen + valuelen + 4
        cdef char* grown
        if need > self.head_cap:
            grown = <char*>PyMem_Realloc(self.head, need * 2)
            if grown == NULL:
                raise MemoryError()
            self.head = grown
            self.head_cap = need * 2
        cdef int i = self.head_count
        self.names[i].off = self.head_len
        self.names[i].len = namelen
        self.values[i].off = self.head_len + namelen + 2
        self.values[i].len = valuelen
        put_line(self.head + self.head_len, <const char*>name, namelen, <const char*>value, valuelen)
        self.head_len = need
        self.head_count = i + 1
        return 0

    cdef int headers_done(self, H2UpstreamStream stream, bint end_stream) except -1:
        cdef Exchange x = stream.exchange
        if x is None:
            return 0
        stream.received = True
        stream.now = self.now
        if stream.too_big:
            stream.lose(0, "sent a response head over 64 KiB or too many headers", 502)
            return 0
        if not stream.touched:
            stream.touched = True
            self.touched.append(stream)
        cdef HeadLines lines
        lines.base = self.head
        lines.names = self.names
        lines.values = self.values
        lines.count = self.head_count
        lines.reason.off = 0
        lines.reason.len = 0  # HTTP/2 has no reason phrase: the client side uses the standard one
        cdef int status = self.head_status
        cdef Py_ssize_t i
        if status:
            if status < 200:
                x.on_upstream_interim(status, &lines)
                return 0
            stream.got_head = True
            if stream.head_timeout and not stream.reading_paused:
                stream.arm(self.now)  # from here the read timeout applies between reads
            if end_stream:
                stream.trailers = self.grpc_status_fields(&lines)
            x.on_upstream_head(status, &lines)
            if end_stream and stream.exchange is x:
                stream.complete()
            return 0
        # Trailers (nghttp2 lets them only end the stream): gRPC's grpc-status and grpc-message.
        stream.trailers = [
            (
                PyBytes_FromStringAndSize(self.head + self.names[i].off, self.names[i].len),
                PyBytes_FromStringAndSize(self.head + self.values[i].off, self.values[i].len),
            )
            for i in range(self.head_count)
        ]
        if end_stream:
            stream.complete()
        return 0

    cdef list grpc_status_fields(self, HeadLines* lines):
        """A gRPC "Trailers-Only" response (a head ending the stream with grpc-status in it): its
        grpc-status, grpc-message and grpc-status-details-bin are taken out of ``lines`` and
        returned as trailers, or None for any other head. The client side then sends them as
        trailers after the head, which is how gRPC clients read a status whatever the client
        side's framing (a head it cannot end at once, a body of no message in between)."""
        cdef int i, kept = 0
        cdef Py_ssize_t n
        cdef const char* name
        cdef list trailers = None
        for i in range(lines.count):
            name = self.head + self.names[i].off
            n = self.names[i].len
            if n >= 11 and memcmp(name, b"grpc-", 5) == 0 and (
                (n == 11 and memcmp(name, b"grpc-status", 11) == 0)
                or (n == 12 and memcmp(name, b"grpc-message", 12) == 0)
                or (n == 23 and memcmp(name, b"grpc-status-details-bin", 23) == 0)
            ):
                if trailers is None:
                    trailers = []
                trailers.append((
                    PyBytes_FromStringAndSize(name, n),
                    PyBytes_FromStringAndSize(self.head + self.values[i].off, self.values[i].len),
                ))  # fmt: skip
                continue
            self.names[kept] = self.names[i]
            self.values[kept] = self.values[i]
            kept += 1
        lines.count = kept
        return trailers

    cdef int data(self, H2UpstreamStream stream, const uint8_t* data, size_t length) except -1:
        cdef Exchange x = stream.exchange
        if x is None:
            nghttp2_session_consume(self.session, stream.id, length)  # dropped: nobody wants it
            return 0
        stream.received = True
        if not stream.touched:
            stream.touched = True
            self.touched.append(stream)
        x.on_upstream_body(PyBytes_FromStringAndSize(<const char*>data, length))
        if stream.reading_paused and stream.exchange is x:
            stream.unconsumed += length  # acknowledged when the client reads again
        else:
            nghttp2_session_consume(self.session, stream.id, length)
            if stream.exchange is x and not stream.sending:
                stream.arm(self.now)  # progress: the next pause is timed from now
        return 0

    cdef int stream_closed(self, int32_t stream_id, uint32_t error_code) except -1:
        """nghttp2 closed a stream: after its response (nothing to do), or before it completed."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return 0
        cdef H2UpstreamStream s = <H2UpstreamStream>stream
        s.closed = True
        if s.exchange is None:
            return 0
        if error_code == NGHTTP2_REFUSED_STREAM:
            # The server refused it, or GOAWAY left it out, or its HEADERS never went out.
            s.lose(F_STALE, "refused the stream before processing it", 502)
        elif s.malformed:
            s.lose(0, "sent a malformed response", 502)
        elif s.peer_reset:
            s.lose(F_RESET, f"reset the stream ({_h2_error_name(s.peer_reset - 1)})", 502)
        else:
            s.lose(F_RESET, "closed the stream before the response completed", 502)
        return 0

    cdef int settings_changed(self) except -1:
        """The server's SETTINGS: its MAX_CONCURRENT_STREAMS bounds this connection's streams."""
        cdef uint32_t most = nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
        cdef int before = self.limit
        self.limit = self.pool.max_streams if most > <uint32_t>self.pool.max_streams else <int>most
        if self.limit > before and self.usable and self.pool.waiters:
            self.pool.serve_waiters()
        return 0

    cdef int goaway_received(self) except -1:
        """No new stream here; the streams it did not take are closed by nghttp2 (REFUSED_STREAM,
        retried elsewhere); the connection closes when its last stream ends."""
        self.goaway = True
        self.usable = False
        if self.active == 0:
            self.shutdown()
        if self.pool.waiters:
            self.pool.refill()  # waiters for this connection's room: another connection
        return 0


cdef str _h2_error_name(uint32_t code):
    return nghttp2_http2_strerror(code).decode("ascii", "replace")
