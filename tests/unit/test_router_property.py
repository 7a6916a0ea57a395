"""The compiled router against the brute-force reference on random tables.

Route sets are drawn from a tiny vocabulary so shapes collide: shared prefixes, static segments
that also satisfy constrained params, catch-alls beside params, overlapping methods, hosts with
nested wildcards, priorities and predicates. Both routers must accept or refuse each insertion
alike, and answer every request alike: the same route and params, the same 405 Allow, and the
same predicates called in the same order (which pins down candidate order and backtracking).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastgw._router import MethodNotAllowed, RouteConflict, RouteMatch, Router
from tests.support.reference_router import ReferenceRouter, RefMatch, RefNotAllowed

UUID = "123e4567-e89b-12d3-a456-426614174000"
STATIC = ["a", "b", "ab", "1", "f", ""]
PATH_SEGMENTS = [*STATIC, "12", "Ab", "a1", "%2F", UUID, "a.b"]
CONSTRAINTS = [None, "int", "hex", "alpha", "alnum", "uuid"]
HOSTS = [(), (), ("a.com",), ("b.a.com",), ("*.a.com",), ("*.b.a.com",), ("a.com", "*.A.com")]
REQUEST_HOSTS = [b"", b"a.com", b"b.a.com", b"c.b.a.com", b"c.a.com", b"x.com"]
METHODS = ["GET", "HEAD", "POST", "DELETE"]
REQUEST_METHODS = [b"GET", b"HEAD", b"POST", b"DELETE", b"PUT"]


def draw_segment(draw: st.DrawFn, name: str, last: bool) -> str:
    kind = draw(
        st.sampled_from(["static", "static", "param", "catchall"] if last else ["static", "static", "param"])
    )
    if kind == "static":
        return draw(st.sampled_from(STATIC))
    if kind == "catchall":
        return f"{{*{name}}}"
    constraint = draw(st.sampled_from(CONSTRAINTS))
    return f"{{{name}}}" if constraint is None else f"{{{name}:{constraint}}}"


@st.composite
def templates(draw: st.DrawFn) -> str:
    count = draw(st.integers(1, 3))
    names = draw(st.permutations(["x", "y", "z", "w"]))
    return "/" + "/".join(draw_segment(draw, names[k], k == count - 1) for k in range(count))


@st.composite
def neighbours(draw: st.DrawFn, template: str) -> str:
    """The same shape under other names (a conflict candidate), or one segment redrawn."""
    if draw(st.booleans()):
        return template.replace("{x", "{q").replace("{*x", "{*q")
    segments = template[1:].split("/")
    k = draw(st.integers(0, len(segments) - 1))
    name = next(n for n in "rstuv" if f"{{{n}" not in template and f"{{*{n}" not in template)
    segments[k] = draw_segment(draw, name, k == len(segments) - 1)
    return "/" + "/".join(segments)


route_specs = st.fixed_dictionaries(
    {
        "path": templates(),
        "methods": st.none() | st.lists(st.sampled_from(METHODS), min_size=1, max_size=3),
        "hosts": st.sampled_from(HOSTS),
        "priority": st.integers(0, 2),
        "predicate": st.sampled_from([None, None, "k1", "k2", "own"]),
    }
)

random_paths = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=1, max_size=4).map(
    lambda segments: "/" + "/".join(segments)
)


@st.composite
def paths_like(draw: st.DrawFn, template: str) -> str:
    """A path the template may match: params filled from the vocabulary, which some reject."""
    out = []
    for segment in template[1:].split("/"):
        if segment.startswith("{*"):
            out.extend(draw(st.lists(st.sampled_from(PATH_SEGMENTS), max_size=2)) or [""])
        elif segment.startswith("{"):
            out.append(draw(st.sampled_from(PATH_SEGMENTS)))
        else:
            out.append(segment)
    return "/" + "/".join(out)


@st.composite
def scenarios(draw: st.DrawFn) -> list[object]:
    """Insertions with requests interleaved; most request paths are shaped like some route."""
    routes = draw(st.lists(route_specs, min_size=1, max_size=10))
    for _ in range(draw(st.integers(0, 4))):  # same host, a path shape at most one segment away
        echo = dict(draw(st.sampled_from(routes)))
        echo["path"] = draw(neighbours(echo["path"]))
        echo.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "methods": route_specs.map(lambda spec: spec["methods"]),
                        "priority": st.integers(0, 2),
                        "predicate": st.sampled_from([None, "k1", "own"]),
                    },
                )
            )
        )
        routes.append(echo)
    ops: list[object] = list(routes)
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 4)):
            path = draw(paths_like(draw(st.sampled_from(routes))["path"]))
        else:
            path = draw(random_paths)
        query = (
            draw(st.sampled_from(REQUEST_METHODS)),
            draw(st.sampled_from(REQUEST_HOSTS)),
            path.encode(),
            draw(st.frozensets(st.integers(0, len(routes) - 1))),  # routes whose predicate says yes
        )
        ops.insert(draw(st.integers(len(ops) // 2, len(ops))), query)
    return ops


def make_predicate(route_id: int, log: list[int]) -> Callable[[object], bool]:
    def predicate(request: object) -> bool:
        log.append(route_id)
        return route_id in request  # type: ignore[operator]

    return predicate


def same_answer(got: object, want: object) -> bool:
    if want is None:
        return got is None
    if isinstance(want, RefMatch):
        return isinstance(got, RouteMatch) and got.route == want.route and got.params == want.params
    assert isinstance(want, RefNotAllowed)
    return isinstance(got, MethodNotAllowed) and got.allow == want.allow


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_compiled_router_agrees_with_the_reference(ops: list) -> None:  # type: ignore[type-arg]
    compiled, reference = Router(), ReferenceRouter()
    log: list[int] = []
    route_id = 0
    for op in ops:
        if isinstance(op, dict):
            kwargs = {k: v for k, v in op.items() if k != "predicate"}
            if op["predicate"] is not None:
                kwargs["predicate"] = make_predicate(route_id, log)
                kwargs["predicate_key"] = None if op["predicate"] == "own" else op["predicate"]
            outcomes = []
            for router in (compiled, reference):
                try:
                    outcomes.append(router.add(route_id, **kwargs))
                except RouteConflict:
                    outcomes.append(RouteConflict)
            assert outcomes[0] == outcomes[1], (op, outcomes)
            if outcomes[0] is RouteConflict:
                event("an insertion conflicted")
            route_id += 1
        else:
            method, host, path, request = op
            log.clear()
            got = compiled.match(method, host, path, request)
            got_calls = list(log)
            log.clear()
            want = reference.match(method, host, path, request)
            assert same_answer(got, want), (op, got, want)
            event(f"answer: {type(want).__name__}")
            if got_calls:
                event("a predicate was called")
            assert got_calls == log, (op, got_calls, log)
    assert len(compiled) == len(reference)


# Malformed templates: both routers refuse the same strings, and agree on names otherwise.
template_noise = st.lists(
    st.sampled_from(["/", "a", "{", "}", "x", ":", "*", "int", "{x}", "{*r}", "{x:int}", "1"]),
    max_size=8,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(template_noise)
def test_template_validation_agrees_with_the_reference(template: str) -> None:
    outcomes = []
    for router in (Router(), ReferenceRouter()):
        try:
            outcomes.append(router.add("r", template))
        except ValueError:
            outcomes.append(ValueError)
    assert outcomes[0] == outcomes[1], (template, outcomes)


def test_reference_catches_a_wrong_answer() -> None:
    """The comparison is not vacuous: a known-different table is told apart."""
    compiled, reference = Router(), ReferenceRouter()
    compiled.add(1, "/a/{x}")
    reference.add(2, "/a/{x}")
    want = reference.match(b"GET", b"", b"/a/b")
    assert not same_answer(compiled.match(b"GET", b"", b"/a/b"), want)
    with pytest.raises(AssertionError):
        same_answer(compiled.match(b"GET", b"", b"/a/b"), object())
