"""The router, one rule per test: templates, precedence with backtracking, methods and 405,
priorities and predicates, conflicts, hosts. The property test checks the same rules against the
brute-force reference router on random tables."""

from __future__ import annotations

import itertools

import pytest

import fastgw._router
from fastgw._router import MethodNotAllowed, RouteConflict, RouteMatch, Router
from tests.support.reference_router import CONSTRAINTS, PATTERNS

UUID = b"123e4567-e89b-12d3-a456-426614174000"


def match(
    router: Router, path: bytes, method: bytes = b"GET", host: bytes = b"", request: object = None
) -> RouteMatch | MethodNotAllowed | None:
    return router.match(method, host, path, request)


def found(
    router: Router, path: bytes, method: bytes = b"GET", host: bytes = b"", request: object = None
) -> tuple[object, tuple[bytes, ...]] | None:
    m = router.match(method, host, path, request)
    assert m is None or isinstance(m, RouteMatch), m
    return None if m is None else (m.route, m.params)


def allow(router: Router, path: bytes, method: bytes, host: bytes = b"") -> bytes:
    m = router.match(method, host, path)
    assert isinstance(m, MethodNotAllowed), m
    return m.allow


# A pure-Python stand-in drifting from the C code is a known trap (aiohttp): fail loudly if the
# compiled module is not the one under test.
def test_the_compiled_extension_is_loaded() -> None:
    assert fastgw._router.__file__.endswith((".so", ".pyd"))
    assert not fastgw._router.__file__.endswith(".py")


# -- templates ---------------------------------------------------------------------------------


def test_static_routes_match_exactly() -> None:
    r = Router()
    r.add("root", "/")
    r.add("users", "/users")
    r.add("list", "/users/list")
    assert found(r, b"/") == ("root", ())
    assert found(r, b"/users") == ("users", ())
    assert found(r, b"/users/list") == ("list", ())
    assert found(r, b"/user") is None
    assert found(r, b"/usersx") is None
    assert found(r, b"/users/lis") is None
    assert found(r, b"/users/list/x") is None


def test_trailing_slash_is_significant() -> None:
    r = Router()
    r.add("no-slash", "/a")
    assert found(r, b"/a") == ("no-slash", ())
    assert found(r, b"/a/") is None
    r.add("slash", "/a/")
    assert found(r, b"/a/") == ("slash", ())


def test_add_returns_param_names_in_path_order() -> None:
    r = Router()
    assert r.add(1, "/a/{x}/b/{y:int}/{*rest}") == ("x", "y", "rest")
    assert r.add(2, "/plain") == ()
    assert found(r, b"/a/1/b/2/c/d") == (1, (b"1", b"2", b"c/d"))


def test_param_is_one_whole_non_empty_segment() -> None:
    r = Router()
    r.add("user", "/users/{id}")
    assert found(r, b"/users/42") == ("user", (b"42",))
    assert found(r, b"/users/") is None
    assert found(r, b"/users/42/") is None
    assert found(r, b"/users/4/2") is None


def test_encoded_slash_is_ordinary_text() -> None:
    r = Router()
    r.add("file", "/files/{name}")
    assert found(r, b"/files/a%2Fb") == ("file", (b"a%2Fb",))


def test_utf8_static_text() -> None:
    r = Router()
    r.add("cafe", "/caf\u00e9/{x}")
    assert found(r, "/caf\u00e9/1".encode()) == ("cafe", (b"1",))


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        ("int", [b"0", b"123"], [b"12a", b"-1", b"1.5"]),
        ("hex", [b"0", b"deadBEEF", b"ff"], [b"fg", b"0x1"]),
        ("alpha", [b"abc", b"XyZ"], [b"ab1", b"a-b"]),
        ("alnum", [b"abc", b"a1B2", b"7"], [b"a_b", b"a-1"]),
        ("uuid", [UUID, UUID.upper()], [UUID[:-1], UUID.replace(b"-", b"_"), b"x" * 36]),
    ],
)
def test_constraints(constraint: str, good: list[bytes], bad: list[bytes]) -> None:
    r = Router()
    r.add(constraint, f"/v/{{p:{constraint}}}")
    for value in good:
        assert found(r, b"/v/" + value) == (constraint, (value,))
    for value in bad:
        assert found(r, b"/v/" + value) is None


