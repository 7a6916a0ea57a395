# cython: language_level=3
"""The route table: templates in, ``RouteMatch | MethodNotAllowed | None`` out.

Theory of operation
-------------------
A template is parsed once into a *shape*: its static text (bytes, '/' included) interleaved with
parameter kinds, e.g. ``/a/{id:int}/b`` -> ``(b"/a/", K_INT, b"/b")``. Parameter names are not
part of the shape: routes of one shape under one host key share one *leaf*, and a leaf holds
routes for different methods, priorities and predicates. add() checks conflicts against the leaf
and against the leaves of shapes that differ only in constraints accepting a common segment
(``{v:hex}`` and ``{v:alpha}`` both take ``abc``; found through an index of shapes with their
constraints blurred, so match() never pays for it), then keeps the leaf's per-method candidate
order and its 405 Allow value up to date.

The first match() after a change flattens every leaf into a _Table: per host key one byte-level
compressed radix tree (node prefixes compared byte by byte, static children found by their
first byte in a small range table), parameter children hung on the node that ends where their
segment starts, and a catch-all as a leaf on that same node. match() then walks the tree depth
first:

    at a node: compare its prefix; if the path ends here, try the node's leaf; otherwise try
    the static child for the next byte, then each parameter child whose check accepts the
    segment (int, hex, uuid, alpha, alnum, then any), and last the catch-all.

A branch that fails (no leaf, no candidate for the method, every predicate said no) returns and
the walk backtracks to the next alternative, so static beats constrained beats unconstrained
beats catch-all at every position, as in matchit and falcon. Parameter values travel as
(start, end) pairs chained through the C stack and become bytes only when a route is taken.

Trees are tried exact host, then wildcard suffixes from the longest, then any host; the first
match wins, else the first tree's 405. A 405 leaf's MethodNotAllowed is built at compile time;
only when one tree has 405 leaves with different method sets is their union computed, by a
second walk that collects methods and calls no predicate.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int32_t
from libc.string cimport memchr, memcmp


__all__ = ["MethodNotAllowed", "RouteConflict", "RouteMatch", "Router", "template_params"]

_CONSTRAINTS = {"int": K_INT, "hex": K_HEX, "uuid": K_UUID, "alpha": K_ALPHA, "alnum": K_ALNUM}
_KIND_NAMES = {kind: name for name, kind in _CONSTRAINTS.items()}

# Which constraints accept a common segment (a segment is never empty and never holds '/'):
#
#            int          hex          uuid   alpha        alnum
#   int      [0-9]+       [0-9]+       -      -            [0-9]+
#   hex      [0-9]+       [0-9a-fA-F]+ -      [a-fA-F]+    [0-9a-fA-F]+
#   uuid     -            -            uuid   -            -
#   alpha    -            [a-fA-F]+    -      [A-Za-z]+    [A-Za-z]+
#   alnum    [0-9]+       [0-9a-fA-F]+ -      [A-Za-z]+    [A-Za-z0-9]+
#
# int, hex, alpha and alnum are each one character class repeated, so two of them share a
# segment exactly when their classes share a character: int < hex < alnum and alpha < alnum,
# hex and alpha share a-f, int (digits) and alpha (letters) share nothing. A uuid has '-' at 8,
# 13, 18 and 23, which no other constraint accepts, so it shares nothing with them. Two routes
# whose shapes differ only in such pairs answer the same requests: the walk would always take
# the first kind in its order and never the other, which the later route's author did not ask
# for, so add() refuses it as it refuses identical shapes. Each pair maps to a segment both
# accept, for the error message.
_SHARED_SEGMENT = {
    frozenset((K_INT, K_HEX)): "42",
    frozenset((K_INT, K_ALNUM)): "42",
    frozenset((K_HEX, K_ALPHA)): "abc",
    frozenset((K_HEX, K_ALNUM)): "abc",
    frozenset((K_ALPHA, K_ALNUM)): "abc",
}
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HOST_FORBIDDEN = frozenset(" \t\r\n/\\?#@:*[]")


class RouteConflict(ValueError):
    """Two routes would answer the same request: same host, path shape, method and priority. The
    router's own (it imports nothing of fastgw); ``plan.compile_plan`` names both routes."""


cdef tuple _EMPTY = ()  # PERF: a C static, not a module-dict lookup per match


