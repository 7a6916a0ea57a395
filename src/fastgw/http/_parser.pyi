"""HTTP/1.x message parsing with llhttp driven from C (see _http.pyx)."""

from typing import final

@final
class HttpParser:
    """One direction of one connection: requests from a client, or responses from an upstream."""

    def __init__(self, request: bool, max_head: int, max_fields: int, max_target: int = 0) -> None: ...
    fast_path: bool
    """Read the common response without llhttp (on for responses; tests compare with off)."""
    @property
    def is_request(self) -> bool: ...
    @property
    def fast_messages(self) -> int:
        """Messages the fast path read."""
    def parse(self, data: bytes, until_done: bool = False) -> list[tuple[str, object]]:
        """Feed ``data`` and list the events (for tests and tools; the proxy drives it in C);
        ``until_done``: stop at the first message end, as the upstream side does."""
    @property
    def head_pending(self) -> bool:
        """A message began and its head is not complete: for a client, bytes past its response."""
    def expect_no_body(self, head_only: bool = True) -> None:
        """Responses from now on answer HEAD requests (or, with False, not)."""