def test_catch_all_takes_the_rest_without_its_leading_slash() -> None:
    r = Router()
    r.add("static", "/static/{*rest}")
    assert found(r, b"/static/") == ("static", (b"",))
    assert found(r, b"/static/a") == ("static", (b"a",))
    assert found(r, b"/static/a/b/") == ("static", (b"a/b/",))
    assert found(r, b"/static") is None
    assert found(r, b"/staticx/a") is None


def test_root_catch_all() -> None:
    r = Router()
    r.add("all", "/{*path}")
    assert found(r, b"/") == ("all", (b"",))
    assert found(r, b"/x/y") == ("all", (b"x/y",))


@pytest.mark.parametrize(
    "template",
    [
        "",
        "a/b",
        "/a{x}",
        "/{x}.json",
        "/{x}{y}",
        "/{x",
        "/x}",
        "/{}",
        "/{*}",
        "/{1x}",
        "/{x-y}",
        "/{x}/{x}",
        "/{x}/{*x}",
        "/{x:float}",
        "/{x:}",
        "/{*rest}/more",
        "/{*rest:int}",
    ],
)
def test_malformed_templates_raise_value_error_naming_the_template(template: str) -> None:
    r = Router()
    with pytest.raises(ValueError) as info:
        r.add("x", template)
    assert not isinstance(info.value, RouteConflict)
    assert repr(template) in str(info.value)
    assert len(r) == 0


def test_invalid_methods_and_hosts() -> None:
    r = Router()
    for methods in (["GE T"], [""], []):
        with pytest.raises(ValueError):
            r.add("x", "/x", methods=methods)
    for hosts in (["a.com:80"], [""], ["*."], ["a.*.com"], ["a/b"]):
        with pytest.raises(ValueError):
            r.add("x", "/x", hosts=hosts)
    with pytest.raises(TypeError):
        r.add("x", "/x", methods="GET")
    with pytest.raises(ValueError):
        r.add("x", "/x", predicate_key="k")
    assert len(r) == 0


# -- precedence and backtracking ---------------------------------------------------------------


def test_static_beats_param_beats_catch_all() -> None:
    r = Router()
    r.add("catch", "/a/{*rest}")
    r.add("param", "/a/{x}")
    r.add("static", "/a/b")
    assert found(r, b"/a/b") == ("static", ())
    assert found(r, b"/a/c") == ("param", (b"c",))
    assert found(r, b"/a/c/d") == ("catch", (b"c/d",))
    assert found(r, b"/a/") == ("catch", (b"",))


def test_constrained_params_are_tried_int_hex_uuid_alpha_alnum_then_any() -> None:
    # Overlapping constraints at one position conflict unless something else tells the routes
    # apart: here each route has a predicate of its own (always true), so the walk's order shows.
    r = Router()
    for kind in ("alnum", "alpha", "uuid", "hex", "int"):
        r.add(kind, f"/v/{{p:{kind}}}", predicate=lambda request: True)
    r.add("any", "/v/{p}")
    assert found(r, b"/v/123")[0] == "int"  # type: ignore[index]
    assert found(r, b"/v/12ab")[0] == "hex"  # type: ignore[index]
    assert found(r, b"/v/" + UUID)[0] == "uuid"  # type: ignore[index]
    assert found(r, b"/v/abcz")[0] == "alpha"  # type: ignore[index]
    assert found(r, b"/v/abc9z")[0] == "alnum"  # type: ignore[index]
    assert found(r, b"/v/a-b")[0] == "any"  # type: ignore[index]


def test_backtracks_from_a_failing_static_branch_to_the_param() -> None:
    r = Router()
    r.add("deep-static", "/a/b/c")
    r.add("param", "/a/{x}/d")
    assert found(r, b"/a/b/d") == ("param", (b"b",))
    assert found(r, b"/a/b/c") == ("deep-static", ())


def test_backtracks_between_constrained_params() -> None:
    r = Router()
    r.add("int-x", "/v/{n:int}/x")
    r.add("hex-y", "/v/{n:hex}/y")
    r.add("any-z", "/v/{n}/z")
    assert found(r, b"/v/12/x") == ("int-x", (b"12",))
    assert found(r, b"/v/12/y") == ("hex-y", (b"12",))
    assert found(r, b"/v/12/z") == ("any-z", (b"12",))


