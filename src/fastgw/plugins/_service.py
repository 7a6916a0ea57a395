"""What the plugins that ask another service about a request share: reading the service's URL and
timeout, reading its answers within a size bound, turning a failed call into the one fault that
answers the client (naming the service), and the JSON refusals they send.

A failed call is the gateway's failure, not the client's: 504 when the service did not answer in
time, 502 when it could not be reached or answered something unusable, each naming the kind of
service; its host and port go to the log only (never its path or query, which may carry secrets).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from fastgw.config.validate import Section, expected, read_duration, read_str
from fastgw.errors import UpstreamFault
from fastgw.hooks import Response
from fastgw.http.wire import error_body

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Service:
    """Where a plugin's service is and how long one call to it may take."""

    kind: str  # how errors name it: "auth service", "introspection endpoint"
    url: str
    address: str  # host and port, for the log only: error bodies never name internal hosts
    timeout: aiohttp.ClientTimeout

    def fault(self, error: BaseException) -> UpstreamFault:
        """The answer to a call that failed with ``error`` (a timeout or a client error)."""
        if isinstance(error, TimeoutError):
            return UpstreamFault(
                f"{self.kind} did not answer within {self.timeout.total:g}s", 504, self.address
            )
        if isinstance(error, (aiohttp.ClientConnectorError, OSError)):
            return UpstreamFault(f"{self.kind} is unreachable", 502, self.address)
        return UpstreamFault(f"{self.kind} gave no usable answer", 502, self.address)  # reset, malformed, ...

    def bad_answer(self, what: str) -> UpstreamFault:
        return UpstreamFault(f"{self.kind} {what}", 502, self.address)


# What a call can fail with: aiohttp's errors (refused, reset, malformed) and its timeouts.
CALL_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


def read_url(value: object, path: str) -> str:
    text = read_str(value, path)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        raise expected(path, "an http:// or https:// URL", value) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not text.isprintable() or " " in text:
        raise expected(path, "an http:// or https:// URL", value)
    return text


def authority(url: str) -> str:
    """``host:port`` of an http(s) URL, with the scheme's default port when it names none."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def read_service(section: Section, kind: str) -> Service:
    """The ``url`` (required) and ``timeout`` (default 5s) keys of a plugin's options."""
    url = section.require("url", read_url)
    timeout = section.get("timeout", read_duration()) or DEFAULT_TIMEOUT
    # total covers the whole call: waiting for a pooled connection, connecting, and the answer.
    return Service(kind, url, authority(url), aiohttp.ClientTimeout(total=timeout))


async def read_bounded(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of an answer's body (the rest is left unread)."""
    body = bytearray()
    while len(body) < limit:
        data = await answer.content.read(limit - len(body))
        if not data:
            break
        body += data
    return bytes(body)


def refusal(status: int, message: str, request_id: bytes, challenge: bytes | None = None) -> Response:
    """A 401/403 in the gateway's error shape, with its ``WWW-Authenticate`` challenge if any."""
    headers = [(b"WWW-Authenticate", challenge)] if challenge else []
    return Response(status, error_body(message, request_id), headers)