# -- results -----------------------------------------------------------------------------------

@cython.final
@cython.freelist(16)
cdef class RouteMatch:
    def __init__(self, route, tuple params not None=()):
        self.route = route
        self.params = params

    def __repr__(self):
        return f"RouteMatch(route={self.route!r}, params={self.params!r})"


@cython.final
cdef class MethodNotAllowed:
    def __init__(self, bytes allow not None):
        self.allow = allow

    def __repr__(self):
        return f"MethodNotAllowed(allow={self.allow!r})"


# -- the walk (no Python objects until a route is taken) --------------------------------------

# PERF: one table lookup per byte for the constrained parameters.
cdef unsigned char _CLASS[256]
cdef enum:
    C_DIGIT = 1
    C_HEX = 2
    C_ALPHA = 4

cdef int _c
for _c in range(256):
    _CLASS[_c] = 0
for _c in range(ord("0"), ord("9") + 1):
    _CLASS[_c] = C_DIGIT | C_HEX
for _c in range(ord("A"), ord("Z") + 1):
    _CLASS[_c] = C_ALPHA | (C_HEX if _c <= ord("F") else 0)
    _CLASS[_c + 32] = _CLASS[_c]


cdef bint _accepts(int32_t kind, const char* s, Py_ssize_t n) noexcept nogil:
    """Does the segment s[:n] (non-empty, no '/') satisfy a parameter of this kind?"""
    cdef Py_ssize_t k
    cdef unsigned char need
    if kind == K_ANY:
        return True
    if kind == K_UUID:
        if n != 36:
            return False
        for k in range(36):
            if k == 8 or k == 13 or k == 18 or k == 23:
                if s[k] != c'-':
                    return False
            elif not _CLASS[<unsigned char>s[k]] & C_HEX:
                return False
        return True
    if kind == K_INT:
        need = C_DIGIT
    elif kind == K_HEX:
        need = C_HEX
    elif kind == K_ALPHA:
        need = C_ALPHA
    else:
        need = C_DIGIT | C_ALPHA
    for k in range(n):
        if not _CLASS[<unsigned char>s[k]] & need:
            return False
    return True


cdef int _walk(Walk* w, int32_t ni, Py_ssize_t i, Capture* caps) except -1:
    """Depth-first walk from node ni at path[i:]; 1 = w.result is set, 0 = no route here."""
    cdef const Node* node
    cdef const char* p = w.path
    cdef const char* text
    cdef const char* slash
    cdef Py_ssize_t n = w.n, end, k
    cdef int32_t c, child
    cdef Capture cap
    while True:
        node = &w.nodes[ni]
        if node.text.len:
            if n - i < node.text.len:
                return 0
            text = w.text + node.text.off
            for k in range(node.text.len):  # PERF: prefixes are short; a loop beats a memcmp call
                if p[i + k] != text[k]:
                    return 0
            i += node.text.len
        child = -1
        if i == n:
            if node.leaf >= 0 and _try_leaf(w, node.leaf, caps):
                return 1
        else:
            c = <unsigned char>p[i]
            if node.static_off >= 0 and node.lo <= c <= node.hi:
                child = w.child[node.static_off + c - node.lo]
        if child >= 0:
            if node.param_n == 0 and node.catchall < 0:
                ni = child  # PERF: the static child is the only alternative: loop, don't recurse
                continue
            if _walk(w, child, i, caps):
                return 1
        if node.param_n and i < n:
            slash = <const char*>memchr(p + i, c'/', n - i)
            end = n if slash == NULL else slash - p
            if end > i:
                cap.start = i
                cap.end = end
                cap.prev = caps
                for k in range(node.param_n):
                    child = w.child[node.param_off + k]
                    if _accepts(w.nodes[child].kind, p + i, end - i) and _walk(w, child, end, &cap):
                        return 1
        if node.catchall >= 0:
            cap.start = i
            cap.end = n
            cap.prev = caps
            if _try_leaf(w, node.catchall, &cap):
                return 1
        return 0


