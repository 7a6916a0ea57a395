# Objects kept for reuse, last in first out (shelf.pyx): a pool's idle connections, a listener's
# idle request parsers.

cdef class Shelf:
    cdef list slots                      # [0, count) hold the objects, the rest None
    cdef readonly Py_ssize_t count

    cdef object take(self)
    cdef int put(self, object item) except -1
