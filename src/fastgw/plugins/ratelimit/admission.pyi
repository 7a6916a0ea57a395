"""A rate limit counted in this process, answered in C, and its response fields (admission.pyx)."""

from collections.abc import Callable

from fastgw.hooks import RequestContext, Response
from fastgw.plugins.ratelimit.algorithms import LocalLimiter
from fastgw.plugins.ratelimit.plugin import Bypass

Headers = list[tuple[bytes, bytes]]

class HeaderRenderer:
    """Renders the chosen header styles for one policy (the constant parts encoded once)."""

    def __init__(self, name: str, limit: int, window: int, styles: tuple[str, ...]) -> None: ...
    def __bool__(self) -> bool: ...
    def render(self, remaining: int, reset: int, into: Headers) -> Headers:
        """Append the fields for ``remaining`` requests left and ``reset`` seconds to ``into``."""
    def tell(self, ctx: RequestContext, remaining: int, reset: int) -> None:
        """Add the fields for an admitted request to the exchange's response headers."""

class LocalAdmission:
    """The ``on_request`` hook of a rate limit counted in this process."""

    def __init__(
        self,
        limiter: LocalLimiter,
        key_of: Callable[[RequestContext], bytes],
        headers: HeaderRenderer,
        refuse: Callable[[RequestContext, float], Response],
        bypass: Bypass | None,
    ) -> None: ...
    def __call__(self, ctx: RequestContext) -> Response | None: ...
    def admit(self, ctx: RequestContext) -> Response | None:
        """The hook (what the plugin installs: a bound method is called without an args tuple)."""