def test_backtracks_to_the_catch_all_when_a_param_branch_fails() -> None:
    r = Router()
    r.add("param", "/a/{x}/end")
    r.add("catch", "/a/{*rest}")
    assert found(r, b"/a/q/end") == ("param", (b"q",))
    assert found(r, b"/a/q/other") == ("catch", (b"q/other",))


def test_backtracks_on_method_mismatch() -> None:
    r = Router()
    r.add("static-post", "/a/b", methods=["POST"])
    r.add("param-get", "/a/{x}", methods=["GET"])
    assert found(r, b"/a/b", b"GET") == ("param-get", (b"b",))
    assert found(r, b"/a/b", b"POST") == ("static-post", ())


def test_backtracks_when_every_predicate_rejects() -> None:
    r = Router()
    r.add("static", "/a/b", predicate=lambda req: req == "yes")
    r.add("param", "/a/{x}")
    assert found(r, b"/a/b", request="yes") == ("static", ())
    assert found(r, b"/a/b", request="no") == ("param", (b"b",))


def test_param_nodes_are_shared_but_names_are_per_route() -> None:
    r = Router()
    assert r.add("by-id", "/a/{id}") == ("id",)
    assert r.add("by-name", "/a/{name}/b") == ("name",)
    assert found(r, b"/a/1") == ("by-id", (b"1",))
    assert found(r, b"/a/1/b") == ("by-name", (b"1",))


def test_static_split_in_the_middle_of_a_segment() -> None:
    r = Router()
    r.add("abc", "/abc")
    r.add("abd", "/abd/{x}")
    r.add("ab", "/ab")
    r.add("param", "/{x}/{y}")
    assert found(r, b"/abc") == ("abc", ())
    assert found(r, b"/ab") == ("ab", ())
    assert found(r, b"/abd/1") == ("abd", (b"1",))
    assert found(r, b"/abc/1") == ("param", (b"abc", b"1"))
    assert found(r, b"/abx") is None


# -- methods and 405 ---------------------------------------------------------------------------


def test_methods_none_answers_any_method() -> None:
    r = Router()
    r.add("any", "/x")
    for method in (b"GET", b"POST", b"PURGE", b"HEAD"):
        assert found(r, b"/x", method) == ("any", ())


def test_method_names_are_upper_cased_at_add() -> None:
    r = Router()
    r.add("post", "/x", methods=["post"])
    assert found(r, b"/x", b"POST") == ("post", ())
    assert allow(r, b"/x", b"GET") == b"POST"


def test_head_uses_get_routes_unless_the_path_has_a_head_route() -> None:
    r = Router()
    r.add("get", "/x", methods=["GET"])
    assert found(r, b"/x", b"HEAD") == ("get", ())
    r.add("head", "/x", methods=["HEAD"])
    assert found(r, b"/x", b"HEAD") == ("head", ())
    assert found(r, b"/x", b"GET") == ("get", ())


def test_head_prefers_an_any_method_route_over_get() -> None:
    r = Router()
    r.add("get", "/x", methods=["GET"], priority=1)
    r.add("any", "/x")
    assert found(r, b"/x", b"HEAD") == ("any", ())
    assert found(r, b"/x", b"GET") == ("get", ())


def test_405_allow_is_sorted_with_head_when_get() -> None:
    r = Router()
    r.add("post", "/x", methods=["POST"])
    r.add("get", "/x", methods=["GET", "DELETE"])
    assert allow(r, b"/x", b"PUT") == b"DELETE, GET, HEAD, POST"
    assert allow(r, b"/x", b"OPTIONS") == b"DELETE, GET, HEAD, POST"


def test_405_answer_is_precomputed_and_shared() -> None:
    r = Router()
    r.add("get", "/x", methods=["GET"])
    assert r.match(b"POST", b"", b"/x") is r.match(b"PUT", b"", b"/x")


