# -- the HTTP/1.1 client side ------------------------------------------------------------------------

_overload_fault = ClientFault("too many open connections", 503)
# Parsers of idle connections kept per listener for the next read (ClientProtocol.shelve_parser);
# more than this at once (after a burst) are freed.
cdef Py_ssize_t PARSER_SHELF_MAX = 1024


@cython.final
cdef class ClientProtocol(Downstream):
    """One accepted HTTP/1.1 connection: its parser, its pipeline of exchanges, its framing.

    Connection states:

        idle --first byte--> head --head parsed--> exchange(s) --last one ended--> idle (keep-alive)
                              |                       |                       \\--> closed
                              +-- limit / malformed --+--> error answer, lingering close

    Only the head-of-line exchange (``active``) talks to the client; pipelined ones wait in
    ``queue``, their bodies buffered up to the listener's buffer size, and reading pauses while
    the backlog is full. As the Downstream of each exchange it frames responses: Content-Length
    when the upstream's length is kept, else re-chunked (close-delimited for an HTTP/1.0 client);
    ``send_*`` gather into ``out`` and ``flush`` writes them once per upstream read.

    Deadlines (filed on the loop's timer wheel): head (slowloris: from the first byte of a
    request), body (the longest stall between body reads), keep-alive (idle between requests),
    linger (after an error answer) and send (the client takes no response bytes). Reading is
    paused for independent reasons (P_*: the upstream's buffer full, a body buffered while no
    connection is ready, the pipeline backlog); it resumes only when none holds."""

    PAUSE_UPSTREAM = P_UPSTREAM
    PAUSE_BUFFER = P_BUFFER
    PAUSE_PIPELINE = P_PIPELINE

    def __init__(self, server) -> None:
        self.server = server
        self.transport = None
        self.outlet.fd = -1
        self.parser = None
        self.peer_ip = b""
        self.trusted = False
        self.in_head = False
        self.active = None
        self.parsing = None
        self.queue = None  # PERF: made when a request is pipelined (an idle connection holds none)
        self.refusal = None
        self.paused = 0
        self.write_paused = False
        self.deadline = 0.0
        self.send_deadline = 0.0
        self.send_backlog = 0
        self.draining = False
        self.lingering = False
        self.closed = False
        self.out = None  # PERF: memory: made by each response (an idle connection holds none)
        self.protocol = "1.1"
        self.tls = None
        self.rechunk = False
        self.close_after = False
        self.last_host = None
        self.observers = server.observers
        self.adopt(server.plan)

    cdef int adopt(self, ListenerCore listener) except -1:
        """Take the listener's current plan: at accept, and again from the first request after a
        reload (in-flight requests finish on the plan they started with; they hold their route).
        PERF: a reload bumps ``_plan_generation``, compared once per request."""
        self.generation = _plan_generation
        self.listener = listener
        if self.peer_ip:
            self.trusted = listener.is_trusted(self.peer_ip.decode())  # trusted_proxies may have changed
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=listener.buffer_bytes)
        return 0

    cdef int renew_parser(self) except -1:
        """A parser with the listener's current head limits, from its shelf when one waits there;
        only between messages, where a parser holds nothing (a reload's limits apply from the
        next request's first byte)."""
        cdef ListenerCore listener = self.listener
        self.parser = <HttpParser>listener.parser_shelf.take()
        if self.parser is None:
            self.parser = HttpParser(True, listener.max_header_bytes, listener.max_headers, listener.max_uri_bytes)
        self.parser_generation = self.generation
        self.parser_shelved = False
        return 0

    cdef int shelve_parser(self) except -1:
        """Between requests, with nothing in flight: put the parser back on the listener's shelf
        (reset), for the next read of any connection. PERF: memory: a request parser is 3.6 KB
        (its field arrays sized for the listener's max_headers), most of what an idle keep-alive
        connection held; now it holds none. Not inside data_received, which still parses."""
        cdef HttpParser parser = self.parser
        if (
            parser is None or self.reading or self.active is not None or self.parsing is not None
            or self.in_head or not parser.st.between or parser.spill is not None
        ):
            return 0
        self.parser = None
        self.parser_shelved = True
        if self.out is not None and not self.out:
            self.out = None  # and the response list: the next response makes one
        cdef Shelf shelf = self.listener.parser_shelf
        if self.parser_generation == self.generation and shelf.count < PARSER_SHELF_MAX:
            parser.reset()
            shelf.put(parser)
        return 0

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.h2 = None
        self.first_read = True
        self.transport = transport
        outlet_open(&self.outlet, transport)
        # PERF: memory: without a socket to write to directly (TLS), every write goes through the
        # transport's bound write, looked up once; otherwise it is looked up when first needed.
        self.write_bound = transport.write if self.outlet.fd < 0 else None
        self.sock_fd = socket_fd(transport)
        self.wheel = running_wheel()
        self.parser_shelved = True  # the first read takes a parser
        server = self.server
        server.connections[self] = None
        if len(server.connections) > self.listener.max_connections:
            # Degrade instead of exhausting memory: answer at once and close.
            transport.write(render_error(_overload_fault, close=True, date_line=date_line()))
            transport.close()
            return
        transport.set_write_buffer_limits(high=self.listener.buffer_bytes)
        ssl_object = None
        if self.listener.tls is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            self.tls_established(ssl_object)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.trusted = self.listener.is_trusted(peer[0])
        self.now = _now()
        self.set_deadline(self.now + self.listener.head_timeout)
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self.start_h2()

    cdef int start_h2(self) except -1:
        """From here the connection speaks HTTP/2: every read goes to its H2Connection."""
        self.parser = None
        self.parser_shelved = False
        self.h2 = H2Connection(self)
        self.h2.flush()  # the server's SETTINGS go first
        return 0

    cdef int tls_established(self, object ssl_object) except -1:
        """A TLS listener's handshake is done (uvloop calls connection_made after it): note the
        version and cipher (logs, metrics, spans) and the verified client certificate, and
        render once the header lines that carry its facts upstream (mTLS)."""
        version = ssl_object.version()
        cipher = ssl_object.cipher()
        cipher_name = cipher[0] if cipher else None
        self.server.count_handshake(version, cipher_name, ssl_object.session_reused)
        certificate = None
        cert_lines = b""
        if self.listener.tls.client_mode:
            from fastgw.tls.server import client_certificate  # x509 parsing: loaded only for mTLS

            certificate = client_certificate(ssl_object)
            if certificate is not None and self.listener.cert_headers:
                cert_lines = b"".join([
                    name + b": " + _cert_value(certificate, field) + b"\r\n"
                    for field, name in self.listener.cert_headers
                ])  # fmt: skip
        self.tls = TlsFacts(version, cipher_name, certificate, cert_lines)
        return 0

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.outlet.fd = -1
        self.sock_fd = -1  # closed: the number may already name another socket
        self.server.connections.pop(self, None)
        if self.h2 is not None:
            self.h2.lost()
        self.abandon(LEFT_DURING if self.active is not None and self.active.response_started else LEFT_BEFORE)
        self.wheel.unfile(self)  # else the wheel keeps this closed connection until its slot fires

    def data_received(self, data) -> None:
        if self.closed or self.lingering:
            return  # after a refusal: what the client still sends is read and dropped
        self.now = _now()
        if self.h2 is not None:
            self.h2.received(data if type(data) is bytes else bytes(data))
            return
        if self.first_read:
            self.first_read = False
            if self.listener.h2c and data[:3] == b"PRI":  # RFC 9113 3.4's preface: prior knowledge
                self.start_h2()
                self.h2.received(data if type(data) is bytes else bytes(data))
                return
        cdef HttpParser parser = self.parser
        if parser is None:
            if not self.parser_shelved:
                if self.early is not None:
                    hold_early(self, data if type(data) is bytes else bytes(data))  # for the tunnel
                return  # refused: nothing after that is read
            if self.generation != _plan_generation:
                self.adopt(self.server.plan)
            self.renew_parser()
            parser = self.parser
        elif self.parser_generation != _plan_generation and parser.st.between:
            if self.generation != _plan_generation:
                self.adopt(self.server.plan)
            self.renew_parser()
            parser = self.parser
        cdef double now = self.now
        parser.feed(data if type(data) is bytes else bytes(data))
        cdef int event
        self.reading = True
        try:
            while True:
                event = parser.next()
                if event == EV_MORE:
                    break
                if event == EV_HEAD:
                    self.on_head(parser)
                elif event == EV_BODY:
                    if self.parsing is not None:  # PERF: the piece where it lies in the read
                        self.parsing.on_client_body_at(<bytes>parser.data, parser.st.body, parser.st.body_len)
                elif event == EV_DONE:
                    self.on_message_complete()
                elif event == EV_UPGRADE:
                    upgrade_head(self, parser)  # tunnel.pyx: nothing after it is HTTP
                else:
                    raise request_fault(parser, event, self.parsing is not None)
                if self.closed or self.parser is None:
                    break  # answered and closed, or refused: the rest of this read is not ours
        except HttpFault as fault:
            self.reading = False
            parser.release()
            self.reject(fault)
            return
        except Exception:
            # A bug of ours: answer 500 and keep the traceback in the log.
            self.reading = False
            parser.release()
            log.error("internal error while handling a request", exc_info=True)
            self.reject(ClientFault("internal error", 500))
            return
        self.reading = False
        parser.release()
        if self.active is None and self.parsing is None:
            self.shelve_parser()  # answered within this read (a cache hit): idle again
        if parser.in_head():
            if not self.in_head:
                # Slowloris: the head timeout counts from the first byte of a request.
                self.in_head = True
                self.set_deadline(now + self.listener.head_timeout)
        elif self.parsing is not None and not self.paused:
            self.set_deadline(now + self.listener.body_timeout)

    def eof_received(self) -> bool:
        """The client half-closed: it sends nothing more (RFC 9112 9.6)."""
        self.client_eof = True
        if self.h2 is not None:
            self.h2.start_draining()  # what is in flight may still be answered; nothing new comes
            return not self.closed
        cdef Exchange active = self.active
        if self.lingering or (active is None and self.parsing is None):
            self.outlet.fd = -1  # uvloop closes the transport now: nothing more goes out
            return False
        self.now = _now()
        if self.parsing is not None:
            # A request whose body can never be complete: the upstream must not wait for it.
            self.reject(ClientFault("the client closed the connection before the request body was complete"))
            return not self.closed
        if not active.response_started:
            # Gone before its response (nginx's 499): nothing it asked for is worth finishing.
            self.abandon(LEFT_BEFORE)
            self.close()
            return False
        self.draining = True  # its response is on the way: finish it, then close
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        # The send timeout counts while the client takes nothing (nginx's send_timeout).
        self.send_backlog = self.unsent()
        self.send_deadline = _now() + self.listener.send_timeout
        self.wheel.file(self, self.send_deadline)
        if self.active is not None:
            self.active.pause_upstream()

    def resume_writing(self) -> None:
        if self.closed:
            return  # closing: the send timeout keeps watching what the transport still holds
        self.write_paused = False
        self.send_deadline = 0.0
        if self.h2 is not None:
            self.h2.flush()  # what nghttp2 held back while the transport was full
        if self.active is not None:
            self.active.resume_upstream()

    # -- parser events -------------------------------------------------------------------------
    cdef int on_head(self, HttpParser parser) except -1:
        self.in_head = False
        if self.generation != _plan_generation:
            self.adopt(self.server.plan)  # this request starts on the plan current now
        cdef Exchange exchange = read_request_head(self, parser)
        self.parsing = exchange
        if exchange.content_length > 0 or exchange.chunked:
            self.set_deadline(self.now + self.listener.body_timeout)
        else:
            self.deadline = 0.0
        if self.active is None:
            self.active = exchange
            # PERF: when this read goes on with the body, the upstream side may hold the head
            # until that piece and send both in one write. The fast path reads a head and the
            # Content-Length body piece after it in one pass: events still owed after the head
            # of such a request start with that piece.
            exchange.body_follows = parser.fast and parser.st.events != 0 and exchange.content_length > 0
            exchange.start()
            exchange.body_follows = False  # later starts (after a hook's await, a connect) never hold
        else:
            if self.queue is None:
                self.queue = []
            self.queue.append(exchange)
            if len(self.queue) >= self.listener.max_pipeline:
                self.pause_request(P_PIPELINE)
        return 0

    cdef int on_message_complete(self) except -1:
        cdef Exchange exchange = self.parsing
        self.parsing = None
        if self.active is None and not self.queue:
            self.set_deadline(self.now + self.listener.keepalive_timeout)
        elif not self.paused:
            self.deadline = 0.0  # waiting for the upstream: its own timeouts apply
        if exchange is not None:
            exchange.on_client_complete()
        return 0

    # -- Downstream: the response, as the exchange hands it over -------------------------------
    cdef int send_continue(self, Exchange x) except -1:
        self.write(CONTINUE_100)
        return 0

    cdef int send_interim(self, Exchange x, int status, HeadLines* lines) except -1:
        if x.http_10:
            return 0  # RFC 9110 15.2: never to an HTTP/1.0 client
        cdef unsigned char kinds[MAX_RESPONSE_FIELDS]
        cdef ReplyHead interim
        classify_response(lines, kinds, &interim, self.listener.request_id_lower)
        interim.status = status
        interim.lines = lines
        interim.kinds = kinds
        interim.kept = interim.added = NULL
        interim.add_date = False
        if self.out is None:
            self.out = []
        self.out.append(render_reply(&interim, False, False, False, None, None))
        return 1

    cdef int send_head(self, Exchange x, ReplyHead* head) except -1:
        cdef bint close = self.closing(x)
        self.rechunk = False
        if not head.no_body and not head.length_known:
            if x.http_10:
                close = True  # close-delimited is all an HTTP/1.0 client understands
            else:
                self.rechunk = True
        self.close_after = close
        data = render_reply(head, self.rechunk, close, x.http_10, self.listener.request_id_header, x.request_id)
        x.bytes_sent += PyBytes_GET_SIZE(data)
        if self.out is None:
            self.out = []
        self.out.append(data)
        return 0

    cdef int send_body(self, Exchange x, bytes data) except -1:
        x.bytes_sent += PyBytes_GET_SIZE(data)
        if self.rechunk:
            self.out += (chunk_header(PyBytes_GET_SIZE(data)), data, CRLF)
        else:
            self.out.append(data)
        return 0

    cdef int send_end(self, Exchange x) except -1:
        if self.rechunk:
            self.out.append(LAST_CHUNK)
            self.rechunk = False
        return 0

    cdef int send_error(self, Exchange x, object fault, list extra) except -1:
        cdef bint close = self.closing(x)
        self.close_after = close
        data = self.error_bytes(fault, x.request_id, close, extra, x.method == _HEAD)
        x.bytes_sent += PyBytes_GET_SIZE(data)
        self.write(data)
        return 0

    cdef int send_answer(self, Exchange x, object response) except -1:
        cdef bint close = self.closing(x)
        self.close_after = close
        cdef bytes data = render_answer(
            response, x.add_response_headers, self.listener.request_id_header, x.request_id, close,
            x.method == _HEAD,
        )
        x.bytes_sent += PyBytes_GET_SIZE(data)
        self.write(data)
        return 0

    cdef int flush(self) except -1:
        cdef list out = self.out
        if out is None:
            return 0
        cdef Py_ssize_t n = len(out)
        cdef bytes first, second
        if not n:
            return 0
        if n == 1:
            self.write(out[0])
        elif n == 2 and PyBytes_GET_SIZE(<bytes>out[1]) <= 4096:
            # PERF: a head and a small body (the usual small response) leave in one buffer: a
            # copy of a few hundred bytes costs less than a second buffer in uvloop's writev.
            first = <bytes>out[0]
            second = <bytes>out[1]
            self.write(first + second)
        else:
            self.outlet.queued = True  # writelines may leave some in the transport
            self.transport.writelines(out)
        out.clear()
        return 0

    cdef int cut(self, Exchange x) except -1:
        self.out = None
        self.active = None
        self.abort()
        return 0

    cdef int pause_request(self, int reason) except -1:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
            self.deadline = 0.0  # a paused body is not a stalled client
        self.paused |= reason
        return 0

    cdef int resume_request(self, int reason) except -1:
        if not self.paused & reason:
            return 0
        self.paused &= ~reason
        if not self.paused and not self.closed:
            self.transport.resume_reading()
            if self.parsing is not None:
                self.set_deadline(_now() + self.listener.body_timeout)
        return 0

    cdef int exchange_ended(self, Exchange x) except -1:
        """The active exchange wrote its last byte (or failed): close, or start the next one."""
        if x is not self.active:
            return 0
        self.active = None
        if self.close_after or x.must_close:
            if x.request_done or self.closed:
                self.close()
            else:
                self.linger_close()  # the rest of its body may still be on the way
            return 0
        if self.paused & P_PIPELINE and (self.queue is None or len(self.queue) < self.listener.max_pipeline):
            self.resume_request(P_PIPELINE)
        cdef Exchange nxt
        if self.queue:
            nxt = self.active = self.queue.pop(0)
            nxt.start()
        elif self.refusal is not None:
            # A request refused after pipelined ones: answered in its turn, then the connection
            # ends (nothing read after it can be trusted).
            self.write(self.error_bytes(self.refusal, None, True, None, False))
            self.linger_close()
        elif self.draining:
            self.close()
        elif not self.in_head and self.parsing is None:
            self.set_deadline(x.ended_at + self.listener.keepalive_timeout)
            self.shelve_parser()
        return 0

    cdef bint closing(self, Exchange x) noexcept:
        """Must the connection end after ``x``: the exchange says so, the client asked (or cannot
        keep it: HTTP/1.0 without keep-alive), or the gateway drains."""
        return x.must_close or not x.keep_alive or self.draining

    # -- writing and ending ----------------------------------------------------------------------
    cdef int write(self, bytes data) except -1:
        """Straight to the socket when it takes it all; else the transport's bound write."""
        outlet_write(&self.outlet, self.write_bound, self.transport, data)
        return 0

    cdef bytes error_bytes(self, fault, bytes request_id, bint close, list extra, bint head_only):
        """A gateway error answer on this listener (its request-id header name, today's Date)."""
        return render_error(
            fault, request_id, close=close, extra=extra, date_line=date_line(), head_only=head_only,
            request_id_header=self.listener.request_id_header,
        )  # fmt: skip

    cdef int reject(self, fault) except -1:
        """Input we refuse: a head we cannot accept, or the body of an accepted one that turned
        out malformed or cut short. Nothing after it is read; every earlier request is answered
        first, in order; the upstream never waits for a body that will not come."""
        self.parser = None
        self.parser_shelved = False  # refused: no parser is taken again
        self.in_head = False
        cdef Exchange parsing = self.parsing
        if parsing is not None:
            self.parsing = None
            parsing.refuse(fault)  # answers it (or cuts its response) when its turn comes
            if self.active is None and not self.queue and not self.closed:
                self.linger_close()  # it had already been answered (the upstream did not wait)
            return 0
        if self.observers.unrouted is not None:
            self.observers.unrouted.count(METHOD_SLOTS - 1, fault.status, -1.0, -1.0)
        if self.active is None and not self.queue:
            self.write(self.error_bytes(fault, None, True, None, False))
            self.linger_close()
            return 0
        self.refusal = fault
        self.pause_request(P_PIPELINE)
        return 0

    cdef int linger_close(self) except -1:
        """End the connection after an error answer without resetting the answer away.

        A close with unread input makes the kernel send RST, and an RST that reaches the client
        before it read the answer (a 431 or 413 while it still sends) destroys it. So, as nginx's
        lingering close: stop sending (FIN), read and drop what still comes for at most the
        listener's ``linger`` timeout, and close when the client closes or the time is up."""
        if self.closed:
            return 0
        if self.client_eof or not self.transport.can_write_eof():
            self.close()
            return 0
        self.lingering = True
        self.parser = None
        self.parser_shelved = False
        self.outlet.fd = -1  # from here the transport alone writes: the FIN goes after the answer
        self.transport.write_eof()
        if self.paused:
            self.paused = 0
            self.transport.resume_reading()
        self.set_deadline(_now() + self.listener.linger_timeout)
        return 0

    cdef int abandon(self, str reason) except -1:
        """The client is gone (or will get nothing more): every exchange it started ends now,
        freeing what it holds upstream, recorded as a client abort with ``reason``."""
        cdef Exchange active = self.active
        self.active = None
        self.parsing = None
        if self.h2 is not None:
            self.h2.abandon(reason)
        if active is not None:
            active.client_lost(reason)
        cdef list queue = self.queue
        self.queue = None
        if queue:
            for queued in queue:
                (<Exchange>queued).client_lost(LEFT_BEFORE)
        return 0

    cdef Py_ssize_t unsent(self) except -1:
        """Response bytes the client has not taken: in the transport, and in the kernel's send
        queue (SIOCOUTQ: a slow reader frees the kernel's buffer long before the transport's)."""
        return self.transport.get_write_buffer_size() + socket_unsent(self.sock_fd)

    cdef int set_deadline(self, double at) except -1:
        """The read-side deadline (head, body, keep-alive or linger), filed on the wheel."""
        self.deadline = at
        self.wheel.file(self, at)
        return 0

    cpdef close(self):
        self.outlet.fd = -1
        if not self.closed:
            self.closed = True
            self.transport.close()
            if self.transport.get_write_buffer_size():
                # The transport stays open until the client takes what it holds: one that never
                # reads would keep it forever. The send timeout bounds that wait too.
                self.send_backlog = self.unsent()
                if not self.send_deadline:
                    self.send_deadline = _now() + self.listener.send_timeout
                    self.wheel.file(self, self.send_deadline)

    cpdef abort(self):
        self.closed = True
        self.outlet.fd = -1
        self.send_deadline = 0.0  # nothing is left to send: no send timeout to watch
        self.transport.abort()

    cdef int reset(self) except -1:
        """Abort with RST: for a client that takes nothing we send. A plain close would leave the
        kernel holding the unsent bytes and a FIN behind them for minutes, and a client that only
        sends, backing off its own retransmits, might not learn of the end for as long."""
        socket_reset_on_close(self.sock_fd)
        self.abort()
        return 0

    cpdef start_draining(self):
        """Graceful shutdown: finish what is in flight, close idle keep-alive connections now."""
        self.draining = True
        if self.h2 is not None:
            self.h2.start_draining()
            return
        if self.active is None and not self.in_head and self.parsing is None:
            self.close()

    cpdef expire(self, double now):
        """The wheel's call: a deadline may have passed (else it files the next one again)."""
        if self.send_deadline and now >= self.send_deadline and self.send_stalled(now):
            # Nothing taken for a whole send timeout: free the upstream side and go. Closed
            # already (close() armed the timeout), the response was handed over whole.
            if self.closed:
                self.server.count_send_timeout("closing")
            else:
                self.abandon(STALLED)
                self.server.count_send_timeout("responding")
            self.reset()
            return
        if self.closed:  # closing: only the send timeout is left to watch
            if self.send_deadline:
                self.wheel.file(self, self.send_deadline)
            return
        if self.h2 is not None:
            self.h2.expire(now)
            if self.closed:
                return
        elif self.deadline and now >= self.deadline:
            self.check_deadline(now)
            if self.closed:
                return
        if self.deadline:
            self.wheel.file(self, self.deadline)
        if self.send_deadline:
            self.wheel.file(self, self.send_deadline)

    cdef bint send_stalled(self, double now) except -1:
        """The send deadline passed: did the client take none of what it had (its backlog)
        since the deadline was set? If it took some, the timeout counts again from now."""
        cdef Py_ssize_t backlog = self.unsent()
        if backlog >= self.send_backlog:
            return True
        self.send_backlog = backlog  # it reads, slowly: the timeout counts from this progress
        self.send_deadline = now + self.listener.send_timeout
        return False

    cpdef check_deadline(self, double now):
        """The read-side deadline passed: slowloris, a stalled body, an idle keep-alive, a linger."""
        if not self.deadline or now < self.deadline or self.closed:
            return
        self.deadline = 0.0
        self.now = now
        if self.lingering:
            self.close()
        elif self.in_head or self.parsing is not None:
            # Slowloris or a stalled body: 408 if nothing was answered for it yet.
            if self.active is None or (self.active is self.parsing and not self.active.response_started):
                fault = ClientFault("timed out reading the request", 408)
                if self.active is not None:
                    self.active.fail(fault)  # the exchange closes the connection (lingering)
                else:
                    self.write(self.error_bytes(fault, None, True, None, False))
                    self.linger_close()
            else:
                self.abort()
        elif self.active is None:
            self.close()  # idle keep-alive expired


