# cython: language_level=3
"""The common cache hit, answered in C: a GET or HEAD without the request fields the cache
reads (Cache-Control, Pragma, Upgrade; Authorization unless the route allows it), whose key
finds a fresh ``Entry`` in the zone, directly or through a ``VaryRecord``.

``HitPath.answer`` gives that request its HIT ``Response``, or None for anything else: a miss,
a stale entry, a request with those fields, a key header sent on several lines. None has no
effect but the zone's LRU touch of what it found, which the plugin's Python path
(``plugin.Cache.on_request``), run from the start after it, repeats the same way; so every
decision but the plain hit (BYPASS, refresh, STALE, coalescing, misses) stays in one place.

The answer of a hit is the same object for every HIT of an entry within one second of its age
(``hit_response``): its stored head rendered once (``Entry.head``), its headers list with that
Age and ``X-Cache: HIT``. The client sides only read a hook's ``Response`` (they copy what
they add), so sharing it is safe; that is what makes a hit allocate nothing but its key.

PERF: in Python the hook cost about 2 us per hit (``python bench/hot_path.py 300000 cache``):
the request's fields of interest split into pairs, the key, the lookup, the coalescer, the
counter's lookup, a ``Response`` and its headers list per hit.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.string cimport memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from fastgw.hooks import Response
from fastgw.plugins.cache.key import HEADERS_SEP, VARIANT_SEP
from fastgw.plugins.cache.store import Entry, VaryRecord

cdef bytes _GET = b"GET"
cdef bytes _HEAD = b"HEAD"
cdef bytes _AGE = b"Age"
cdef tuple _X_CACHE_HIT = (b"X-Cache", b"HIT")
cdef bytes _HEADERS_SEP = HEADERS_SEP
cdef bytes _VARIANT_SEP = VARIANT_SEP
cdef int _HIT = 0  # plugin.HIT: the index of a route's hit counter


cdef double _wall_clock() noexcept:
    """``time.time()`` (the same clock: entries' times are wall-clock seconds), without a float
    object."""
    cdef timespec now
    clock_gettime(CLOCK_REALTIME, &now)
    return <double>now.tv_sec + <double>now.tv_nsec * 1e-9


cdef bytes _decimal(long long n):
    cdef char digits[24]
    cdef int k = 24
    cdef bint negative = n < 0
    if negative:
        n = -n
    while True:
        k -= 1
        digits[k] = <char>(48 + n % 10)
        n //= 10
        if n == 0:
            break
    if negative:
        k -= 1
        digits[k] = b"-"
    return PyBytes_FromStringAndSize(digits + k, 24 - k)


cpdef object hit_response(object entry, double now):
    """The HIT answer of ``entry`` at ``now``: its stored headers, Age (the upstream's Age when
    stored plus whole seconds since, RFC 9111 5.1) and ``X-Cache: HIT``, its head rendered once.
    Made once per second of age and shared by that second's hits (see the module docstring)."""
    cdef long long age = <long long>entry.initial_age + <long long>(now - <double>entry.stored_at)
    made = entry.hit_answer
    if made is not None and <long long>(<tuple>made)[0] == age:
        return (<tuple>made)[1]
    cdef list stored = entry.headers
    cdef list headers = list(stored)
    headers.append((_AGE, _decimal(age)))
    headers.append(_X_CACHE_HIT)
    response = Response(entry.status, entry.body, headers, entry.content_type, entry.head(), len(stored))
    entry.hit_answer = (age, response)
    return response


cdef bytes _variant_key(bytes base, tuple names, object ctx):
    """``key.variant_key(base, names, ctx)``, the same bytes (tests compare them) in one
    allocation: the base, the variant separator, each named request field's first value
    (b"" when absent) joined by the headers separator."""
    cdef list values = []
    cdef Py_ssize_t size = PyBytes_GET_SIZE(base) + 1 + (len(names) - 1 if names else 0)
    cdef bytes value
    for name in names:
        found = ctx.header(name)
        value = <bytes>found if found is not None else b""
        values.append(value)
        size += PyBytes_GET_SIZE(value)
    cdef bytes key = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(key)
    memcpy(p, PyBytes_AS_STRING(base), PyBytes_GET_SIZE(base))
    p += PyBytes_GET_SIZE(base)
    p[0] = PyBytes_AS_STRING(_VARIANT_SEP)[0]
    p += 1
    cdef Py_ssize_t i
    for i in range(len(values)):
        if i:
            p[0] = PyBytes_AS_STRING(_HEADERS_SEP)[0]
            p += 1
        value = <bytes>values[i]
        memcpy(p, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
        p += PyBytes_GET_SIZE(value)
    return key


cdef class HitPath:
    """The memory cache's common hit, for one plugin instance (see the module docstring)."""

    cdef object store          # store.MemoryStore: the zone
    cdef object keys           # key.KeySpec
    cdef bint whole_query      # the key takes the whole query string (``key.query: all``)
    cdef tuple key_headers     # key.headers: lower-case names whose values join the base key
    cdef tuple screened        # request fields that take a request to the Python path
    cdef dict route_counts     # the plugin's counters by route (RouteInfo -> per result)
    cdef object count          # the plugin's ``count(ctx, result)``: a route's first count

    def __init__(self, store, keys, bint authorized, dict route_counts, count) -> None:
        self.store = store
        self.keys = keys
        self.whole_query = keys.query is None
        self.key_headers = tuple(keys.header_names)
        # Upgrade: never answered from the cache; Authorization: BYPASS; Cache-Control, Pragma:
        # the request's directives (plugin.prepare decides on all of them).
        screened = [b"cache-control", b"pragma", b"upgrade"]
        if not authorized:
            screened.append(b"authorization")
        self.screened = tuple(screened)
        self.route_counts = route_counts
        self.count = count

    cpdef object answer(self, ctx):
        """The HIT ``Response`` for ``ctx`` (counted), or None: not a plain fresh hit."""
        method = ctx.method
        if method != _GET and method != _HEAD:
            return None
        for name in self.screened:
            if ctx.header_count(name):
                return None
        base = self.base_key(ctx)
        if base is None:
            return None
        cdef double now = _wall_clock()
        found = self.servable(base, now)
        if type(found) is VaryRecord:
            found = self.servable(_variant_key(base, found.names, ctx), now)
        if type(found) is not Entry or not now < <double>found.fresh_until:
            return None  # a miss, or stale: the Python path decides (STALE, coalescing)
        self.count_hit(ctx)
        return hit_response(found, now)

    cdef object base_key(self, ctx):
        """``KeySpec.base_key`` for ``ctx``, or None when a key header came on several lines
        (the Python path joins them)."""
        cdef bytes key
        if self.whole_query:
            key = <bytes>ctx.host + <bytes>ctx.path + <bytes>ctx.query
        else:
            key = self.keys.uri_key(ctx.host, ctx.path, ctx.query)
        if not self.key_headers:
            return key
        cdef list parts = []
        for name in self.key_headers:
            lines = ctx.header_count(name)
            if lines > 1:
                return None
            parts.append(<bytes>name + b"=" + (<bytes>ctx.header(name) if lines else b""))
        return key + _HEADERS_SEP + _HEADERS_SEP.join(parts)

    cdef object servable(self, bytes key, double now):
        """``MemoryStore.get`` for a value still servable, moved to the LRU's recent end; None
        for nothing or an expired value (left for the Python path's lookup to remove)."""
        entries = self.store.entries
        cdef PyObject* found = PyDict_GetItem(entries, key)
        if found == NULL:
            return None
        value = <object>found
        if <double>value.stale_until <= now:
            return None
        entries.move_to_end(key)
        return value

    cdef int count_hit(self, ctx) except -1:
        route = ctx.route
        cdef PyObject* counts = PyDict_GetItem(self.route_counts, route)
        if counts == NULL:
            self.count(ctx, _HIT)  # makes the route's counters
            return 0
        counter = (<tuple>counts)[_HIT]
        counter.value += 1
        return 0
