# fastgw.http._parser: table of contents.
#
# The code and its theory of operation are in _parser.pyx. HttpParser wraps one llhttp parser whose
# callbacks are C functions recording where things are; the client and upstream sides of the hot
# path (fastgw._proxy: proxy/client.pyx, proxy/upstream.pyx) drive it
# with feed() and next() and read the fields below directly.

from fastgw.http._llhttp cimport llhttp_t


cdef inline unsigned char _lc(char c) noexcept nogil:
    cdef unsigned char u = <unsigned char>c
    return u + 32 if 65 <= u <= 90 else u


cdef inline bint _ieq(const char* s, const char* lower, Py_ssize_t n) noexcept nogil:
    """ASCII case-insensitive equality of s[:n] with an already lower-case literal."""
    cdef Py_ssize_t i
    for i in range(n):
        if _lc(s[i]) != <unsigned char>lower[i]:
            return False
    return True


cdef enum:                   # what HttpParser.next() found
    EV_MORE = 0              # every byte fed so far is consumed: feed more
    EV_HEAD                  # a head is complete: method/status, target, fields are valid
    EV_BODY                  # a piece of body: body, body_len (dechunked)
    EV_DONE                  # the message ended
    EV_MALFORMED             # not HTTP/1.x as the RFCs allow it: error_reason()
    EV_HEAD_TOO_BIG          # the head grew past max_head bytes
    EV_TOO_MANY_FIELDS       # more header fields than max_fields
    EV_TARGET_TOO_LONG       # request-target longer than max_target bytes
    EV_UPGRADE               # a request to switch protocols (Upgrade + Connection: upgrade, CONNECT)


cdef struct Field:           # bytes [off, off + len): stream offsets while parsing, then head offsets
    long long off
    Py_ssize_t len


cdef struct ParseState:      # what the C callbacks write; parser.data points here
    const char* buf          # start of the bytes being executed
    long long stream         # stream offset of buf[0]: bytes fed before this read
    long long head_at        # stream offset of the head's first byte seen, -1 before it
    bint in_head             # a message began and its head is not complete
    int open                 # which span a split read left open (O_* in _parser.pyx)
    Field target             # request-target, or a response's reason phrase
    Field* names
    Field* values
    int count
    int capacity             # entries names and values have room for now (_grow_fields)
    int max_fields           # ... and the most they may grow to
    bint too_many
    bint too_long            # the request-target passed max_target
    Py_ssize_t max_target
    int events               # E_* bits set by callbacks, returned in order by next()
    const char* body
    Py_ssize_t body_len
    bint skip_body           # a response to HEAD: no body whatever its headers say
    bint between             # no message open: the next byte starts one (fast path allowed)


cdef class HttpParser:
    cdef llhttp_t parser
    cdef ParseState st
    cdef readonly bint is_request
    cdef Py_ssize_t max_head
    cdef object data                 # the read being parsed (keeps buf alive)
    cdef Py_ssize_t fed              # size of that read
    cdef const char* pos             # next byte to execute
    cdef const char* end
    cdef bint resumed                # paused and resumed: run llhttp again before EV_MORE
    cdef bytearray spill             # earlier reads' part of a head that spans reads
    # Valid after EV_HEAD until the next feed(): the head's bytes and who owns them.
    cdef const char* head
    cdef object head_owner           # bytes or bytearray holding `head`
    cdef long long head_origin       # offset of `head` inside head_owner
    cdef const char* error_reason
    # The fast path (see _fast_message): the common message, read without llhttp.
    cdef public bint fast_path       # allowed (tests switch it off to compare with llhttp alone)
    cdef bint fast                   # the current/last message came through the fast path
    cdef long long fast_remaining    # its body bytes still to come
    cdef int fast_status             # its status or method (HTTP/1.1, keep-alive): llhttp's
    cdef int fast_method             # own fields are never written
    cdef readonly long long fast_messages  # how many did (tests: the fast path is really taken)

    cdef void feed(self, object data)
    cdef int next(self) except -1
    cdef int _event(self) except -1
    cdef int _consumed(self) except -1
    cdef int _head_complete(self) except -1
    cdef int _fast_message(self) except -1
    cdef int _fast_body(self) except -1
    cdef void release(self) noexcept
    cdef void reset(self) noexcept
    cdef bint in_head(self) noexcept
    cdef int status(self) noexcept         # a response's status code (after EV_HEAD)
    cdef int method_number(self) noexcept  # a request's method, llhttp's number (after EV_HEAD)
    cdef int http_major(self) noexcept
    cdef int http_minor(self) noexcept
    cdef bint keep_alive(self) noexcept
    cdef bint framed(self) noexcept          # Content-Length or chunked (after EV_HEAD)
    cdef bint wants_upgrade(self) noexcept
    cdef bytes method(self)
    cdef bytes target(self)               # request-target, or reason phrase (after EV_HEAD)
    cdef str error(self)
