# cython: language_level=3
"""HTTP/1.x message parsing for both sides of the proxy: llhttp driven from C.

llhttp (the parser inside httptools and Node.js, strict mode) does the parsing. httptools calls a
Python method per callback and builds two bytes objects per header; at a few microseconds per
request that was a third of the gateway's CPU. Here the callbacks are C functions that only
record *where* things are (``Field`` offsets into the stream of bytes fed), and the parser stops
(llhttp's pause) at the three events the protocols act on: head complete, a piece of body, message
complete. The protocol loop is::

    parser.feed(data)
    while True:
        event = parser.next()        # EV_MORE: all consumed; EV_HEAD / EV_BODY / EV_DONE; errors
        ...

At EV_HEAD the head is contiguous in memory (``head``; the fields' offsets are relative to it):
normally it lies inside the read that completed it; a head split across reads is gathered into
``spill`` (only its own bytes, bounded by ``max_head``). Nothing is copied per header.

The common message takes a fast path instead (``_fast_message``): a request or response that is
HTTP/1.1, keep-alive, framed by one Content-Length or bodiless, with its whole head in one read,
is read in one pass over the head and its body counted down, without llhttp; anything else, and
every error, is left to llhttp from the message's first byte. It reports exactly what llhttp would
(``tests/unit/test_http_fast_path.py`` compares the two on every input split at every byte).

Limits are enforced while bytes arrive, not after: a head is refused once it passes ``max_head``
bytes, a request-target once it passes ``max_target``, and the field table holds at most
``max_fields`` entries, so a client cannot make the parser buffer without bound. The table starts
at FIELDS_AT_FIRST entries and doubles when a head has more (PERF: memory: a parser kept by every
idle upstream connection and on every listener's shelf; most heads have a dozen fields, and the
table grows once per parser, not per message).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy

from fastgw.http._llhttp cimport (
    F_CHUNKED,
    F_CONNECTION_UPGRADE,
    F_CONTENT_LENGTH,
    F_UPGRADE,
    HPE_OK,
    HPE_PAUSED,
    HPE_PAUSED_H2_UPGRADE,
    HPE_PAUSED_UPGRADE,
    HPE_USER,
    HTTP_CONNECT,
    HTTP_DELETE,
    HTTP_GET,
    HTTP_HEAD,
    HTTP_OPTIONS,
    HTTP_PATCH,
    HTTP_POST,
    HTTP_PUT,
    HTTP_REQUEST,
    HTTP_RESPONSE,
    llhttp_execute,
    llhttp_get_error_pos,
    llhttp_get_error_reason,
    llhttp_init,
    llhttp_reset,
    llhttp_resume,
    llhttp_settings_init,
    llhttp_settings_t,
    llhttp_should_keep_alive,
    llhttp_t,
)


cdef extern from *:
    """
    /* llhttp's method names by number; NULL where llhttp defines none. */
    static const char* fastgw_method_name(int method) {
    #define FASTGW_METHOD(NUM, NAME, STRING) case NUM: return #STRING;
        switch (method) {
            HTTP_ALL_METHOD_MAP(FASTGW_METHOD)
            default: return NULL;
        }
    #undef FASTGW_METHOD
    }
    """
    const char* fastgw_method_name(int method)


cdef enum:                   # ParseState.events
    E_HEAD = 1
    E_BODY = 2
    E_DONE = 4


cdef enum:
    FIELDS_AT_FIRST = 16     # the field table's first size (it doubles up to max_fields)


cdef enum:                   # ParseState.open: the span a read ended inside, to extend next time
    O_NONE = 0
    O_TARGET
    O_NAME
    O_VALUE


# Byte classes of the response fast path (RFC 9110 5.6.2 tchar; 5.5 field-vchar, SP and HTAB).
cdef unsigned char _TCHAR[256]
cdef unsigned char _VCHAR[256]  # also the reason phrase's bytes (RFC 9112 4: HTAB, SP, VCHAR, obs-text)


cdef unsigned char _URICHAR[256]  # RFC 3986 path and query: unreserved, sub-delims, : @ / ? %


cdef inline const char* _vchar_blocks(const char* q, const char* end) noexcept nogil:
    """Past the 8-byte blocks from ``q`` whose bytes are all SP, VCHAR or obs-text (no control
    byte, no DEL), to where the byte loop over _VCHAR takes over: the block with a CR, an HTAB or
    a byte that ends or spoils the value, and the last few bytes. PERF: a header value is most
    of a head's bytes; a block costs about what one byte did."""
    cdef uint64_t x, y
    while end - q >= 8:
        memcpy(&x, q, 8)
        y = x ^ 0x7F7F7F7F7F7F7F7FULL
        # some byte < 0x20 (exact for a yes or no: "hasless"), or some byte == 0x7F ("haszero")
        if ((x - 0x2020202020202020ULL) & ~x & 0x8080808080808080ULL) or (
            (y - 0x0101010101010101ULL) & ~y & 0x8080808080808080ULL
        ):
            break
        q += 8
    return q