cdef int _try_leaf(Walk* w, int32_t li, Capture* caps) except -1:
    """Take the first candidate of leaf li whose predicate accepts, or note a 405."""
    cdef const Leaf* leaf = &w.leaves[li]
    cdef const Slot* slot = &w.slots[leaf.slot_off + w.method]
    cdef const Candidate* cand
    cdef int32_t k
    cdef RouteMatch m
    if slot.n == 0:
        if w.collect != NULL:
            (<set>w.collect).update(<object>leaf.methods)
        elif w.not_allowed == NULL:
            w.not_allowed = leaf.not_allowed
        elif w.not_allowed != leaf.not_allowed:
            w.mixed = True
        return 0
    if w.collect != NULL:
        return 0
    for k in range(slot.n):
        cand = &w.cands[slot.off + k]
        if cand.predicate != NULL and not (<object>cand.predicate)(<object>w.request):
            continue
        m = RouteMatch.__new__(RouteMatch)
        m.route = <object>cand.route
        m.params = _params(w.path, caps, leaf.nparams)
        Py_INCREF(m)
        w.result = <PyObject*>m
        return 1
    return 0


cdef tuple _params(const char* path, Capture* caps, int32_t n):
    """The captured values as bytes, in path order (the chain runs from the last one back)."""
    if n == 0:
        return _EMPTY
    cdef tuple values = PyTuple_New(n)
    cdef bytes value
    while n:
        n -= 1
        value = PyBytes_FromStringAndSize(path + caps.start, caps.end - caps.start)
        Py_INCREF(value)
        PyTuple_SET_ITEM(values, n, value)
        caps = caps.prev
    return values


cdef int _search(Walk* w, int32_t root) except -1:
    """Walk one host's tree; remember its 405 if it is the first tree to have one."""
    w.not_allowed = NULL
    w.mixed = False
    if _walk(w, root, 0, NULL):
        return 1
    if w.not_allowed != NULL and w.first_na == NULL:
        w.first_na = w.not_allowed
        w.first_root = root
        w.first_mixed = w.mixed
    return 0


# -- the compiled table ------------------------------------------------------------------------

cdef class _Table:
    def __cinit__(self):
        self.any_root = -1

    def __dealloc__(self):
        PyMem_Free(self.nodes)
        PyMem_Free(self.child)
        PyMem_Free(self.leaves)
        PyMem_Free(self.slots)
        PyMem_Free(self.cands)
        PyMem_Free(self.methods)
        PyMem_Free(self.wild)

    cdef Py_ssize_t method_id(self, bytes method) noexcept:
        cdef const char* s = PyBytes_AS_STRING(method)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(method), k
        for k in range(self.n_methods):
            if self.methods[k].len == n and memcmp(self.text_ptr + self.methods[k].off, s, n) == 0:
                return k
        return self.n_methods

    cdef object union_not_allowed(self, Walk* w):
        """The 405 of w.first_root's tree when its 405 leaves disagree: walk again, collecting."""
        cdef set methods = set()
        w.collect = <PyObject*>methods
        try:
            _walk(w, w.first_root, 0, NULL)
        finally:
            w.collect = NULL
        return MethodNotAllowed(", ".join(sorted(methods)).encode("ascii"))


cdef void* _alloc(Py_ssize_t count, size_t size) except NULL:
    cdef void* p = PyMem_Malloc(max(count, 1) * size)
    if p == NULL:
        raise MemoryError()
    return p


cdef _Table _load(builder):
    """Copy a _Builder's lists into the C arrays of a new _Table."""
    cdef _Table t = _Table()
    cdef Py_ssize_t k
    t.text = bytes(builder.text)
    t.text_ptr = PyBytes_AS_STRING(t.text)
    t.keep = builder.keep
    t.nodes = <Node*>_alloc(len(builder.nodes), sizeof(Node))
    for k, (off, length, kind, leaf, catchall, static_off, param_off, param_n, lo, hi) \
            in enumerate(builder.nodes):
        t.nodes[k] = Node(Span(off, length), kind, leaf, catchall, static_off, param_off, param_n,
                          lo, hi)
    t.child = <int32_t*>_alloc(len(builder.child), sizeof(int32_t))
    for k, child in enumerate(builder.child):
        t.child[k] = child
    t.leaves = <Leaf*>_alloc(len(builder.leaves), sizeof(Leaf))
    for k, (nparams, slot_off, not_allowed, methods) in enumerate(builder.leaves):
        t.leaves[k] = Leaf(nparams, slot_off, <PyObject*>not_allowed, <PyObject*>methods)
    t.slots = <Slot*>_alloc(len(builder.slots), sizeof(Slot))
    for k, (off, n) in enumerate(builder.slots):
        t.slots[k] = Slot(off, n)
    t.cands = <Candidate*>_alloc(len(builder.cands), sizeof(Candidate))
    for k, (route, predicate) in enumerate(builder.cands):
        t.cands[k].route = <PyObject*>route
        t.cands[k].predicate = NULL
        if predicate is not None:
            t.cands[k].predicate = <PyObject*>predicate
    t.n_methods = len(builder.methods)
    t.methods = <Span*>_alloc(t.n_methods, sizeof(Span))
    for k, (off, length) in enumerate(builder.methods):
        t.methods[k] = Span(off, length)
    t.n_wild = len(builder.wild)
    t.wild = <HostSuffix*>_alloc(t.n_wild, sizeof(HostSuffix))
    for k, (off, length, root) in enumerate(builder.wild):
        t.wild[k] = HostSuffix(Span(off, length), root)
    t.exact = builder.exact
    t.any_root = builder.any_root
    return t


