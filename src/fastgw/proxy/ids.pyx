# -- request ids -----------------------------------------------------------------------------------

@cython.final
cdef class RequestIds:
    """A random per-process prefix and a counter: unique, cheap, and sortable per worker.

    PERF: formats ``b"%s%08x" % (prefix, n)`` in C.
    """

    def __init__(self, bytes prefix not None) -> None:
        self.prefix = prefix
        self.number = 0
        self.random_state = int.from_bytes(os.urandom(8), "little")

    cpdef bytes next(self):
        self.number += 1
        cdef unsigned long long number = self.number
        cdef int width = hex_digits(number)
        if width < 8:
            width = 8
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self.prefix)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n + width)
        cdef char* p = PyBytes_AS_STRING(out)
        memcpy(p, PyBytes_AS_STRING(self.prefix), n)
        put_hex(p + n, number, width)
        return out

    cdef unsigned long long random64(self) noexcept:
        """splitmix64: fast, well mixed, and enough for ids that must be unique, not secret."""
        self.random_state += 0x9E3779B97F4A7C15ULL
        cdef unsigned long long z = self.random_state
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        return z ^ (z >> 31)

    def random_ids(self, int count) -> list:
        """``count`` values of the id generator (for tests of its spread)."""
        return [self.random64() for _ in range(count)]


# -- W3C Trace Context (https://www.w3.org/TR/trace-context/) ---------------------------------------
SAMPLE_ALL = 0xFFFFFFFFFFFFFFFF  # trace_sample_max that samples every new trace

# traceparent: version "-" trace-id (32 hex) "-" parent-id (16 hex) "-" flags (2 hex), lower case.
# A valid one from the client is continued (same trace id and sampled flag, a new span id: the
# gateway's); anything else starts a new trace. What goes upstream is always version 00.

cdef inline int _lower_hex(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef bint valid_traceparent(const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef bint trace_zero = True, parent_zero = True
    if n < 55:
        return False
    for i in range(55):
        if i == 2 or i == 35 or i == 52:
            if s[i] != b"-":
                return False
        elif _lower_hex(<unsigned char>s[i]) < 0:
            return False
        elif s[i] != b"0":
            if 3 <= i < 35:
                trace_zero = False
            elif 36 <= i < 52:
                parent_zero = False
    if trace_zero or parent_zero or (s[0] == b"f" and s[1] == b"f"):
        return False
    if s[0] == b"0" and s[1] == b"0":
        return n == 55  # version 00 has exactly these fields
    return n == 55 or s[55] == b"-"  # a later version's extra fields follow a dash


cdef bytes render_traceparent(RequestIds ids, const char* client, unsigned long long sample_max):
    """Our traceparent: the client's trace (``client``, already validated) or a new one, and a
    new span id for the gateway's hop. A new trace is sampled when the lower half of its id is at
    most ``sample_max`` (OpenTelemetry's TraceIdRatioBased rule, so every worker and every
    gateway with the same ratio agrees); a continued one keeps the client's decision."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 55)
    cdef char* p = PyBytes_AS_STRING(out)
    cdef unsigned long long high, low = 0, span
    p[0] = b"0"
    p[1] = b"0"
    p[2] = b"-"
    if client != NULL:
        memcpy(p + 3, client + 3, 32)
    else:
        high = ids.random64()
        low = ids.random64() | 1  # never the invalid all-zero id
        put_hex(p + 3, high, 16)
        put_hex(p + 19, low, 16)
    p[35] = b"-"
    span = ids.random64() | 1
    put_hex(p + 36, span, 16)
    p[52] = b"-"
    p[53] = b"0"
    # Only the sampled bit is defined in version 00; the gateway decides for a trace it starts.
    if client == NULL:
        p[54] = b"1" if low <= sample_max else b"0"
    else:
        p[54] = b"1" if _lower_hex(<unsigned char>client[54]) & 1 else b"0"
    return out


cdef bint valid_request_id(const char* s, Py_ssize_t n) noexcept:
    """``[A-Za-z0-9._:-]{1,128}``: a client's id is continued only if it is this (anything else
    could smuggle text into logs and headers)."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n < 1 or n > 128:
        return False
    for i in range(n):
        c = <unsigned char>s[i]
        if not (48 <= c <= 58 or 65 <= c <= 90 or 97 <= c <= 122 or c == 46 or c == 95 or c == 45):
            return False
    return True
