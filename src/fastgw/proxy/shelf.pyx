# -- a shelf: objects kept for reuse, last in first out -------------------------------------------


@cython.final
cdef class Shelf:
    """A pool's idle connections, a listener's idle request parsers: the last put is the first
    taken. PERF: a list that goes from one entry to none and back on every request (one request
    at a time) has CPython free its array when it empties and allocate it again on the next
    append, through the C allocator (about 1,300 instructions a request for the two of them).
    The shelf keeps its slots and counts the ones in use."""

    def __init__(self) -> None:
        self.slots = []
        self.count = 0

    cdef object take(self):
        """The last object put, or None when the shelf is empty."""
        if self.count == 0:
            return None
        self.count -= 1
        cdef object item = self.slots[self.count]
        self.slots[self.count] = None
        return item

    cdef int put(self, object item) except -1:
        if self.count < len(self.slots):
            self.slots[self.count] = item
        else:
            self.slots.append(item)
        self.count += 1
        return 0

    def add(self, item: object) -> None:
        self.put(item)

    def remove(self, item: object) -> bool:
        """Take ``item`` off wherever it is (it closed while idle); False if it is not here."""
        cdef Py_ssize_t i
        for i in range(self.count):
            if self.slots[i] is item:
                del self.slots[i]
                self.slots.append(None)
                self.count -= 1
                return True
        return False

    def items(self) -> list:
        """What it holds, first put first."""
        return self.slots[:self.count]

    def clear(self) -> list:
        """Empty it (its slots too); return what it held."""
        held = self.items()
        self.slots = []
        self.count = 0
        return held

    def __len__(self) -> int:
        return self.count