# -- add-time records --------------------------------------------------------------------------

class _Entry:
    """One add() call as its leaves see it."""

    __slots__ = ("route", "template", "methods", "priority", "predicate", "predicate_key", "seq")

    def __init__(self, route, template, methods, priority, predicate, predicate_key, seq):
        self.route = route
        self.template = template
        self.methods = methods              # frozenset[str] | None (any method)
        self.priority = priority
        self.predicate = predicate
        self.predicate_key = predicate_key  # None when there is no predicate
        self.seq = seq

    def shares_methods(self, other):
        return self.methods is None or other.methods is None or bool(self.methods & other.methods)


def _shadows(first, later):
    """Does ``first``, whose leaf the walk reaches first on every path two overlapping shapes
    share, take every such request ``later`` would answer? Priority cannot say otherwise: it
    orders the routes of one leaf only. A predicate on ``first`` that ``later`` does not share
    lets ``later`` answer what it declines, as predicate routes go first within a leaf."""
    return first.shares_methods(later) and (
        first.predicate_key is None or first.predicate_key == later.predicate_key)


class _Leaf:
    """The routes of one host key and one path shape, with their lookups precomputed."""

    __slots__ = ("nparams", "entries", "methods", "by_method", "other")

    def __init__(self, nparams):
        self.nparams = nparams
        self.entries = []
        self.methods = frozenset()  # listed methods (+ HEAD when GET): the 405 Allow
        self.by_method = {}         # method -> ordered candidates, for every listed method + HEAD
        self.other = ()             # ordered candidates for any other method: methods=None routes

    def conflict(self, new):
        for old in self.entries:
            if (
                old.priority == new.priority
                and old.predicate_key == new.predicate_key
                and old.shares_methods(new)
            ):
                return old
        return None

    def add(self, entry):
        self.entries.append(entry)
        listed = set()
        for e in self.entries:
            if e.methods is not None:
                listed |= e.methods
        if "GET" in listed:
            listed.add("HEAD")
        self.methods = frozenset(listed)
        self.other = self.candidates(None)
        self.by_method = {m: self.candidates(m) for m in listed}
        if not any(e.methods is not None and "HEAD" in e.methods for e in self.entries):
            self.by_method["HEAD"] = self.other or self.by_method.get("GET", ())

    def candidates(self, method):
        """Routes answering method, best first: priority, predicate first, listed first, age."""
        found = [e for e in self.entries if e.methods is None or method in e.methods]
        found.sort(key=lambda e: (-e.priority, e.predicate is None, e.methods is None, e.seq))
        return tuple(found)


class _BuildNode:
    """A radix node while a table is being built."""

    __slots__ = ("text", "kind", "statics", "params", "leaf", "catchall")

    def __init__(self, text, kind):
        self.text = text
        self.kind = kind
        self.statics = {}   # first byte -> _BuildNode
        self.params = {}    # K_* -> _BuildNode (text b"")
        self.leaf = None
        self.catchall = None


