# One request/response exchange (exchange.pyx), and the two interfaces it talks through: the
# client side (Downstream) and the upstream side (UpstreamSide). The exchange knows neither's
# framing: an HTTP/1.1 connection implements both today (client.pyx, upstream.pyx); an HTTP/2
# stream, a WebSocket tunnel or an in-process caller (collect.pyx: an aggregate's backend call)
# implement the same methods.


cdef enum ExchangeState:
    X_WAITING = 0            # built from a parsed head; queued behind earlier requests
    X_HOOKS                  # routed; its request hooks run (one may be awaiting I/O)
    X_ADMISSION              # waiting for a concurrency slot
    X_CONNECTING             # waiting for an upstream connection
    X_BACKOFF                # a retry waits out its backoff
    X_SENT                   # bound to an upstream connection; no response head yet
    X_HELD                   # the head came; a body filter holds it: nothing went to the client
    X_STREAMING              # the response head went to the client; the body streams
    X_TUNNEL                 # switched protocols: a Tunnel splices both connections (tunnel.pyx)
    X_DONE                   # ended: completed, answered by the gateway, cut, or abandoned


cdef enum:                   # why an attempt failed (to the retry rules: upstream/retry.py)
    F_CONNECT = 1            # the connection could not be opened (or not in time)
    F_STALE                  # a reused keep-alive connection closed before any response byte
    F_RESET                  # closed or reset before the response completed
    F_TIMEOUT                # a head/read/send timeout
    F_STATUS                 # the response head said 5xx


cdef enum:                   # why a client side holds back the request body (pause_request)
    P_UPSTREAM = 1           # the upstream's write buffer is full
    P_BUFFER = 2             # request body buffered while no upstream connection is ready
    P_PIPELINE = 4           # (HTTP/1.1) too many pipelined requests waiting


cdef enum:                   # what the gateway does with a response header line; <= R_CL is kept
    R_PASS = 0
    R_DATE                   # date (kept; the gateway adds one when the upstream sent none)
    R_CL                     # content-length (kept; the body is not re-framed)
    R_CONN                   # connection (dropped, with the headers it names)
    R_TE                     # transfer-encoding (dropped; framing is the client side's)
    R_DROP                   # keep-alive, proxy-connection, te, trailer, upgrade, the request id


cdef enum:
    MAX_RESPONSE_FIELDS = 256  # header lines of one upstream response head (a stack array each)


cdef struct HeadLines:
    # A response head's lines where the upstream side's parser left them (no pairs made on the
    # common path): line i is base[names[i].off : +len] ": " base[values[i].off : +len].
    const char* base
    Field* names
    Field* values
    int count
    Field reason             # HTTP/1.1 reason phrase (len 0: none, or another protocol)


cdef struct ReplyHead:
    # The final response head as the exchange hands it to the client side.
    int status
    HeadLines* lines         # the upstream's lines: those whose kinds[i] <= R_CL go out ...
    const unsigned char* kinds
    Py_ssize_t passed_size   # ... (their bytes as "name: value\r\n")
    PyObject* kept           # ... unless hooks chose the pairs: list[(name, value)], or NULL
    PyObject* added          # pairs plugins add after them (a sticky cookie, rate-limit fields), or NULL
    bint length_known        # a Content-Length among them frames the body
    bint no_body             # HEAD, 204, 304: nothing follows the head
    bint add_date            # the upstream sent no Date (RFC 9110 6.6.1: the gateway adds it)


cdef class Observers:
    # What every request of a listener is counted, logged and identified by (client_facts.pyx):
    # one per listener server, shared by its connections and their streams. A reload that
    # replaces the access log or span export sets it here and every request ends with the new one.
    cdef readonly RequestStats unrouted  # requests matching no route or refused before routing, or None
    cdef readonly RequestIds request_ids # the request-id generator (None: the gateway's own calls)
    cdef public object access_log        # observe.access_log.AccessLog or None
    cdef object span_export              # observe.otlp.SpanExport or None (set as .spans, which
    cdef unsigned long long trace_sample_max  # also sets this: a new trace is sampled if its
                                         # id's low half <= it; a SpanExport's ratio never changes)
    cdef public object recent_errors     # observe.recent_errors.RecentErrors or None


