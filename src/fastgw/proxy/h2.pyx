# -- HTTP/2 from clients: the connection ---------------------------------------------------------------
#
# A ClientProtocol whose connection speaks HTTP/2 (ALPN "h2" after a TLS handshake, or the client
# preface on a listener with h2c) hands every read to its H2Connection: an nghttp2 server session
# (vendor/nghttp2, compiled in: frames, HPACK, stream states and RFC 9113's message checks all run
# in C) whose callbacks land here. Each request stream becomes an H2Stream (h2_stream.pyx), the
# Downstream of one Exchange: the same router, plugins, balancers, retries and limits as an
# HTTP/1.1 request. The ClientProtocol keeps what belongs to the connection: the transport, the
# TLS facts, the server's bookkeeping and the connection's deadlines, which it asks this object
# to judge (``expire``).
#
# Defences, each counted (``ListenerServer.count_h2``) and each ending the connection with GOAWAY:
# rapid reset (streams the client resets before their response, a token bucket here, besides
# nghttp2's own), CONTINUATION floods and SETTINGS/PING floods (nghttp2's limits, reported by
# mem_recv), oversize header lists (HPACK bombs: SETTINGS_MAX_HEADER_LIST_SIZE, and 431 for a
# stream over it; a client that keeps doing it is cut off), header blocks that never end (the
# head timeout), and zero-window stalls (a stream whose client opens no window gets the send
# timeout, then RST_STREAM; a connection, the client's send timeout).

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_CONNECTION_WINDOW = 1 << 24  # the connection's receive window: streams are bounded one by one
_TOO_BIG_STREAMS = 8  # oversize header lists one connection may send before it is cut off

cdef nghttp2_session_callbacks* _server_callbacks = NULL

_H2_ERROR_KINDS = {
    -903: "bad_preface",  # NGHTTP2_ERR_BAD_CLIENT_MAGIC
    -904: "flood",  # NGHTTP2_ERR_FLOODED: PING or SETTINGS acknowledgements it never reads
    -905: "continuation_flood",  # NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
    -537: "settings_flood",  # NGHTTP2_ERR_TOO_MANY_SETTINGS
}
_H2_GOAWAY_KINDS = {
    NGHTTP2_PROTOCOL_ERROR: "protocol_error",
    NGHTTP2_FLOW_CONTROL_ERROR: "flow_control_error",
    NGHTTP2_COMPRESSION_ERROR: "compression_error",
    NGHTTP2_ENHANCE_YOUR_CALM: "enhance_your_calm",
    NGHTTP2_INTERNAL_ERROR: "nghttp2_limit",  # nghttp2's own reset and glitch rate limits
}


cdef nghttp2_session_callbacks* server_callbacks() except NULL:
    global _server_callbacks
    if _server_callbacks == NULL:
        if nghttp2_session_callbacks_new(&_server_callbacks) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(_server_callbacks, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(_server_callbacks, _on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(_server_callbacks, _on_frame_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_server_callbacks, _on_data_chunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(_server_callbacks, _on_stream_close)
        nghttp2_session_callbacks_set_on_frame_send_callback(_server_callbacks, _on_frame_send)
    return _server_callbacks


cdef int _failed(void* user_data) noexcept:
    """A bug of ours inside a callback: logged; the session ends (nghttp2 then fails mem_recv)."""
    try:
        log.error("internal error in an HTTP/2 connection", exc_info=True)
    except BaseException:
        pass
    return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* ud) noexcept:
    if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    try:
        (<H2Connection>ud).begin_stream(frame.hd.stream_id)
    except BaseException:
        return _failed(ud)
    return 0


cdef int _on_header(
    nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
    const uint8_t* value, size_t valuelen, uint8_t flags, void* ud,
) noexcept:
    if frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0  # request trailers: an HTTP/1.1 upstream has no use for them
    cdef void* stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
    if stream == NULL:
        return 0
    try:
        (<H2Connection>ud).header(<H2Stream>stream, name, namelen, value, valuelen)
    except BaseException:
        return _failed(ud)
    return 0


cdef int _on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* ud) noexcept:
    cdef H2Connection conn = <H2Connection>ud
    cdef void* stream
    try:
        if frame.hd.type == NGHTTP2_HEADERS:
            stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
            if stream != NULL:
                if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
                    conn.headers_done(<H2Stream>stream, frame.hd.flags & NGHTTP2_FLAG_END_STREAM)
                elif frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                    conn.stream_end(frame.hd.stream_id)  # after trailers
        elif frame.hd.type == NGHTTP2_DATA:
            if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                conn.stream_end(frame.hd.stream_id)
        elif frame.hd.type == NGHTTP2_SETTINGS:
            if not conn.started:
                conn.started = True
                conn.update_idle()
        elif frame.hd.type == NGHTTP2_RST_STREAM:
            conn.client_reset(frame.hd.stream_id)
    except BaseException:
        return _failed(ud)
    return 0


cdef int _on_data_chunk(
    nghttp2_session* session, uint8_t flags, int32_t stream_id, const uint8_t* data, size_t length, void* ud
) noexcept:
    try:
        (<H2Connection>ud).data(stream_id, data, length)
    except BaseException:
        return _failed(ud)
    return 0


cdef int _on_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* ud) noexcept:
    try:
        (<H2Connection>ud).stream_closed(stream_id, error_code)
    except BaseException:
        return _failed(ud)
    return 0