def _descend(node, text):
    """The node where static text ends below node, splitting or creating nodes on the way."""
    while text:
        child = node.statics.get(text[0])
        if child is None:
            child = node.statics[text[0]] = _BuildNode(text, K_STATIC)
            return child
        common = 1
        limit = min(len(text), len(child.text))
        while common < limit and text[common] == child.text[common]:
            common += 1
        if common < len(child.text):
            head = node.statics[text[0]] = _BuildNode(child.text[:common], K_STATIC)
            child.text = child.text[common:]
            head.statics[child.text[0]] = child
            child = head
        node = child
        text = text[common:]
    return node


class _Builder:
    """Flattens a Router's leaves into the lists _load() copies into C arrays."""

    def __init__(self, trees):
        self.text = bytearray()
        self.nodes = []
        self.child = []
        self.leaves = []
        self.slots = []
        self.cands = []
        self.keep = []
        self.not_allowed = {}  # frozenset[str] -> (MethodNotAllowed, that frozenset), shared
        names = {"GET", "HEAD"}
        for shapes in trees.values():
            for leaf in shapes.values():
                names.update(leaf.by_method)
        self.method_names = ["GET", "HEAD"] + sorted(names - {"GET", "HEAD"})
        self.methods = [self.span(m.encode("ascii")) for m in self.method_names]
        self.exact = {}
        self.wild = []
        self.any_root = -1
        for key, shapes in trees.items():
            root = self.tree(shapes)
            if key is None:
                self.any_root = root
            elif key.startswith(b"*."):
                self.wild.append((*self.span(key[1:]), root))
            else:
                self.exact[key] = root
        self.wild.sort(key=lambda w: -w[1])

    def span(self, data):
        off = len(self.text)
        self.text += data
        return (off, len(data))

    def tree(self, shapes):
        root = _BuildNode(b"", K_STATIC)
        for shape, leaf in shapes.items():
            node = root
            for piece in shape:
                if type(piece) is bytes:
                    node = _descend(node, piece)
                elif piece == K_CATCHALL:
                    node.catchall = leaf
                    break
                else:
                    if piece not in node.params:
                        node.params[piece] = _BuildNode(b"", piece)
                    node = node.params[piece]
            else:
                node.leaf = leaf
        return self.flatten(root)

    def flatten(self, root):
        base = len(self.nodes)
        order = [root]
        index = {id(root): base}
        for b in order:  # breadth first; order grows while we walk it
            for child in [*b.statics.values(), *(b.params[k] for k in sorted(b.params))]:
                index[id(child)] = base + len(order)
                order.append(child)
        for b in order:
            static_off, lo, hi = -1, 0, 0
            if b.statics:
                lo, hi = min(b.statics), max(b.statics)
                static_off = len(self.child)
                self.child.extend([-1] * (hi - lo + 1))
                for c, child in b.statics.items():
                    self.child[static_off + c - lo] = index[id(child)]
            param_off = len(self.child)
            self.child.extend(index[id(b.params[k])] for k in sorted(b.params))
            self.nodes.append((*self.span(b.text), b.kind, self.leaf(b.leaf), self.leaf(b.catchall),
                               static_off, param_off, len(b.params), lo, hi))
        return base

    def leaf(self, leaf):
        if leaf is None:
            return -1
        slot_off = len(self.slots)
        spans = {}  # id(candidates) -> slot: methods sharing one tuple share its candidates
        per_method = [leaf.by_method.get(m, leaf.other) for m in self.method_names]
        for candidates in [*per_method, leaf.other]:  # the last slot: methods no route lists
            slot = spans.get(id(candidates))
            if slot is None:
                slot = spans[id(candidates)] = (len(self.cands), len(candidates))
                for e in candidates:
                    self.cands.append((e.route, e.predicate))
                    self.keep.append(e.route)
                    self.keep.append(e.predicate)
            self.slots.append(slot)
        shared = self.not_allowed.get(leaf.methods)
        if shared is None:
            allow = ", ".join(sorted(leaf.methods)).encode("ascii")
            shared = self.not_allowed[leaf.methods] = (MethodNotAllowed(allow), leaf.methods)
            self.keep.append(shared)
        self.leaves.append((leaf.nparams, slot_off, *shared))
        return len(self.leaves) - 1


# -- add-time parsing --------------------------------------------------------------------------

def template_params(str template):
    """The parameter names of a route template, in order (ValueError naming what is wrong)."""
    return _parse(template)[1]


