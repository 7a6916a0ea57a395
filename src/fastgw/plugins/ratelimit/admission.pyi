"""A rate limit counted in this process, answered in C, and its response fields (admission.pyx)."""

from collections.abc import Callable
from typing import Any

from fastgw.plugins.ratelimit.algorithms import LocalLimiter

Headers = list[tuple[bytes, bytes]]

class HeaderRenderer:
    """Renders the chosen header styles for one policy (the constant parts encoded once)."""

    def __init__(self, name: str, limit: int, window: int, styles: tuple[str, ...]) -> None: ...
    def __bool__(self) -> bool: ...
    def render(self, remaining: int, reset: int, into: Headers) -> Headers:
        """Append the fields for ``remaining`` requests left and ``reset`` seconds to ``into``."""
    def tell(self, ctx: Any, remaining: int, reset: int) -> None:
        """Add the fields for an admitted request to the exchange's response headers."""

class LocalAdmission:
    """The ``on_request`` hook of a rate limit counted in this process."""

    def __init__(
        self,
        limiter: LocalLimiter,
        key_of: Callable[[Any], bytes],
        headers: HeaderRenderer,
        refuse: Callable[[Any, float], Any],
        bypass: Any,
    ) -> None: ...
    def __call__(self, ctx: Any) -> Any: ...
