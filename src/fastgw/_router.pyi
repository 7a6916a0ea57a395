"""The route table: a Cython byte-level radix tree (see the theory of operation in _router.pyx)."""

from collections.abc import Callable, Hashable, Sequence
from typing import final

@final
class RouteConflict(ValueError):
    """Two routes would answer the same request: same host, path shape, method and priority."""

class RouteMatch:
    """A route was found: the object given to ``Router.add`` and its parameter values."""

    def __init__(self, route: object, params: tuple[bytes, ...] = ()) -> None: ...
    @property
    def route(self) -> object:
        """The opaque ``route`` object passed to ``Router.add``."""
    @property
    def params(self) -> tuple[bytes, ...]:
        """Parameter values (raw path bytes), aligned with the names ``Router.add`` returned."""

@final
class MethodNotAllowed:
    """The path exists but not for this method: answer 405 with this ``Allow`` value."""

    def __init__(self, allow: bytes) -> None: ...
    @property
    def allow(self) -> bytes:
        """Allowed methods, sorted and comma+space separated, e.g. ``b"GET, HEAD, POST"``.

        HEAD is included whenever GET is. Built before any request; shared between matches.
        """

class Router:
    """Routes requests by method, host and path.

    Build it with ``add`` (all the work happens there and in the first ``match`` after a
    change), then call ``match`` per request; ``match`` allocates only its result.
    """

    def __init__(self) -> None: ...
    def add(
        self,
        route: object,
        path: str,
        methods: Sequence[str] | None = None,
        hosts: Sequence[str] = (),
        priority: int = 0,
        predicate: Callable[[object], bool] | None = None,
        predicate_key: Hashable = None,
    ) -> tuple[str, ...]:
        """Insert a route; return its parameter names in path order.

        ``path`` is a template starting with ``/``. Each segment is static text, a parameter
        ``{name}`` (a whole non-empty segment), ``{name:int|hex|uuid|alpha|alnum}`` (constrained),
        or, as the last segment only, ``{*name}`` (the rest of the path, possibly empty, without
        its leading ``/``). Static text is matched as UTF-8 bytes; a trailing ``/`` is significant.

        ``methods=None`` answers any method; names are upper-cased. A HEAD request uses the GET
        routes of a path that has no HEAD route and no any-method route. ``hosts=()`` answers any
        host; entries are exact names (lower-cased, no port) or ``*.suffix`` (any subdomain depth,
        not the suffix itself). Among the routes of one path shape and host, candidates are tried
        by higher ``priority``, then with a ``predicate`` before without, then listing the method
        before ``methods=None``, then first added. ``predicate(request)`` is called at match time
        and the route is taken only if it returns a truthy value.

        ``predicate_key`` identifies the predicate for conflict checks; it defaults to the
        predicate itself, and must be None when there is no predicate.

        Raises ValueError (naming the template) for a malformed template, method or host, and
        ``RouteConflict`` when a route with the same host entry, priority and predicate key has an
        overlapping method set and the same path shape (names ignored) or one that differs only
        in constraints accepting a common segment: int, hex and alnum overlap pairwise, alpha
        overlaps hex (``abc``) and alnum, uuid overlaps none. A failed add changes nothing.
        """
    def match(
        self, method: bytes, host: bytes, path: bytes, request: object = None
    ) -> RouteMatch | MethodNotAllowed | None:
        """Find the route for a request.

        ``host`` is lower-cased without port (``b""`` when absent); ``path`` is normalized and
        percent-decoded (an encoded slash stays ``%2F`` and is ordinary text). At each segment a
        static segment beats a constrained parameter (int, hex, uuid, alpha, alnum, in that
        order), which beats ``{name}``, which beats a catch-all; when a branch yields no route
        the next one is tried. Host trees are tried exact, then wildcards from the longest
        suffix, then any host; the first route found wins.

        Returns the ``RouteMatch``, else the ``MethodNotAllowed`` of the first host tree where
        the path exists for other methods only (its Allow is the union over that tree's
        matching paths), else None. An exception raised by a predicate propagates.
        """
    def __len__(self) -> int:
        """The number of successful ``add`` calls."""

def template_params(template: str) -> tuple[str, ...]:
    """The parameter names of a route template, in order (ValueError naming what is wrong)."""
