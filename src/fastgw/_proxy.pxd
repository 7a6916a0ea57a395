# fastgw._proxy: table of contents.
#
# The code and its theory of operation are in _proxy.pyx; the typed face is _proxy.pyi.
# ClientProtocol (one per client connection), Exchange (one per request) and UpstreamConnection
# (one per upstream socket) are cdef classes in one module, so each reads the others' fields at
# C speed. asyncio calls their `def` methods (it duck-types a protocol); each drives its own
# fastgw.http._parser.HttpParser and acts on its events; the three call each other through the `cdef`
# methods below; Python code (pools, listeners, the clock,
# plugins) sees the `public`/`readonly` fields and the `def`/`cpdef` methods.


from cpython.ref cimport PyObject


cdef enum:                   # what build_exchange does with a request header, by name
    H_PASS = 0               # forwarded as it is
    H_HOST                   # host
    H_CL                     # content-length
    H_TE                     # transfer-encoding
    H_CONN                   # connection
    H_EXPECT                 # expect
    H_XFF                    # x-forwarded-for
    H_XFP                    # x-forwarded-proto
    H_XFH                    # x-forwarded-host
    H_RID                    # x-request-id
    H_TRACEPARENT            # traceparent (W3C Trace Context): replaced by the gateway's own
    H_TRACESTATE             # tracestate: forwarded only with the client's trace it belongs to
    H_DROP                   # hop-by-hop or spoofable: keep-alive, proxy-connection, te, trailer,
                             # upgrade, proxy-authorization, forwarded


cdef enum:                   # a listener's headers_with_underscores
    U_DROP = 0               # not forwarded, not seen by plugins (nginx, Envoy's DROP_HEADER)
    U_REJECT                 # 400
    U_ALLOW                  # forwarded as any other header


cdef enum:                   # what on_upstream_head does with a response header; <= R_CL is kept
    R_PASS = 0
    R_DATE                   # date (kept; the gateway adds one when the upstream sent none)
    R_CL                     # content-length (kept; the body is not re-framed)
    R_CONN                   # connection (dropped, with the headers it names)
    R_TE                     # transfer-encoding (dropped; a body without length is re-chunked)
    R_DROP                   # keep-alive, proxy-connection, te, trailer, upgrade, the request id


cdef struct ResponseLines:   # what _classify_response found in a response head
    Py_ssize_t passed_size   # bytes of the lines that go out as they came
    bint content_length
    bint chunked
    bint date


cdef struct PassRules:       # which request header lines are forwarded as they came
    PyObject* named          # set of lower-case names a Connection header lists, or NULL
    const char* rid_name     # the listener's request-id header name, lower-case
    Py_ssize_t rid_len
    bint keep_traceparent    # tracing off: the client's traceparent passes as it is
    bint keep_tracestate     # ... and tracestate, also when the client's trace is continued
    bint drop_underscores    # a name with "_" was seen and the listener drops them


cdef enum:                   # ClientProtocol.paused: why reading from the client is paused
    P_UPSTREAM = 1           # the upstream's write buffer is full
    P_BUFFER = 2             # request body buffered while no upstream connection is ready
    P_PIPELINE = 4           # too many pipelined requests waiting
    P_CLIENT_WRITE = 8       # marker only: the client's own write buffer is full


from fastgw.http._clock cimport Timed, TimerWheel
from fastgw.http._parser cimport HttpParser
from fastgw._router cimport Router


cdef class Exchange
cdef class UpstreamConnection
cdef class RequestStats
cdef class PoolCore
cdef class Limiter


