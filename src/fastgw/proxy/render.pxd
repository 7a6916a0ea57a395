# Wire bytes (render.pyx): writers into a preallocated buffer, the status-line table, chunk
# framing, and the direct-send outlet. PERF: every head is one allocation filled with memcpy.

cdef char* put(char* p, bytes b) noexcept
cdef char* put_c(char* p, const char* s, Py_ssize_t n) noexcept nogil
cdef char* put_line(char* p, const char* name, Py_ssize_t name_len, const char* value, Py_ssize_t value_len) noexcept nogil
cdef int hex_digits(unsigned long long value) noexcept nogil
cdef char* put_hex(char* p, unsigned long long value, int width) noexcept nogil
cdef int dec_digits(unsigned long long value) noexcept nogil
cdef char* put_dec(char* p, unsigned long long value, int width) noexcept nogil
cdef bytes chunk_header(Py_ssize_t size)     # b"%x\r\n"
cdef int check_end(char* p, bytes out) except -1   # a renderer filled exactly what it sized
cdef Py_ssize_t take_pieces(list pieces, Py_ssize_t* offset, unsigned char* buf, size_t length) except -1


cdef struct Outlet:
    # Writing straight to the socket while the transport holds nothing (render.pyx, outlet_write).
    int fd                               # the socket written to directly; -1: the transport only
    bint queued                          # the transport may hold bytes: ours go behind them

cdef int outlet_open(Outlet* outlet, object transport) except -1
cdef int outlet_write(Outlet* outlet, object write, object transport, bytes data) except -1
cdef int outlet_write_pair(Outlet* outlet, object write, object transport, bytes first, const char* rest, Py_ssize_t rest_len) except -1
cdef int socket_fd(object transport) except? -2
cdef Py_ssize_t socket_unsent(int fd) noexcept nogil   # SIOCOUTQ: in the kernel, not yet acknowledged
cdef void socket_reset_on_close(int fd) noexcept nogil  # SO_LINGER 0: close sends RST, drops what is queued
