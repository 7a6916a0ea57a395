"""Router.match cost at 10, 1,000 and 10,000 routes: it should stay flat as the table grows.

Run with ``pytest bench/micro --benchmark-enable``; without the flag each case runs once as a
plain test. The routes look like a gateway's: per service a static collection path, an item path
with an int param, and a catch-all; the request hits the last service added.
"""

from __future__ import annotations

from functools import cache

import pytest

from fastgw._router import RouteMatch, Router

SIZES = [10, 1_000, 10_000]

# A call takes ~0.1-0.3 us: time rounds of many calls so the timer's own cost and resolution
# (pytest-benchmark's default calibration can settle on one call per round) do not dominate.
pytestmark = pytest.mark.benchmark(min_time=0.001, max_time=0.5, warmup=True)


@cache
def table(size: int) -> Router:
    """``size`` routes, three per service, built and compiled once per size."""
    router = Router()
    shapes = ("/api/v1/svc{i}/items", "/api/v1/svc{i}/items/{{id:int}}", "/api/v1/svc{i}/{{*rest}}")
    for n in range(size):
        service, shape = divmod(n, len(shapes))
        router.add((service, shape), shapes[shape].format(i=service), methods=["GET", "POST"])
    router.match(b"GET", b"", b"/")  # build the table outside the timing
    return router


def last_service(size: int) -> int:
    """The last service that has all three routes."""
    return size // 3 - 1


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
    assert isinstance(result.route, tuple) and result.route[0] == service


@pytest.mark.parametrize("size", SIZES)
def test_miss(benchmark, size: int) -> None:  # type: ignore[no-untyped-def]
    router = table(size)
    assert benchmark(router.match, b"GET", b"", b"/api/v2/nothing/here") is None