cdef class RouteCore:
    # What the exchange reads of a compiled route (plan.RoutePlan subclasses it).
    cdef public object upstream          # GroupCore (plan: UpstreamGroup)
    cdef public object timeouts          # UpstreamTimeouts, and its three values:
    cdef readonly double connect_timeout
    cdef readonly double read_timeout
    cdef readonly double send_timeout
    cdef readonly double head_timeout    # 0: read_timeout applies to the head too
    cdef readonly double total_timeout   # 0: none
    cdef public object chain             # HookChain, and its four tuples:
    cdef readonly tuple on_request
    cdef readonly tuple on_upstream_request
    cdef readonly tuple on_response
    cdef readonly tuple on_complete
    cdef public bint preserve_host
    cdef public object strip_prefix      # bytes or None
    cdef public object rewrite           # RewriteTemplate or None
    cdef public object retry             # upstream.retry.RetryPolicy or None
    cdef public long long requests       # requests matched to it (the retry budget's base)
    cdef public tuple limiters           # Limiters an exchange takes a slot in, in order
    cdef public RequestStats stats       # what ended here, counted in C (adopted by id on reload)

    cdef bytes path_upstream(self, bytes path, tuple params)


cdef enum:                   # RequestStats: request counters by method slot and status class
    METHOD_SLOTS = 8         # GET HEAD POST PUT DELETE PATCH OPTIONS other
    STATUS_SLOTS = 6         # 0: no response (the client left first), then 1xx .. 5xx
    LATENCY_BUCKETS = 15     # LATENCY_BOUNDS (14 upper bounds, seconds) and +Inf
    TARGET_OUTCOMES = 7      # Target.outcomes: 0 unanswered, 1..5 status class, 6 failed
    TARGET_FAILED = 6        # connect error, reset, timeout or malformed response


cdef class RequestStats:
    # Plain C counters of the requests that ended on one route (or on no route of a listener),
    # incremented as each request ends and read only when metrics are scraped.
    cdef long long requests[METHOD_SLOTS * STATUS_SLOTS]
    cdef long long denied[3]             # answered 401, 403, 429 (auth and rate-limit refusals)
    cdef long long total_buckets[LATENCY_BUCKETS]    # gateway: head parsed -> last byte out
    cdef double total_sum
    cdef long long upstream_buckets[LATENCY_BUCKETS]  # upstream: head written -> response head
    cdef double upstream_sum

    cdef int count(self, int method_slot, int status, double total, double upstream) noexcept


cdef class Target:
    cdef readonly str host
    cdef readonly int port
    cdef readonly int weight
    cdef readonly PoolCore pool
    cdef readonly bytes host_header      # the Host value sent upstream
    cdef readonly str label              # host:port, for logs and metrics (never error bodies)
    cdef public int in_flight            # requests sent to it and not finished (least-conn, p2c)
    cdef long long outcomes[TARGET_OUTCOMES]   # attempts by outcome (see TARGET_OUTCOMES)
    cdef long long latency_buckets[LATENCY_BUCKETS]  # request head sent -> response ended
    cdef double latency_sum


cdef class GroupCore:
    # What the exchange reads of an upstream group (upstream.group.UpstreamGroup subclasses it).
    cdef public str name                 # the configured name: how errors name the upstream
    cdef public Target single            # the only target, or None: then pick(exchange) chooses
    cdef public bint observes            # call observe(exchange) when an exchange sent to it ends


cdef class PoolCore(Timed):
    # The synchronous half of a keep-alive pool (upstream.pool.TargetPool subclasses it); its
    # waiters' deadlines are filed on the wheel (TargetPool.expire).
    cdef public list idle                # LIFO of idle UpstreamConnections
    cdef public int open
    cdef public int in_use
    cdef public object waiters           # deque[(Future, deadline)]
    cdef public long long opened
    cdef public long long reused
    cdef public long long connect_errors
    cdef public int max_idle
    cdef public double idle_timeout

    cdef UpstreamConnection take_idle_conn(self)
    cdef int release_conn(self, UpstreamConnection conn) except -1


cdef struct Outlet:
    int fd                               # the socket written to directly; -1: the transport only
    bint queued                          # the transport may hold bytes: ours go behind them


cdef class RequestIds:
    # Request ids: a per-process random prefix (made after fork) and a counter, formatted in C.
    cdef readonly bytes prefix
    cdef readonly unsigned long long number
    cdef unsigned long long random_state  # splitmix64, seeded after fork: trace and span ids

    cpdef bytes next(self)
    cdef unsigned long long random64(self) noexcept


