# -- the interfaces the exchange talks through (declared, with their contracts, in exchange.pxd) ----

cdef class Downstream(Timed):
    """The client side of exchanges: an HTTP/1.1 connection (ClientProtocol), an in-process
    caller (Collector); an HTTP/2 stream next. Subclasses implement every method."""

    @property
    def peer(self):
        """The TCP peer's address as str, or None. PERF: memory: made when asked, not kept per
        connection (the hot path reads ``peer_ip``)."""
        return self.peer_ip.decode() if self.peer_ip else None

    @property
    def tls_version(self):
        """The connection's TLS version ("TLSv1.3"), or None for cleartext."""
        return self.tls.version if self.tls is not None else None

    @property
    def tls_cipher(self):
        return self.tls.cipher if self.tls is not None else None

    @property
    def client_certificate(self):
        """The verified client certificate's facts (tls.server.ClientCertificate), or None."""
        return self.tls.certificate if self.tls is not None else None

    cdef int send_continue(self, Exchange x) except -1:
        raise NotImplementedError

    cdef int send_interim(self, Exchange x, int status, HeadLines* lines) except -1:
        raise NotImplementedError

    cdef int send_head(self, Exchange x, ReplyHead* head) except -1:
        raise NotImplementedError

    cdef int send_body(self, Exchange x, bytes data) except -1:
        raise NotImplementedError

    cdef int send_trailers(self, Exchange x, list pairs) except -1:
        return 0  # a client side that cannot carry trailers drops them

    cdef int send_end(self, Exchange x) except -1:
        raise NotImplementedError

    cdef int send_error(self, Exchange x, object fault, list extra) except -1:
        raise NotImplementedError

    cdef int send_answer(self, Exchange x, object response) except -1:
        raise NotImplementedError

    cdef int flush(self) except -1:
        raise NotImplementedError

    cdef int cut(self, Exchange x) except -1:
        raise NotImplementedError

    cdef int pause_request(self, int reason) except -1:
        raise NotImplementedError

    cdef int resume_request(self, int reason) except -1:
        raise NotImplementedError

    cdef int exchange_ended(self, Exchange x) except -1:
        raise NotImplementedError


cdef class UpstreamSide(Timed):
    """One upstream connection or stream serving one exchange at a time: an HTTP/1.1 connection
    (UpstreamConnection); an HTTP/2 stream next. Subclasses implement every method."""

    cdef int begin(self, Exchange x, double now) except -1:
        raise NotImplementedError

    cdef int send_body(self, bytes data) except -1:
        raise NotImplementedError

    cdef int send_body_at(self, bytes owner, const char* data, Py_ssize_t size) except -1:
        """``send_body`` of a piece lying inside ``owner`` (a client's read): a subclass may write
        it from there; by default it gets its own bytes object (none when it is all of owner)."""
        if data == PyBytes_AS_STRING(owner) and size == PyBytes_GET_SIZE(owner):
            return self.send_body(owner)
        return self.send_body(PyBytes_FromStringAndSize(data, size))

    cdef int end_request(self) except -1:
        raise NotImplementedError

    cdef int pause_response(self) except -1:
        raise NotImplementedError

    cdef int resume_response(self) except -1:
        raise NotImplementedError

    cdef int drop(self) except -1:
        raise NotImplementedError

    cdef int park(self, double idle_deadline) except -1:
        raise NotImplementedError

    cdef int unpark(self) except -1:
        raise NotImplementedError

    cpdef close(self):
        raise NotImplementedError


# -- one request/response exchange -----------------------------------------------------------------

# Why an exchange ended without its response reaching the client (the access log's error).
cdef str LEFT_BEFORE = "client closed the connection before the response"
cdef str LEFT_DURING = "client closed the connection during the response"
cdef str STALLED = "client stopped reading: nothing sent within the send timeout"

_NOT_FOUND = ClientFault("no route matches this request", 404)
_NOT_FOUND.close = False
_METHOD_NOT_ALLOWED = ClientFault("method not allowed for this path", 405)
_METHOD_NOT_ALLOWED.close = False


