# -- an HTTP/1.1 request head: the checks llhttp leaves to us, and the forwarded-header block ----------

cdef Exchange read_request_head(Downstream client, HttpParser parser):
    """Check the head and turn it into an Exchange; raises ClientFault to refuse it.

    PERF: llhttp left offsets, not objects: header names are classified in place and only
    the values the gateway acts on become bytes; the forwarded lines are copied straight
    from the head into the pass block."""
    cdef int major = parser.http_major()
    cdef int minor = parser.http_minor()
    if major != 1 or minor > 1:
        raise ClientFault("unsupported HTTP version", 505 if major >= 1 else 400)
    cdef bint http_10 = minor == 0
    cdef const char* head = parser.head
    cdef Field* names = parser.st.names
    cdef Field* values = parser.st.values
    cdef int count = parser.st.count
    cdef ListenerCore listener = client.listener
    cdef Exchange exchange = Exchange.__new__(Exchange)
    exchange.setup(client)
    cdef PassRules rules
    rules.named = NULL
    rules.rid_name = PyBytes_AS_STRING(listener.request_id_lower)
    rules.rid_len = PyBytes_GET_SIZE(listener.request_id_lower)
    rules.drop_underscores = False
    rules.owned = <PyObject*>listener.owned_headers if listener.owned_headers is not None else NULL
    cdef const char* host_ptr = NULL
    cdef Py_ssize_t host_len = 0
    cdef long long content_length = -1
    cdef bint chunked = False
    cdef bint expect_continue = False
    cdef object request_id = None
    cdef object xff = None
    cdef object xfp = None
    cdef object xfh = None
    cdef object upgrade = None
    cdef object named = None  # the header names a Connection header lists
    cdef const char* traceparent = NULL
    cdef Py_ssize_t traceparent_len = -1  # -1: none; -2: more than one (invalid, RFC 9110 5.3)
    cdef const char* name
    cdef const char* value
    cdef Py_ssize_t value_len
    cdef int i, kind
    for i in range(count):
        name = head + names[i].off
        kind = request_kind(name, names[i].len, &rules)
        if kind == H_PASS:
            if listener.underscores == U_ALLOW or memchr(name, b"_", names[i].len) == NULL:
                continue
            # X_User_Id reaches a CGI/WSGI upstream as HTTP_X_USER_ID, the same variable as
            # the X-User-Id the gateway sets: never forwarded unless the listener allows it.
            if listener.underscores == U_REJECT:
                raise ClientFault(
                    "header name with an underscore: "
                    + PyBytes_FromStringAndSize(name, names[i].len)[:64].decode("latin-1")
                )
            rules.drop_underscores = True
            continue
        value = head + values[i].off
        value_len = values[i].len
        if kind == H_HOST:
            if host_ptr != NULL:
                raise ClientFault("duplicate Host header")
            host_ptr = value
            host_len = value_len
        elif kind == H_CL:
            if content_length >= 0:
                raise ClientFault("duplicate Content-Length")
            content_length = content_length_value(value, value_len)
        elif kind == H_TE:
            if chunked:
                raise ClientFault("duplicate Transfer-Encoding")
            limits.check_transfer_encoding(PyBytes_FromStringAndSize(value, value_len), http_10)
            chunked = True
        elif kind == H_CONN:
            if not plain_connection(value, value_len):
                named = connection_tokens(PyBytes_FromStringAndSize(value, value_len), named)
        elif kind == H_EXPECT:
            if value_len != 12 or not _ieq(value, "100-continue", 12):
                raise ClientFault("unsupported Expect", 417)
            expect_continue = True
        elif kind == H_RID:
            if valid_request_id(value, value_len):
                request_id = PyBytes_FromStringAndSize(value, value_len)
        elif kind == H_XFF:
            if xff is None:
                xff = PyBytes_FromStringAndSize(value, value_len)
            else:
                xff = xff + b", " + PyBytes_FromStringAndSize(value, value_len)
        elif kind == H_XFP:
            xfp = PyBytes_FromStringAndSize(value, value_len)
        elif kind == H_XFH:
            xfh = PyBytes_FromStringAndSize(value, value_len)
        elif kind == H_TRACEPARENT:
            traceparent_len = value_len if traceparent_len == -1 else -2
            traceparent = value
        elif kind == H_UPGRADE:
            value_bytes = PyBytes_FromStringAndSize(value, value_len)
            upgrade = value_bytes if upgrade is None else upgrade + b", " + value_bytes
    if chunked and content_length >= 0:
        raise ClientFault("both Content-Length and Transfer-Encoding")
    if content_length > listener.max_body_bytes:
        raise ClientFault("request body too large", 413)
    if upgrade is not None and parser.wants_upgrade():
        # RFC 9110 7.8: what follows the request is the new protocol's, so it has no body.
        if content_length > 0 or chunked:
            raise ClientFault("a protocol upgrade request with a body is not supported")
        exchange.upgrade = upgrade  # tunnel.pyx: the route decides
        exchange.must_close = True  # whatever the answer, nothing after it here is HTTP


    cdef bytes method = parser.method()
    cdef const char* target = head + parser.st.target.off
    cdef Py_ssize_t target_len = parser.st.target.len
    cdef object host_header = None
    cdef bytes url
    cdef tuple last_host = client.last_host
    cdef object last_host_header = last_host[0] if last_host is not None else None
    if host_ptr != NULL:
        if (
            last_host_header is not None
            and PyBytes_GET_SIZE(last_host_header) == host_len
            and memcmp(PyBytes_AS_STRING(last_host_header), host_ptr, host_len) == 0
        ):
            host_header = last_host_header  # PERF: a keep-alive client repeats its Host
        else:
            host_header = PyBytes_FromStringAndSize(host_ptr, host_len)
    if target_len == 0 or target[0] != b"/":
        url = PyBytes_FromStringAndSize(target, target_len)
        if method == b"CONNECT" or url == b"*":
            raise ClientFault("unsupported request target")
        authority, url = limits.split_absolute_target(url)
        if host_header is not None and authority.lower() != host_header.lower():
            raise ClientFault("absolute-form target and Host disagree")
        host_header = authority
        target = PyBytes_AS_STRING(url)
        target_len = PyBytes_GET_SIZE(url)
    cdef bytes host
    if host_header is None:
        if not http_10:
            raise ClientFault("missing Host header")
        host = b""
    elif host_header is last_host_header:
        host = last_host[1]
    else:
        last_host = client.last_host = limits.host_entry(host_header)
        host_header = last_host[0]
        host = last_host[1]
    cdef const char* mark = <const char*>memchr(target, b"?", target_len)
    cdef Py_ssize_t path_len = mark - target if mark != NULL else target_len
    exchange.query = PyBytes_FromStringAndSize(mark, target_len - path_len) if mark != NULL else b""
    mark = <const char*>memchr(target, b"#", path_len)
    if mark != NULL:
        path_len = mark - target
    cdef bytes path = PyBytes_FromStringAndSize(target, path_len)
    exchange.path = limits.normalize_path(path) if needs_normalizing(path) else path

    if named is not None:
        # Headers the client names in Connection are hop-by-hop for this hop: drop them
        # from what passes through. What the gateway adds below is added after this filter.
        if b"x-forwarded-for" in named:
            xff = None
        if b"x-forwarded-proto" in named:
            xfp = None
        if b"x-forwarded-host" in named:
            xfh = None

    if request_id is None:
        request_id = client.observers.request_ids.next()
    if listener.trace_context:
        if traceparent_len >= 0 and valid_traceparent(traceparent, traceparent_len):
            exchange.client_traceparent = PyBytes_FromStringAndSize(traceparent, traceparent_len)
        else:
            traceparent = NULL
        exchange.traceparent = render_traceparent(
            client.observers.request_ids, traceparent, client.observers.trace_sample_max
        )
    exchange.method_slot = method_slot(parser.method_number())
    trusted = client.trusted
    rules.named = <PyObject*>named if named is not None else NULL
    rules.keep_traceparent = exchange.traceparent is None
    rules.keep_tracestate = exchange.traceparent is None or exchange.client_traceparent is not None
    exchange.pass_block = render_pass_block(
        parser,
        &rules,
        exchange.traceparent,
        xff if trusted and xff else None,
        client.peer_ip,
        xfp if trusted and xfp else listener.scheme,
        listener.request_id_header,
        request_id,
        xfh if trusted and xfh else host_header,
        client.tls.cert_lines if client.tls is not None else b"",
    )
    if count:
        # The header lines as received, parsed again only if a plugin asks (Exchange.headers).
        exchange.head_owner = parser.head_owner
        exchange.fields_lo = parser.head_origin + names[0].off
        exchange.fields_hi = parser.head_origin + values[count - 1].off + values[count - 1].len
    exchange.drop_underscores = rules.drop_underscores
    exchange.method = method
    exchange.http_10 = http_10
    exchange.keep_alive = parser.keep_alive() and not client.draining
    exchange.host = host
    exchange.host_header = host_header or b""
    exchange.content_length = content_length
    exchange.chunked = chunked
    exchange.expect_continue = expect_continue and (content_length > 0 or chunked)
    exchange.request_id = request_id
    # No body follows: the request is complete now, before start() runs (EV_DONE comes only
    # after this event is handled).
    exchange.request_done = content_length <= 0 and not chunked
    return exchange


