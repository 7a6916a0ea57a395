# HTTP/2 from clients (h2.pyx, h2_stream.pyx): a ClientProtocol whose connection negotiated h2
# (ALPN, or cleartext prior knowledge on an h2c listener) hands every read to its H2Connection,
# which runs an nghttp2 server session; each request stream is an H2Stream, the Downstream of
# the one exchange it carries.

cdef class H2Connection:
    cdef nghttp2_session* session
    cdef ClientProtocol client           # the connection: transport, TLS facts, deadlines, server
    cdef dict streams                    # stream id -> H2Stream, open streams only
    cdef H2Stream heading                # the stream whose header block is arriving, or None
    cdef bint in_recv                    # inside nghttp2_session_mem_recv2: no sending now
    cdef bint want_flush                 # ... so flush when it returns
    cdef bint flush_scheduled            # a flush is due at the end of this loop turn
    cdef object call_soon                # the loop's call_soon
    cdef bint started                    # the client's preface and SETTINGS arrived
    cdef bint goaway_sent                # no new stream will be accepted
    cdef bint closing                    # close once what is queued is written
    cdef int too_big                     # streams refused for an oversize header list
    cdef double reset_tokens             # rapid-reset guard: a token bucket of client resets
    cdef double reset_at
    cdef double reset_rate
    cdef double reset_burst
    cdef double header_deadline          # a header block must end by then (0: none arriving)
    cdef bytearray scratch               # the arriving header block's fields as HTTP/1.1 lines
    cdef HttpParser parser               # reads each stream's head (reset per stream)
    cdef unsigned long long parser_generation  # the plan its limits came from

    cdef int received(self, bytes data) except -1
    cdef int flush(self) except -1
    cdef int flush_soon(self) except -1
    cdef int submit_goaway(self, uint32_t error_code) except -1
    cdef int terminate(self, str kind, uint32_t error_code) except -1
    cdef int begin_stream(self, int32_t stream_id) except -1
    cdef int header(self, H2Stream stream, const uint8_t* name, size_t namelen, const uint8_t* value,
                    size_t valuelen) except -1
    cdef int headers_done(self, H2Stream stream, bint end_stream) except -1
    cdef int data(self, int32_t stream_id, const uint8_t* data, size_t length) except -1
    cdef int stream_end(self, int32_t stream_id) except -1
    cdef int stream_closed(self, int32_t stream_id, uint32_t error_code) except -1
    cdef int client_reset(self, int32_t stream_id) except -1
    cdef HttpParser head_parser(self)
    cdef int update_idle(self) except -1
    cdef int expire(self, double now) except -1
    cdef int start_draining(self) except -1
    cdef int abandon(self, str reason) except -1
    cdef int lost(self) except -1


cdef class H2Stream(Downstream):
    cdef H2Connection conn
    cdef int32_t id
    cdef public Exchange x               # its exchange, until it ends
    cdef bint closed                     # nghttp2 closed the stream
    cdef bint submitted                  # the response head went to nghttp2
    cdef bint sent_end                   # ... and its END_STREAM went to the client
    # The request head as it arrives (h2_stream.pyx assembles an HTTP/1.1 head from it).
    cdef bytes method
    cdef bytes target
    cdef bytes authority
    cdef bytes host
    cdef list cookies
    cdef Py_ssize_t head_size            # RFC 7541 header list size so far
    cdef int field_count
    cdef bint oversize
    cdef str malformed                   # why the head cannot be accepted, or None
    cdef bint has_length                 # a content-length came with it
    cdef bint grpc                       # content-type application/grpc: errors as gRPC statuses
    cdef double grpc_timeout             # its grpc-timeout in seconds (0: none)
    # The response body on its way: what nghttp2's DATA frames read from.
    cdef list out                        # bytes pieces; out_offset into the first
    cdef Py_ssize_t out_offset
    cdef Py_ssize_t out_size
    cdef bint out_eof                    # the body is complete once out is empty
    cdef bint deferred                   # nghttp2 waits for data: resume it when some comes
    cdef bint upstream_paused            # the exchange's upstream reads wait for out to drain
    cdef list trailers                   # (name, value) pairs sent after the body, or None
    # The request body: flow control withheld while the exchange holds it back.
    cdef int paused                      # P_* bits
    cdef Py_ssize_t unconsumed           # DATA bytes not yet acknowledged (WINDOW_UPDATE)
    cdef double deadline                 # request body stall (0: none)
    cdef double send_deadline            # response bytes queued that the client's window blocks

    cdef int init(self, H2Connection conn, int32_t stream_id) except -1
    cdef int add_field(self, const char* name, size_t namelen, const char* value, size_t valuelen) except -1
    cdef int start(self, bint end_stream) except -1
    cdef int received(self, const uint8_t* data, size_t length) except -1
    cdef int request_ended(self) except -1
    cdef int ended(self, uint32_t error_code) except -1
    cdef int abandon(self, str reason) except -1
    cdef Py_ssize_t take(self, uint8_t* buf, size_t length, uint32_t* flags) except -1
    cdef int queue(self, bytes data) except -1
    cdef int resume(self) except -1
    cdef int submit(self, int status, list pairs, HeadLines* lines, const unsigned char* kinds,
                    bint body) except -1
    cdef bytes http1_head(self, object authority, bint end_stream)
    cdef int refuse(self, fault) except -1
    cdef nghttp2_nv* fields(self, int status, list pairs, HeadLines* lines, const unsigned char* kinds,
                            size_t* count, char** names) except NULL
    cdef int interim(self, int status, list pairs, HeadLines* lines, const unsigned char* kinds) except -1
    cdef int submit_trailers(self) except -1
    cdef int respond(self, int status, list pairs, bytes body, bint head_only) except -1
    cdef int grpc_error(self, Exchange x, int status, str message) except -1
    cdef int reset(self, uint32_t error_code) except -1
    cdef int consume(self, Py_ssize_t n) except -1
    cdef int set_deadline(self, double at) except -1
