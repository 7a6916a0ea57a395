# -- wire bytes: writers into one preallocated buffer -----------------------------------------------
# A renderer sizes its output first, allocates one bytes object, fills it with these, and checks
# it filled exactly that (check_end): no joins, no formatting per request.

cdef char* put(char* p, bytes b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(p, PyBytes_AS_STRING(b), n)
    return p + n


cdef char* put_c(char* p, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, n)
    return p + n


cdef char* put_line(
    char* p, const char* name, Py_ssize_t name_len, const char* value, Py_ssize_t value_len
) noexcept nogil:
    """``name: value\\r\\n``"""
    p = put_c(p, name, name_len)
    p = put_c(p, ": ", 2)
    p = put_c(p, value, value_len)
    return put_c(p, "\r\n", 2)


cdef int hex_digits(unsigned long long value) noexcept nogil:
    cdef int n = 1
    while value >= 16:
        value >>= 4
        n += 1
    return n


cdef char _HEX_PAIRS[512]  # "000102...feff": each byte's two lower-case hex digits
for _i in range(256):
    _HEX_PAIRS[2 * _i] = b"0123456789abcdef"[_i >> 4]
    _HEX_PAIRS[2 * _i + 1] = b"0123456789abcdef"[_i & 15]


cdef char* put_hex(char* p, unsigned long long value, int width) noexcept nogil:
    """``value``'s lowest ``width`` hex digits, lower case, zero-padded. PERF: a byte (two
    digits) per step: a traceparent's 48 digits on every request."""
    cdef int i = width
    while i >= 2:
        i -= 2
        memcpy(p + i, &_HEX_PAIRS[2 * (value & 0xFF)], 2)
        value >>= 8
    if i:
        p[0] = b"0123456789abcdef"[value & 15]
    return p + width


cdef int dec_digits(unsigned long long value) noexcept nogil:
    cdef int n = 1
    while value >= 10:
        value //= 10
        n += 1
    return n


cdef char* put_dec(char* p, unsigned long long value, int width) noexcept nogil:
    cdef int i
    for i in range(width - 1, -1, -1):
        p[i] = <char>(48 + value % 10)
        value //= 10
    return p + width


cdef bytes chunk_header(Py_ssize_t size):
    """``b"%x\\r\\n" % size``."""
    cdef int width = hex_digits(<unsigned long long>size)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, width + 2)
    cdef char* p = put_hex(PyBytes_AS_STRING(out), <unsigned long long>size, width)
    p[0] = b"\r"
    p[1] = b"\n"
    return out


def render_chunk_header(size: int) -> bytes:
    """The chunk-size line for ``size`` bytes of data (lower-case hex)."""
    return chunk_header(size)


cdef int check_end(char* p, bytes out) except -1:
    if p != PyBytes_AS_STRING(out) + PyBytes_GET_SIZE(out):
        raise SystemError("fastgw._proxy: rendered size mismatch")
    return 0


# -- writing: straight to the socket while the transport holds nothing -----------------------------

from libc.string cimport memset
from posix.uio cimport iovec


cdef extern from "sys/socket.h" nogil:
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    struct msghdr:
        iovec* msg_iov
        size_t msg_iovlen
    ssize_t sendmsg(int fd, const msghdr* msg, int flags)
    int MSG_NOSIGNAL
    int MSG_DONTWAIT


cdef extern from *:
    """
    #include <sys/ioctl.h>
    #ifdef __linux__
    #include <linux/sockios.h>
    static Py_ssize_t fastgw_unsent(int fd) {
        int n = 0;
        return (fd >= 0 && ioctl(fd, SIOCOUTQ, &n) == 0) ? (Py_ssize_t)n : 0;
    }
    #else
    static Py_ssize_t fastgw_unsent(int fd) { return 0; }
    #endif
    #include <sys/socket.h>
    static void fastgw_reset_on_close(int fd) {
        struct linger hard = {1, 0};
        if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    }
    """
    Py_ssize_t fastgw_unsent(int fd) nogil
    void fastgw_reset_on_close(int fd) nogil


cdef Py_ssize_t socket_unsent(int fd) noexcept nogil:
    return fastgw_unsent(fd)


cdef void socket_reset_on_close(int fd) noexcept nogil:
    fastgw_reset_on_close(fd)


cdef int socket_fd(object transport) except? -2:
    """The descriptor under a transport, or -1 (a transport without a socket of its own)."""
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None else -1