cdef bytes _cert_value(object certificate, str field):
    """A client certificate's fact as a header value (values are printable ASCII; anything else
    in a subject is escaped by RFC 4514, which keeps it on one line)."""
    if field == "subject":
        value = certificate.subject
    elif field == "sans":
        value = ", ".join(certificate.sans)
    else:
        value = certificate.fingerprint
    return value.encode("ascii", "backslashreplace").replace(b"\r", b"").replace(b"\n", b"")


cdef object request_fault(HttpParser parser, int event, bint in_body):
    """The answer to a request head (or body, ``in_body``) the parser refused."""
    if event == EV_HEAD_TOO_BIG:
        return ClientFault("request header block too large", 431)
    if event == EV_TOO_MANY_FIELDS:
        return ClientFault("too many request headers", 431)
    if event == EV_TARGET_TOO_LONG:
        return ClientFault("request target too long", 414)
    if event == EV_UPGRADE:  # the requests that switch protocols and no route can take
        if parser.method() == b"PRI":  # llhttp's name for the HTTP/2 preface (RFC 9113 3.4)
            return ClientFault("HTTP/2 without TLS (h2c) is not enabled on this listener", 505)
        return ClientFault("CONNECT is not supported: the gateway is not a forward proxy", 501)
    if in_body:
        return ClientFault(f"malformed request body: {parser.error()[:80]}")
    return ClientFault(f"malformed request: {parser.error()[:80]}")


