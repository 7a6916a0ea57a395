"""A slow, obviously correct router with the semantics of ``fastgw._router``. Tests only.

No tree: ``match`` tries every route of a host tree against the path segment by segment, ranks
the matching path shapes (per segment: static < int < hex < uuid < alpha < alnum < {name} <
catch-all, compared left to right), and takes the first candidate, in candidate order, of the
best-ranked shape that has one. The compiled router must agree with it exactly.

Conflicts, between routes of the same host entry and overlapping methods: the same segments with
the same priority and predicate key; or segments that are, position by position, equal or two
constraints accepting a common segment (found by trying ``SAMPLES`` against both patterns), when
the route ranked first has no predicate or the same predicate key as the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from fastgw._router import RouteConflict

STATIC, CATCHALL = 0, 7
CONSTRAINTS = {"int": 1, "hex": 2, "uuid": 3, "alpha": 4, "alnum": 5, None: 6}
PATTERNS = {
    1: re.compile(rb"[0-9]+"),
    2: re.compile(rb"[0-9a-fA-F]+"),
    3: re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
    4: re.compile(rb"[A-Za-z]+"),
    5: re.compile(rb"[A-Za-z0-9]+"),
    6: re.compile(rb"[^/]+"),
}
# int, hex, alpha and alnum are each one character class repeated; their classes are unions of
# digits, a-f and g-z (either case). So two of them accept a common segment exactly when one of
# "0", "a", "g" fits both. A uuid is accepted by no other pattern ('-'), so a uuid sample is all
# it needs.
SAMPLES = (b"0", b"a", b"g", b"A", b"G", b"0123abcd-0123-4567-89ab-0123456789ab")
PARAM = re.compile(r"\{(\*?)([^{}:]*)(?::([^{}]*))?\}")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class RefMatch:
    route: object
    params: tuple[bytes, ...]


@dataclass(frozen=True)
class RefNotAllowed:
    allow: bytes


@dataclass(frozen=True)
class Segment:
    rank: int  # STATIC, a constraint rank, or CATCHALL
    text: bytes = b""  # static text


@dataclass
class RefRoute:
    route: object
    template: str
    segments: tuple[Segment, ...]
    methods: frozenset[str] | None
    host: str | None
    priority: int
    predicate: Callable[[object], object] | None
    predicate_key: Hashable
    seq: int


def parse(template: str) -> tuple[tuple[Segment, ...], tuple[str, ...]]:
    if not template.startswith("/"):
        raise ValueError(f"route template {template!r} must start with '/'")
    raw = template[1:].split("/")
    segments: list[Segment] = []
    names: list[str] = []
    for index, text in enumerate(raw):
        if "{" not in text and "}" not in text:
            segments.append(Segment(STATIC, text.encode()))
            continue
        m = PARAM.fullmatch(text)
        if m is None:
            raise ValueError(f"route template {template!r}: bad segment {text!r}")
        star, name, constraint = m.groups()
        if star:
            if constraint is not None or index != len(raw) - 1:
                raise ValueError(f"route template {template!r}: bad catch-all {text!r}")
            rank = CATCHALL
        elif constraint not in CONSTRAINTS:
            raise ValueError(f"route template {template!r}: unknown constraint {constraint!r}")
        else:
            rank = CONSTRAINTS[constraint]
        if not name.isidentifier() or name in names:
            raise ValueError(f"route template {template!r}: bad parameter name {name!r}")
        segments.append(Segment(rank))
        names.append(name)
    return tuple(segments), tuple(names)


def match_segments(segments: tuple[Segment, ...], path: bytes) -> tuple[bytes, ...] | None:
    """Parameter values if the path fits the template, else None."""
    parts = path[1:].split(b"/")
    values: list[bytes] = []
    for index, seg in enumerate(segments):
        if seg.rank == CATCHALL:
            if len(parts) <= index:
                return None
            values.append(b"/".join(parts[index:]))
            return tuple(values)
        if index >= len(parts):
            return None
        if seg.rank == STATIC:
            if parts[index] != seg.text:
                return None
        elif PATTERNS[seg.rank].fullmatch(parts[index]) is None:
            return None
        else:
            values.append(parts[index])
    return tuple(values) if len(parts) == len(segments) else None


def overlap(mine: tuple[Segment, ...], theirs: tuple[Segment, ...]) -> bool:
    """Does some path fit both templates at the same rank (the same shape, or constraints that
    share a segment where they differ)?"""
    if len(mine) != len(theirs):
        return False
    for a, b in zip(mine, theirs, strict=True):
        if a == b:
            continue
        if a.rank not in PATTERNS or b.rank not in PATTERNS or CONSTRAINTS[None] in (a.rank, b.rank):
            return False
        if not any(PATTERNS[a.rank].fullmatch(s) and PATTERNS[b.rank].fullmatch(s) for s in SAMPLES):
            return False
    return True


def allow_of(methods: set[str]) -> bytes:
    if "GET" in methods:
        methods = methods | {"HEAD"}
    return ", ".join(sorted(methods)).encode()


class ReferenceRouter:
    def __init__(self) -> None:
        self.routes: list[RefRoute] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(
        self,
        route: object,
        path: str,
        methods: Sequence[str] | None = None,
        hosts: Sequence[str] = (),
        priority: int = 0,
        predicate: Callable[[object], object] | None = None,
        predicate_key: Hashable = None,
    ) -> tuple[str, ...]:
        segments, names = parse(path)
        method_set = None
        if methods is not None:
            if not methods or not all(TOKEN.fullmatch(m) for m in methods):
                raise ValueError(f"route {path!r}: bad methods {methods!r}")
            method_set = frozenset(m.upper() for m in methods)
        host_keys: list[str | None] = []
        for host in hosts:
            key = host.lower()
            bare = key[2:] if key.startswith("*.") else key
            if not bare or not bare.isascii() or any(c in bare for c in " \t\r\n/\\?#@:*[]"):
                raise ValueError(f"route {path!r}: bad host {host!r}")
            if key not in host_keys:
                host_keys.append(key)
        if predicate is None and predicate_key is not None:
            raise ValueError(f"route {path!r}: predicate_key without predicate")
        if predicate is not None and predicate_key is None:
            predicate_key = predicate
        new = [
            RefRoute(route, path, segments, method_set, key, priority, predicate, predicate_key, self.count)
            for key in host_keys or [None]
        ]
        for r in new:
            for old in self.routes:
                if old.host != r.host or not (
                    old.methods is None or r.methods is None or old.methods & r.methods
                ):
                    continue
                if old.segments == r.segments:
                    clash = old.priority == r.priority and old.predicate_key == r.predicate_key
                else:
                    first, later = sorted((old, r), key=lambda x: [seg.rank for seg in x.segments])
                    clash = overlap(old.segments, r.segments) and first.predicate_key in (
                        None,
                        later.predicate_key,
                    )
                if clash:
                    raise RouteConflict(f"route {path!r} conflicts with route {old.template!r}")
        self.routes.extend(new)
        self.count += 1
        return names

    def match(
        self, method: bytes, host: bytes, path: bytes, request: object = None
    ) -> RefMatch | RefNotAllowed | None:
        keys: list[str | None] = []
        name = host.decode("latin-1")
        if not name.startswith("*.") and name in {r.host for r in self.routes}:
            keys.append(name)
        wild = sorted(
            {r.host for r in self.routes if r.host is not None and r.host.startswith("*.")},
            key=len,
            reverse=True,
        )
        keys += [w for w in wild if name.endswith(w[1:]) and len(name) > len(w) - 1]
        keys.append(None)
        first_405 = None
        for key in keys:
            found = self.match_tree(key, method.decode("latin-1"), path, request)
            if isinstance(found, RefMatch):
                return found
            if found is not None and first_405 is None:
                first_405 = found
        return first_405

    def match_tree(
        self, key: str | None, method: str, path: bytes, request: object
    ) -> RefMatch | RefNotAllowed | None:
        shapes: dict[tuple[Segment, ...], list[RefRoute]] = {}
        values: dict[tuple[Segment, ...], tuple[bytes, ...]] = {}
        for r in self.routes:
            if r.host == key and (found := match_segments(r.segments, path)) is not None:
                shapes.setdefault(r.segments, []).append(r)
                values[r.segments] = found
        allowed: set[str] = set()
        not_allowed = False
        for shape in sorted(shapes, key=lambda s: [seg.rank for seg in s]):
            routes = shapes[shape]
            candidates = self.candidates(routes, method)
            if not candidates:
                not_allowed = True
                for r in routes:
                    allowed |= r.methods or set()
                continue
            for r in candidates:
                if r.predicate is None or r.predicate(request):
                    return RefMatch(r.route, values[shape])
        return RefNotAllowed(allow_of(allowed)) if not_allowed else None

    @staticmethod
    def candidates(routes: list[RefRoute], method: str) -> list[RefRoute]:
        def answers(r: RefRoute, m: str) -> bool:
            return r.methods is None or m in r.methods

        found = [r for r in routes if answers(r, method)]
        if not found and method == "HEAD":
            found = [r for r in routes if answers(r, "GET")]
        return sorted(found, key=lambda r: (-r.priority, r.predicate is None, r.methods is None, r.seq))