cdef class ClientProtocol(Timed):
    cdef public object server            # the ListenerServer that accepted the connection
    cdef public object listener          # its ListenerPlan as of this connection's latest request
    cdef public object transport
    cdef public HttpParser parser        # None once a request was refused
    cdef public bytes peer_ip
    cdef object peer                     # the peer's address (str), or None
    cdef public bint trusted             # a configured proxy: its X-Forwarded-* are believed
    cdef public bint in_head             # a head began in an earlier read (its timeout runs)
    cdef public Exchange active          # the exchange answering now
    cdef public Exchange parsing         # the exchange whose body is being parsed
    cdef public object queue             # deque[Exchange]: pipelined, waiting their turn
    cdef object refusal                  # a refused request's fault, answered after the queue
    cdef public int paused               # P_* bits
    cdef public bint write_paused
    cdef public double deadline          # read side: head, body, keep-alive or linger; 0 = none
    cdef public double send_deadline     # write side: the client took nothing since; 0 = none
    cdef Py_ssize_t send_backlog         # unsent() when send_deadline was set
    cdef int sock_fd                     # the socket, for its send queue's size; -1 if none
    cdef public bint draining
    cdef public bint lingering           # answered and half-closed: reading and dropping input
    cdef bint client_eof                 # the client half-closed
    cdef public bint closed
    cdef double now                      # the clock read when the current read began
    cdef TimerWheel wheel                # the loop's, where deadlines are filed
    cdef object write_bound              # transport.write, looked up once
    cdef Outlet outlet
    cdef RequestIds request_ids
    cdef RequestStats unrouted           # the listener's counters of requests matching no route
    # Copied from the listener's plan by adopt(), again after each reload:
    cdef unsigned long long generation   # the _plan_generation adopted
    cdef unsigned long long parser_generation  # ... and the one the parser's limits come from
    cdef Router router
    cdef Py_ssize_t max_connections
    cdef long long max_body_bytes
    cdef Py_ssize_t max_pipeline
    cdef Py_ssize_t buffer_bytes
    cdef double head_timeout
    cdef double body_timeout
    cdef double keepalive_timeout
    cdef double send_timeout
    cdef double linger_timeout
    cdef int underscores                 # U_*: header names with "_"
    cdef public bytes request_id_header  # as written on the wire, e.g. b"X-Request-Id"
    cdef bytes request_id_lower          # lower-case, for matching
    cdef object last_host_header         # the last Host value checked, and its routing form
    cdef object last_host
    cdef bint trace_context              # continue or start a W3C trace, forward our traceparent
    cdef object access_log               # observe.access_log.AccessLog or None (costs nothing)
    cdef object spans                    # observe.otlp.SpanExport or None (costs nothing)
    cdef unsigned long long trace_sample_max  # a new trace is sampled if its id's low half <= this

    cdef int adopt(self, object listener) except -1
    cdef int renew_parser(self) except -1
    cdef int on_head(self, HttpParser parser) except -1
    cdef int on_message_complete(self) except -1
    cdef Exchange build_exchange(self, HttpParser parser)
    cdef bytes error_bytes(self, fault, bytes request_id, bint close, list extra, bint head_only)
    cdef int exchange_finished(self, Exchange exchange) except -1
    cdef int reject(self, fault) except -1
    cdef int linger_close(self) except -1
    cdef int abandon(self, str reason) except -1
    cdef int write(self, bytes data) except -1
    cdef int pause_reading_for(self, int reason) except -1
    cdef int resume_reading_for(self, int reason) except -1
    cdef Py_ssize_t unsent(self) except -1
    cdef int set_deadline(self, double at) except -1
    cpdef close(self)
    cpdef abort(self)
    cpdef start_draining(self)
    cpdef check_deadline(self, double now)