def _parse(str template):
    """``(shape, names)`` of a template, or ValueError naming it."""
    if not template.startswith("/"):
        raise ValueError(f"route template {template!r} must start with '/'")
    segments = template[1:].split("/")
    shape = []
    names = []
    static = "/"
    for k, segment in enumerate(segments):
        if k:
            static += "/"
        if "{" not in segment and "}" not in segment:
            static += segment
            continue
        if not (segment.startswith("{") and segment.endswith("}")) or segment.count("{") != 1 \
                or segment.count("}") != 1:
            raise ValueError(f"route template {template!r}: a parameter must fill a whole "
                             f"segment, got {segment!r}")
        inner = segment[1:len(segment) - 1]
        if inner.startswith("*"):
            name, kind = inner[1:], K_CATCHALL
            if k != len(segments) - 1:
                raise ValueError(f"route template {template!r}: catch-all {segment!r} must be "
                                 f"the last segment")
        else:
            name, colon, constraint = inner.partition(":")
            kind = _CONSTRAINTS.get(constraint, -2) if colon else K_ANY
            if kind == -2:
                raise ValueError(f"route template {template!r}: unknown constraint "
                                 f"{constraint!r} (known: {', '.join(_CONSTRAINTS)})")
        if not name.isidentifier():
            raise ValueError(f"route template {template!r}: parameter name {name!r} is not "
                             f"an identifier")
        if name in names:
            raise ValueError(f"route template {template!r}: parameter {name!r} appears twice")
        if static:
            shape.append(static.encode("utf-8"))
            static = ""
        shape.append(kind)
        names.append(name)
    if static:
        shape.append(static.encode("utf-8"))
    return tuple(shape), tuple(names)


def _blurred(shape):
    """The shape with every constraint replaced by None: shapes that may overlap share this key,
    and a shape without constraints is its own."""
    return tuple(None if type(piece) is not bytes and piece in _KIND_NAMES else piece
                 for piece in shape)


def _shared_segment(shape, other):
    """(kind, kind, segment) for the first position where two shapes of one blurred key take
    different constraints, if every such position has constraints that share a segment; else
    None (the shapes answer no common path)."""
    first = None
    for mine, theirs in zip(shape, other):
        if mine == theirs:
            continue
        segment = _SHARED_SEGMENT.get(frozenset((mine, theirs)))
        if segment is None:
            return None
        if first is None:
            first = (mine, theirs, segment)
    return first


def _methods(methods, template):
    if methods is None:
        return None
    if isinstance(methods, (str, bytes)):
        raise TypeError(f"route {template!r}: methods must be a sequence of names, not {methods!r}")
    names = set()
    for method in methods:
        if not isinstance(method, str) or not method or not _TCHAR.issuperset(method):
            raise ValueError(f"route {template!r}: invalid method {method!r}")
        names.add(method.upper())
    if not names:
        raise ValueError(f"route {template!r}: methods is empty (use None for any method)")
    return frozenset(names)


def _host_keys(hosts, template):
    """Tree keys of a route: [None] for any host, else b"host" / b"*.suffix", deduplicated."""
    if isinstance(hosts, (str, bytes)):
        raise TypeError(f"route {template!r}: hosts must be a sequence of names, not {hosts!r}")
    keys = []
    for host in hosts:
        if not isinstance(host, str):
            raise TypeError(f"route {template!r}: host {host!r} is not a str")
        name = host.lower()
        bare = name[2:] if name.startswith("*.") else name
        if not bare or not bare.isascii() or not _HOST_FORBIDDEN.isdisjoint(bare):
            raise ValueError(f"route {template!r}: invalid host {host!r} (a name without port, "
                             f"or *.suffix)")
        key = name.encode("ascii")
        if key not in keys:
            keys.append(key)
    return keys or [None]


# -- the router --------------------------------------------------------------------------------