cdef class TlsFacts:
    # A TLS client connection's facts, kept only by TLS connections (client_facts.pyx).
    cdef readonly str version            # "TLSv1.3"
    cdef readonly str cipher             # the cipher suite, or None
    cdef readonly object certificate     # tls.server.ClientCertificate verified, or None
    cdef readonly bytes cert_lines       # its facts as header lines for upstreams (b"": none)


cdef class Downstream(Timed):
    # The client side of exchanges: what the exchange reads and calls. Every method is called
    # with the exchange it concerns; "the client" is whoever asked (a connection, a stream).
    # PERF: memory: an idle connection is mostly this; what all of a listener's connections share
    # is one Observers, what only TLS ones have is one TlsFacts.
    cdef public ListenerCore listener    # the listener's plan as of the current request
    cdef public bytes peer_ip            # the TCP peer (bytes of its address text), b"" if none
    cdef public bint trusted             # the peer is a trusted proxy: its X-Forwarded-* count
    cdef public bint draining            # the gateway drains: no request after the current ones
    cdef double now                      # the clock read when the current loop callback began
    cdef Observers observers             # the listener's counters, logs and request ids
    cdef public str protocol             # the HTTP version spoken with the client: "1.1", "2"
    cdef public TlsFacts tls             # the TLS connection's facts, or None (cleartext)
    cdef tuple last_host                 # the last Host value checked and its routing form,
                                         # limits.host_entry's (PERF: a client repeats its Host)

    # The response, in order. Nothing reaches the client before flush() (or send_error /
    # send_answer, which write at once); the exchange flushes after each upstream read.
    cdef int send_continue(self, Exchange x) except -1
        # the gateway's own 100 Continue (Expect: 100-continue), written at once
    cdef int send_interim(self, Exchange x, int status, HeadLines* lines) except -1
        # an upstream's 1xx before the final head: 1 if passed on, 0 if dropped (HTTP/1.0)
    cdef int send_head(self, Exchange x, ReplyHead* head) except -1
        # the final head; the client side chooses the body's framing
    cdef int send_body(self, Exchange x, bytes data) except -1
        # a piece of the body (never empty)
    cdef int send_trailers(self, Exchange x, list pairs) except -1
        # trailer fields (name, value) after the body, just before send_end (gRPC's status):
        # sent where the protocol carries them (HTTP/2), dropped where it cannot
    cdef int send_end(self, Exchange x) except -1
        # the body is complete (and so is the response)
    cdef int send_error(self, Exchange x, object fault, list extra) except -1
        # the gateway's own error response for an HttpFault, complete (nothing was sent before)
    cdef int send_answer(self, Exchange x, object response) except -1
        # a hooks.Response a plugin answered with, complete (nothing was sent before)
    cdef int flush(self) except -1
        # write what send_* gathered: one write per upstream read
    cdef int cut(self, Exchange x) except -1
        # the response cannot complete after its head went out: the only honest signal is
        # the client side's own (close the connection, reset the stream); never a clean end
    cdef int pause_request(self, int reason) except -1
    cdef int resume_request(self, int reason) except -1
        # hold back / let through the request body (reasons P_*; reading resumes when none holds)
    cdef int exchange_ended(self, Exchange x) except -1
        # x ended (X_DONE), its last byte handed over: the next request may start


