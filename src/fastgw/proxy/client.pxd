# The HTTP/1.1 client side (client.pyx, request_head.pyx): one ClientProtocol per accepted
# connection, the Downstream of every exchange its requests make.

cdef enum:                   # what the head loop does with a request header, by name
    H_PASS = 0               # forwarded as it is
    H_HOST                   # host
    H_CL                     # content-length
    H_TE                     # transfer-encoding
    H_CONN                   # connection
    H_EXPECT                 # expect
    H_XFF                    # x-forwarded-for
    H_XFP                    # x-forwarded-proto
    H_XFH                    # x-forwarded-host
    H_RID                    # the listener's request-id header
    H_TRACEPARENT            # traceparent (W3C Trace Context): replaced by the gateway's own
    H_TRACESTATE             # tracestate: forwarded only with the client's trace it belongs to
    H_UPGRADE                # upgrade (hop-by-hop: an upgrade the route allows is offered anew)
    H_DROP                   # hop-by-hop or spoofable: keep-alive, proxy-connection, te, trailer,
                             # proxy-authorization, forwarded


cdef struct PassRules:       # which request header lines are forwarded as they came
    PyObject* named          # set of lower-case names a Connection header lists, or NULL
    const char* rid_name     # the listener's request-id header name, lower-case
    Py_ssize_t rid_len
    bint keep_traceparent    # tracing off: the client's traceparent passes as it is
    bint keep_tracestate     # ... and tracestate, also when the client's trace is continued
    bint drop_underscores    # a name with "_" was seen and the listener drops them
    PyObject* owned          # frozenset of lower-case names the gateway sets (mTLS facts), or NULL


cdef class ClientProtocol(Downstream):
    cdef public object server            # the ListenerServer that accepted the connection
    cdef public object transport
    cdef public HttpParser parser        # None once a request was refused, or while shelved
    cdef H2Connection h2                 # the connection speaks HTTP/2: every read goes there
    cdef public Exchange active          # the exchange answering now
    cdef public Exchange parsing         # the exchange whose body is being parsed
    cdef public list queue               # [Exchange]: pipelined, waiting their turn; None
                                         # until one is (PERF: memory of idle connections)
    cdef object refusal                  # a refused request's fault, answered after the queue
    cdef public double deadline          # read side: head, body, keep-alive or linger; 0 = none
    cdef public double send_deadline     # write side: the client took nothing since; 0 = none
    cdef Py_ssize_t send_backlog         # unsent() when send_deadline was set
    cdef TimerWheel wheel                # the loop's, where deadlines are filed
    cdef object write_bound              # transport.write looked up once, or None (direct sends)
    cdef Outlet outlet
    cdef list out                        # the active exchange's response bytes, until flush(); or None
    cdef unsigned long long generation   # the _plan_generation adopted
    cdef unsigned long long parser_generation  # ... and the one the parser's limits come from
    cdef public list early               # after an upgrade request: the bytes that followed it,
                                         # held until the upstream switches (tunnel.pyx); else None
    cdef public int paused               # P_* bits
    cdef int sock_fd                     # the socket (send queue size, reset); -1 if none or closed
    # Flags, a byte each (PERF: memory: ten C ints were 40 bytes of every connection; 0 or 1,
    # read from Python as ints):
    cdef unsigned char parser_shelved    # idle: the parser went back to the listener's shelf
                                         # (the next read takes one); else None means refused
    cdef unsigned char reading           # inside data_received (the parser is in use)
    cdef unsigned char first_read        # nothing read yet (h2c: is it the HTTP/2 preface?)
    cdef public unsigned char in_head    # a head began in an earlier read (its timeout runs)
    cdef public unsigned char write_paused
    cdef public unsigned char lingering  # answered and half-closed: reading and dropping input
    cdef unsigned char client_eof        # the client half-closed
    cdef public unsigned char closed
    cdef unsigned char rechunk           # its body is re-framed chunked (length unknown)
    cdef unsigned char close_after       # the connection ends after the active exchange

    cdef int adopt(self, ListenerCore listener) except -1
    cdef int tls_established(self, object ssl_object) except -1
    cdef int start_h2(self) except -1
    cdef int renew_parser(self) except -1
    cdef int shelve_parser(self) except -1
    cdef int on_head(self, HttpParser parser) except -1
    cdef int on_message_complete(self) except -1
    cdef int write(self, bytes data) except -1
    cdef bytes error_bytes(self, fault, bytes request_id, bint close, list extra, bint head_only)
    cdef int reject(self, fault) except -1
    cdef int linger_close(self) except -1
    cdef int abandon(self, str reason) except -1
    cdef Py_ssize_t unsent(self) except -1
    cdef int set_deadline(self, double at) except -1
    cdef bint closing(self, Exchange x) noexcept   # must the connection end after x
    cpdef close(self)
    cpdef abort(self)
    cpdef start_draining(self)
    cdef bint send_stalled(self, double now) except -1
    cdef int reset(self) except -1
    cpdef check_deadline(self, double now)


cdef Exchange read_request_head(Downstream client, HttpParser parser)   # request_head.pyx