def test_405_allow_is_the_union_over_every_matching_path() -> None:
    r = Router()
    r.add("static", "/a/b", methods=["POST"])
    r.add("param", "/a/{x}", methods=["GET"])
    r.add("catch", "/a/{*rest}", methods=["PUT"])
    assert allow(r, b"/a/b", b"DELETE") == b"GET, HEAD, POST, PUT"
    assert allow(r, b"/a/c", b"DELETE") == b"GET, HEAD, PUT"
    assert allow(r, b"/a/c/d", b"DELETE") == b"PUT"


def test_an_any_method_route_on_the_path_means_no_405() -> None:
    r = Router()
    r.add("get", "/a/b", methods=["GET"])
    r.add("any", "/a/{x}")
    assert found(r, b"/a/b", b"POST") == ("any", (b"b",))


def test_predicate_rejection_is_a_miss_not_a_405() -> None:
    r = Router()
    r.add("guarded", "/x", methods=["GET"], predicate=lambda req: False)
    assert match(r, b"/x", b"GET") is None
    assert allow(r, b"/x", b"POST") == b"GET, HEAD"


def test_no_match_anywhere_is_none() -> None:
    r = Router()
    assert match(r, b"/") is None
    r.add("x", "/x")
    assert match(r, b"/y") is None


# -- priorities and predicates -----------------------------------------------------------------


def test_candidates_order_priority_then_predicate_then_insertion() -> None:
    calls: list[str] = []

    def pred(name: str, answer: bool):  # type: ignore[no-untyped-def]
        def check(request: object) -> bool:
            calls.append(name)
            return answer

        return check

    r = Router()
    r.add("low", "/x", priority=0)
    r.add("high-no", "/x", priority=5, predicate=pred("high-no", False))
    r.add("high-plain", "/x", priority=5)
    r.add("mid-yes", "/x", priority=3, predicate=pred("mid-yes", True))
    assert found(r, b"/x") == ("high-plain", ())
    assert calls == ["high-no"]


def test_predicate_before_plain_and_first_added_first() -> None:
    r = Router()
    r.add("plain", "/x")
    r.add("first", "/x", predicate=lambda req: req in ("a", "both"), predicate_key="a")
    r.add("second", "/x", predicate=lambda req: req in ("b", "both"), predicate_key="b")
    assert found(r, b"/x", request="a") == ("first", ())
    assert found(r, b"/x", request="b") == ("second", ())
    assert found(r, b"/x", request="both") == ("first", ())
    assert found(r, b"/x", request="none") == ("plain", ())


def test_listed_method_before_any_method_at_equal_rank() -> None:
    r = Router()
    r.add("any", "/x", predicate=lambda req: True, predicate_key="k1")
    r.add("get", "/x", methods=["GET"], predicate=lambda req: True, predicate_key="k2")
    assert found(r, b"/x", b"GET") == ("get", ())
    assert found(r, b"/x", b"POST") == ("any", ())


def test_predicate_gets_the_request_and_truthiness_counts() -> None:
    seen: list[object] = []
    r = Router()
    r.add("x", "/x", predicate=lambda req: seen.append(req) or req)
    token = object()
    assert found(r, b"/x", request=token) == ("x", ())
    assert found(r, b"/x", request=0) is None
    assert seen == [token, 0]


def test_predicate_exception_propagates() -> None:
    def boom(request: object) -> bool:
        raise KeyError("boom")

    r = Router()
    r.add("x", "/x/{id}", predicate=boom)
    with pytest.raises(KeyError, match="boom"):
        r.match(b"GET", b"", b"/x/1")
    assert found(r, b"/y") is None


def test_predicate_may_add_routes_and_match_reentrantly() -> None:
    r = Router()

    def grow(request: object) -> bool:
        r.add(len(r), f"/new{len(r)}")
        return r.match(b"GET", b"", b"/new1") is not None

    r.add("grow", "/x", predicate=grow)
    assert found(r, b"/x") == ("grow", ())  # the walk in progress keeps its own table
    assert found(r, b"/new1") == (1, ())
    assert len(r) == 2


# -- conflicts ---------------------------------------------------------------------------------