cdef class Exchange:
    # The context hooks see (ctx): read by plugins and predicates, some written by them.
    cdef public ClientProtocol client
    cdef public object listener          # ListenerPlan
    cdef public bytes method
    cdef public bytes path               # normalized: what was matched and what is forwarded
    cdef public bytes query              # b"" or b"?..." as received
    cdef public bint http_10
    cdef public bint keep_alive
    cdef object head_owner               # the bytes holding the request's header lines ...
    cdef Py_ssize_t fields_lo            # ... at [fields_lo, fields_hi), parsed only if asked
    cdef Py_ssize_t fields_hi
    cdef list _headers                   # that parse: see the `headers` property
    cdef public bytes host               # lower-cased, no port: for routing
    cdef public bytes host_header        # as received
    cdef public long long content_length  # -1 when absent
    cdef public bint chunked
    cdef public bint expect_continue
    cdef public bytes request_id
    cdef public bytes pass_block         # header lines forwarded as they are + X-Forwarded-* lines
    cdef public RouteCore route          # the RoutePlan, once matched
    cdef public tuple params
    cdef public bint request_done
    cdef public long long body_received
    cdef public list pending             # request body framed for upstream, waiting; or None
    cdef public Py_ssize_t pending_size
    cdef public Target target            # the upstream target picked
    cdef public UpstreamConnection conn
    cdef public object acquiring         # Future[UpstreamConnection] while connecting
    cdef public bint retried
    cdef public int response_status
    cdef public list response_headers    # for on_response hooks
    cdef public bint response_started
    cdef public bint rechunk
    cdef public bint close_after
    cdef public list out                 # response bytes gathered during one upstream read
    cdef public bint finished
    cdef public list upstream_headers    # added by on_upstream_request hooks
    cdef bint counted                    # counted in target.in_flight
    cdef public int tries                # retries made so far (0: first attempt)
    cdef int admitted                    # slots held, in route.limiters order
    cdef public double total_deadline    # the route's total timeout, from the first send; 0 = none
    cdef object retry_handle             # the timer of a retry waiting for its backoff
    cdef public object upstream_error    # the UpstreamFault that ended it, if the upstream failed
    cdef public list add_response_headers  # (name, value) pairs added to the proxied response head
    cdef public list body_filters        # hooks.BodyFilter objects the response body runs through
    cdef public double upstream_sent_at  # precise monotonic times, set only when the group
    cdef public double upstream_head_at  # observes: request head written, response head parsed
    cdef public object consumer          # who the request is from, set by an auth plugin (str)
    cdef public object claims            # the verified token's claims (dict), set by an auth plugin
    cdef object _client_ip               # client_ip, worked out on first use
    cdef int method_slot                 # GET HEAD POST PUT DELETE PATCH OPTIONS other: 0..7
    cdef public double received_at       # monotonic time of the read that completed the head
    cdef double ended_at                 # ... and of its end (the next keep-alive counts from it)
    cdef public long long bytes_sent     # response bytes written to the client (head included)
    cdef public bytes traceparent        # the traceparent value sent upstream, or None
    cdef public bytes client_traceparent  # the client's valid traceparent value, or None
    cdef public int upstream_status      # the upstream's final status (0: none): observers judge
                                         # the target by it, not by what the client got
    cdef bytes held_head                 # the response head, held while a body filter holds the body
    cdef object refusal                  # its request turned out malformed or cut: the answer
    cdef bint continue_sent              # the gateway sent its own 100 Continue
    cdef bint interim_sent               # a 1xx went to the client: no retry any more
    cdef public str abort_reason         # why the client got no (complete) response, or None
    cdef bint drop_underscores           # header names with "_" are not seen nor forwarded

    cdef int setup(self, ClientProtocol client) except -1
    cdef int start(self) except -1
    cdef int route_and_forward(self) except -1
    cdef int _run_request_hooks(self, tuple hooks, Py_ssize_t index) except -1
    cdef int forward(self) except -1
    cdef int release_slots(self) except -1
    cdef int send_upstream(self, bint fresh, Target exclude) except -1
    cdef bint try_again(self, str kind, int status) except -1
    cdef bint retry_allowed(self, str kind, int status) except -1
    cdef int retry_later(self) except -1
    cdef int set_target(self, Target target) except -1
    cdef int uncount_target(self) except -1
    cdef int attach(self, UpstreamConnection conn) except -1
    cdef bytes render_upstream_head(self, RouteCore route, Target target)
    cdef int on_client_body(self, bytes data) except -1
    cdef int on_client_complete(self) except -1
    cdef int to_upstream(self, bytes data) except -1
    cdef int on_upstream_interim(self, int status, HttpParser parser) except -1
    cdef int on_upstream_head(self, int status, HttpParser parser) except -1
    cdef int release_head(self) except -1
    cdef int on_upstream_body(self, bytes data) except -1
    cdef int flush_to_client(self) except -1
    cdef int on_upstream_complete(self, UpstreamConnection conn, bint keep_alive) except -1
    cdef int _end_body_filters(self) except -1
    cdef int _replace_response(self, response) except -1
    cdef int on_upstream_lost(self, UpstreamConnection conn, exc) except -1
    cdef int on_upstream_malformed(self, UpstreamConnection conn, str problem) except -1
    cdef int on_upstream_timeout(self, UpstreamConnection conn) except -1
    cdef int _drop_conn(self, UpstreamConnection conn) except -1
    cdef int upstream_write_paused(self) except -1
    cdef int upstream_write_resumed(self) except -1
    cdef int internal_error(self) except -1
    cpdef fail(self, fault)
    cdef int refuse(self, fault) except -1
    cdef str upstream_name(self)
    cdef object upstream_fault(self, str what, int status)
    cdef int answer_fault(self, fault, list extra) except -1
    cdef int answer(self, response) except -1
    cdef int finish(self) except -1
    cdef int end(self, int status) except -1
    cdef int client_lost(self, str reason) except -1
    cdef int observe_end(self, int status) except -1
    cdef int count_attempt(self, double now) except -1