@cython.final
cdef class Router:
    def __init__(self):
        self._trees = {}
        self._similar = {}
        self._count = 0
        self._table = None

    def __len__(self):
        return self._count

    def add(self, route, str path not None, methods=None, hosts=(), priority=0, predicate=None,
            predicate_key=None):
        shape, names = _parse(path)
        method_set = _methods(methods, path)
        keys = _host_keys(hosts, path)
        if not isinstance(priority, int):
            raise TypeError(f"route {path!r}: priority must be an int, not {priority!r}")
        if predicate is None:
            if predicate_key is not None:
                raise ValueError(f"route {path!r}: predicate_key given without a predicate")
        elif not callable(predicate):
            raise TypeError(f"route {path!r}: predicate {predicate!r} is not callable")
        elif predicate_key is None:
            predicate_key = predicate
        entry = _Entry(route, path, method_set, priority, predicate, predicate_key, self._count)
        blurred = _blurred(shape)
        for key in keys:  # check every tree before changing any
            self._check_conflicts(key, shape, blurred, entry)
        for key in keys:
            shapes = self._trees.setdefault(key, {})
            leaf = shapes.get(shape)
            if leaf is None:
                leaf = shapes[shape] = _Leaf(len(names))
                if blurred != shape:
                    self._similar.setdefault(key, {}).setdefault(blurred, []).append(shape)
            leaf.add(entry)
        self._count += 1
        self._table = None
        return names

    def _check_conflicts(self, key, shape, blurred, entry):
        """RouteConflict if a route of this tree would answer a request entry claims, or the
        other way round: one of its own shape, or of a shape whose constraints overlap (add time
        only: match() never pays for it)."""
        shapes = self._trees.get(key, {})
        where = "any host" if key is None else f"host {key.decode()!r}"
        leaf = shapes.get(shape)
        old = None if leaf is None else leaf.conflict(entry)
        if old is not None:
            raise RouteConflict(
                f"route {entry.template!r} conflicts with route {old.template!r}: same path shape and "
                f"{where}, overlapping methods, priority {entry.priority} and the same predicate key")
        if blurred == shape:
            return
        for other in self._similar.get(key, {}).get(blurred, ()):
            shared = None if other == shape else _shared_segment(shape, other)
            if shared is None:
                continue
            mine, theirs, segment = shared
            for old in shapes[other].entries:
                # At the first position where the shapes differ the walk tries kinds in K_* order.
                first, later = (entry, old) if mine < theirs else (old, entry)
                if _shadows(first, later):
                    raise RouteConflict(
                        f"route {entry.template!r} conflicts with route {old.template!r}: "
                        f"{_KIND_NAMES[mine]} and {_KIND_NAMES[theirs]} both accept a segment like "
                        f"{segment!r}, and on {where} with overlapping methods route "
                        f"{first.template!r} is tried first and takes every such request (priority "
                        f"orders only routes of one path shape; a predicate of its own on the first "
                        f"would let the other answer what it declines)")

    cdef _Table _compile(self):
        self._table = _load(_Builder(self._trees))
        return self._table

    cpdef object match(self, bytes method, bytes host, bytes path, object request=None):
        # cpdef: the proxy calls it in C; Python callers get the same method.
        if method is None or host is None or path is None:
            raise TypeError("match() needs bytes method, host and path")
        cdef _Table t = self._table
        cdef Walk w
        cdef Py_ssize_t k, hlen = PyBytes_GET_SIZE(host)
        cdef const char* h = PyBytes_AS_STRING(host)
        cdef const HostSuffix* suffix
        cdef RouteMatch found
        if t is None:
            t = self._compile()
        w.nodes = t.nodes
        w.child = t.child
        w.leaves = t.leaves
        w.slots = t.slots
        w.cands = t.cands
        w.text = t.text_ptr
        w.path = PyBytes_AS_STRING(path)
        w.n = PyBytes_GET_SIZE(path)
        w.method = t.method_id(method)
        w.request = <PyObject*>request
        w.first_na = NULL
        w.first_root = -1
        w.first_mixed = False
        w.collect = NULL
        w.result = NULL
        if t.exact:
            root = t.exact.get(host)
            if root is not None and _search(&w, root):
                found = <RouteMatch>w.result
                Py_DECREF(found)
                return found
        for k in range(t.n_wild):
            suffix = &t.wild[k]
            if hlen > suffix.text.len and memcmp(
                    h + hlen - suffix.text.len, w.text + suffix.text.off, suffix.text.len) == 0:
                if _search(&w, suffix.root):
                    found = <RouteMatch>w.result
                    Py_DECREF(found)
                    return found
        if t.any_root >= 0 and _search(&w, t.any_root):
            found = <RouteMatch>w.result
            Py_DECREF(found)
            return found
        if w.first_na == NULL:
            return None
        if w.first_mixed:
            return t.union_not_allowed(&w)
        return <object>w.first_na
