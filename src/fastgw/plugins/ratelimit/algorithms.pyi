"""The per-process limiters: token bucket and sliding window (compiled; see algorithms.pyx)."""

from collections.abc import Hashable

DEFAULT_MAX_KEYS: int

class LocalLimiter:
    """Shared bookkeeping; subclasses define the arithmetic."""

    @property
    def limit(self) -> int: ...
    @property
    def window(self) -> float: ...
    @property
    def max_keys(self) -> int: ...
    @property
    def states(self) -> dict[Hashable, BucketState | WindowState]: ...
    def __init__(self, limit: int, window: float, max_keys: int = ...) -> None: ...
    def hit(self, key: Hashable, now: float) -> int:
        """The requests left after this one, or -1: refused."""
    def admit_for_headers(self, key: Hashable, now: float) -> tuple[int, float]:
        """``hit``, and ``reset_in`` after it from the same lookup (-1.0 when refused)."""
    def reset_in(self, key: Hashable, now: float) -> float:
        """Seconds until the key's quota is whole again."""
    def retry_in(self, key: Hashable, now: float) -> float:
        """Seconds until a refused key is admitted again."""
    def reset_seconds(self, key: Hashable, now: float) -> int:
        """``reset_in`` in whole seconds, rounded up."""
    def is_idle(self, state: BucketState | WindowState, now: float) -> bool:
        """Would forgetting this state change no answer?"""
    def make_room(self, now: float) -> None: ...

class BucketState:
    """A token bucket's key: its tokens at its last update."""

    @property
    def tokens(self) -> float: ...
    @property
    def updated(self) -> float: ...
    def __init__(self, tokens: float, updated: float) -> None: ...

class WindowState:
    """A sliding window's key: its current window's number, the previous and current counts."""

    @property
    def index(self) -> float: ...
    @property
    def previous(self) -> float: ...
    @property
    def current(self) -> float: ...
    def __init__(self, index: float, previous: float, current: float) -> None: ...

class TokenBucket(LocalLimiter): ...
class SlidingWindow(LocalLimiter): ...

def sliding_retry_in(
    start: float, previous: float, current: float, limit: int, window: float, now: float
) -> float:
    """Seconds from ``now`` until ``previous * weight + current + 1 <= limit`` holds again."""

def whole_seconds(seconds: float) -> int:
    """A delay in whole seconds, rounded up."""