cdef class UpstreamSide(Timed):
    # One upstream connection (or stream) serving one exchange at a time: what the exchange calls.
    cdef public PoolCore pool            # its target's pool
    cdef public Exchange exchange        # while bound
    cdef double now                      # the clock read when its current read began
    cdef public bint closed
    cdef public bint received            # a byte of the current response arrived
    cdef public Py_ssize_t served        # responses completed on it (0: fresh)
    cdef public bint reusable            # may its pool keep it after this exchange

    cdef int begin(self, Exchange x, double now) except -1
        # bound to x: send the request head and whatever body x holds in pending (the side
        # frames it); arm its timeouts from now
    cdef int send_body(self, bytes data) except -1
        # a request body piece, as the client sent it once de-framed
    cdef int send_body_at(self, bytes owner, const char* data, Py_ssize_t size) except -1
        # the same, for a piece lying inside owner (a client's read), valid for this call only
    cdef int end_request(self) except -1
        # the request body is complete (the read timeout applies from here)
    cdef int pause_response(self) except -1
    cdef int resume_response(self) except -1
        # the client reads slowly / again: stop / restart reading the response (no read deadline
        # while paused; the route's total timeout still runs)
    cdef int drop(self) except -1
        # the exchange gives it up mid-way: unbind, abort, give the pool its slot back
    cdef int park(self, double idle_deadline) except -1
    cdef int unpark(self) except -1
        # (the pool) idle in the pool until idle_deadline, watching for the upstream's close / taken
    cpdef close(self)


