# TLS on a connection, driven from the compiled path (tls_link.pyx): a TLSLink sits between the
# event loop's TCP transport and the protocol above it (a client connection, an upstream one) and
# is that protocol's transport.
#
# The handshake runs through Python's ssl (an SSLObject on two memory BIOs, as the event loop's
# own TLS layer makes it), so everything the contexts are set up with works unchanged: the SNI
# callback switching certificates, ALPN, verification, session tickets, OCSP stapling, client
# certificates. Once it is done, every record is read and written by calling OpenSSL directly on
# that same SSL object and those same BIOs: a read is one BIO_write and SSL_read per record into a
# buffer handed up as one bytes; a write is one SSL_write and the BIO's bytes sent straight to the
# socket while the transport holds nothing (render.pyx's outlet).
#
# PERF: the event loop's layer costs a Python-level call, a bytes object and (for each read that
# ends) an SSLWantReadError per direction per request, and writes through the transport's
# buffering; kept-alive TLS cost fastgw about 2.5 µs more per request than nginx. OpenSSL's entry
# points are found once with dlsym in the libssl the interpreter already loaded (no headers, no
# link step), and the SSL* and BIO* pointers are read from CPython's ssl objects, whose layout
# ``enable_tls_link`` checks before anything uses it (else listeners keep the event loop's layer).

from cpython.ref cimport PyObject

import ssl  # loaded already (uvloop imports it): per handshake, no import statement to run

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    int RTLD_NOW
    int RTLD_NOLOAD

ctypedef int (*ssl_read_f)(void* ssl, void* buf, int num) noexcept nogil
ctypedef int (*ssl_write_f)(void* ssl, const void* buf, int num) noexcept nogil
ctypedef int (*ssl_error_f)(const void* ssl, int ret) noexcept nogil
ctypedef int (*ssl_int_f)(void* ssl) noexcept nogil
ctypedef void* (*ssl_bio_f)(const void* ssl) noexcept nogil
ctypedef int (*bio_read_f)(void* bio, void* buf, int size) noexcept nogil
ctypedef int (*bio_write_f)(void* bio, const void* buf, int size) noexcept nogil
ctypedef long (*bio_ctrl_f)(void* bio, int cmd, long larg, void* parg) noexcept nogil
ctypedef void (*err_clear_f)() noexcept nogil

cdef struct OpenSSLCalls:
    ssl_read_f read
    ssl_write_f write
    ssl_error_f get_error
    ssl_int_f shutdown
    ssl_int_f pending
    ssl_bio_f rbio
    ssl_bio_f wbio
    bio_read_f bio_read
    bio_write_f bio_write
    bio_ctrl_f bio_ctrl
    err_clear_f clear_errors

cdef OpenSSLCalls _ossl
cdef bint _tls_link_ready = False

cdef enum:
    SSL_ERROR_SSL = 1
    SSL_ERROR_WANT_READ = 2
    SSL_ERROR_SYSCALL = 5
    SSL_ERROR_ZERO_RETURN = 6
    BIO_CTRL_PENDING = 10
    TLS_RECORD_MAX = 16384

cdef enum:                    # TLSLink.state
    LINK_HANDSHAKE = 0        # records go to the handshake
    LINK_OPEN = 1             # the handshake is done: application data both ways
    LINK_CLOSING = 2          # close_notify sent; the TCP transport closes after what it holds
    LINK_CLOSED = 3           # aborted, failed or lost

# One read's plaintext, and one flush's records: the loop runs one callback at a time, and each
# is copied out before the callback returns.
cdef char _plain[4 * TLS_RECORD_MAX]
cdef char _wire[4 * TLS_RECORD_MAX + 1024]


cdef inline void* _pointer_field(object obj, Py_ssize_t index) noexcept:
    """The ``index``-th pointer after the object header of a CPython ssl object: PySSLSocket is
    {Socket, ssl, ...}, PySSLMemoryBIO is {bio, ...} (Modules/_ssl.c, unchanged since 3.7)."""
    return (<void**>((<char*><PyObject*>obj) + sizeof(PyObject)))[index]


cdef void* _symbol(void* handle, const char* name) except NULL:
    cdef void* found = dlsym(handle, name)
    if found == NULL:
        raise OSError(f"libssl has no {name.decode()}")
    return found


