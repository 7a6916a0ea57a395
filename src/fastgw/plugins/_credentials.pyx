# cython: language_level=3
"""The verified-credentials cache of the authentication plugins, the header their credential comes
in, and the compiled hit path of a token read from one header (the ``jwt`` plugin's).

``ExpiringCache`` holds at most ``max_entries`` values, each until its own expiry (``time.time()``
seconds), so a client's repeated requests skip the signature check or the password KDF. A full
cache drops its oldest entry (dicts keep insertion order), so a flood of distinct credentials
costs O(1) each. Expired entries are not swept: they are replaced when their key comes back, or
pushed out by newer ones once the cache is full.

PERF: compiled, because every authenticated request looks its credential up here. In Python
the ``jwt`` plugin's hook for a token seen before (the header, the lookup, the clock, the claims
set on the exchange) cost about 1 us of a request's CPU (``python bench/hot_path.py 200000
jwt``); ``CachedTokenCheck`` is that hook in C, and hands everything else to the plugin.

``CredentialHeader`` reads the header a credential comes in, and refuses a request that carries
it more than once: such a header is a singleton field (RFC 9110 section 5.3), and with two lines
a plugin verifies the first while the upstream may read the other, unverified. The refusal is a
400 naming the header, before anything is verified.
"""

from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from fastgw._proxy cimport Exchange

from fastgw.plugins._refusal import Refusal


cdef inline double _wall_now() noexcept nogil:
    """time.time(), read in C."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class ExpiringCache:
    """At most ``max_entries`` values, each until its own expiry (``time.time()`` seconds)."""

    cdef readonly dict entries
    cdef readonly Py_ssize_t max_entries
    cdef readonly double ttl

    def __init__(self, Py_ssize_t max_entries, double ttl) -> None:
        self.entries = {}
        self.max_entries = max_entries
        self.ttl = ttl

    cpdef object get(self, object key):
        """The value kept for ``key``, or None (never kept, or expired)."""
        cdef tuple entry = self.entries.get(key)
        if entry is not None and <double>entry[0] > _wall_now():
            return entry[1]
        return None

    cpdef put(self, object key, object value, object not_after=None):
        """Keep ``value`` for ``ttl`` seconds, never past ``not_after`` (a token's exp)."""
        cdef double now = _wall_now()
        cdef double expires = now + self.ttl
        if not_after is not None and not_after < expires:
            expires = not_after
        if expires <= now:
            return
        entries = self.entries
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest insertion
        entries[key] = (expires, value)


cdef class CredentialHeader:
    """The request header a credential comes in (``name`` as configured, e.g. ``Authorization``);
    ``challenge``, if any, goes with the 400 for a repeated one in ``WWW-Authenticate``."""

    cdef readonly bytes name
    cdef object refusal
    cdef object challenge

    def __init__(self, str name, challenge=None) -> None:
        self.name = name.lower().encode()
        self.refusal = Refusal(400, f"more than one {name} header")
        self.challenge = challenge

    cpdef object read(self, ctx):
        """The header's value; None when the request has none; the 400 (a Response) when it has
        more than one."""
        value = ctx.header(self.name)
        if value is not None and ctx.header_count(self.name) > 1:
            return self.refuse(ctx)
        return value

    cpdef object refuse(self, ctx):
        """The 400 for a request with more than one line of the header."""
        challenge = self.challenge
        return self.refusal.response(ctx, [(b"WWW-Authenticate", challenge)] if challenge else None)


cdef class CachedTokenCheck:
    """An ``on_request`` hook: the value of the ``credential`` header is the cache key of a
    verified token, and a hit, ``(claims, consumer)``, goes onto the exchange. A request without
    the header goes to ``absent(ctx)``, a token not in the cache to ``check(ctx, value)``: the
    plugin's own; one with the header twice gets the credential header's refusal."""

    cdef CredentialHeader credential
    cdef ExpiringCache cache
    cdef object absent
    cdef object check
    cdef bint forward

    def __init__(
        self, CredentialHeader credential, ExpiringCache cache, absent, check, bint forward
    ) -> None:
        self.credential = credential
        self.cache = cache
        self.absent = absent
        self.check = check
        self.forward = forward

    def __call__(self, ctx):
        return self.run(ctx)

    def run(self, ctx):
        """The hook. PERF: the plugin hands the hook driver this bound method rather than the
        instance: a method is called without the argument tuple an instance's __call__ needs."""
        cdef Exchange x
        value = self.credential.read(ctx)
        if value is None:
            return self.absent(ctx)
        if type(value) is not bytes:
            return value  # the refusal of a repeated header
        verified = self.cache.get(value)
        if verified is None:
            return self.check(ctx, value)
        if type(ctx) is Exchange:  # PERF: the fields themselves, not two attribute stores
            x = <Exchange>ctx
            x.claims, x.consumer = <tuple>verified
        else:
            ctx.claims, ctx.consumer = <tuple>verified
        if not self.forward:
            ctx.remove_request_header(self.credential.name)
        return None