cdef int _on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* ud) noexcept:
    cdef H2Connection conn = <H2Connection>ud
    cdef void* stream
    try:
        if frame.hd.type == NGHTTP2_GOAWAY:
            if frame.goaway.error_code != NGHTTP2_NO_ERROR and not conn.closing:
                # nghttp2 ended the session itself (a malformed frame, one of its rate limits).
                conn.client.server.count_h2(_H2_GOAWAY_KINDS.get(frame.goaway.error_code, "protocol_error"))
                conn.closing = True
                conn.abandon(LEFT_BEFORE)
        elif frame.hd.flags & NGHTTP2_FLAG_END_STREAM and (
            frame.hd.type == NGHTTP2_DATA or frame.hd.type == NGHTTP2_HEADERS
        ):
            stream = nghttp2_session_get_stream_user_data(session, frame.hd.stream_id)
            if stream != NULL:
                (<H2Stream>stream).sent_end = True
                if (<H2Stream>stream).x is None and not (<H2Stream>stream).closed:
                    # The response is complete, its exchange ended, and the client still sends:
                    # ask it to stop (RFC 9113 8.1: RST_STREAM with NO_ERROR, after the response).
                    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame.hd.stream_id, NGHTTP2_NO_ERROR)
    except BaseException:
        return _failed(ud)
    return 0


