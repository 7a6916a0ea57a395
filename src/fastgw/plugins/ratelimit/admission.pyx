# cython: language_level=3
"""A rate limit counted in this process, answered in C, and the fields that tell a client about it.

``draft`` (the default) is the IETF httpapi working group's current form
(draft-ietf-httpapi-ratelimit-headers-10/-11), two structured-field lists:

    RateLimit-Policy: "per-ip";q=100;w=60      the policy: quota q per window of w seconds
    RateLimit: "per-ip";r=42;t=17              this client: r left, for the next t seconds

``legacy`` is the earlier drafts' ``RateLimit-Limit``/``-Remaining``/``-Reset`` (delta seconds),
``x`` the de-facto ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (delta seconds, not a date).
A 429 also carries ``Retry-After`` (whole seconds, at least 1), and its ``t`` is the same, so the
client is never told to come back earlier than it may.

PERF: compiled, because every request on a rate-limited route runs it. In Python the hook, the
reset for the headers and the fields' rendering cost about 2 us of a request's CPU (``python
bench/hot_path.py 200000 rate_limit``); the limiter's own arithmetic is in ``algorithms.pyx``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from fastgw.http._clock cimport coarse
from fastgw._proxy cimport Downstream, Exchange
from fastgw.plugins.ratelimit.algorithms cimport LocalLimiter, whole_seconds

from fastgw.plugins.ratelimit.keys import by_ip


cdef char* _put_decimal(char* p, long long n) noexcept:
    """Write ``n`` (>= 0) in decimal at ``p``; returns the end. PERF: snprintf's format
    machinery cost more than the rest of the fields' rendering."""
    cdef char digits[24]
    cdef int k = 0
    while True:
        digits[k] = <char>(48 + n % 10)
        k += 1
        n //= 10
        if n == 0:
            break
    while k:
        k -= 1
        p[0] = digits[k]
        p += 1
    return p


cdef bytes _decimal(long long n):
    cdef char digits[24]
    return PyBytes_FromStringAndSize(digits, _put_decimal(digits, n) - digits)


cdef class HeaderRenderer:
    """Renders the chosen header styles for one policy (the constant parts encoded once)."""

    cdef bytes _name
    cdef bytes _limit
    cdef tuple _policy
    cdef bint _draft
    cdef bint _legacy
    cdef bint _x
    cdef bint _any  # some style is chosen: there is something to tell

    def __init__(self, str name, int limit, int window, tuple styles) -> None:
        self._name = b'"' + name.encode() + b'"'
        self._limit = _decimal(limit)
        self._policy = (b"RateLimit-Policy", self._name + b";q=%d;w=%d" % (limit, window))
        self._draft = "draft" in styles
        self._legacy = "legacy" in styles
        self._x = "x" in styles
        self._any = self._draft or self._legacy or self._x

    def __bool__(self) -> bool:
        return self._any

    cpdef tell(self, ctx, long long remaining, long long reset):
        """Add the fields for an admitted request to the exchange's response headers."""
        cdef Exchange x
        if not self._any:
            return
        if type(ctx) is Exchange:  # PERF: the field itself, not an attribute lookup (twice)
            x = <Exchange>ctx
            if x.add_response_headers is None:
                x.add_response_headers = []
            self.render(remaining, reset, x.add_response_headers)
            return
        added = ctx.add_response_headers
        if added is None:
            added = ctx.add_response_headers = []
        self.render(remaining, reset, added)

    cpdef list render(self, long long remaining, long long reset, list into):
        """Append the fields for ``remaining`` requests left and ``reset`` seconds to ``into``."""
        cdef char tail[64]
        cdef char* end
        cdef Py_ssize_t n, name_len
        cdef bytes value, left, seconds
        if remaining < 0 or reset < 0:
            raise ValueError("negative rate-limit field")  # a bug of the caller's arithmetic
        if self._draft:
            into.append(self._policy)
            memcpy(tail, b";r=", 3)
            end = _put_decimal(tail + 3, remaining)
            memcpy(end, b";t=", 3)
            n = _put_decimal(end + 3, reset) - tail
            name_len = PyBytes_GET_SIZE(self._name)
            value = PyBytes_FromStringAndSize(NULL, name_len + n)
            memcpy(PyBytes_AS_STRING(value), PyBytes_AS_STRING(self._name), name_len)
            memcpy(PyBytes_AS_STRING(value) + name_len, tail, n)
            into.append((b"RateLimit", value))
        if self._legacy or self._x:
            left = _decimal(remaining)
            seconds = _decimal(reset)
            if self._legacy:
                into.append((b"RateLimit-Limit", self._limit))
                into.append((b"RateLimit-Remaining", left))
                into.append((b"RateLimit-Reset", seconds))
            if self._x:
                into.append((b"X-RateLimit-Limit", self._limit))
                into.append((b"X-RateLimit-Remaining", left))
                into.append((b"X-RateLimit-Reset", seconds))
        return into


cdef class LocalAdmission:
    """The ``on_request`` hook of a rate limit counted in this process (``admit``, or the
    instance itself): admit and tell the client its quota, or hand the refusal to the plugin
    (``refuse(ctx, retry_seconds)``)."""

    cdef LocalLimiter limiter
    cdef object key_of
    cdef HeaderRenderer headers
    cdef object refuse
    cdef object bypass
    cdef bint by_address  # key_of is by_ip: read the exchange's bytes without a Python frame

    def __init__(self, LocalLimiter limiter, key_of, HeaderRenderer headers, refuse, bypass) -> None:
        self.limiter = limiter
        self.key_of = key_of
        self.by_address = key_of is by_ip
        self.headers = headers
        self.refuse = refuse
        self.bypass = bypass

    def __call__(self, ctx):
        return self.admit(ctx)

    def admit(self, ctx):
        """The hook. PERF: the plugin hands the hook driver this bound method rather than the
        instance: a method is called without the argument tuple an instance's __call__ needs."""
        if self.bypass is not None and self.bypass.applies(ctx):
            return None
        cdef object key = _peer_address(ctx) if self.by_address else None
        if key is None:
            key = ctx.client_address if self.by_address else self.key_of(ctx)
        cdef LocalLimiter limiter = self.limiter
        cdef double now = coarse()
        cdef double reset = 0.0
        cdef int remaining
        if not self.headers._any:
            remaining = limiter.hit(key, now)
        else:
            remaining = limiter.admit(key, now, &reset)
        if remaining < 0:
            return self.refuse(ctx, limiter.retry_in(key, now))
        if self.headers._any:
            self.headers.tell(ctx, remaining, whole_seconds(reset))
        return None


cdef inline object _peer_address(ctx):
    """``ctx.client_address`` of an exchange whose peer is not a trusted proxy: the peer's
    address, read from the C fields (PERF: no property lookup); None for anything else (a
    trusted peer's X-Forwarded-For, or a context that is not an Exchange), where the property
    decides."""
    cdef Downstream client
    if type(ctx) is not Exchange:
        return None
    client = (<Exchange>ctx).client
    if client is None or client.trusted:
        return None
    return client.peer_ip
