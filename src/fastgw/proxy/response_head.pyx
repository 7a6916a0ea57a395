# -- a response head: which lines the gateway owns ---------------------------------------------------
# Framing and connection management belong to each hop (RFC 9110 7.6.1): the client side frames
# the body its own way; Connection and the headers it names, Keep-Alive, TE, Trailer, Upgrade
# never pass. The request id is the gateway's; Date is added when missing.

cdef int response_kind(const char* s, Py_ssize_t n, const char* rid, Py_ssize_t rid_len) noexcept nogil:
    """Response headers the gateway owns towards the client (framing, connection management, the
    request id ``rid``, lower-case, which it sets itself) and the Date it adds when missing."""
    if n == rid_len and _ieq(s, rid, n):
        return R_DROP
    if n == 4:
        return R_DATE if _ieq(s, "date", 4) else R_PASS
    if n == 14:
        return R_CL if _ieq(s, "content-length", 14) else R_PASS
    if n == 10:
        if _ieq(s, "connection", 10):
            return R_CONN
        return R_DROP if _ieq(s, "keep-alive", 10) else R_PASS
    if n == 17:
        return R_TE if _ieq(s, "transfer-encoding", 17) else R_PASS
    if n == 16:
        return R_DROP if _ieq(s, "proxy-connection", 16) else R_PASS
    if n == 2:
        return R_DROP if _ieq(s, "te", 2) else R_PASS
    if n == 7:
        return R_DROP if _ieq(s, "trailer", 7) or _ieq(s, "upgrade", 7) else R_PASS
    return R_PASS


cdef object classify_response(
    HeadLines* lines, unsigned char* kinds, ReplyHead* reply, bytes request_id_lower
):
    """Classify each line once (``kinds``), sum the bytes of those that pass as they came, note
    the framing and the Date into ``reply``; return the header names a Connection header lists
    (hop-by-hop too), or None."""
    cdef const char* base = lines.base
    cdef Field* names = lines.names
    cdef Field* values = lines.values
    cdef const char* rid = PyBytes_AS_STRING(request_id_lower)
    cdef Py_ssize_t rid_len = PyBytes_GET_SIZE(request_id_lower)
    cdef int i, kind
    cdef bint date = False
    cdef object drop_named = None
    reply.passed_size = 0
    reply.length_known = False
    for i in range(lines.count):
        kind = kinds[i] = response_kind(base + names[i].off, names[i].len, rid, rid_len)
        if kind <= R_CL:
            reply.passed_size += names[i].len + values[i].len + 4
        if kind == R_PASS:
            continue
        if kind == R_DATE:
            date = True
        elif kind == R_CL:
            reply.length_known = True
        elif kind == R_CONN:
            if not plain_connection(base + values[i].off, values[i].len):
                drop_named = connection_tokens(
                    PyBytes_FromStringAndSize(base + values[i].off, values[i].len), drop_named
                )
    reply.add_date = not date
    return drop_named


cdef list response_pairs(HeadLines* lines, const unsigned char* kinds, object drop_named):
    """The upstream's lines that pass, as (name, value) pairs for hooks."""
    cdef const char* base = lines.base
    cdef Field* names = lines.names
    cdef Field* values = lines.values
    cdef list kept = []
    cdef int i
    cdef bytes name
    for i in range(lines.count):
        if kinds[i] > R_CL:
            continue
        name = PyBytes_FromStringAndSize(base + names[i].off, names[i].len)
        if drop_named is not None and name.lower() in drop_named:
            continue
        kept.append((name, PyBytes_FromStringAndSize(base + values[i].off, values[i].len)))
    return kept


cdef bint has_header(list pairs, bytes lower_name):
    for name, _ in pairs:
        if (<bytes>name).lower() == lower_name:
            return True
    return False


cdef bint plain_connection(const char* s, Py_ssize_t n) noexcept:
    """``Connection: keep-alive`` or ``close``, the values that name no header (no bytes made)."""
    return (n == 10 and _ieq(s, "keep-alive", 10)) or (n == 5 and _ieq(s, "close", 5))


cdef object connection_tokens(bytes value, object into):
    """Header names listed in a Connection header are hop-by-hop too (RFC 9110 7.6.1)."""
    if value in _PLAIN_CONNECTION:
        return into  # PERF: the usual "keep-alive" / "close" name no header
    for token in value.split(b","):
        token = token.strip().lower()
        if token and token not in (b"close", b"keep-alive"):
            if into is None:
                into = set()
            into.add(token)
    return into