def enable_tls_link(bytes libssl_path) -> bool:
    """Find OpenSSL's calls in the libssl at ``libssl_path`` (already loaded by ``ssl``) and check
    that a fresh SSLObject's SSL* and BIO* are where ``_pointer_field`` reads them. True: TLS
    listeners and upstreams may use TLSLink; False: they keep the event loop's TLS layer."""
    global _tls_link_ready
    import sys

    if _tls_link_ready:
        return True
    if not (3, 8) <= sys.version_info[:2] <= (3, 13):
        return False  # a layout not checked against: do not read it
    cdef void* handle = dlopen(libssl_path, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        return False
    try:
        _ossl.read = <ssl_read_f>_symbol(handle, b"SSL_read")
        _ossl.write = <ssl_write_f>_symbol(handle, b"SSL_write")
        _ossl.get_error = <ssl_error_f>_symbol(handle, b"SSL_get_error")
        _ossl.shutdown = <ssl_int_f>_symbol(handle, b"SSL_shutdown")
        _ossl.pending = <ssl_int_f>_symbol(handle, b"SSL_pending")
        _ossl.rbio = <ssl_bio_f>_symbol(handle, b"SSL_get_rbio")
        _ossl.wbio = <ssl_bio_f>_symbol(handle, b"SSL_get_wbio")
        _ossl.bio_read = <bio_read_f>_symbol(handle, b"BIO_read")
        _ossl.bio_write = <bio_write_f>_symbol(handle, b"BIO_write")
        _ossl.bio_ctrl = <bio_ctrl_f>_symbol(handle, b"BIO_ctrl")
        _ossl.clear_errors = <err_clear_f>_symbol(handle, b"ERR_clear_error")
    except OSError:
        return False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(incoming, outgoing, server_hostname="probe")
    cdef void* sslp = _pointer_field(probe._sslobj, 1)
    if sslp == NULL or _ossl.rbio(sslp) != _pointer_field(incoming, 0) or _ossl.wbio(sslp) != _pointer_field(outgoing, 0):
        return False
    incoming.write(b"xyz")  # the BIO read is the one Python writes to
    if _ossl.bio_ctrl(_pointer_field(incoming, 0), BIO_CTRL_PENDING, 0, NULL) != 3:
        return False
    _tls_link_ready = True
    return True


def tls_link_ready() -> bool:
    return _tls_link_ready


cdef str _failure_reason(exc):
    """A bounded label for why a handshake failed: OpenSSL's reason (its set is fixed), else the
    kind of end."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower()
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "closed"
    return "error"


cdef class TLSLink:
    """TLS for one connection: the TCP transport's protocol, and the transport of ``app``.

    ``app`` gets connection_made once the handshake is done (never, if it fails), then
    data_received with plaintext, eof_received when the peer sends close_notify (a TCP FIN
    without one ends the connection, as a cut: an attacker could otherwise truncate what looks
    complete), pause_writing/resume_writing as the TCP transport's buffer fills and empties, and
    connection_lost once. ``handshaken`` (a client's): a future resolved with ``app`` when the
    handshake is done, or failed with why not. ``failed`` (a listener's): called with a short
    reason when a handshake fails (OpenSSL's reason in lower case, ``timeout``, ``closed``)."""

    cdef public object app
    cdef object tcp
    cdef object tcp_write
    cdef Outlet outlet
    cdef object context
    cdef bint server_side
    cdef object server_hostname
    cdef double handshake_timeout
    cdef object handshaken
    cdef object failed                   # callable(reason): a handshake failed (a listener's count)
    cdef object timer
    cdef public object ssl_object        # ssl.SSLObject; its BIOs are kept alive with it
    cdef object incoming
    cdef object outgoing
    cdef void* ssl
    cdef void* rbio
    cdef void* wbio
    cdef int state
    cdef bint app_connected
    cdef bint app_reading_paused
    cdef bint read_scheduled

    def __init__(
        self, app, context, bint server_side, server_hostname, double handshake_timeout, handshaken=None, failed=None
    ):
        self.app = app
        self.failed = failed
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.handshaken = handshaken
        self.state = LINK_HANDSHAKE
        self.outlet.fd = -1

    # -- the TCP transport's protocol ----------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.tcp = transport
        self.tcp_write = transport.write
        outlet_open(&self.outlet, transport)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        try:
            self.ssl_object = self.context.wrap_bio(
                self.incoming, self.outgoing, server_side=self.server_side, server_hostname=self.server_hostname
            )
        except Exception as exc:
            self.fail(exc)
            return
        self.ssl = _pointer_field(self.ssl_object._sslobj, 1)
        self.rbio = _pointer_field(self.incoming, 0)
        self.wbio = _pointer_field(self.outgoing, 0)
        self.timer = asyncio.get_running_loop().call_later(self.handshake_timeout, self.handshake_timed_out)
        self.handshake_step()

    def data_received(self, bytes data) -> None:
        if self.state >= LINK_CLOSING:
            return  # closing: nothing read matters any more
        _ossl.bio_write(self.rbio, PyBytes_AS_STRING(data), <int>PyBytes_GET_SIZE(data))
        if self.state == LINK_HANDSHAKE:
            self.handshake_step()
        elif not self.app_reading_paused:
            self.read_records()

    def eof_received(self):
        """A FIN: before close_notify it is a cut (the transport closes; the app sees it lost)."""
        if self.state == LINK_HANDSHAKE:
            self.fail(ConnectionResetError("the peer closed the connection during the TLS handshake"))
        return False

    def connection_lost(self, exc) -> None:
        if self.state == LINK_HANDSHAKE and self.failed is not None:
            self.failed("closed")  # a reset, or the loop's own close, before the handshake ended
        self.state = LINK_CLOSED
        self.outlet.fd = -1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.handshaken is not None and not self.handshaken.done():
            self.handshaken.set_exception(exc or ConnectionResetError("the connection closed during the TLS handshake"))
        if self.app_connected:
            self.app_connected = False
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app_connected:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app_connected:
            self.app.resume_writing()

    # -- the handshake -------------------------------------------------------------------------
    def handshake_timed_out(self) -> None:
        self.timer = None
        if self.state == LINK_HANDSHAKE:
            self.fail(TimeoutError(f"the TLS handshake took longer than {self.handshake_timeout:g}s"))

    cdef int handshake_step(self) except -1:
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return 0
        except Exception as exc:
            self.flush()  # the alert saying why, if OpenSSL made one
            self.fail(exc)
            return 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.state = LINK_OPEN
        self.flush()  # the last flight and (TLS 1.3) the session tickets
        self.app_connected = True
        self.app.connection_made(self)
        if self.handshaken is not None and not self.handshaken.done():
            self.handshaken.set_result(self.app)
        if self.state == LINK_OPEN and not self.app_reading_paused:
            self.read_records()  # what came behind the handshake in the same read
        return 0

    cdef int fail(self, exc) except -1:
        """The handshake failed: the peer gets the alert already flushed, then a FIN."""
        if self.state == LINK_HANDSHAKE and self.failed is not None:
            self.failed(_failure_reason(exc))
        self.state = LINK_CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.handshaken is not None and not self.handshaken.done():
            self.handshaken.set_exception(exc)
        self.outlet.fd = -1
        if self.tcp is not None:
            self.tcp.close()
        return 0

    # -- records -------------------------------------------------------------------------------
    cdef int read_records(self) except -1:
        """Decrypt what the BIO holds and hand it up, a buffer's worth per call, until OpenSSL
        wants more bytes, the app pauses reading, or the connection ends."""
        cdef int n, err
        cdef Py_ssize_t filled
        while self.state == LINK_OPEN and not self.app_reading_paused:
            filled = 0
            err = 0
            while filled <= <Py_ssize_t>sizeof(_plain) - TLS_RECORD_MAX:
                n = _ossl.read(self.ssl, _plain + filled, TLS_RECORD_MAX)
                if n <= 0:
                    err = _ossl.get_error(self.ssl, n)
                    break
                filled += n
            if filled:
                self.app.data_received(PyBytes_FromStringAndSize(_plain, filled))
            if err == 0:
                continue  # the buffer filled: there may be more
            if err == SSL_ERROR_WANT_READ:
                break
            if err == SSL_ERROR_ZERO_RETURN:  # close_notify: the peer sends nothing more
                if self.state == LINK_OPEN and not (self.app_connected and self.app.eof_received()):
                    self.close()
                break
            # A record that does not decrypt or parse, or an alert from the peer: the connection
            # is over. OpenSSL's alert goes out first.
            _ossl.clear_errors()
            self.flush()
            self.abort()
            return 0
        self.flush()  # what a read made OpenSSL send (a KeyUpdate's answer)
        return 0

    def read_later(self) -> None:
        self.read_scheduled = False
        if self.state == LINK_OPEN and not self.app_reading_paused:
            self.read_records()

    cdef int encrypt(self, const char* data, Py_ssize_t size) except -1:
        cdef int n, chunk
        while size > 0:
            chunk = <int>min(size, 1 << 30)
            n = _ossl.write(self.ssl, data, chunk)
            if n <= 0:
                _ossl.clear_errors()
                self.abort()
                raise ConnectionError("TLS: OpenSSL refused to encrypt a write")
            data += n
            size -= n
        return 0

    cdef int flush(self) except -1:
        """Send what OpenSSL wrote to the outgoing BIO: straight to the socket while the TCP
        transport holds nothing, else through it, in order."""
        cdef long pending
        cdef int n
        if self.wbio == NULL or self.tcp is None:
            return 0
        while True:
            pending = _ossl.bio_ctrl(self.wbio, BIO_CTRL_PENDING, 0, NULL)
            if pending <= 0:
                return 0
            n = _ossl.bio_read(self.wbio, _wire, <int>min(pending, <long>sizeof(_wire)))
            if n <= 0:
                return 0
            if self.state == LINK_CLOSED and self.tcp.is_closing():
                continue  # nowhere to send it
            outlet_write_pair(&self.outlet, self.tcp_write, self.tcp, b"", _wire, n)

    # -- the app's transport -------------------------------------------------------------------
    def write(self, data) -> None:
        if self.state != LINK_OPEN:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self.encrypt(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        self.flush()

    def writelines(self, list_of_data) -> None:
        """One SSL_write for the lot: fewer records, one send."""
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """close_notify after what was written, then the TCP transport closes once it has sent
        all it holds. The peer's close_notify is not waited for (nginx does not either)."""
        if self.state == LINK_OPEN:
            self.state = LINK_CLOSING
            if _ossl.shutdown(self.ssl) < 0:
                _ossl.clear_errors()
            self.flush()
        elif self.state == LINK_HANDSHAKE:
            self.state = LINK_CLOSED
        else:
            return
        self.outlet.fd = -1
        if self.tcp is not None:
            self.tcp.close()

    def abort(self) -> None:
        self.state = LINK_CLOSED
        self.outlet.fd = -1
        if self.tcp is not None:
            self.tcp.abort()

    def is_closing(self) -> bool:
        return self.state >= LINK_CLOSING or self.tcp is None or self.tcp.is_closing()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close: close() sends close_notify

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def pause_reading(self) -> None:
        self.app_reading_paused = True
        if self.tcp is not None and self.state < LINK_CLOSING:
            self.tcp.pause_reading()

    def resume_reading(self) -> None:
        if not self.app_reading_paused:
            return
        self.app_reading_paused = False
        if self.tcp is None or self.state != LINK_OPEN:
            return
        self.tcp.resume_reading()
        if not self.read_scheduled and (
            _ossl.pending(self.ssl) > 0 or _ossl.bio_ctrl(self.rbio, BIO_CTRL_PENDING, 0, NULL) > 0
        ):
            # What arrived while paused: delivered from the loop, not inside the app's own call.
            self.read_scheduled = True
            asyncio.get_running_loop().call_soon(self.read_later)

    def is_reading(self) -> bool:
        return not self.app_reading_paused

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self.tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self):
        return self.tcp.get_write_buffer_limits()

    def get_write_buffer_size(self) -> int:
        return self.tcp.get_write_buffer_size() if self.tcp is not None else 0

    def set_protocol(self, protocol) -> None:
        self.app = protocol

    def get_protocol(self):
        return self.app

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return self.ssl_object
        if name == "sslcontext":
            return self.ssl_object.context if self.ssl_object is not None else self.context
        if name == "peercert":
            return self.ssl_object.getpeercert() if self.state != LINK_HANDSHAKE else default
        if name == "cipher":
            return self.ssl_object.cipher() if self.ssl_object is not None else default
        if self.tcp is None:
            return default
        return self.tcp.get_extra_info(name, default)
