# HTTP/2 to upstreams: an upstream with protocol h2c or h2 has pools of H2UpstreamConnections
# (h2_upstream.pyx: one nghttp2 client session each); every exchange sent there is bound to one
# H2UpstreamStream, its UpstreamSide (h2_upstream_stream.pyx).

cdef class H2UpstreamConnection(Timed):
    cdef nghttp2_session* session
    cdef public PoolCore pool
    cdef public object transport
    cdef object write_bound              # transport.write, looked up once
    cdef Outlet outlet
    cdef TimerWheel wheel
    cdef bytes scheme                    # :scheme, b"https" over TLS
    cdef public str alpn_refused         # TLS chose another protocol than h2 (its name), or None
    cdef dict streams                    # stream id -> H2UpstreamStream, until nghttp2 closes it
    cdef list touched                    # streams whose exchange got something in this read
    cdef public int active               # streams handed out and not yet released
    cdef public int limit                # streams at once: the pool's max_streams, or fewer if
                                         # the server's SETTINGS_MAX_CONCURRENT_STREAMS says so
    cdef public long long taken          # streams handed out so far
    cdef public long long served         # ... and completed
    cdef public bint usable              # takes new streams (not after GOAWAY, EOF, or closing)
    cdef public bint closed
    cdef public bint goaway              # the server said GOAWAY
    cdef bint closing                    # close once what is queued is written (our GOAWAY)
    cdef bint in_recv                    # inside nghttp2_session_mem_recv2 ...
    cdef bint in_send                    # ... or mem_send2 (a read callback): no sending now
    cdef bint want_flush                 # ... so flush once it returns
    cdef bint write_paused               # the transport's buffer is full
    cdef public double deadline          # idle (no stream): closed then; 0 = none
    cdef double now                      # the clock read when the current read began
    # The header block arriving (one at a time on a connection, RFC 9113 6.10), as lines
    # "name: value\r\n" in head with Field offsets, the way the HTTP/1.1 parser leaves them.
    cdef char* head
    cdef Py_ssize_t head_len
    cdef Py_ssize_t head_cap
    cdef Py_ssize_t head_size            # RFC 7541 4.1 header list size so far
    cdef int head_status                 # its :status (0: none: trailers)
    cdef int head_count
    cdef Field names[MAX_RESPONSE_FIELDS]
    cdef Field values[MAX_RESPONSE_FIELDS]

    cdef H2UpstreamStream open_stream(self)
    cdef int stream_released(self) except -1
    cdef int submit(self, H2UpstreamStream stream, Exchange x) except -1
    cdef int flush(self) except -1
    cdef int read_done(self) except -1
    cdef int header(self, H2UpstreamStream stream, const uint8_t* name, size_t namelen, const uint8_t* value,
                    size_t valuelen) except -1
    cdef int headers_done(self, H2UpstreamStream stream, bint end_stream) except -1
    cdef list grpc_status_fields(self, HeadLines* lines)
    cdef int data(self, H2UpstreamStream stream, const uint8_t* data, size_t length) except -1
    cdef int stream_closed(self, int32_t stream_id, uint32_t error_code) except -1
    cdef int settings_changed(self) except -1
    cdef int goaway_received(self) except -1
    cdef int shutdown(self) except -1
    cpdef close(self)
    cpdef abort(self)


cdef class H2UpstreamStream(UpstreamSide):
    cdef H2UpstreamConnection session
    cdef int32_t id                      # 0 until submitted
    cdef bint released                   # its room went back to the pool
    cdef bint sent_head                  # its HEADERS were written
    cdef bint reused                     # its connection had completed a stream before it began
    cdef bint got_head                   # the final response head arrived
    cdef bint touched                    # in the connection's touched list
    cdef bint malformed                  # nghttp2 found the response malformed
    cdef bint too_big                    # its head passed the size or line limit
    cdef uint32_t peer_reset             # the server's RST_STREAM error code + 1 (0: none)
    cdef list trailers                   # the response's trailer fields, or None
    # The request body on its way up: what nghttp2's DATA frames read from (take).
    cdef list out                        # bytes pieces; out_offset into the first
    cdef Py_ssize_t out_offset
    cdef Py_ssize_t out_size
    cdef bint out_eof                    # the body is complete once out is empty
    cdef bint deferred                   # nghttp2 waits for data: resume it when some comes
    cdef bint write_paused               # the exchange's client was told to hold the body back
    cdef public bint sending             # the request body is still going up
    # The response body: flow control withheld while the client reads slowly.
    cdef bint reading_paused
    cdef Py_ssize_t unconsumed           # DATA bytes not yet acknowledged (WINDOW_UPDATE)
    cdef public double deadline          # the timeout that applies now (UpstreamConnection's rules)
    cdef double read_timeout
    cdef double send_timeout
    cdef double head_timeout

    cdef Py_ssize_t take(self, uint8_t* buf, size_t length, uint32_t* flags) except -1
    cdef int complete(self) except -1
    cdef int lose(self, int cause, str what, int status) except -1
    cdef int internal_error(self) except -1
    cdef int detach(self) except -1
    cdef int reset(self, uint32_t error_code) except -1
    cdef int consume(self, Py_ssize_t n) except -1
    cdef int arm(self, double now) except -1
    cdef int set_deadline(self, double at) except -1