def test_same_shape_conflicts_whatever_the_names() -> None:
    r = Router()
    r.add("a", "/u/{id:int}/x")
    with pytest.raises(RouteConflict) as info:
        r.add("b", "/u/{n:int}/x")
    assert "'/u/{n:int}/x'" in str(info.value) and "'/u/{id:int}/x'" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"path": "/u/{id}"}, {"path": "/u/{id:int}"}),
        ({"path": "/u/{id}"}, {"path": "/u/{*id}"}),
        ({"path": "/u"}, {"path": "/u/"}),
        ({"methods": ["GET"]}, {"methods": ["POST"]}),
        ({"methods": ["GET"]}, {"methods": ["HEAD"]}),
        ({"priority": 1}, {"priority": 2}),
        ({"hosts": ["a.com"]}, {}),
        ({"hosts": ["a.com"]}, {"hosts": ["*.a.com"]}),
        ({}, {"predicate": bool, "predicate_key": "k"}),
        ({"predicate": bool, "predicate_key": "j"}, {"predicate": bool, "predicate_key": "k"}),
        ({"predicate": bool}, {"predicate": callable}),
    ],
)
def test_no_conflict_when_anything_differs(first: dict[str, object], second: dict[str, object]) -> None:
    r = Router()
    r.add("first", **{"path": "/u", **first})
    r.add("second", **{"path": "/u", **second})
    assert len(r) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({}, {}),
        ({"methods": ["GET", "POST"]}, {"methods": ["post"]}),
        ({"methods": None}, {"methods": ["PATCH"]}),
        ({"hosts": ["A.com", "b.com"]}, {"hosts": ["b.com"]}),
        ({"predicate": bool, "predicate_key": "k"}, {"predicate": callable, "predicate_key": "k"}),
        ({"predicate": bool}, {"predicate": bool}),
    ],
)
def test_conflicts(first: dict[str, object], second: dict[str, object]) -> None:
    r = Router()
    r.add("first", "/u", **first)
    with pytest.raises(RouteConflict):
        r.add("second", "/u", **second)


# Segments to find, by brute force over the constraints' own patterns, whether two constraints
# accept a common segment: every string of one or two characters from digits, letters on both
# sides of 'f' in both cases, and punctuation, plus uuids.
SEGMENTS = [
    "".join(chars).encode() for n in (1, 2) for chars in itertools.product("09afAFgzGZ-_.", repeat=n)
] + [UUID, UUID.upper()]
KINDS = [name for name in CONSTRAINTS if name is not None]


def accepted_by_both(first: str, second: str) -> list[bytes]:
    a, b = PATTERNS[CONSTRAINTS[first]], PATTERNS[CONSTRAINTS[second]]
    return [s for s in SEGMENTS if a.fullmatch(s) and b.fullmatch(s)]


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(KINDS, 2)))
def test_constraints_that_accept_a_common_segment_conflict(first: str, second: str) -> None:
    # Otherwise the later route silently never sees a segment the earlier kind takes first
    # (`abc` is hex and alpha): two routes answering the same request are a conflict.
    r = Router()
    r.add("first", f"/v/{{a:{first}}}/x")
    shared = accepted_by_both(first, second)
    if shared:
        with pytest.raises(RouteConflict) as info:
            r.add("second", f"/v/{{b:{second}}}/x")
        message = str(info.value)
        assert f"'/v/{{b:{second}}}/x'" in message and f"'/v/{{a:{first}}}/x'" in message
        assert f"{second} and {first} both accept" in message
        assert len(r) == 1
    else:
        r.add("second", f"/v/{{b:{second}}}/x")
        for kind, route in ((first, "first"), (second, "second")):
            for segment in SEGMENTS:
                if PATTERNS[CONSTRAINTS[kind]].fullmatch(segment):
                    assert found(r, b"/v/" + segment + b"/x") == (route, (segment,))