@cython.final
@cython.freelist(64)  # PERF: one per request; recycled instead of malloc'd
cdef class Exchange:
    """One request from its parsed head to its last response byte (or its failure).

    States (``ExchangeState``), in the order a proxied request passes them:

        X_WAITING --start()--> X_HOOKS --hooks done--> X_ADMISSION? --slot--> X_CONNECTING?
            --connection--> X_SENT --head--> X_HELD? --first body bytes--> X_STREAMING --end--> X_DONE

    A pooled connection skips X_CONNECTING; X_ADMISSION only while a concurrency limit is full;
    X_HELD only while a body filter holds the whole body (json_fields). A failed attempt goes
    back to X_CONNECTING, or to X_BACKOFF first, when the retry rules allow (upstream/retry.py);
    else it ends: an error response before X_STREAMING, a cut after. Any state may end in X_DONE:
    an answer from a hook or the gateway, a client that left. ``request_done`` is the other
    direction: the request body, which streams up while the response is awaited.

    Failure rules: before anything went to the client, a failure is one error response (502
    refused or reset or malformed, 503 no connection, 504 timeout); after the head went out, the
    only honest signal is the client side's cut, never a clean end. The target is judged by what
    the upstream did (``upstream_status``, ``upstream_error``), never by what the client got."""

    cdef int setup(self, Downstream client) except -1:
        self.client = client
        self.listener = client.listener
        self.route = None
        self.params = ()
        self.state = X_WAITING
        self.request_done = False
        self.must_close = False
        self.body_follows = False
        self.body_received = 0
        self.pending = None
        self.pending_size = 0
        self.target = None
        self.conn = None
        self.acquiring = None
        self.retry_handle = None
        self.counted = False
        self.tries = 0
        self.retried_stale = False
        self.admitted = 0
        self.total_deadline = 0.0
        self.refusal = None
        self.continue_sent = False
        self.interim_sent = False
        self.upstream_status = 0
        self.upstream_error = None
        self.abort_reason = None
        self.held_refs = None
        self.bytes_sent = 0
        self.response_status = 0
        self.response_started = False
        self.trailers = None
        self.response_headers = None
        self.add_response_headers = None
        self.body_filters = None
        self.upstream_headers = None
        self.head_owner = None
        self._headers = None
        self.drop_underscores = False
        self.consumer = None
        self.claims = None
        self._forwarded = None
        self.traceparent = None
        self.client_traceparent = None
        self.upstream_sent_at = self.upstream_head_at = self.switched_at = 0.0
        self.upgrade = None
        self.received_at = client.now  # the read that completed the head
        return 0

    # -- start -----------------------------------------------------------------------------------
    cdef int start(self) except -1:
        """Its turn came: route it, run its hooks, send it upstream."""
        if self.refusal is not None:
            self.answer_fault(self.refusal, None)  # its body turned out malformed or cut short
            return 0
        try:
            self.route_and_forward()
        except Exception:
            # A plugin's hook (or a bug of ours) raised: this request gets its 500 now. Left to
            # the reader's handler, it would wait behind itself and never be answered.
            self.internal_error()
        return 0

    cdef int route_and_forward(self) except -1:
        match = self.listener.router.match(self.method, self.host, self.path, self)
        if match is None:
            self.answer_fault(_NOT_FOUND, None)
            return 0
        if type(match) is MethodNotAllowed:
            self.answer_fault(_METHOD_NOT_ALLOWED, [(b"Allow", (<MethodNotAllowed>match).allow)])
            return 0
        cdef RouteCore route = <RouteCore>(<RouteMatch>match).route  # the router holds RoutePlans
        self.route = route
        route.requests += 1
        self.params = (<RouteMatch>match).params
        if self.upgrade is not None and not accept_upgrade(self, route):
            return 0  # tunnel.pyx answered: the route does not tunnel that protocol
        self.state = X_HOOKS
        if self.expect_continue and not self.request_done:
            # RFC 9110 10.1.1: we are about to read the body, so tell the client to send it.
            # (A declared length over the limit was refused with 413 before getting here.)
            self.client.send_continue(self)
            self.continue_sent = True
        if route.on_request:
            run_request_hooks(self, route.on_request, 0)
            return 0
        self.forward()
        return 0

    cdef int forward(self) except -1:
        """Past the request hooks: a slot in each concurrency limit (or a wait, or 503), then send."""
        cdef tuple limiters = self.route.limiters
        while self.admitted < len(limiters):
            if not (<Limiter>limiters[self.admitted]).admit(self):
                if self.state != X_DONE:
                    self.state = X_ADMISSION  # the limiter calls _forward_admitted with a slot
                return 0
            self.admitted += 1
        self.send_upstream(False, None)
        return 0

    def _forward_admitted(self) -> None:
        """A limiter gave this waiting exchange its slot."""
        self.admitted += 1
        if self.state == X_DONE:
            self.release_slots()  # it ended meanwhile: pass the slot on
            return
        try:
            self.forward()
        except Exception:
            self.internal_error()

    cdef int release_slots(self) except -1:
        cdef tuple limiters
        if self.route is None:
            return 0
        limiters = self.route.limiters
        if self.admitted < len(limiters):
            (<Limiter>limiters[self.admitted]).forget(self)  # if it was waiting there
        while self.admitted > 0:
            self.admitted -= 1
            (<Limiter>limiters[self.admitted]).release()
        return 0

    # -- upstream ------------------------------------------------------------------------------
    cdef int send_upstream(self, bint fresh, Target exclude) except -1:
        """Pick a target (not ``exclude``, a retry's failed one, when there is a choice) and send:
        on an idle pooled connection at once, else once one is open (``fresh``: a new one even
        at the pool's limit, for the retry of a request a stale connection lost)."""
        cdef RouteCore route = self.route
        cdef GroupCore group = <GroupCore>route.upstream
        cdef Target target = group.single
        if route.total_timeout and self.upstream_sent_at == 0.0:
            # From the first attempt, retries included; a client's own deadline (gRPC's
            # grpc-timeout) may already be nearer.
            at = _now() + route.total_timeout
            if not self.total_deadline or at < self.total_deadline:
                self.total_deadline = at
        if target is None:
            try:
                target = group.choose(self, exclude)
            except HttpFault as fault:  # no usable target: this request's answer, not the connection's
                self.answer_fault(fault, None)  # no upstream failed: nothing for observers to count
                return 0
        self.set_target(target)
        cdef PoolCore pool = target.pool
        cdef UpstreamSide conn = None if fresh else pool.take_idle_conn()
        if conn is not None:
            self.attach(conn)
            return 0
        self.state = X_CONNECTING
        connect = route.connect_timeout
        future = pool.connect_fresh(connect) if fresh else pool.acquire(connect)
        self.acquiring = future
        future.add_done_callback(self._on_acquired)
        return 0

    def _on_acquired(self, future) -> None:
        self.acquiring = None
        if future.cancelled():
            return
        exc = future.exception()
        if self.state == X_DONE:
            if exc is None:
                future.result().pool.give_back(future.result())
            return
        if exc is None:
            try:
                self.attach(future.result())
            except Exception:
                self.internal_error()
            return
        if isinstance(exc, HttpFault):
            self.upstream_error = (<object>exc).naming(self.upstream_name())
        else:
            self.upstream_error = self.upstream_fault("connect failed", 502)
        try:
            self.after_failure(F_CONNECT if isinstance(exc, ConnectFault) else 0)
        except Exception:
            self.internal_error()

    cdef int attach(self, UpstreamSide conn) except -1:
        """Bind a connection: the on_upstream_request hooks, then the head and whatever body has
        arrived go up in one write (the upstream side renders and frames them)."""
        cdef RouteCore route = self.route
        cdef double now = _now()
        self.conn = conn
        self.state = X_SENT
        self.upstream_sent_at = now  # for the upstream latency metric and observers
        if route.on_upstream_request:
            self.upstream_headers = []  # each attempt's own
            run_upstream_request_hooks(self, route.on_upstream_request)
        conn.begin(self, now)
        cdef Py_ssize_t buffered = self.pending_size
        if buffered:
            self.pending_size = 0  # begin() sent the pieces
            if buffered > self.listener.buffer_bytes:
                self.client.resume_request(P_BUFFER)
        return 0

    cdef int set_target(self, Target target) except -1:
        """Count this request against the target it is sent to (balancers read ``in_flight``)."""
        if self.counted:
            self.target.in_flight -= 1
        self.target = target
        target.in_flight += 1
        self.counted = True
        return 0

    cdef int uncount_target(self) except -1:
        if self.counted:
            self.counted = False
            self.target.in_flight -= 1
        return 0

    # -- failures and retries ----------------------------------------------------------------------
    cdef int on_upstream_failed(self, int cause, str what, int status) except -1:
        """The upstream side lost this attempt and unbound itself: closed or reset (F_STALE,
        F_RESET), a malformed response (0), a timeout (F_TIMEOUT, ``what`` None: said here)."""
        self.conn = None
        if self.state == X_DONE:
            return 0
        if what is None:
            what = (
                "timed out" if not self.total_deadline or _now() < self.total_deadline
                else "exceeded the route's total timeout"
            )
        self.upstream_error = self.upstream_fault(what, status)
        return self.after_failure(cause)

    cdef int after_failure(self, int cause) except -1:
        """A retry when the route's retry rules allow one, else the failure's answer."""
        plan = self.route.retry.after(self, cause, 0) if cause else None
        if plan is not None:
            self.retry(plan)
            return 0
        self.fail(self.upstream_error)
        return 0

    cdef int retry(self, object plan) except -1:
        """Send again, as ``plan`` (upstream.retry.RetryPlan) says: after its delay, on a fresh
        connection or not, and, when the target was to blame, elsewhere when there is a choice
        and with the failed attempt observed and counted."""
        cdef RouteCore route = self.route
        cdef Target failed = self.target
        cdef double delay = plan.delay
        if plan.blame:
            if (<GroupCore>route.upstream).observes:  # the failed attempt counts for health and outliers
                (<GroupCore>route.upstream).observe_exchange(self)
            self.count_attempt(_now())
            self.tries += 1
        else:
            failed = None
        self.uncount_target()
        self.target = None  # counted above: the exchange's end must not report this attempt again
        self.upstream_error = None
        self.upstream_status = self.response_status = 0
        if delay <= 0.0:
            self.send_upstream(plan.fresh, failed)
            return 0
        self.state = X_BACKOFF
        self.retry_handle = asyncio.get_running_loop().call_later(delay, self._send_again, failed, plan.fresh)
        return 0

    def _send_again(self, Target failed, bint fresh) -> None:
        self.retry_handle = None
        if self.state == X_DONE:
            return
        try:
            self.send_upstream(fresh, failed)
        except Exception:
            self.internal_error()

    # -- request body ----------------------------------------------------------------------------
    cdef int on_client_body(self, bytes data) except -1:
        return self.on_client_body_at(data, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef int on_client_body_at(self, bytes owner, const char* data, Py_ssize_t size) except -1:
        """A body piece lying inside ``owner`` (the client's read, valid for this call): written
        upstream from where it lies when a connection is bound; copied only to be buffered."""
        self.body_received += size
        if self.body_received > self.listener.max_body_bytes:
            self.fail(ClientFault("request body too large", 413))
            return 0
        if self.state == X_DONE:
            return 0  # the exchange already ended; the rest of the body is dropped
        if self.conn is not None:
            self.conn.send_body_at(owner, data, size)
            return 0
        if self.pending is None:
            self.pending = []
        if data == PyBytes_AS_STRING(owner) and size == PyBytes_GET_SIZE(owner):
            self.pending.append(owner)
        else:
            self.pending.append(PyBytes_FromStringAndSize(data, size))
        self.pending_size += size
        if self.pending_size > self.listener.buffer_bytes:
            self.client.pause_request(P_BUFFER)
        return 0

    cdef int on_client_complete(self) except -1:
        self.request_done = True
        if self.conn is not None and self.state != X_DONE:
            self.conn.end_request()
        return 0

    # -- response --------------------------------------------------------------------------------
    cdef int on_upstream_interim(self, int status, HeadLines* lines) except -1:
        """A 1xx before the final response: a proxy forwards it (RFC 9110 15.2), but not a 100 when
        the gateway already sent its own 100 Continue."""
        if self.state != X_SENT or (status == 100 and self.continue_sent):
            return 0
        if self.client.send_interim(self, status, lines):
            self.interim_sent = True
        return 0

    cdef int on_upstream_head(self, int status, HeadLines* lines) except -1:
        self.response_status = self.upstream_status = status
        cdef RouteCore route = self.route
        if (<GroupCore>route.upstream).observes:
            self.upstream_head_at = self.conn.now
        if status >= 500:
            plan = route.retry.after(self, F_STATUS, status)
            if plan is not None:
                self.drop_conn()  # the rest of this answer is not wanted
                self.retry(plan)
                return 0
        if status == 101 and not tunnel_asked(self, lines):
            return 0  # tunnel.pyx answered 502: not an upgrade this gateway offered
        cdef unsigned char kinds[MAX_RESPONSE_FIELDS]  # each line classified once
        cdef ReplyHead reply
        cdef object drop_named = classify_response(lines, kinds, &reply, self.listener.request_id_lower)
        cdef list kept = None  # None: the upstream's own lines, filtered while rendering
        cdef list added = self.add_response_headers
        on_response = route.on_response
        if on_response or drop_named:
            kept = response_pairs(lines, kinds, drop_named)
            if added:
                kept += added
                added = None
            if on_response:
                self.response_headers = kept
                replacement = run_response_hooks(self, on_response)
                if replacement is not None:
                    self.replace_response(replacement)
                    return 0
                kept = self.response_headers
                if reply.length_known and self.body_filters:
                    # A filter that changes the body's length removed Content-Length: re-frame.
                    reply.length_known = has_header(kept, b"content-length")
                reply.add_date = not has_header(kept, b"date")
        reply.status = status
        reply.lines = lines
        reply.kinds = kinds
        reply.kept = <PyObject*>kept if kept is not None else NULL
        reply.added = <PyObject*>added if added else NULL
        reply.no_body = self.method == _HEAD or status == 204 or status == 304
        if reply.no_body:
            self.body_filters = None  # nothing to filter
        if status == 101:
            return start_tunnel(self, &reply)  # tunnel.pyx: the 101 goes out, both sides spliced
        if self.body_filters is not None:
            # A filter may hold the whole body back (json_fields): until it lets something go,
            # nothing went out, and a failure is still answered with a proper error response.
            # Hooks ran, so the head is pairs (not lines in the parser's buffer): keep them.
            self.held = reply
            self.held.lines = NULL
            self.held.kinds = NULL
            self.held_refs = (kept, added)
            self.state = X_HELD
            return 0
        self.response_started = True
        self.state = X_STREAMING
        self.client.send_head(self, &reply)
        return 0

    cdef int release_head(self) except -1:
        """The head a body filter held back goes out, before the first body bytes it lets go."""
        if self.state == X_HELD:
            self.response_started = True
            self.state = X_STREAMING
            self.client.send_head(self, &self.held)
            self.held_refs = None
        return 0

    cdef int on_upstream_body(self, bytes data) except -1:
        if self.state == X_DONE:
            return 0
        if self.body_filters is not None:
            for body_filter in self.body_filters:
                data = body_filter.feed(data)
            if not data:
                return 0  # a filter holds it back (it buffers, or compresses more before output)
            if self.state == X_DONE:
                return 0  # the filter failed the response
            self.release_head()
        self.client.send_body(self, data)
        return 0

    cdef int on_upstream_trailers(self, list pairs) except -1:
        """The upstream's trailer fields (an HTTP/2 upstream's: gRPC's grpc-status and
        grpc-message), passed on after the body by a client side that carries trailers."""
        if self.state != X_DONE:
            self.trailers = pairs
        return 0

    cdef int on_upstream_complete(self, bint reusable) except -1:
        """The response ended; the upstream side has unbound itself."""
        self.conn = None
        if self.body_filters is not None:
            self.end_body_filters()
            if self.state == X_DONE:
                return 0  # a filter failed the response (fail() answered or cut it)
        self.release_head()  # an empty body: the head goes alone
        if not self.request_done:
            self.must_close = True  # we stop reading a body the upstream did not wait for
        if self.trailers is not None:
            self.client.send_trailers(self, self.trailers)
        self.client.send_end(self)
        self.client.flush()
        self.finish()
        return 0

    cdef int on_upstream_flush(self) except -1:
        self.client.flush()
        return 0

    cdef int end_body_filters(self) except -1:
        """The upstream's body ended: each filter gives what it held back, passed through the
        filters after it, in order."""
        cdef list filters = self.body_filters
        cdef Py_ssize_t i, j
        cdef bytes data
        self.body_filters = None  # on_upstream_body must not run them again
        for i in range(len(filters)):
            data = filters[i].end()
            if self.state == X_DONE:
                return 0
            for j in range(i + 1, len(filters)):
                if data:
                    data = filters[j].feed(data)
            if data:
                self.release_head()
                self.client.send_body(self, data)
        return 0

    cdef int replace_response(self, response) except -1:
        """An on_response hook answered instead of the upstream: drop the upstream connection."""
        self.drop_conn()
        self.response_status = 0
        self.answer(response)
        return 0

    cdef int drop_conn(self) except -1:
        cdef UpstreamSide conn = self.conn
        if conn is not None:
            self.conn = None
            conn.drop()
        return 0

    cdef int pause_upstream(self) except -1:
        if self.conn is not None:
            self.conn.pause_response()
        return 0

    cdef int resume_upstream(self) except -1:
        if self.conn is not None:
            self.conn.resume_response()
        return 0

    cdef int upstream_write_paused(self) except -1:
        self.client.pause_request(P_UPSTREAM)
        return 0

    cdef int upstream_write_resumed(self) except -1:
        self.client.resume_request(P_UPSTREAM)
        return 0

    # -- answers and endings ---------------------------------------------------------------------
    cdef int internal_error(self) except -1:
        """A bug of ours outside a protocol callback: log it once, answer 500 (or cut)."""
        log.exception("internal error in request %s", self.request_id.decode("ascii", "replace"))
        self.fail(UpstreamFault("internal error", 500))
        return 0

    cpdef fail(self, fault):
        """A failure at any point: an error response if nothing went out yet, else a cut."""
        if self.state == X_DONE:
            return
        self.drop_conn()
        if self.state == X_STREAMING:
            self.must_close = True  # no further request may start on the cut connection
            self.end(self.response_status)  # frees its slots and in-flight count like any end
            self.client.cut(self)
            return
        self.held_refs = None  # a head a body filter held back never goes out
        self.client.flush()  # 1xx responses already passed on go before the answer
        self.answer_fault(fault, None)

    cdef int refuse(self, fault) except -1:
        """Its request can never be complete (the body is malformed, or the client stopped
        sending it): abort what went upstream, and answer ``fault`` now if this exchange is the
        one answering, or when its turn comes; a response already under way is cut. Nothing is
        counted against the upstream: the client broke the request."""
        self.refusal = fault
        self.must_close = True
        if self.state != X_WAITING and self.state != X_DONE:
            self.fail(fault)
        return 0

    cdef str upstream_name(self):
        return f"upstream {(<GroupCore>self.route.upstream).name!r}"

    cdef object upstream_fault(self, str what, int status):
        """A failure of the upstream, as the client reads it (the upstream's configured name) and
        as the log reads it (also the target's address)."""
        target = self.target
        return UpstreamFault(
            f"{self.upstream_name()} {what}", status, target.label if target is not None else None
        )

    cdef int answer_fault(self, fault, list extra) except -1:
        if extra is None:
            extra = fault.headers  # None for most faults; Retry-After for an unavailable upstream
        if fault.close or not self.request_done:
            self.must_close = True
        self.response_status = fault.status
        self.client.send_error(self, fault, extra)
        self.finish()
        return 0

    cdef int answer(self, response) except -1:
        if not self.request_done:
            self.must_close = True
        self.response_status = response.status
        self.client.send_answer(self, response)
        self.finish()
        return 0

    cdef int finish(self) except -1:
        if self.state == X_DONE:
            return 0
        self.end(self.response_status)
        self.client.exchange_ended(self)
        return 0

    cdef int end(self, int status) except -1:
        """What every way of ending does once: stop waiting (for a connection, a backoff, a slot),
        release the target's in-flight count and the slots, tell the group's observers, run
        on_complete, count the request."""
        self.state = X_DONE  # first: nothing released below may act for this exchange again
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        acquiring = self.acquiring
        if acquiring is not None:
            self.acquiring = None
            if not acquiring.done():
                acquiring.cancel()
            elif not acquiring.cancelled() and acquiring.exception() is None:
                acquiring.result().pool.give_back(acquiring.result())
        self.uncount_target()
        self.release_slots()
        cdef RouteCore route = self.route
        if route is not None and self.target is not None and (<GroupCore>route.upstream).observes:
            # health, outliers, latency, breakers: only groups that ask. An attempt that ended
            # with no verdict on the target (the client left) is observed too: a half-open
            # breaker's trial gives its place back. (A tunnel's was observed at its 101.)
            if not self.switched_at:
                (<GroupCore>route.upstream).observe_exchange(self)
        if route is not None and route.on_complete:
            run_complete_hooks(self, route.on_complete)
        self.observe_end(status)
        return 0

    cdef int client_lost(self, str reason) except -1:
        """The client went away, or stopped reading (``reason``, for the log): free whatever this
        exchange holds upstream, and record a client abort."""
        if self.state == X_DONE:
            return 0
        self.abort_reason = reason
        self.drop_conn()
        self.end(self.response_status if self.response_started else 0)
        return 0

    cdef int observe_end(self, int status) except -1:
        """Every request ends here once: count it (C increments) and, when an access log or span
        export is on, hand it the exchange (their only Python calls, and only then); an error or
        a refusal (status >= 400, or 0: the client left) also goes to the recent errors, if kept."""
        cdef double now = _now()
        self.ended_at = now
        cdef double at = self.switched_at if self.switched_at else now  # a tunnel's: its 101
        cdef RouteCore route = self.route
        cdef Observers observers = self.client.observers
        cdef RequestStats stats = route.stats if route is not None else observers.unrouted
        cdef double upstream = -1.0  # not observed: no upstream response
        if self.response_started and self.upstream_sent_at > 0.0:
            upstream = at - self.upstream_sent_at  # the last attempt: head sent -> response ended
        if stats is not None:
            stats.count(self.method_slot, status, at - self.received_at, upstream)
        if self.target is not None:
            self.count_attempt(at)
        if observers.access_log is not None:
            observers.access_log.record(self, status, now)
        if observers.span_export is not None:
            observers.span_export.record(self, status, now)
        if (status >= 400 or status == 0) and observers.recent_errors is not None:
            observers.recent_errors.record(self, status, now)  # the status page's error list
        return 0

    cdef int count_attempt(self, double now) except -1:
        """One attempt at ``target`` ended: count it there, by the upstream's status class, or as
        failed (connect error, reset, timeout, malformed), or as unanswered (the client left, or
        the gateway ended it first); time it from the request head sent to now."""
        cdef Target target = self.target
        cdef int outcome
        if self.upstream_error is not None:
            outcome = TARGET_FAILED
        elif 100 <= self.upstream_status < 600:
            outcome = self.upstream_status // 100
        else:
            outcome = 0
        target.outcomes[outcome] += 1
        if outcome and self.upstream_sent_at > 0.0:
            target.latency_buckets[latency_bucket(now - self.upstream_sent_at)] += 1
            target.latency_sum += now - self.upstream_sent_at
        return 0

    @property
    def finished(self) -> bool:
        return self.state == X_DONE

    # -- the request as plugins see it (hooks.RequestContext) -----------------------------------
    @property
    def headers(self) -> list:
        """The request's headers as received, (name, value) bytes pairs; parsed on first use."""
        if self._headers is None:
            self._headers = _header_pairs(self.head_owner, self.fields_lo, self.fields_hi, self.drop_underscores)
        return self._headers

    def header(self, bytes name) -> bytes | None:
        """First value of a request header (name lower-case)."""
        if self._headers is None:
            if self.drop_underscores and b"_" in name:
                return None  # dropped: neither forwarded nor seen
            # PERF: scan the validated header lines where they lie, without splitting them all
            # into pairs (an auth plugin reads one header per request).
            return _find_header(self.head_owner, self.fields_lo, self.fields_hi, name)
        for n, v in self._headers:
            if n.lower() == name:
                return v
        return None

    def header_count(self, bytes name) -> int:
        """How many lines of a request header (name lower-case) ``headers`` holds."""
        if self._headers is None:
            if self.drop_underscores and b"_" in name:
                return 0
            # PERF: counted where the lines lie (an auth plugin asks on every request it reads)
            return _count_header(self.head_owner, self.fields_lo, self.fields_hi, name)
        return sum(1 for n, _ in self._headers if n.lower() == name)

    # The client as the listener's trusted proxies tell it: one rule, fastgw.http.forwarded,
    # worked out on first use and kept (``_forwarded``).
    # PERF: without a trusted proxy the client is the peer, read without that call (the access
    # log asks on every request).
    @property
    def client_ip(self) -> str:
        if not self.client.trusted:
            return self.client.peer_ip.decode()
        return _forwarded(self).client_ip

    @property
    def client_address(self) -> bytes:
        if not self.client.trusted:
            return self.client.peer_ip  # made once per connection
        return _forwarded(self).client_address

    @property
    def client_certificate(self):
        """The client's verified TLS certificate (mTLS): subject, SANs, fingerprint; or None."""
        return self.client.client_certificate

    @property
    def via_trusted_proxy(self) -> bool:
        return self.client.trusted

    @property
    def forwarded_proto(self) -> bytes:
        return _forwarded(self).proto

    @property
    def forwarded_host(self) -> bytes:
        return _forwarded(self).host

    @property
    def forwarded_for(self) -> bytes:
        return _forwarded(self).forwarded_for

    def remove_request_header(self, name: bytes) -> None:
        """Stop a client's request header (name lower-case) from reaching the upstream, for
        headers the gateway sets itself from verified data (claims, consumer), so a client
        cannot forge them. For plugins (re-renders the forwarded lines), not the hot path."""
        lines = self.pass_block.split(b"\r\n")
        kept = [line for line in lines if line.partition(b":")[0].strip().lower() != name]
        if len(kept) != len(lines):
            self.pass_block = b"\r\n".join(kept)
            self._headers = [(n, v) for n, v in self.headers if n.lower() != name]

    def add_request_header(self, name: bytes, value: bytes) -> None:
        """Send one more header line upstream, on every attempt, for a header an ``on_request``
        hook learned by I/O (an auth service's answer): ``upstream_headers`` only exists from
        ``on_upstream_request`` on, and a hook has no per-request slot of its own to keep the
        value until then. For plugins, not the hot path."""
        # A header line must never be injected: no separators in the name, no line ends in either.
        if not name or any(c in b" \t\r\n\x00:" for c in name) or any(c in b"\r\n\x00" for c in value):
            raise ValueError(f"refusing to forward header line {name!r}: {value[:40]!r}")  # a bug
        self.pass_block += name + b": " + value + b"\r\n"

    def param(self, name) -> bytes | None:
        route = self.route
        if route is None:
            return None
        try:
            return self.params[route.param_names.index(name)]
        except ValueError:
            return None


cdef object _forwarded(Exchange exchange):
    """The exchange's ``forwarded.Forwarded``, resolved on first use (headers parsed only when the
    peer is a trusted proxy)."""
    cdef Downstream client
    if exchange._forwarded is None:
        client = exchange.client
        exchange._forwarded = forwarded.resolve(
            client.peer_ip,
            client.trusted,
            exchange.headers if client.trusted else (),
            exchange.host_header,
            exchange.listener.is_trusted,
            exchange.listener.scheme,
        )
    return exchange._forwarded
