# cython: language_level=3
"""What the cache keeps (``Entry``, ``VaryRecord``; ``store`` holds them) and the common cache
hit, answered in C: a GET or HEAD without the request fields the cache reads (Cache-Control,
Pragma, Upgrade; Authorization unless the route allows it), whose key finds a fresh ``Entry``
in the zone, directly or through a ``VaryRecord``.

``HitPath.answer`` gives that request its HIT ``Response``, or None for anything else: a miss,
a stale entry, a request with those fields, a key header sent on several lines. None has no
effect but the zone's LRU touch of what it found, which the plugin's Python path
(``plugin.Cache.decide``), run from the start after it, repeats the same way; so every
decision but the plain hit (BYPASS, refresh, STALE, coalescing, misses) stays in one place.

The answer of a hit is the same object for every HIT of an entry within one second of its age
(``hit_response``, which the Python path's HIT uses too): its stored head rendered once
(``Entry.head``), its headers list with that Age and ``X-Cache: HIT``. The client sides only
read a hook's ``Response`` (they copy what they add), so sharing it is safe; that is what makes
a hit allocate nothing but its key.

PERF: in Python the hook cost about 2 us per hit (``python bench/hot_path.py 300000 cache``):
the request's fields of interest split into pairs, the key, the lookup, the coalescer, the
counter's lookup, a ``Response`` and its headers list per hit. The stored values are C classes
so that a hit reads their times and its answer without attribute lookups.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.string cimport memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from fastgw.hooks import Response
from fastgw.http.wire import render_answer_head
from fastgw.plugins.cache.key import HEADERS_SEP, VARIANT_SEP

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


cdef long long _MAX_AGE = 1LL << 62

ENTRY_OVERHEAD = 256  # bytes counted per entry besides its data: the Entry, list and tuple objects


cdef class Entry:
    """A stored response: everything a hit needs to answer without the upstream."""

    cdef public int status
    cdef public list headers          # without framing, Date, Age, Content-Type and the gateway's own
    cdef public bytes content_type    # b"" when the upstream sent none
    cdef public bytes body
    cdef public double stored_at
    cdef public double fresh_until
    cdef public double stale_until    # >= fresh_until: served STALE until then
    cdef public long long initial_age  # the upstream's Age when stored
    cdef public Py_ssize_t size       # bytes counted for it in a zone
    cdef bytes _head                  # head(), once rendered
    cdef long long _age               # the age _age_value is for (-1: none yet)
    cdef bytes _age_value
    cdef long long _hit_age           # the age _hit is for
    cdef object _hit                  # hit_response's answer at that age, or None

    def __init__(
        self,
        int status,
        list headers,
        bytes content_type,
        bytes body,
        double stored_at,
        double fresh_until,
        double stale_until,
        object initial_age,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.body = body
        self.stored_at = stored_at
        self.fresh_until = fresh_until
        self.stale_until = stale_until
        # RFC 9111 1.2.2: an Age past what the cache can represent counts as the greatest it can
        # (here 2^62 seconds, so that adding the seconds since cannot overflow either)
        self.initial_age = max(-_MAX_AGE, min(initial_age, _MAX_AGE))
        self.size = len(body) + sum([len(n) + len(v) + 16 for n, v in headers]) + ENTRY_OVERHEAD
        self._head = b""
        self._age = -1
        self._age_value = b""
        self._hit_age = -1
        self._hit = None

    cpdef long long age(self, double now):
        """The upstream's Age when stored plus whole seconds since (RFC 9111 5.1)."""
        return self.initial_age + <long long>(now - self.stored_at)

    def age_field(self, double now) -> tuple:
        """``(b"Age", value)`` at ``now``. PERF: made once per second of age, not per hit."""
        cdef long long age = self.age(now)
        if self._age != age:
            self._age_value = b"%d" % age
            self._age = age
        return (_AGE, self._age_value)

    cpdef bytes head(self):
        """Its status line, Content-Type, Content-Length and stored headers as HTTP/1.1 lines
        (``hooks.Response.head``). PERF: rendered at its first hit, not at every one (the body
        is complete by then: an entry is stored only once it is)."""
        if not PyBytes_GET_SIZE(self._head):
            self._head = render_answer_head(self.status, self.body, self.content_type, self.headers)
        return self._head


cdef class VaryRecord:
    """Under a base key: the response varies by these request headers (lower-case, sorted)."""

    cdef public tuple names
    cdef public double stale_until  # as long as the newest variant it led to

    def __init__(self, tuple names, double stale_until) -> None:
        self.names = names
        self.stale_until = stale_until

    @property
    def size(self) -> int:
        return sum([len(n) for n in self.names]) + ENTRY_OVERHEAD


cpdef object hit_response(Entry entry, double now):
    """The HIT answer of ``entry`` at ``now``: its stored headers, Age and ``X-Cache: HIT``,
    its head rendered once. Made once per second of age and shared by that second's hits (see
    the module docstring)."""
    cdef long long age = entry.age(now)
    if entry._hit is not None and entry._hit_age == age:
        return entry._hit
    cdef list stored = entry.headers
    cdef list headers = list(stored)
    headers.append(entry.age_field(now))
    headers.append(_X_CACHE_HIT)
    response = Response(entry.status, entry.body, headers, entry.content_type, entry.head(), len(stored))
    entry._hit = response
    entry._hit_age = age
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
            found = self.servable(_variant_key(base, (<VaryRecord>found).names, ctx), now)
        if type(found) is not Entry or not now < (<Entry>found).fresh_until:
            return None  # a miss, or stale: the Python path decides (STALE, coalescing)
        self.count_hit(ctx)
        return hit_response(<Entry>found, now)

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
        cdef double stale_until
        if type(value) is Entry:
            stale_until = (<Entry>value).stale_until
        elif type(value) is VaryRecord:
            stale_until = (<VaryRecord>value).stale_until
        else:
            return None
        if stale_until <= now:
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
