"""What the cache keeps, and the common cache hit answered in C (hits.pyx)."""

from collections.abc import Callable

from fastgw.hooks import RequestContext, Response, RouteInfo
from fastgw.observe.counters import Counter
from fastgw.plugins.cache.key import KeySpec
from fastgw.plugins.cache.store import MemoryStore

ENTRY_OVERHEAD: int

class Entry:
    """A stored response: everything a hit needs to answer without the upstream."""

    status: int
    headers: list[tuple[bytes, bytes]]
    """Without framing, Date, Age, Content-Type and the gateway's own."""
    content_type: bytes
    """b"" when the upstream sent none."""
    body: bytes
    stored_at: float
    fresh_until: float
    stale_until: float
    """>= fresh_until: served STALE until then."""
    initial_age: int
    """The upstream's Age when stored."""
    size: int
    """Bytes counted for it in a zone."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        content_type: bytes,
        body: bytes,
        stored_at: float,
        fresh_until: float,
        stale_until: float,
        initial_age: int,
    ) -> None: ...
    def age(self, now: float) -> int:
        """The upstream's Age when stored plus whole seconds since (RFC 9111 5.1)."""
    def age_field(self, now: float) -> tuple[bytes, bytes]:
        """``(b"Age", value)`` at ``now``, made once per second of age."""
    def head(self) -> bytes:
        """Its status line, Content-Type, Content-Length and stored headers as HTTP/1.1 lines
        (``hooks.Response.head``), rendered at its first hit."""

class VaryRecord:
    """Under a base key: the response varies by these request headers (lower-case, sorted)."""

    names: tuple[bytes, ...]
    stale_until: float
    """As long as the newest variant it led to."""

    def __init__(self, names: tuple[bytes, ...], stale_until: float) -> None: ...
    @property
    def size(self) -> int: ...

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
