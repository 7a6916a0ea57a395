"""The common cache hit, answered in C (hits.pyx)."""

from collections.abc import Callable

from fastgw.hooks import RequestContext, Response, RouteInfo
from fastgw.observe.counters import Counter
from fastgw.plugins.cache.key import KeySpec
from fastgw.plugins.cache.store import Entry, MemoryStore

def hit_response(entry: Entry, now: float) -> Response:
    """The HIT answer of ``entry`` at ``now`` (Age, ``X-Cache: HIT``), made once per second of
    its age and shared by that second's hits."""

class HitPath:
    """The memory cache's common hit, for one plugin instance."""

    def __init__(
        self,
        store: MemoryStore,
        keys: KeySpec,
        authorized: bool,
        route_counts: dict[RouteInfo, tuple[Counter, ...]],
        count: Callable[[RequestContext, int], None],
    ) -> None: ...
    def answer(self, ctx: RequestContext) -> Response | None:
        """The HIT ``Response`` for ``ctx`` (counted), or None: not a plain fresh hit."""