cdef inline bytes body_piece(HttpParser parser):
    """The body bytes of an EV_BODY event; the read itself when the piece is all of it (no copy)."""
    cdef const char* body = parser.st.body
    cdef Py_ssize_t n = parser.st.body_len
    if body == parser.st.buf and n == parser.fed:
        return <bytes>parser.data
    return PyBytes_FromStringAndSize(body, n)


cdef Py_ssize_t pairs_size(list pairs, Py_ssize_t start) except -1:
    """The bytes of ``pairs[start:]`` as header lines."""
    cdef Py_ssize_t i, size = 0
    for i in range(start, len(pairs)):
        name, value = pairs[i]
        size += PyBytes_GET_SIZE(<bytes?>name) + PyBytes_GET_SIZE(<bytes?>value) + 4
    return size


cdef char* put_pairs(char* p, list pairs, Py_ssize_t start) except NULL:
    """Write ``pairs[start:]`` as header lines (sized by ``pairs_size``, which checked them)."""
    cdef Py_ssize_t i
    cdef bytes name, value
    for i in range(start, len(pairs)):
        name, value = pairs[i]  # a (name, value) tuple or list, as plugins give them
        p = put_line(p, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    return p


cdef bytes render_answer(object response, list added, bytes rid_name, bytes rid_value, bint close, bint head_only):
    """A hooks.Response as HTTP/1.1, in one allocation: its head (``response.head`` when it was
    rendered once, else ``render_answer_head``), the rest of its headers, Date, the headers
    earlier plugins added (rate-limit fields go on any answer), the request id, the connection
    line, the body (none for HEAD, 204, 304). The same bytes either way."""
    cdef int status = response.status
    cdef bytes body = response.body
    cdef list headers = response.headers
    cdef bytes head = response.head
    cdef Py_ssize_t rest = response.head_fields
    if not PyBytes_GET_SIZE(head):
        head = render_answer_head(status, body, response.content_type, headers)
        rest = len(headers)
    cdef bytes date = date_line()
    # no body for HEAD, nor for a 204 or 304 (http.wire.bodiless)
    cdef Py_ssize_t body_size = 0 if head_only or status == 204 or status == 304 else PyBytes_GET_SIZE(body)
    cdef Py_ssize_t size = (
        PyBytes_GET_SIZE(head) + PyBytes_GET_SIZE(date) + pairs_size(headers, rest)
        + PyBytes_GET_SIZE(rid_name) + PyBytes_GET_SIZE(rid_value) + 4 + 2 + body_size
    )
    if added:
        size += pairs_size(added, 0)
    if close:
        size += PyBytes_GET_SIZE(CONNECTION_CLOSE)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = put(PyBytes_AS_STRING(out), head)
    p = put_pairs(p, headers, rest)
    p = put(p, date)
    if added:
        p = put_pairs(p, added, 0)
    p = put_line(p, PyBytes_AS_STRING(rid_name), PyBytes_GET_SIZE(rid_name), PyBytes_AS_STRING(rid_value), PyBytes_GET_SIZE(rid_value))
    if close:
        p = put(p, CONNECTION_CLOSE)
    p = put_c(p, "\r\n", 2)
    p = put_c(p, PyBytes_AS_STRING(body), body_size)
    check_end(p, out)
    return out


cdef bytes render_reply(
    ReplyHead* head, bint rechunk, bint close, bint http_10, bytes rid_name, bytes rid_value
):
    """An HTTP/1.1 response head: the status line (the upstream's reason phrase kept), the
    headers (``head.kept`` pairs chosen by hooks; else the upstream's own lines whose kinds say
    they pass: PERF, no pairs made of them), ``head.added``, Date when missing, the request id
    line (``rid_name``: ``rid_value``; None for a 1xx), the framing and connection lines, and
    the blank line: one allocation."""
    cdef bytes line = status_line(head)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(line) + 2
    cdef HeadLines* lines = head.lines
    cdef list kept = <list>head.kept if head.kept != NULL else None
    cdef list added = <list>head.added if head.added != NULL else None
    cdef bytes date = date_line() if head.add_date else None
    cdef bytes name, value
    cdef int i
    cdef char* p
    if kept is not None:
        for name, value in kept:
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    else:
        size += head.passed_size
    if added is not None:
        for name, value in added:
            size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    if date is not None:
        size += PyBytes_GET_SIZE(date)
    if rid_name is not None:
        size += PyBytes_GET_SIZE(rid_name) + PyBytes_GET_SIZE(rid_value) + 4
    if rechunk:
        size += PyBytes_GET_SIZE(TRANSFER_CHUNKED)
    if close:
        size += PyBytes_GET_SIZE(CONNECTION_CLOSE)
    elif http_10:
        size += PyBytes_GET_SIZE(CONNECTION_KEEP_ALIVE)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = put(PyBytes_AS_STRING(out), line)
    if kept is not None:
        for name, value in kept:
            p = put_line(p, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    else:
        for i in range(lines.count):
            if head.kinds[i] <= R_CL:
                p = put_line(
                    p, lines.base + lines.names[i].off, lines.names[i].len,
                    lines.base + lines.values[i].off, lines.values[i].len,
                )  # fmt: skip
    if added is not None:
        for name, value in added:
            p = put_line(p, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    if date is not None:
        p = put(p, date)
    if rid_name is not None:
        p = put_line(p, PyBytes_AS_STRING(rid_name), PyBytes_GET_SIZE(rid_name), PyBytes_AS_STRING(rid_value), PyBytes_GET_SIZE(rid_value))
    if rechunk:
        p = put(p, TRANSFER_CHUNKED)
    if close:
        p = put(p, CONNECTION_CLOSE)
    elif http_10:
        p = put(p, CONNECTION_KEEP_ALIVE)
    p = put_c(p, "\r\n", 2)
    check_end(p, out)
    return out


cdef bytes status_line(ReplyHead* head):
    """The status line: the precomputed one when the upstream's reason phrase is the standard
    one, or none (an HTTP/2 upstream's head: HTTP/2 has no phrase), or the head's is unknown,
    PERF: no formatting; else rebuilt with the upstream's phrase."""
    cdef int status = head.status
    line = STATUS_LINE_BY_CODE[status] if 0 <= status < 600 else None
    cdef HeadLines* lines = head.lines
    if lines == NULL:  # a head held back by a body filter: its reason phrase is the standard one
        return <bytes>line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status
    cdef const char* reason = lines.base + lines.reason.off
    cdef Py_ssize_t reason_len = lines.reason.len
    if line is None or reason_len and (
        PyBytes_GET_SIZE(<bytes>line) - 15 != reason_len
        or memcmp(PyBytes_AS_STRING(<bytes>line) + 13, reason, reason_len)
    ):
        return b"HTTP/1.1 %d %s\r\n" % (status, PyBytes_FromStringAndSize(reason, reason_len))
    return <bytes>line