def test_the_overlap_table_is_the_documented_one() -> None:
    overlapping = {frozenset(pair) for pair in itertools.combinations(KINDS, 2) if accepted_by_both(*pair)}
    assert overlapping == {
        frozenset(pair)
        for pair in [("int", "hex"), ("int", "alnum"), ("hex", "alpha"), ("hex", "alnum"), ("alpha", "alnum")]
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/{a:int}/{b:alpha}", "/{a:hex}/{b:alnum}"),  # every differing position overlaps
        ("/{a:alpha}/{b:int}", "/{a:alpha}/{b:hex}"),  # one position differs, one is equal
        ("/{a:int}/s/{*rest}", "/{a:alnum}/s/{*rest}"),
    ],
)
def test_overlapping_constraints_conflict_at_any_position(first: str, second: str) -> None:
    r = Router()
    r.add("first", first)
    with pytest.raises(RouteConflict):
        r.add("second", second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"path": "/{a:int}/{b:alpha}"}, {"path": "/{a:hex}/{b:int}"}),  # b: letters vs digits
        ({"path": "/{a:int}/x"}, {"path": "/{a:hex}/y"}),
        ({"path": "/{a:int}"}, {"path": "/{a:hex}/y"}),
        ({"path": "/{a:int}"}, {"path": "/{a}"}),  # constrained before plain: documented order
        ({"methods": ["GET"]}, {"methods": ["POST"]}),
        ({"hosts": ["a.com"]}, {}),
        ({"predicate": bool, "predicate_key": "k"}, {}),  # int, tried first, may decline
        ({"predicate": bool, "predicate_key": "j"}, {"predicate": bool, "predicate_key": "k"}),
    ],
)
def test_overlapping_constraints_do_not_conflict_when_anything_else_differs(
    first: dict[str, object], second: dict[str, object]
) -> None:
    r = Router()
    r.add("first", **{"path": "/{a:int}", **first})
    r.add("second", **{"path": "/{a:hex}", **second})
    assert len(r) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"priority": 1}, {"priority": 2}),  # priority orders the routes of one shape only
        ({}, {"predicate": bool, "predicate_key": "k"}),  # int, tried first, takes them all
        ({"predicate": bool, "predicate_key": "k"}, {"predicate": bool, "predicate_key": "k"}),
    ],
)
def test_overlapping_constraints_conflict_when_the_first_kind_takes_every_shared_request(
    first: dict[str, object], second: dict[str, object]
) -> None:
    for order in ((first, "/{a:int}"), (second, "/{a:hex}")), ((second, "/{a:hex}"), (first, "/{a:int}")):
        r = Router()
        (kwargs, path), (later_kwargs, later_path) = order
        r.add("earlier", path, **kwargs)
        with pytest.raises(RouteConflict) as info:
            r.add("later", later_path, **later_kwargs)
        assert "route '/{a:int}' is tried first" in str(info.value)


def test_a_predicate_on_the_first_kind_lets_the_overlapping_route_answer_what_it_declines() -> None:
    r = Router()
    r.add("hex", "/{a:hex}")
    r.add("int-beta", "/{a:int}", predicate=lambda request: request == "beta")
    assert found(r, b"/42", request="beta") == ("int-beta", (b"42",))
    assert found(r, b"/42", request="other") == ("hex", (b"42",))
    assert found(r, b"/4f", request="beta") == ("hex", (b"4f",))


def test_an_overlap_found_in_one_host_tree_changes_no_tree() -> None:
    r = Router()
    r.add("hex", "/v/{a:hex}", hosts=["b.com"])
    with pytest.raises(RouteConflict):
        r.add("alpha", "/v/{a:alpha}", hosts=["a.com", "b.com"])
    assert found(r, b"/v/abc", host=b"a.com") is None
    r.add("alnum", "/v/{a:alnum}", hosts=["a.com"])  # the refused route left nothing to clash with
    assert found(r, b"/v/abc", host=b"a.com") == ("alnum", (b"abc",))


def test_a_failed_add_leaves_the_router_unchanged() -> None:
    r = Router()
    r.add("b", "/x", hosts=["b.com"])
    assert found(r, b"/x", host=b"b.com") == ("b", ())
    with pytest.raises(RouteConflict):
        r.add("ab", "/x", hosts=["a.com", "b.com"])  # a.com is free, b.com conflicts
    assert len(r) == 1
    assert found(r, b"/x", host=b"a.com") is None
    assert found(r, b"/x", host=b"b.com") == ("b", ())
    with pytest.raises(ValueError):
        r.add("bad", "/y/{x:nope}")
    assert len(r) == 1
    assert found(r, b"/y/1") is None