cdef int request_kind(const char* s, Py_ssize_t n, const PassRules* rules) noexcept nogil:
    """What the head loop does with a request header, by name (H_PASS: forwarded as it is)."""
    if n == rules.rid_len and _ieq(s, rules.rid_name, n):
        return H_RID  # the listener's request-id header (X-Request-Id unless configured)
    if n == 4:
        return H_HOST if _ieq(s, "host", 4) else H_PASS
    if n == 14:
        return H_CL if _ieq(s, "content-length", 14) else H_PASS
    if n == 10:
        if _ieq(s, "connection", 10):
            return H_CONN
        if _ieq(s, "tracestate", 10):
            return H_TRACESTATE
        if _ieq(s, "keep-alive", 10):
            return H_DROP
    elif n == 17:
        if _ieq(s, "transfer-encoding", 17):
            return H_TE
        if _ieq(s, "x-forwarded-proto", 17):
            return H_XFP
    elif n == 15:
        if _ieq(s, "x-forwarded-for", 15):
            return H_XFF
    elif n == 16:
        if _ieq(s, "x-forwarded-host", 16):
            return H_XFH
        if _ieq(s, "proxy-connection", 16):
            return H_DROP
    elif n == 6:
        if _ieq(s, "expect", 6):
            return H_EXPECT
    elif n == 11:
        if _ieq(s, "traceparent", 11):
            return H_TRACEPARENT
    elif n == 2:
        if _ieq(s, "te", 2):
            return H_DROP
    elif n == 7:
        if _ieq(s, "upgrade", 7):
            return H_UPGRADE
        if _ieq(s, "trailer", 7):
            return H_DROP
    elif n == 9:
        if _ieq(s, "forwarded", 9):
            return H_DROP  # RFC 7239: not believed, not re-created
    elif n == 19:
        if _ieq(s, "proxy-authorization", 19):
            return H_DROP
    return H_PASS


