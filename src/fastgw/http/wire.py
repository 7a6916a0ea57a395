"""Bytes on the wire: precomputed status lines, header names, and the one error renderer.

PERF: nothing here formats per request on the proxied path; status lines and fixed header lines
are built at import time, the Date line once a second by the clock.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

from fastgw.http.faults import HttpFault


def _reason(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode()
    except ValueError:
        return b"Unknown"


STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code)) for code in range(100, 600)
}

CRLF = b"\r\n"
COLON_SP = b": "
CONNECTION_CLOSE = b"Connection: close\r\n"
CONNECTION_KEEP_ALIVE = b"Connection: keep-alive\r\n"
TRANSFER_CHUNKED = b"Transfer-Encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

# Hop-by-hop headers (RFC 9110 section 7.6.1), plus the ones the gateway owns and re-creates:
# framing (content-length, transfer-encoding), host, expect. Lower-case.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


# RFC 9110 9.2.2: methods whose intended effect is the same however often a request is sent.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def render_answer_head(
    status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The status line and header lines of a response made by the gateway itself (errors,
    answers from hooks), without the final CRLF: Content-Type (an empty ``content_type`` sends
    none: a stored response that had none), Content-Length (none for a 204 or 304, RFC 9110
    8.6 and 15.3.5: they have no body), then ``headers``. Computed once for a stored response
    served many times (``hooks.Response.head``)."""
    parts = [STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
    if not bodiless(status):
        if content_type:
            parts += (b"Content-Type: ", content_type, CRLF)
        parts.append(b"Content-Length: %d\r\n" % len(body))
    for name, value in headers:
        parts += (name, COLON_SP, value, CRLF)
    return b"".join(parts)


def bodiless(status: int) -> bool:
    """A 204 or 304: no content, whatever body an answer was given."""
    return status == 204 or status == 304


def render_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    close: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
    date_line: bytes = b"",
    head_only: bool = False,
) -> bytes:
    """A complete response made by the gateway itself (see ``render_answer_head``)."""
    parts = [render_answer_head(status, body, content_type, extra or []), date_line]
    if close:
        parts.append(CONNECTION_CLOSE)
    parts.append(CRLF)
    if not head_only and not bodiless(status):
        parts.append(body)
    return b"".join(parts)


def error_body(message: str, request_id: bytes | None) -> bytes:
    doc: dict[str, str] = {"error": message}
    if request_id:
        doc["request_id"] = request_id.decode("ascii", "replace")
    return orjson.dumps(doc) + b"\n"


def render_error(
    fault: HttpFault,
    request_id: bytes | None = None,
    *,
    close: bool | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
    date_line: bytes = b"",
    head_only: bool = False,
    request_id_header: bytes = b"X-Request-Id",
) -> bytes:
    """The one function that turns a failure into a response: small JSON naming the cause."""
    headers = list(extra) if extra else []
    if request_id:
        headers.append((request_id_header, request_id))
    return render_response(
        fault.status,
        error_body(fault.message, request_id),
        close=fault.close if close is None else close,
        extra=headers,
        date_line=date_line,
        head_only=head_only,
    )