cdef class Exchange:
    # The request as plugins see it (ctx): read by plugins and predicates, some written by them.
    cdef public Downstream client        # who asked
    cdef public ListenerCore listener    # the listener's plan when the head was parsed
    cdef public bytes method
    cdef public bytes path               # normalized: what was matched and what is forwarded
    cdef public bytes query              # b"" or b"?..." as received
    cdef public bint http_10
    cdef public bint keep_alive          # the client may send another request after this one
    cdef object head_owner               # the bytes holding the request's header lines ...
    cdef Py_ssize_t fields_lo            # ... at [fields_lo, fields_hi), parsed only if asked
    cdef Py_ssize_t fields_hi
    cdef list _headers                   # that parse: see the `headers` property
    cdef bint drop_underscores           # header names with "_" are neither seen nor forwarded
    cdef public bytes host               # lower-cased, no port: for routing
    cdef public bytes host_header        # as received
    cdef public long long content_length  # -1 when absent
    cdef public bint chunked             # the body's length is not known ahead
    cdef public bint expect_continue
    cdef public bytes request_id
    cdef public bytes pass_block         # header lines forwarded as they are + X-Forwarded-* lines
    cdef public RouteCore route          # the RoutePlan, once matched
    cdef public tuple params
    cdef public list upstream_headers    # added by on_upstream_request hooks
    cdef public object consumer          # who the request is from, set by an auth plugin (str)
    cdef public object claims            # the verified token's claims (dict), set by an auth plugin
    cdef object _forwarded               # http.forwarded.Forwarded: who the client is, on first use
    cdef public bytes traceparent        # the traceparent value sent upstream, or None
    cdef public bytes client_traceparent  # the client's valid traceparent value, or None
    cdef public int response_status      # what the client got (0: nothing yet, or nothing at all)
    cdef public list response_headers    # for on_response hooks
    cdef public list add_response_headers  # (name, value) pairs added to the response head
    cdef public list body_filters        # hooks.BodyFilter objects the response body runs through
    cdef public bint response_started    # the response head went to the client
    cdef public list trailers            # the upstream's trailer fields (name, value), or None

    # The machinery (exchange.pyx, hooks.pyx): its state, its upstream attempts, its end.
    cdef public ExchangeState state
    cdef public bint request_done        # the request body is complete (or there is none)
    cdef public bint must_close          # the client side must not take another request after it
    cdef bint body_follows               # (set by the client side around start()) the next event
                                         # of the read being parsed is a piece of this body: the
                                         # upstream side may hold the head to send both at once
    cdef public long long body_received
    cdef public list pending             # request body pieces waiting for a connection, or None
    cdef public Py_ssize_t pending_size
    cdef public Target target            # the upstream target of the current attempt
    cdef public UpstreamSide conn
    cdef public object acquiring         # Future[UpstreamSide] while X_CONNECTING
    cdef object retry_handle             # the timer of X_BACKOFF
    cdef bint counted                    # counted in target.in_flight
    cdef public int tries                # retries made so far (0: first attempt)
    cdef public bint retried_stale       # the one retry of a request a stale connection lost
    cdef int admitted                    # slots held, in route.limiters order
    cdef public double total_deadline    # the route's total timeout, from the first send; 0 = none
    cdef object refusal                  # its request turned out malformed or cut: the answer
    cdef bint continue_sent              # the gateway sent its own 100 Continue
    cdef public bint interim_sent        # a 1xx went to the client: no retry any more
    cdef public int upstream_status      # the upstream's final status (0: none): observers judge
                                         # the target by it, not by what the client got
    cdef public object upstream_error    # the UpstreamFault that ended it, if the upstream failed
    cdef public str abort_reason         # why the client got no (complete) response, or None
    cdef ReplyHead held                  # the final head while X_HELD: hooks ran, so its lines
    cdef object held_refs                # are pairs (kept, added), kept alive here
    cdef public long long bytes_sent     # response bytes handed to the client side (head included)
    cdef int method_slot                 # GET HEAD POST PUT DELETE PATCH OPTIONS other: 0..7
    cdef public double received_at      # monotonic time of the read that completed the head
    cdef double ended_at                 # ... and of its end (keep-alive counts from it)
    cdef public double upstream_sent_at  # request head written (the last attempt's)
    cdef public double upstream_head_at  # response head parsed (only when the group observes)
    cdef public object upgrade           # an Upgrade request: what it asks for, then what went
                                         # upstream, then the protocol switched to; else None
    cdef public double switched_at       # when its 101 went out: the request is timed to it

    # Driven by the client side:
    cdef int setup(self, Downstream client) except -1
    cdef int start(self) except -1                      # its turn: route, hooks, upstream
    cdef int on_client_body(self, bytes data) except -1
    cdef int on_client_body_at(self, bytes owner, const char* data, Py_ssize_t size) except -1
    cdef int on_client_complete(self) except -1
    cdef int refuse(self, fault) except -1              # its request body is malformed or cut
    cdef int client_lost(self, str reason) except -1    # the client left (or stopped reading)
    cdef int pause_upstream(self) except -1             # the client's write buffer is full
    cdef int resume_upstream(self) except -1
    # Driven by the upstream side:
    cdef int on_upstream_interim(self, int status, HeadLines* lines) except -1
    cdef int on_upstream_head(self, int status, HeadLines* lines) except -1
    cdef int on_upstream_body(self, bytes data) except -1
    cdef int on_upstream_trailers(self, list pairs) except -1  # before on_upstream_complete
    cdef int on_upstream_complete(self, bint reusable) except -1
    cdef int on_upstream_flush(self) except -1          # end of one upstream read
    cdef int on_upstream_failed(self, int cause, str what, int status) except -1
    cdef int upstream_write_paused(self) except -1
    cdef int upstream_write_resumed(self) except -1
    # The machinery (exchange.pyx, hooks.pyx):
    cdef int route_and_forward(self) except -1
    cdef int forward(self) except -1
    cdef int release_slots(self) except -1
    cdef int send_upstream(self, bint fresh, Target exclude) except -1
    cdef int attach(self, UpstreamSide conn) except -1
    cdef int after_failure(self, int cause) except -1
    cdef int retry(self, object plan) except -1
    cdef int set_target(self, Target target) except -1
    cdef int uncount_target(self) except -1
    cdef int release_head(self) except -1
    cdef int end_body_filters(self) except -1
    cdef int replace_response(self, response) except -1
    cdef int drop_conn(self) except -1
    cdef int internal_error(self) except -1
    cpdef fail(self, fault)
    cdef str upstream_name(self)
    cdef object upstream_fault(self, str what, int status)
    cdef int answer_fault(self, fault, list extra) except -1
    cdef int answer(self, response) except -1
    cdef int finish(self) except -1
    cdef int end(self, int status) except -1
    cdef int observe_end(self, int status) except -1
    cdef int count_attempt(self, double now) except -1