cdef long long content_length_value(const char* s, Py_ssize_t n) except -1:
    """Strict digits-only Content-Length (RFC 9110 section 8.6): Python's ``int()`` would take
    ``+1``, ``1_0`` and `` 1``, and llhttp a length llhttp itself reads differently never gets here."""
    cdef Py_ssize_t i
    cdef long long result = 0
    if n == 0 or n > 18:
        raise ClientFault("invalid Content-Length")
    for i in range(n):
        if not (48 <= <unsigned char>s[i] <= 57):
            raise ClientFault("invalid Content-Length")
        result = result * 10 + (s[i] - 48)
    return result


cdef bint needs_normalizing(bytes path) noexcept:
    """Is there a '%' or a '/.' (``limits.normalize_path``'s own test, with memchr)."""
    cdef const char* s = PyBytes_AS_STRING(path)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
    cdef const char* end = s + n
    cdef const char* p
    if memchr(s, b"%", n) != NULL:
        return True
    p = <const char*>memchr(s, b"/", n)
    while p != NULL:
        p += 1
        if p >= end:
            return False
        if p[0] == b".":
            return True
        p = <const char*>memchr(p, b"/", end - p)
    return False


cdef bint passes(const char* head, Field name, const PassRules* rules) except -1:
    """Is this request header forwarded as it is?"""
    cdef int kind = request_kind(head + name.off, name.len, rules)
    if kind == H_PASS:
        if rules.drop_underscores and memchr(head + name.off, b"_", name.len) != NULL:
            return False
    elif not (
        (kind == H_TRACEPARENT and rules.keep_traceparent) or (kind == H_TRACESTATE and rules.keep_tracestate)
    ):
        return False
    if rules.named == NULL and rules.owned == NULL:
        return True
    lower = PyBytes_FromStringAndSize(head + name.off, name.len).lower()
    return not (
        (rules.named != NULL and lower in <object>rules.named)
        or (rules.owned != NULL and lower in <object>rules.owned)
    )


