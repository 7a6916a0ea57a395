"""The shelf (``proxy/shelf.pyx``): what a pool keeps idle and a listener keeps of its parsers.
The last put is the first taken; an object taken off from the middle (a connection that closed
while idle) leaves the others in order; clearing gives back what was there."""

from __future__ import annotations

from fastgw._proxy import Shelf


def test_the_shelf_keeps_order_through_removals_and_clears() -> None:
    shelf = Shelf()
    assert len(shelf) == 0 and not shelf and shelf.items() == []
    a, b, c = object(), object(), object()
    for item in (a, b, c):
        shelf.add(item)
    assert len(shelf) == shelf.count == 3 and shelf.items() == [a, b, c]
    assert shelf.remove(b) and not shelf.remove(b)  # once: the second time it is not there
    assert shelf.items() == [a, c]
    shelf.add(b)
    assert shelf.items() == [a, c, b]
    assert shelf.clear() == [a, c, b]
    assert len(shelf) == 0 and shelf.items() == [] and shelf.clear() == []
    shelf.add(a)
    assert shelf.items() == [a]