def test_len_counts_successful_adds() -> None:
    r = Router()
    assert len(r) == 0
    r.add("a", "/a", hosts=["a.com", "b.com"])
    r.add("b", "/b")
    with pytest.raises(RouteConflict):
        r.add("b2", "/b")
    assert len(r) == 2


# -- hosts -------------------------------------------------------------------------------------


def test_exact_host_and_any_host_fallback() -> None:
    r = Router()
    r.add("api", "/x", hosts=["API.example.com"])
    r.add("any", "/x")
    assert found(r, b"/x", host=b"api.example.com") == ("api", ())
    assert found(r, b"/x", host=b"other.com") == ("any", ())
    assert found(r, b"/x", host=b"") == ("any", ())


def test_wildcard_matches_subdomains_not_the_apex() -> None:
    r = Router()
    r.add("wild", "/x", hosts=["*.example.com"])
    assert found(r, b"/x", host=b"a.example.com") == ("wild", ())
    assert found(r, b"/x", host=b"a.b.example.com") == ("wild", ())
    assert found(r, b"/x", host=b"example.com") is None
    assert found(r, b"/x", host=b"badexample.com") is None


def test_host_trees_exact_then_longest_wildcard_then_any() -> None:
    r = Router()
    r.add("any", "/x")
    r.add("short", "/x", hosts=["*.com"])
    r.add("long", "/x", hosts=["*.example.com"])
    r.add("exact", "/x", hosts=["a.example.com"])
    assert found(r, b"/x", host=b"a.example.com") == ("exact", ())
    assert found(r, b"/x", host=b"b.example.com") == ("long", ())
    assert found(r, b"/x", host=b"b.com") == ("short", ())
    assert found(r, b"/x", host=b"b.org") == ("any", ())


def test_a_later_tree_match_beats_an_earlier_tree_405() -> None:
    r = Router()
    r.add("exact-post", "/x", methods=["POST"], hosts=["a.com"])
    r.add("any-get", "/x", methods=["GET"])
    assert found(r, b"/x", b"GET", b"a.com") == ("any-get", ())


def test_the_first_tree_405_wins() -> None:
    r = Router()
    r.add("exact-post", "/x", methods=["POST"], hosts=["a.com"])
    r.add("any-get", "/x", methods=["GET"])
    assert allow(r, b"/x", b"PUT", b"a.com") == b"POST"
    assert allow(r, b"/x", b"PUT", b"b.com") == b"GET, HEAD"


def test_one_route_under_several_hosts() -> None:
    r = Router()
    r.add("multi", "/x/{id}", hosts=["a.com", "*.b.com"])
    assert found(r, b"/x/1", host=b"a.com") == ("multi", (b"1",))
    assert found(r, b"/x/1", host=b"c.b.com") == ("multi", (b"1",))
    assert found(r, b"/x/1", host=b"c.com") is None


# -- results and lifecycle ---------------------------------------------------------------------


def test_results_are_read_only() -> None:
    r = Router()
    r.add("x", "/x/{id}")
    m = r.match(b"GET", b"", b"/x/1")
    assert isinstance(m, RouteMatch)
    with pytest.raises(AttributeError):
        m.route = "y"  # type: ignore[misc]
    assert repr(m) == "RouteMatch(route='x', params=(b'1',))"
    assert RouteMatch("r", (b"v",)).params == (b"v",)
    assert MethodNotAllowed(b"GET").allow == b"GET"


def test_adding_after_matching_recompiles() -> None:
    r = Router()
    r.add("a", "/a")
    assert found(r, b"/b") is None
    r.add("b", "/b")
    assert found(r, b"/b") == ("b", ())
    assert found(r, b"/a") == ("a", ())


def test_many_routes() -> None:
    r = Router()
    for i in range(2000):
        r.add(("s", i), f"/svc{i}/items", methods=["GET"])
        r.add(("p", i), f"/svc{i}/items/{{id:int}}", methods=["GET", "PUT"])
    for i in (0, 7, 1999):
        assert found(r, f"/svc{i}/items".encode()) == (("s", i), ())
        assert found(r, f"/svc{i}/items/42".encode()) == (("p", i), (b"42",))
        assert allow(r, f"/svc{i}/items/42".encode(), b"POST") == b"GET, HEAD, PUT"
    assert found(r, b"/svc2000/items") is None
