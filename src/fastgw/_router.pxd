# fastgw._router: table of contents.
#
# The code and its theory of operation are in _router.pyx; the typed face is _router.pyi.
# add() keeps plain Python records (one _Leaf per host key and path shape); the first match()
# after a change flattens them into a _Table of C arrays, which match() walks without touching
# Python objects until it builds the result.

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t


# Parameter kinds, in the order the walk tries them at one position (after the static child).
cdef enum:
    K_INT = 0        # {name:int}    [0-9]+
    K_HEX = 1        # {name:hex}    [0-9a-fA-F]+
    K_UUID = 2       # {name:uuid}   8-4-4-4-12 hex digits
    K_ALPHA = 3      # {name:alpha}  [A-Za-z]+
    K_ALNUM = 4      # {name:alnum}  [A-Za-z0-9]+
    K_ANY = 5        # {name}        any non-empty segment
    K_CATCHALL = 6   # {*name}       the rest of the path, possibly empty (last segment only)
    K_STATIC = -1    # a node of static text


cdef struct Span:            # bytes text[off:off + len] of the table's text pool
    Py_ssize_t off
    Py_ssize_t len


cdef struct Node:            # one node of a byte-level compressed radix tree
    Span text                # prefix compared with memcmp; empty for parameter nodes
    int32_t kind             # K_STATIC, or the K_* a parameter node checks its segment against
    int32_t leaf             # leaf answering when the path ends right after this node, or -1
    int32_t catchall         # leaf of a {*name} child, or -1
    int32_t static_off       # child[static_off + c - lo]: static child starting with byte c, or -1
    int32_t param_off        # child[param_off:param_off + param_n]: parameter children, K_* order
    int32_t param_n
    unsigned char lo         # first-byte range [lo, hi] covered by the static child table
    unsigned char hi


cdef struct Slot:            # the ordered candidates of one leaf for one method
    int32_t off              # cands[off:off + n]; n == 0 means "this path, another method" (405)
    int32_t n


cdef struct Candidate:
    PyObject* route          # the opaque object given to add() (borrowed; _Table.keep owns it)
    PyObject* predicate      # callable(request) -> truthy, or NULL


cdef struct Leaf:            # every route sharing one host key and one path shape
    int32_t nparams          # captures on the way here: the length of RouteMatch.params
    int32_t slot_off         # slots[slot_off + method_id]; method_id == n_methods: other methods
    PyObject* not_allowed    # shared MethodNotAllowed for this leaf's method set
    PyObject* methods        # frozenset[str] behind not_allowed, to union several leaves


cdef struct HostSuffix:      # one "*.example.com" tree, matched by the suffix ".example.com"
    Span text
    int32_t root


cdef struct Capture:         # one parameter value, chained through the walk's C stack frames
    Py_ssize_t start
    Py_ssize_t end
    Capture* prev


cdef struct Walk:            # the state of one match(), on the C stack
    const Node* nodes
    const int32_t* child
    const Leaf* leaves
    const Slot* slots
    const Candidate* cands
    const char* text
    const char* path
    Py_ssize_t n             # len(path)
    Py_ssize_t method        # method id: index of the method in the table, or n_methods
    PyObject* request        # passed to predicates (borrowed from match()'s argument)
    PyObject* not_allowed    # the first 405 leaf seen in the current tree, or NULL
    bint mixed               # the current tree also had a 405 leaf with another method set
    PyObject* first_na       # the 405 answer of the first tree that had one, or NULL
    int32_t first_root       # ... that tree's root
    bint first_mixed         # ... and whether its Allow is a union to compute
    PyObject* collect        # a set[str] while collecting a union of 405 methods, else NULL
    PyObject* result         # the RouteMatch found (a new reference), or NULL


cdef class RouteMatch:
    cdef readonly object route
    cdef readonly tuple params       # bytes values, aligned with the names add() returned


cdef class MethodNotAllowed:
    cdef readonly bytes allow        # b"GET, HEAD, POST": sorted, built before any match


cdef class _Table:
    # The flattened, immutable form of a Router; replaced whole after add().
    cdef Node* nodes
    cdef int32_t* child
    cdef Leaf* leaves
    cdef Slot* slots
    cdef Candidate* cands
    cdef Span* methods               # method names; GET is 0 and HEAD is 1
    cdef Py_ssize_t n_methods
    cdef HostSuffix* wild            # wildcard trees, longest suffix first
    cdef Py_ssize_t n_wild
    cdef dict exact                  # host bytes -> root index of its tree
    cdef int32_t any_root            # root of the any-host tree, or -1
    cdef bytes text                  # pool of node prefixes, host suffixes and method names
    cdef const char* text_ptr        # ... and its bytes
    cdef list keep                   # owns every object the C arrays point to

    cdef Py_ssize_t method_id(self, bytes method) noexcept
    cdef object union_not_allowed(self, Walk* w)


@cython.final
cdef class Router:
    cdef dict _trees                 # host key (None | b"host" | b"*.suffix") -> {shape: _Leaf}
    cdef dict _similar               # host key -> {shape, constraints blurred: [shapes]} (conflicts)
    cdef Py_ssize_t _count           # successful add() calls; also the insertion sequence
    cdef _Table _table               # None after a change, rebuilt by the next match()

    cdef _Table _compile(self)
    cpdef object match(self, bytes method, bytes host, bytes path, object request=*)


cdef bint _accepts(int32_t kind, const char* s, Py_ssize_t n) noexcept nogil
cdef int _walk(Walk* w, int32_t ni, Py_ssize_t i, Capture* caps) except -1
cdef int _try_leaf(Walk* w, int32_t li, Capture* caps) except -1
cdef int _search(Walk* w, int32_t root) except -1
cdef tuple _params(const char* path, Capture* caps, int32_t n)