cdef bytes render_pass_block(
    HttpParser parser,
    const PassRules* rules,
    object traceparent,
    object xff,
    bytes peer_ip,
    bytes proto,
    bytes request_id_header,
    bytes request_id,
    object fwd_host,
    bytes cert_lines,
):
    """The header lines forwarded as they are (``rules``: not special, not named in Connection,
    no underscore unless allowed), then the X-Forwarded-For/-Proto, request id, X-Forwarded-Host
    and traceparent lines the gateway adds (without tracing, ``traceparent`` is None and the
    client's line passes as it is), and ``cert_lines``: the connection's verified client
    certificate's facts, under the names the listener gives them (mTLS; clients' own copies of
    those names never pass). ``tracestate`` belongs to the traceparent it came with (W3C
    Trace Context 3.3): it passes when that trace is continued or tracing is off, and is dropped
    when a new trace starts."""
    cdef const char* head = parser.head
    cdef Field* names = parser.st.names
    cdef Field* values = parser.st.values
    cdef int i, count = parser.st.count
    cdef Py_ssize_t size = 0
    cdef char* p
    for i in range(count):
        if not passes(head, names[i], rules):
            continue
        size += names[i].len + values[i].len + 4
    size += 17 + PyBytes_GET_SIZE(peer_ip) + 2  # X-Forwarded-For: [xff, ]peer
    if xff is not None:
        size += PyBytes_GET_SIZE(<bytes>xff) + 2
    size += 19 + PyBytes_GET_SIZE(proto) + 2  # X-Forwarded-Proto: proto
    size += PyBytes_GET_SIZE(request_id_header) + 2 + PyBytes_GET_SIZE(request_id) + 2  # X-Request-Id: id
    if fwd_host:
        size += 18 + PyBytes_GET_SIZE(<bytes>fwd_host) + 2  # X-Forwarded-Host: host
    if traceparent is not None:
        size += 13 + PyBytes_GET_SIZE(<bytes>traceparent) + 2  # traceparent: value
    size += PyBytes_GET_SIZE(cert_lines)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    for i in range(count):
        if not passes(head, names[i], rules):
            continue
        p = put_line(p, head + names[i].off, names[i].len, head + values[i].off, values[i].len)
    p = put_c(p, "X-Forwarded-For: ", 17)
    if xff is not None:
        p = put(p, <bytes>xff)
        p = put_c(p, ", ", 2)
    p = put(p, peer_ip)
    p = put_c(p, "\r\nX-Forwarded-Proto: ", 21)
    p = put(p, proto)
    p = put_c(p, "\r\n", 2)
    p = put(p, request_id_header)
    p = put_c(p, ": ", 2)
    p = put(p, request_id)
    p = put_c(p, "\r\n", 2)
    if fwd_host:
        p = put_c(p, "X-Forwarded-Host: ", 18)
        p = put(p, <bytes>fwd_host)
        p = put_c(p, "\r\n", 2)
    if traceparent is not None:
        p = put_c(p, "traceparent: ", 13)
        p = put(p, <bytes>traceparent)
        p = put_c(p, "\r\n", 2)
    p = put(p, cert_lines)
    check_end(p, out)
    return out
