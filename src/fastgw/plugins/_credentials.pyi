"""The verified-credentials cache, the header a credential comes in, and a token check's compiled
hit path (_credentials.pyx)."""

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fastgw.hooks import HookResult, RequestContext, Response

V = TypeVar("V")

class ExpiringCache(Generic[V]):
    """At most ``max_entries`` values, each until its own expiry (``time.time()`` seconds)."""

    @property
    def entries(self) -> dict[Any, tuple[float, V]]: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def ttl(self) -> float: ...
    def __init__(self, max_entries: int, ttl: float) -> None: ...
    def get(self, key: Any) -> V | None:
        """The value kept for ``key``, or None (never kept, or expired)."""
    def put(self, key: Any, value: V, not_after: float | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds, never past ``not_after``."""

class CredentialHeader:
    """The request header a credential comes in, refused when a request carries it twice."""

    @property
    def name(self) -> bytes:
        """Lower-case."""
    def __init__(self, name: str, challenge: bytes | None = None) -> None: ...
    def read(self, ctx: RequestContext) -> bytes | Response | None:
        """The header's value; None when the request has none; the 400 when it has more than one."""
    def refuse(self, ctx: RequestContext) -> Response:
        """The 400 for a request with more than one line of the header."""

class CachedTokenCheck:
    """An ``on_request`` hook: a token seen before is one lookup; others go to ``check``."""

    def __init__(
        self,
        credential: CredentialHeader,
        cache: ExpiringCache[Any],
        absent: Callable[[RequestContext], HookResult],
        check: Callable[[RequestContext, bytes], HookResult],
        forward: bool,
    ) -> None: ...
    def __call__(self, ctx: RequestContext) -> HookResult: ...
    def run(self, ctx: RequestContext) -> HookResult:
        """The hook (what the plugin installs: a bound method is called without an args tuple)."""