cdef Py_ssize_t take_pieces(list pieces, Py_ssize_t* offset, unsigned char* buf, size_t length) except -1:
    """Copy up to ``length`` bytes off the front of ``pieces`` (bytes; ``offset`` into the first)
    into ``buf``, dropping the pieces used up: an HTTP/2 body queue read for a DATA frame."""
    cdef Py_ssize_t n = 0, size, part
    cdef bytes piece
    while pieces and n < <Py_ssize_t>length:
        piece = <bytes>pieces[0]
        size = PyBytes_GET_SIZE(piece) - offset[0]
        part = min(size, <Py_ssize_t>length - n)
        memcpy(buf + n, PyBytes_AS_STRING(piece) + offset[0], part)
        n += part
        if part == size:
            del pieces[0]
            offset[0] = 0
        else:
            offset[0] += part
    return n


cdef int outlet_open(Outlet* outlet, object transport) except -1:
    """Find the socket under a plain uvloop stream transport (TLS and others keep fd -1)."""
    outlet.fd = -1
    outlet.queued = False
    if type(transport) is TCPTransport or type(transport) is UnixTransport:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            outlet.fd = sock.fileno()
    return 0


cdef inline int _write(object write, object transport, bytes data) except -1:
    if write is None:
        transport.write(data)
    else:
        write(data)
    return 0


cdef int outlet_write(Outlet* outlet, object write, object transport, bytes data) except -1:
    """Write ``data``: with one send() when the transport has nothing queued, else (and for
    whatever the kernel did not take) through the transport, which keeps the order, buffers and
    reports errors.

    PERF: uvloop's write() costs about as much again as the send() it makes (buffer bookkeeping,
    flow-control checks, a Python call); a small response needs none of it. Safe because the
    descriptor stays open until connection_lost (uvloop closes the handle after calling it) and
    the outlet is shut before: close(), abort() and connection_lost set fd to -1. ``write`` is
    the transport's bound write, or None: looked up then, only when needed."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef ssize_t sent
    if outlet.fd >= 0:
        if outlet.queued:
            if transport.get_write_buffer_size():
                _write(write, transport, data)
                return 0
            outlet.queued = False
        sent = send(outlet.fd, PyBytes_AS_STRING(data), size, MSG_NOSIGNAL | MSG_DONTWAIT)
        if sent == size:
            return 0
        outlet.queued = True
        if sent > 0:
            data = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + sent, size - sent)
        # sent < 0: EAGAIN, or an error the transport meets again and reports as usual
    _write(write, transport, data)
    return 0


cdef int outlet_write_pair(
    Outlet* outlet, object write, object transport, bytes first, const char* rest, Py_ssize_t rest_len
) except -1:
    """Write ``first``, then ``rest_len`` bytes at ``rest`` (a piece of a read, valid for this
    call only), with one sendmsg() when the transport has nothing queued; whatever the kernel
    does not take (all of it on TLS) goes through the transport as one bytes object, in order.

    PERF: a request head and the body piece that came in the same read go up in one syscall
    (one wake-up of the upstream; one TLS record), and no bytes object is made of the piece."""
    cdef Py_ssize_t first_len = PyBytes_GET_SIZE(first)
    cdef ssize_t sent = -1
    cdef iovec iov[2]
    cdef msghdr msg
    if outlet.fd >= 0 and not (outlet.queued and transport.get_write_buffer_size()):
        outlet.queued = False
        iov[0].iov_base = <void*>PyBytes_AS_STRING(first)
        iov[0].iov_len = first_len
        iov[1].iov_base = <void*>rest
        iov[1].iov_len = rest_len
        memset(&msg, 0, sizeof(msg))
        msg.msg_iov = iov
        msg.msg_iovlen = 2
        sent = sendmsg(outlet.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT)
        if sent == first_len + rest_len:
            return 0
        outlet.queued = True
    if sent < 0:
        sent = 0  # not tried, EAGAIN, or an error the transport meets again and reports as usual
    if rest_len == 0 and sent == 0:
        write(first)
        return 0
    cdef Py_ssize_t from_first = first_len - sent if sent < first_len else 0
    cdef Py_ssize_t from_rest = rest_len - (sent - first_len if sent > first_len else 0)
    cdef bytes left = PyBytes_FromStringAndSize(NULL, from_first + from_rest)
    cdef char* p = PyBytes_AS_STRING(left)
    memcpy(p, PyBytes_AS_STRING(first) + first_len - from_first, from_first)
    memcpy(p + from_first, rest + rest_len - from_rest, from_rest)
    write(left)
    return 0
