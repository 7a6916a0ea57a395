"""HTTP/1.x message parsing with llhttp driven from C (see _http.pyx)."""

from typing import final

@final
class HttpParser:
    """One direction of one connection: requests from a client, or responses from an upstream."""

    def __init__(self, request: bool, max_head: int, max_fields: int, max_target: int = 0) -> None: ...
    @property
    def is_request(self) -> bool: ...
    def parse(self, data: bytes) -> list[tuple[str, object]]:
        """Feed ``data`` and list the events (for tests and tools; the proxy drives it in C)."""
    @property
    def head_pending(self) -> bool:
        """A message began and its head is not complete: for a client, bytes past its response."""
    def expect_no_body(self) -> None:
        """The next response answers a HEAD request."""