cdef class UpstreamConnection(Timed):
    cdef public PoolCore pool            # its TargetPool
    cdef public object transport
    cdef object write_bound              # transport.write, looked up once
    cdef Outlet outlet
    cdef public Exchange exchange        # while busy
    cdef public HttpParser parser        # one per connection, reused across responses
    cdef public bint interim             # the head parsed last was a 1xx
    cdef public Py_ssize_t served        # responses completed on this connection (0 = fresh)
    cdef public bint received            # any byte of the current response arrived
    cdef public bint closed
    cdef public double deadline          # busy: the exchange's timeout; idle: the pool's; 0 = none
    cdef double now                      # the clock read when the current read began
    cdef TimerWheel wheel
    cdef public double read_timeout
    cdef public double send_timeout
    cdef public double head_timeout
    cdef public bint got_head            # the final response head arrived (then: read_timeout)
    cdef public bint sending
    cdef public bint reading_paused
    cdef public bint head_only
    cdef public bint reusable
    cdef public bint close_delimited

    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cdef int on_head(self, Exchange exchange, HttpParser parser) except -1
    cdef int on_message_complete(self, Exchange exchange, HttpParser parser) except -1
    cdef int arm(self, double now) except -1
    cdef int request_sent(self) except -1
    cdef int write(self, bytes data) except -1
    cdef int begin(self, Exchange exchange, bint head_only, RouteCore route, bint sending, double now) except -1
    cdef int detach(self, bint reusable) except -1
    cdef int set_deadline(self, double at) except -1
    cpdef close(self)
    cpdef abort(self)


cdef int _request_kind(const char* s, Py_ssize_t n, const PassRules* rules) noexcept nogil
cdef int _response_kind(const char* s, Py_ssize_t n, const char* rid, Py_ssize_t rid_len) noexcept nogil
cdef long long _content_length(const char* s, Py_ssize_t n) except -1
cdef bint _valid_request_id(const char* s, Py_ssize_t n) noexcept
cdef bint _needs_normalizing(bytes path) noexcept
cdef bytes _chunk_header(Py_ssize_t size)


cdef class Limiter:
    # A concurrency limit with a bounded wait queue (a route's or an upstream's).
    cdef readonly str name               # "route 'x'" or "upstream 'y'", for the 503 message
    cdef readonly int limit
    cdef readonly int queue_max
    cdef readonly double queue_timeout
    cdef public int active               # slots taken
    cdef object waiting                  # deque[(Exchange, TimerHandle)]
    cdef public long long refused        # answered 503 (full, or waited too long)

    cdef bint admit(self, Exchange exchange) except -1
    cdef int release(self) except -1
    cdef int forget(self, Exchange exchange) except -1