@cython.final
cdef class H2Connection:
    """One client connection speaking HTTP/2 (see the section's opening comment)."""

    def __cinit__(self):
        self.session = NULL

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    def __init__(self, ClientProtocol client) -> None:
        cdef ListenerCore listener = client.listener
        self.client = client
        self.streams = {}
        self.heading = None
        self.in_recv = self.want_flush = self.flush_scheduled = False
        self.started = self.goaway_sent = self.closing = False
        self.call_soon = asyncio.get_running_loop().call_soon
        self.too_big = 0
        self.header_deadline = 0.0
        self.scratch = bytearray()
        self.parser = None
        self.reset_burst = 2.0 * listener.h2_max_streams  # resets of streams still in flight ...
        self.reset_rate = 1.0 * listener.h2_max_streams  # ... refilled per second
        self.reset_tokens = self.reset_burst
        self.reset_at = client.now
        cdef nghttp2_option* option = NULL
        if nghttp2_option_new(&option) != 0:
            raise MemoryError()
        try:
            # Window updates follow what the exchange took, not what arrived: backpressure.
            nghttp2_option_set_no_auto_window_update(option, 1)
            nghttp2_option_set_max_continuations(option, 8)
            nghttp2_option_set_max_settings(option, 32)
            nghttp2_option_set_max_outbound_ack(option, 1000)
            if nghttp2_session_server_new2(&self.session, server_callbacks(), <void*>self, option) != 0:
                raise MemoryError()
        finally:
            nghttp2_option_del(option)
        cdef nghttp2_settings_entry settings[4]
        settings[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        settings[0].value = listener.h2_max_streams
        settings[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        settings[1].value = listener.h2_stream_window
        settings[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        settings[2].value = listener.max_header_bytes
        settings[3].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        settings[3].value = 0
        nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, settings, 4)
        nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0, _CONNECTION_WINDOW)
        self.update_idle()

    # -- reading -----------------------------------------------------------------------------------
    cdef int received(self, bytes data) except -1:
        if self.session == NULL or self.closing:
            return 0  # after GOAWAY with an error: what the client still sends is dropped
        cdef nghttp2_ssize n
        self.in_recv = True
        try:
            n = nghttp2_session_mem_recv2(
                self.session, <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)
            )
        finally:
            self.in_recv = False
        if n < 0:
            kind = _H2_ERROR_KINDS.get(n)
            if kind is None:
                log.debug("HTTP/2 session ended: %s", nghttp2_strerror(<int>n).decode())
                kind = "protocol_error"
            self.terminate(kind, NGHTTP2_ENHANCE_YOUR_CALM if kind.endswith("flood") else NGHTTP2_PROTOCOL_ERROR)
            return 0
        self.flush()
        return 0

    cdef int begin_stream(self, int32_t stream_id) except -1:
        if self.closing:
            return 0  # being cut off: nothing more is started (the stream has no user data)
        cdef ClientProtocol client = self.client
        if client.generation != _plan_generation:
            client.adopt(client.server.plan)  # each stream starts on the plan current now
        cdef H2Stream stream = H2Stream.__new__(H2Stream)
        stream.init(self, stream_id)
        self.streams[stream_id] = stream
        nghttp2_session_set_stream_user_data(self.session, stream_id, <void*>stream)
        self.heading = stream
        del self.scratch[:]  # header blocks do not interleave: one scratch per connection
        self.header_deadline = client.now + client.listener.head_timeout
        client.wheel.file(client, self.header_deadline)
        client.deadline = 0.0  # a stream is open: not idle
        return 0

    cdef int header(
        self, H2Stream stream, const uint8_t* name, size_t namelen, const uint8_t* value, size_t valuelen
    ) except -1:
        if stream is self.heading:
            stream.add_field(<const char*>name, namelen, <const char*>value, valuelen)
        return 0

    cdef HttpParser head_parser(self):
        """The parser that reads each stream's head, with the limits of the plan current now."""
        cdef ListenerCore listener = self.client.listener
        if self.parser is None or self.parser_generation != self.client.generation:
            self.parser = HttpParser(
                True, listener.max_header_bytes + listener.max_uri_bytes + 64, listener.max_headers + 4,
                listener.max_uri_bytes,
            )  # fmt: skip
            self.parser_generation = self.client.generation
        else:
            self.parser.reset()
        return self.parser

    cdef int headers_done(self, H2Stream stream, bint end_stream) except -1:
        if stream is self.heading:
            self.heading = None
            self.header_deadline = 0.0
        if stream.oversize:
            self.too_big += 1
            self.client.server.count_h2("header_list_too_large")
            if self.too_big > _TOO_BIG_STREAMS:
                self.terminate("header_list_too_large", NGHTTP2_ENHANCE_YOUR_CALM)
                return 0
        stream.start(end_stream)
        return 0

    cdef int data(self, int32_t stream_id, const uint8_t* data, size_t length) except -1:
        stream = self.streams.get(stream_id)
        if stream is None:
            nghttp2_session_consume(self.session, stream_id, length)
            return 0
        (<H2Stream>stream).received(data, length)
        return 0

    cdef int stream_end(self, int32_t stream_id) except -1:
        stream = self.streams.get(stream_id)
        if stream is not None:
            (<H2Stream>stream).request_ended()
        return 0

    cdef int client_reset(self, int32_t stream_id) except -1:
        """RST_STREAM from the client. Resetting a stream whose response is still being made
        wastes the work begun for it (CVE-2023-44487, rapid reset): a token bucket allows a few
        times the concurrency limit at once, refilled at the limit per second."""
        stream = self.streams.get(stream_id)
        if stream is None or (<H2Stream>stream).x is None:
            return 0
        cdef double now = self.client.now
        self.reset_tokens = min(self.reset_burst, self.reset_tokens + (now - self.reset_at) * self.reset_rate)
        self.reset_at = now
        self.reset_tokens -= 1.0
        if self.reset_tokens < 0.0:
            self.terminate("rapid_reset", NGHTTP2_ENHANCE_YOUR_CALM)
        return 0

    cdef int stream_closed(self, int32_t stream_id, uint32_t error_code) except -1:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return 0
        (<H2Stream>stream).ended(error_code)
        if stream is self.heading:
            self.heading = None
            self.header_deadline = 0.0
        if not self.streams:
            if self.goaway_sent:
                self.closing = True
            self.update_idle()
        return 0

    # -- writing -------------------------------------------------------------------------------------
    cdef int flush(self) except -1:
        """Write what nghttp2 has queued (frames, and DATA read from the streams' bodies). Inside
        mem_recv nghttp2 may not send: the flush waits until it returns."""
        if self.in_recv:
            self.want_flush = True
            return 0
        self.want_flush = False
        cdef ClientProtocol client = self.client
        if self.session == NULL or client.closed:
            return 0
        cdef const uint8_t* data
        cdef nghttp2_ssize n
        cdef list chunks = None
        cdef bytes first = None
        if not client.write_paused:
            while True:
                n = nghttp2_session_mem_send2(self.session, &data)
                if n < 0:
                    log.debug("HTTP/2 send failed: %s", nghttp2_strerror(<int>n).decode())
                    self.abandon(LEFT_DURING)
                    client.abort()
                    return 0
                if n == 0:
                    break
                if first is None:
                    first = PyBytes_FromStringAndSize(<const char*>data, n)
                else:
                    if chunks is None:
                        chunks = [first]
                    chunks.append(PyBytes_FromStringAndSize(<const char*>data, n))
            if chunks is not None:
                client.write(b"".join(chunks))
            elif first is not None:
                client.write(first)
        if self.closing and not nghttp2_session_want_write(self.session):
            self.abandon(LEFT_BEFORE)
            client.close()
        elif not nghttp2_session_want_read(self.session) and not nghttp2_session_want_write(self.session):
            client.close()  # both sides said GOAWAY and nothing is left in flight
        return 0

    cdef int flush_soon(self) except -1:
        """Flush once at the end of this loop turn. PERF: with several streams in flight, their
        responses often arrive in the same turn (one upstream read each): one write (and under TLS
        one record) for all of them instead of one each."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.call_soon(self.scheduled_flush)
        return 0

    def scheduled_flush(self) -> None:
        self.flush_scheduled = False
        self.flush()

    cdef int submit_goaway(self, uint32_t error_code) except -1:
        if not self.goaway_sent:
            self.goaway_sent = True
            nghttp2_submit_goaway(
                self.session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(self.session),
                error_code, NULL, 0,
            )  # fmt: skip
        return 0

    cdef int terminate(self, str kind, uint32_t error_code) except -1:
        """End the connection for abuse or a protocol error: counted, GOAWAY, every stream
        abandoned, closed once the GOAWAY is written."""
        if self.closing:
            return 0
        cdef ClientProtocol client = self.client
        client.server.count_h2(kind)
        self.closing = True  # first: the GOAWAY below is ours, not nghttp2's
        self.submit_goaway(error_code)
        self.abandon(LEFT_BEFORE)
        self.flush()
        if client.write_paused or kind == "flood":
            # The client takes nothing we send (a flood of PINGs whose answers it never reads):
            # the GOAWAY cannot reach it, and waiting would hold the connection until the send
            # timeout, or leave the kernel holding it. Cut it now, with RST.
            client.reset()
        return 0

    # -- time, drain, loss ----------------------------------------------------------------------------
    cdef int update_idle(self) except -1:
        """No stream open: the connection may wait for the client's first request (the head
        timeout, until its preface and SETTINGS came) or idle (the keep-alive timeout)."""
        cdef ClientProtocol client = self.client
        if self.streams:
            client.deadline = 0.0
        else:
            client.set_deadline(
                _now() + (client.listener.keepalive_timeout if self.started else client.listener.head_timeout)
            )
        return 0

    cdef int expire(self, double now) except -1:
        """The ClientProtocol's wheel call: a header block that does not end, an idle connection."""
        cdef ClientProtocol client = self.client
        if self.header_deadline and now >= self.header_deadline:
            self.header_deadline = 0.0
            self.terminate("header_timeout", NGHTTP2_PROTOCOL_ERROR)
            return 0
        if client.deadline and now >= client.deadline and not self.streams:
            client.deadline = 0.0
            if not self.started:
                client.server.count_h2("preface_timeout")
            self.submit_goaway(NGHTTP2_NO_ERROR)
            self.closing = True
            self.flush()
            return 0
        if self.header_deadline:
            client.wheel.file(client, self.header_deadline)
        return 0

    cdef int start_draining(self) except -1:
        """Graceful shutdown: GOAWAY naming the last stream taken; those finish, then close."""
        self.submit_goaway(NGHTTP2_NO_ERROR)
        if not self.streams:
            self.closing = True
        self.flush()
        return 0

    cdef int abandon(self, str reason) except -1:
        """Every stream's exchange ends now: the client is gone or cut off."""
        for stream in list(self.streams.values()):
            (<H2Stream>stream).abandon(reason)
        return 0

    cdef int lost(self) except -1:
        """The connection closed: every exchange still open ends, and the session goes."""
        for stream in list(self.streams.values()):
            (<H2Stream>stream).abandon(LEFT_DURING if (<H2Stream>stream).submitted else LEFT_BEFORE)
            (<H2Stream>stream).closed = True
        self.streams.clear()
        self.heading = None
        if self.session != NULL and not self.in_recv:
            nghttp2_session_del(self.session)
            self.session = NULL
        return 0
