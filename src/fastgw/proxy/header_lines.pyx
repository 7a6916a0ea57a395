# -- header lines in a head llhttp validated: the plugin context's lookups ----------------------------
#
# A request's header lines stay in the buffer they arrived in (``name: value`` separated by CRLF,
# no obs-fold, no bare LF: llhttp refused those); a hook asking for one header walks them here
# instead of a dict built for every request.


cdef const char* _named_line(const char* p, const char* end, const char* want, Py_ssize_t n) noexcept nogil:
    """The start of the first line in [p, end) named ``want`` (``n`` bytes, lower-case), or NULL;
    lines llhttp already validated (``name: value`` separated by CRLF)."""
    cdef const char* line_end
    while p < end:
        line_end = <const char*>memchr(p, b"\r", end - p)
        if line_end == NULL:
            line_end = end
        if line_end - p > n and p[n] == b":" and _ieq(p, want, n):
            return p
        p = line_end + 2
    return NULL


cdef inline const char* _owner_bytes(object owner):
    return PyBytes_AS_STRING(owner) if type(owner) is bytes else PyByteArray_AS_STRING(owner)


cdef object _find_header(object owner, Py_ssize_t lo, Py_ssize_t hi, bytes name):
    """The value of the first header line named ``name`` (lower-case) in owner[lo:hi], or None."""
    if owner is None:
        return None
    cdef const char* end = _owner_bytes(owner) + hi
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    cdef const char* p = _named_line(_owner_bytes(owner) + lo, end, PyBytes_AS_STRING(name), n)
    if p == NULL:
        return None
    cdef const char* line_end = <const char*>memchr(p, b"\r", end - p)
    if line_end == NULL:
        line_end = end
    cdef const char* value = p + n + 1
    while value < line_end and (value[0] == b" " or value[0] == b"\t"):
        value += 1
    while line_end > value and ((line_end - 1)[0] == b" " or (line_end - 1)[0] == b"\t"):
        line_end -= 1
    return PyBytes_FromStringAndSize(value, line_end - value)


cdef Py_ssize_t _count_header(object owner, Py_ssize_t lo, Py_ssize_t hi, bytes name):
    """How many header lines in owner[lo:hi] are named ``name`` (lower-case)."""
    if owner is None:
        return 0
    cdef const char* end = _owner_bytes(owner) + hi
    cdef const char* p = _owner_bytes(owner) + lo
    cdef Py_ssize_t found = 0
    while True:
        p = _named_line(p, end, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        if p == NULL:
            return found
        found += 1
        p = <const char*>memchr(p, b"\r", end - p)
        if p == NULL:
            return found
        p += 2


cdef list _header_pairs(object owner, Py_ssize_t lo, Py_ssize_t hi, bint drop_underscores):
    """Split header lines llhttp already validated (no obs-fold, no bare LF) into pairs; names
    with "_" are left out when the listener drops them."""
    if owner is None:
        return []
    pairs = []
    for line in bytes(owner[lo:hi]).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if drop_underscores and b"_" in name:
            continue
        pairs.append((name, value.strip(b" \t")))
    return pairs
