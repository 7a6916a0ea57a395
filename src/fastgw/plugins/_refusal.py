"""The small JSON answer a plugin sends when it refuses a request (403, 429, 503, ...).

Its body has the gateway's error shape, ``{"error": "...", "request_id": "..."}``. The message is
encoded once at compile time; per request only the id is spliced in (ids are hex, so they need no
escaping).
"""

from __future__ import annotations

import json

from fastgw.hooks import RequestContext, Response


class Refusal:
    """A compiled refusal: ``refusal.response(ctx, headers)`` makes one Response."""

    __slots__ = ("_head", "body", "content_type", "status")

    def __init__(
        self, status: int, message: str, body: bytes | None = None, content_type: bytes = b"application/json"
    ) -> None:
        self.status = status
        self.content_type = content_type
        # A configured body is sent as is; otherwise the error shape with the request id.
        self.body = body
        self._head = json.dumps({"error": message})[:-1].encode() + b', "request_id": "'

    def response(self, ctx: RequestContext, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
        body = self.body if self.body is not None else self._head + ctx.request_id + b'"}'
        return Response(self.status, body, headers if headers is not None else [], self.content_type)
