"""Router.match cost at 10, 1,000 and 10,000 routes: it should not grow with the table.

Run with ``pytest bench/micro --benchmark-enable``; without the flag each case runs once as a
plain test. The routes look like a gateway's: per service a static collection path, an item path
with an int param, and a catch-all; the request hits the last service added.
"""

from __future__ import annotations

from functools import lru_cache

import pytest

from fastgw._router import RouteMatch, Router

SIZES = [10, 1_000, 10_000]


@lru_cache(maxsize=None)
def table(size: int) -> Router:
    """``size`` routes: per service ``/api/v1/svc{i}/items``, ``.../items/{id:int}``, ``.../{*rest}``."""
    router = Router()
    shapes = ("/api/v1/svc{i}/items", "/api/v1/svc{i}/items/{{id:int}}", "/api/v1/svc{i}/{{*rest}}")
    for n in range(size):
        service, shape = divmod(n, len(shapes))
        router.add((service, shape), shapes[shape].format(i=service), methods=["GET", "POST"])
    router.match(b"GET", b"", b"/")  # build the table outside the timing
    return router


def last_service(size: int) -> int:
    return (size - 1) // 3


CASES = {
    "static": lambda i: f"/api/v1/svc{i}/items".encode(),
    "param": lambda i: f"/api/v1/svc{i}/items/12345".encode(),
    "catchall": lambda i: f"/api/v1/svc{i}/docs/index.html".encode(),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", list(CASES))
def test_match(benchmark, case: str, size: int) -> None:  # type: ignore[no-untyped-def]
    router = table(size)
    service = last_service(size)
    path = CASES[case](service)
    result = benchmark(router.match, b"GET", b"", path)
    assert isinstance(result, RouteMatch)
    assert result.route[0] == service


@pytest.mark.parametrize("size", SIZES)
def test_miss(benchmark, size: int) -> None:  # type: ignore[no-untyped-def]
    router = table(size)
    assert benchmark(router.match, b"GET", b"", b"/api/v2/nothing/here") is None