cdef void _init_classes() noexcept:
    cdef int c
    for c in range(256):
        _VCHAR[c] = c == 9 or 32 <= c <= 126 or c >= 128
        _TCHAR[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"!#$%&'*+-.^_`|~"
        _URICHAR[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-._~!$&'()*+,;=:@/?%"


cdef int _fast_method(const char* s, Py_ssize_t n) noexcept nogil:
    """llhttp's number for the common methods (the fast path takes no other), else -1."""
    if n == 3:
        if memcmp(s, b"GET", 3) == 0:
            return HTTP_GET
        if memcmp(s, b"PUT", 3) == 0:
            return HTTP_PUT
    elif n == 4:
        if memcmp(s, b"POST", 4) == 0:
            return HTTP_POST
        if memcmp(s, b"HEAD", 4) == 0:
            return HTTP_HEAD
    elif n == 5 and memcmp(s, b"PATCH", 5) == 0:
        return HTTP_PATCH
    elif n == 6 and memcmp(s, b"DELETE", 6) == 0:
        return HTTP_DELETE
    elif n == 7 and memcmp(s, b"OPTIONS", 7) == 0:
        return HTTP_OPTIONS
    return -1


_init_classes()


# Method names as bytes, by llhttp's number: an index, no string work per request.
cdef tuple _METHODS = tuple([
    fastgw_method_name(i) if fastgw_method_name(i) != NULL else None for i in range(256)
])


# -- the C callbacks: record offsets, set event bits, pause at events -----------------------------
# llhttp calls a span callback again for each read a span continues into, and once more with
# nothing at the end of an execute that ends inside it: empty calls are ignored, later pieces
# extend the span the read before left open.

cdef inline long long _offset(ParseState* st, const char* at) noexcept nogil:
    return st.stream + (at - st.buf)


cdef inline void _mark(ParseState* st, const char* at) noexcept nogil:
    if st.head_at < 0:
        st.head_at = _offset(st, at)


cdef int _on_message_begin(llhttp_t* p) noexcept nogil:
    cdef ParseState* st = <ParseState*>p.data
    st.in_head = True
    st.between = False
    st.head_at = -1
    st.open = O_NONE
    st.count = 0
    st.too_many = False
    st.too_long = False
    st.target.off = 0
    st.target.len = 0
    return 0


cdef int _on_method(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    """Method, protocol, version: only where the head starts matters."""
    _mark(<ParseState*>p.data, at)
    return 0


cdef int _on_target(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    """The request-target, or a response's reason phrase: one span, maybe split across reads."""
    cdef ParseState* st = <ParseState*>p.data
    if n == 0:
        return 0
    _mark(st, at)
    if st.open == O_TARGET:
        st.target.len += n
    else:
        st.open = O_TARGET
        st.target.off = _offset(st, at)
        st.target.len = n
    if st.max_target and st.target.len > st.max_target:
        st.too_long = True  # refused where it happens, whatever else the read holds
        return -1
    return 0


cdef int _on_span_complete(llhttp_t* p) noexcept nogil:
    (<ParseState*>p.data).open = O_NONE
    return 0


cdef bint _grow_fields(ParseState* st) noexcept nogil:
    """Double the field table, up to max_fields: False when it is there already (or out of
    memory, which is answered as too many fields: the head is refused either way)."""
    if st.capacity >= st.max_fields:
        return False
    cdef int capacity = min(st.capacity * 2, st.max_fields)
    cdef Field* names = <Field*>PyMem_RawRealloc(st.names, capacity * sizeof(Field))
    if names == NULL:
        return False
    st.names = names
    cdef Field* values = <Field*>PyMem_RawRealloc(st.values, capacity * sizeof(Field))
    if values == NULL:
        return False
    st.values = values
    st.capacity = capacity
    return True


cdef int _on_name(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef ParseState* st = <ParseState*>p.data
    cdef int i
    if n == 0 or not st.in_head:
        return 0  # trailers of a chunked body: not forwarded, not counted, not kept
    _mark(st, at)
    if st.open == O_NAME:
        st.names[st.count - 1].len += n
        return 0
    if st.count >= st.capacity and not _grow_fields(st):
        st.too_many = True
        return -1
    i = st.count
    st.count += 1
    st.open = O_NAME
    st.names[i].off = _offset(st, at)
    st.names[i].len = n
    st.values[i].off = st.names[i].off  # an empty value gets no value callback
    st.values[i].len = 0
    return 0


cdef int _on_value(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef ParseState* st = <ParseState*>p.data
    cdef int i = st.count - 1
    if n == 0 or not st.in_head:
        return 0
    if st.open == O_VALUE:
        st.values[i].len += n
    else:
        st.open = O_VALUE
        st.values[i].off = _offset(st, at)
        st.values[i].len = n
    return 0


cdef int _on_headers_complete(llhttp_t* p) noexcept nogil:
    cdef ParseState* st = <ParseState*>p.data
    st.events |= E_HEAD
    if st.skip_body:
        return 1  # no body; llhttp goes straight on to message complete, which pauses
    return HPE_PAUSED


cdef int _on_body(llhttp_t* p, const char* at, size_t n) noexcept nogil:
    cdef ParseState* st = <ParseState*>p.data
    if n == 0:
        return 0  # llhttp re-flushes an open span at the end of every execute, even an empty one
    st.events |= E_BODY
    st.body = at
    st.body_len = n
    return HPE_PAUSED


cdef int _on_message_complete(llhttp_t* p) noexcept nogil:
    (<ParseState*>p.data).events |= E_DONE
    # After a message that ends the connection (or switches protocols) llhttp takes no byte
    # more as HTTP: neither may the fast path.
    (<ParseState*>p.data).between = (
        llhttp_should_keep_alive(p) != 0 and not p.upgrade and p.status_code != 101
    )
    return HPE_PAUSED


cdef llhttp_settings_t _SETTINGS
llhttp_settings_init(&_SETTINGS)
_SETTINGS.on_message_begin = _on_message_begin
_SETTINGS.on_method = _on_method  # the first byte of a request head
_SETTINGS.on_protocol = _on_method  # ... and of a response head ("HTTP")
_SETTINGS.on_version = _on_method
_SETTINGS.on_url = _on_target
_SETTINGS.on_status = _on_target
_SETTINGS.on_url_complete = _on_span_complete
_SETTINGS.on_status_complete = _on_span_complete
_SETTINGS.on_header_field = _on_name
_SETTINGS.on_header_field_complete = _on_span_complete
_SETTINGS.on_header_value = _on_value
_SETTINGS.on_header_value_complete = _on_span_complete
_SETTINGS.on_headers_complete = _on_headers_complete
_SETTINGS.on_body = _on_body
_SETTINGS.on_message_complete = _on_message_complete


cdef class HttpParser:
    """One direction of one connection: requests from a client, or responses from an upstream.

    ``max_head``: bytes of one head; ``max_fields``: header fields in one head; ``max_target``:
    bytes of a request-target (0 = no separate limit).
    """

    def __cinit__(self, bint request, Py_ssize_t max_head, int max_fields, Py_ssize_t max_target=0):
        self.st.capacity = min(max_fields, FIELDS_AT_FIRST)
        self.st.max_fields = max_fields
        self.st.names = <Field*>PyMem_RawMalloc(self.st.capacity * sizeof(Field))
        self.st.values = <Field*>PyMem_RawMalloc(self.st.capacity * sizeof(Field))
        if self.st.names == NULL or self.st.values == NULL:
            raise MemoryError()
        self.is_request = request
        self.fast_path = True
        self.max_head = max_head
        self.st.max_target = max_target
        llhttp_init(&self.parser, HTTP_REQUEST if request else HTTP_RESPONSE, &_SETTINGS)
        self.parser.data = &self.st
        self.reset()

    def __dealloc__(self):
        PyMem_RawFree(self.st.names)
        PyMem_RawFree(self.st.values)

    cdef void reset(self) noexcept:
        """Forget everything: the next byte fed starts a new message (a reused upstream parser)."""
        llhttp_reset(&self.parser)
        self.st.stream = 0
        self.fed = 0
        self.st.head_at = -1
        self.st.in_head = False
        self.st.open = O_NONE
        self.st.count = 0
        self.st.events = 0
        self.st.skip_body = False
        self.st.between = True
        self.resumed = False
        self.fast = False
        self.fast_remaining = 0
        self.spill = None
        self.release()

    cdef void release(self) noexcept:
        """Drop the reference to the last read (call when ``next()`` returned EV_MORE)."""
        self.data = None
        self.head_owner = None
        self.head = NULL
        self.pos = self.end = self.st.buf = NULL

    cdef void feed(self, object data):
        """Parse ``data`` next (bytes); then call ``next()`` until it returns EV_MORE."""
        self.st.stream += self.fed
        self.fed = PyBytes_GET_SIZE(data)
        self.data = data
        self.st.buf = self.pos = PyBytes_AS_STRING(data)
        self.end = self.pos + PyBytes_GET_SIZE(data)
        self.head = NULL
        self.head_owner = None

    cdef int next(self) except -1:
        cdef ParseState* st = &self.st
        cdef int err
        if not st.events:
            if self.fast_remaining:
                return self._fast_body()
            if self.pos >= self.end and not self.resumed:
                return self._consumed()
            if st.between and self.fast_path and not st.skip_body and self.pos < self.end:
                err = self._fast_message()
                if err:
                    return err
            self.fast = False
            # After a pause llhttp may owe an event that needs no byte (a bodiless message's
            # end right after its head), so it runs again even with nothing left to read.
            self.resumed = False
            err = llhttp_execute(&self.parser, self.pos, self.end - self.pos)
            if err == HPE_OK:
                self.pos = self.end
                if st.events:  # a HEAD response's head ended the input without a pause
                    return self._event()
                return self._consumed()
            if err == HPE_PAUSED:
                self.pos = llhttp_get_error_pos(&self.parser)
                llhttp_resume(&self.parser)
                self.resumed = True
            elif err == HPE_PAUSED_UPGRADE or err == HPE_PAUSED_H2_UPGRADE:
                self.pos = self.end  # protocol switch: the caller refuses, nothing after counts
                return EV_UPGRADE
            elif st.too_long:
                return EV_TARGET_TOO_LONG
            elif st.too_many:
                return EV_TOO_MANY_FIELDS
            else:
                self.error_reason = llhttp_get_error_reason(&self.parser)
                return EV_MALFORMED
        return self._event()

    cdef int _fast_message(self) except -1:
        """The usual message, read without llhttp: a response that is ``HTTP/1.1``, a final
        status with a body (not 1xx, 204 or 304) and one digits-only Content-Length; a request
        that is ``HTTP/1.1`` with a common method and an origin-form target of plain URI
        characters, with no body or one digits-only Content-Length; either with well-formed
        header lines, no Transfer-Encoding, Upgrade or Proxy-Connection, no Connection but
        ``keep-alive``, the whole head in this read. Returns EV_HEAD with the fields set as
        llhttp's callbacks would set them, the body then counted down by ``_fast_body``; or 0
        having changed nothing that matters, and llhttp reads the message from its first byte
        (anything else, and every error, is llhttp's).

        PERF: llhttp and its callbacks were the largest user-space cost of a small proxied
        request after uvloop's own (a state machine step per byte, three executes per message);
        this is one pass over the head. ``tests/unit/test_http_fast_path.py`` checks that it
        reports what llhttp reports for every input, split at every byte."""
        cdef ParseState* st = &self.st
        cdef const char* p = self.pos
        cdef const char* end = self.end
        cdef const char* q
        cdef const char* line
        cdef const char* name_end
        cdef const char* value
        cdef const char* digit
        cdef Py_ssize_t n
        cdef int status = 0, method = -1, count = 0
        cdef long long length = -1
        if self.is_request:
            q = <const char*>memchr(p, b" ", min(end - p, 8))
            if q == NULL:
                return 0
            method = _fast_method(p, q - p)
            if method < 0 or end - q < 2 or q[1] != b"/":
                return 0
            q += 1
            st.target.off = q - p
            while q < end and _URICHAR[<unsigned char>q[0]]:
                q += 1
            st.target.len = q - p - st.target.off
            if end - q < 11 or memcmp(q, b" HTTP/1.1\r\n", 11) != 0:
                return 0
            q += 11
        else:
            if end - p < 17 or memcmp(p, b"HTTP/1.1 ", 9) != 0 or p[12] != b" ":
                return 0
            if not (48 <= p[9] <= 57 and 48 <= p[10] <= 57 and 48 <= p[11] <= 57):
                return 0
            status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
            if status < 200 or status == 204 or status == 304 or status > 599:
                return 0
            q = _vchar_blocks(p + 13, end)
            while q < end and _VCHAR[<unsigned char>q[0]]:
                q += 1
            if end - q < 2 or q[0] != b"\r" or q[1] != b"\n":
                return 0
            st.target.off = 13
            st.target.len = q - p - 13
            q += 2
        if st.max_target and st.target.len > st.max_target:
            return 0  # (a reason phrase too: _on_target counts whichever the parser reads)
        while True:
            if end - q < 2:
                return 0
            if q[0] == b"\r":
                if q[1] != b"\n":
                    return 0
                q += 2
                break
            line = q
            while q < end and _TCHAR[<unsigned char>q[0]]:
                q += 1
            if q == line or q >= end or q[0] != b":":
                return 0
            name_end = q
            q += 1
            while q < end and (q[0] == b" " or q[0] == b"\t"):
                q += 1
            value = q
            q = _vchar_blocks(q, end)
            while q < end and _VCHAR[<unsigned char>q[0]]:
                q += 1
            if end - q < 2 or q[0] != b"\r" or q[1] != b"\n" or count >= st.capacity:
                return 0
            n = name_end - line
            if n == 14 and _ieq(line, b"content-length", 14):
                if length >= 0 or q == value or q - value > 18:
                    return 0
                length = 0
                digit = value
                while digit < q:
                    if not 48 <= digit[0] <= 57:
                        return 0
                    length = length * 10 + (digit[0] - 48)
                    digit += 1
            elif n == 17 and _ieq(line, b"transfer-encoding", 17):
                return 0
            elif n == 10 and _ieq(line, b"connection", 10):
                if q - value != 10 or not _ieq(value, b"keep-alive", 10):
                    return 0
            elif (n == 16 and _ieq(line, b"proxy-connection", 16)) or (n == 7 and _ieq(line, b"upgrade", 7)):
                return 0
            st.names[count].off = line - p
            st.names[count].len = n
            if q > value:
                st.values[count].off = value - p
                st.values[count].len = q - value
            else:  # as _on_name leaves an empty value
                st.values[count].off = line - p
                st.values[count].len = 0
            count += 1
            q += 2
        if length < 0:
            if not self.is_request:
                return 0  # a response without a length: framed by the close, llhttp's
            length = 0
        if q - p > self.max_head:
            return 0
        # Accepted: from here the message is ours.
        st.count = count
        # Never written into llhttp's own fields: paused at the end of the message before,
        # llhttp has yet to decide on them whether the connection stays open.
        self.fast_status = status
        self.fast_method = method
        self.head = p
        self.head_owner = self.data
        self.head_origin = p - st.buf
        self.pos = q
        self.fast = True
        self.fast_remaining = length
        self.resumed = False  # llhttp owes nothing: it stands between messages
        self.fast_messages += 1
        if length == 0:
            st.events = E_DONE
        elif q < end:
            self._fast_body()  # sets E_BODY (and E_DONE when the body is all here)
            st.events |= E_BODY
        return EV_HEAD

    cdef int _fast_body(self) except -1:
        """The next piece of a fast-path body (EV_BODY), EV_DONE owed after its last one."""
        cdef ParseState* st = &self.st
        cdef Py_ssize_t n = self.end - self.pos
        if n <= 0:
            return self._consumed()
        if n > self.fast_remaining:
            n = <Py_ssize_t>self.fast_remaining
        st.body = self.pos
        st.body_len = n
        self.pos += n
        self.fast_remaining -= n
        if not self.fast_remaining:
            st.events |= E_DONE
        return EV_BODY

    cdef int _event(self) except -1:
        """The next event the callbacks recorded, in message order: head, body, done."""
        cdef ParseState* st = &self.st
        if st.events & E_HEAD:
            st.events &= ~E_HEAD
            return self._head_complete()
        if st.events & E_BODY:
            st.events &= ~E_BODY
            return EV_BODY
        st.events &= ~E_DONE
        return EV_DONE

    cdef int _consumed(self) except -1:
        """All input used. Inside a head: check the limits, keep the head's bytes for later."""
        cdef ParseState* st = &self.st
        cdef long long fed_end
        cdef Py_ssize_t start
        if not st.in_head or st.head_at < 0:
            return EV_MORE
        fed_end = st.stream + (self.end - st.buf)
        # (A target over max_target was refused by _on_target itself, before any size check.)
        if fed_end - st.head_at > self.max_head:
            return EV_HEAD_TOO_BIG
        if st.head_at >= st.stream:
            start = <Py_ssize_t>(st.head_at - st.stream)
            self.spill = bytearray(self.data[start:])
        else:
            self.spill += self.data
        return EV_MORE

    cdef int _head_complete(self) except -1:
        """Make the head contiguous, check its size, turn stream offsets into head offsets."""
        cdef ParseState* st = &self.st
        cdef long long head_end = st.stream + (self.pos - st.buf)
        cdef long long at = st.head_at
        cdef int i
        st.in_head = False
        st.open = O_NONE
        if head_end - at > self.max_head:
            return EV_HEAD_TOO_BIG
        if at >= st.stream:
            self.head_owner = self.data
            self.head_origin = at - st.stream
            self.head = st.buf + self.head_origin
        else:
            # Split across reads: the earlier part is in spill, the rest starts this read.
            self.spill += self.data[: self.pos - st.buf]
            self.head_owner = self.spill
            self.head_origin = 0
            self.head = PyByteArray_AS_STRING(self.spill)
            self.spill = None
        st.target.off -= at
        for i in range(st.count):
            st.names[i].off -= at
            st.values[i].off -= at
        if self.is_request and self.wants_upgrade():
            return EV_UPGRADE
        return EV_HEAD

    # -- what the protocols read -----------------------------------------------------------------
    cdef bint in_head(self) noexcept:
        return self.st.in_head

    cdef int status(self) noexcept:
        return self.fast_status if self.fast else self.parser.status_code

    cdef int method_number(self) noexcept:
        return self.fast_method if self.fast else self.parser.method

    cdef int http_major(self) noexcept:
        return 1 if self.fast else self.parser.http_major

    cdef int http_minor(self) noexcept:
        return 1 if self.fast else self.parser.http_minor

    cdef bint keep_alive(self) noexcept:
        return self.fast or llhttp_should_keep_alive(&self.parser) != 0

    cdef bint framed(self) noexcept:
        """The message's body length is known from its head: Content-Length, or chunked (the
        fast path takes only messages with a length or no body). Else a response's body runs
        until the close."""
        return self.fast or (self.parser.flags & (F_CONTENT_LENGTH | F_CHUNKED)) != 0

    cdef bint wants_upgrade(self) noexcept:
        if self.fast:
            return False  # an Upgrade header is llhttp's
        cdef int flags = self.parser.flags
        return self.parser.method == HTTP_CONNECT or (
            (flags & F_UPGRADE) != 0 and (flags & F_CONNECTION_UPGRADE) != 0
        )

    cdef bytes method(self):
        return <bytes>_METHODS[self.method_number()]

    cdef bytes target(self):
        return PyBytes_FromStringAndSize(self.head + self.st.target.off, self.st.target.len)

    cdef str error(self):
        if self.error_reason == NULL:
            return "malformed message"
        return (<bytes>self.error_reason).decode("ascii", "replace")

    # -- for tests and tools: the same parser from Python ----------------------------------------
    def parse(self, data: bytes, until_done: bool = False) -> list[tuple[str, object]]:
        """Feed ``data`` and list the events: ("head", dict), ("body", bytes), ("done", None),
        or one error event ("malformed" / "head-too-big" / ...) that ends the list.
        ``until_done``: stop at the first "done", as the upstream side does (the rest of the
        read is not asked for)."""
        cdef list out = []
        cdef int ev, i
        self.feed(bytes(data))
        while True:
            ev = self.next()
            if ev == EV_MORE:
                self.release()
                return out
            if ev == EV_HEAD:
                out.append(("head", {
                    "method": self.method() if self.is_request else None,
                    "status": None if self.is_request else self.status(),
                    "version": (self.http_major(), self.http_minor()),
                    "target": self.target(),
                    "fields": [
                        (
                            PyBytes_FromStringAndSize(self.head + self.st.names[i].off, self.st.names[i].len),
                            PyBytes_FromStringAndSize(self.head + self.st.values[i].off, self.st.values[i].len),
                        )
                        for i in range(self.st.count)
                    ],
                    "keep_alive": self.keep_alive(),
                }))
            elif ev == EV_BODY:
                out.append(("body", PyBytes_FromStringAndSize(self.st.body, self.st.body_len)))
            elif ev == EV_DONE:
                out.append(("done", None))
                if until_done:
                    self.release()
                    return out
            else:
                self.release()
                out.append((_EVENT_NAMES[ev], self.error() if ev == EV_MALFORMED else None))
                return out

    @property
    def head_pending(self) -> bool:
        """A message began and its head is not complete: for a client, bytes past its response."""
        return self.st.in_head

    def expect_no_body(self, head_only: bool = True) -> None:
        """Responses from now on answer HEAD requests, or not (tests; the proxy sets it per
        exchange in C)."""
        self.st.skip_body = head_only


_EVENT_NAMES = {
    EV_MALFORMED: "malformed",
    EV_HEAD_TOO_BIG: "head-too-big",
    EV_TOO_MANY_FIELDS: "too-many-fields",
    EV_TARGET_TOO_LONG: "target-too-long",
    EV_UPGRADE: "upgrade",
}
