"""forward_auth: ask an auth service whether each request may pass (as Traefik's ForwardAuth or
nginx's auth_request).

For each request the gateway sends ``GET <url>`` to the auth service with the request's headers
(all, or the listed ``request_headers``; never hop-by-hop or framing ones) and what it knows
about the request: X-Forwarded-Method, -Proto and -Host (``ctx.forwarded_proto`` and
``ctx.forwarded_host``: a trusted proxy's, else ``http`` and the request's Host), -Uri
(normalized path and query), -For (the client's address, ``ctx.client_ip``) and X-Request-Id.
The client's own copies of those are replaced, so the auth service sees what the gateway saw.

- A 2xx answer lets the request through. The ``upstream_headers`` it carries are copied onto the
  upstream request, and the client's copies of those names are always dropped, whether the
  answer carries them or not, so a client cannot forge them. ``consumer_header`` names the
  answer header whose value becomes ``ctx.consumer``.
- Any other answer goes back to the client as the auth service gave it: status, the listed
  ``deny_headers`` (WWW-Authenticate, Location, Set-Cookie by default), its Content-Type, and
  at most ``max_body`` bytes of its body.
- A request with two Authorization headers is refused with 400 without asking.
- No answer within ``timeout`` is a 504, an unreachable service a 502, both naming the auth
  service. ``unsafe_fail_open`` lets the request through instead, with no identity.

With ``cache``, allow decisions (the headers to copy and the consumer) are kept ``ttl`` seconds
per plugin instance, keyed by the values of ``cache.key_headers``: a cached decision holds for
any request with the same values, whatever its path or method. Refusals are never cached.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp

from fastgw.config.validate import Section, expected, read_bool, read_duration, read_int, read_list, read_size
from fastgw.control_http import control_session
from fastgw.hooks import HookResult, Plugin, RequestContext, Response, register_plugin
from fastgw.http.wire import HOP_BY_HOP
from fastgw.plugins._credentials import CredentialHeader
from fastgw.plugins._service import CALL_ERRORS, Service, read_bounded, read_service
from fastgw.plugins._ttlcache import TTLCache

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.1 field-name

# Request headers never sent to the auth service: hop-by-hop and framing ones (there is no body),
# the ones the gateway writes itself from what it knows, and Accept-Encoding (the client's may
# name a coding the gateway's client cannot decode; it asks for what it can).
_FORWARDED = (b"x-forwarded-method", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-uri")
_NOT_SENT = HOP_BY_HOP | {
    b"host", b"content-length", b"expect", b"accept-encoding", b"x-forwarded-for", b"x-request-id",
    *_FORWARDED,
}  # fmt: skip

# Answer headers the gateway writes itself when it passes a refusal on.
_OWN_RESPONSE_HEADERS = HOP_BY_HOP | {b"content-type", b"content-length", b"x-request-id", b"date"}

DEFAULT_DENY_HEADERS = (b"www-authenticate", b"location", b"set-cookie")
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_CACHE_ENTRIES = 10_000

AUTHORIZATION = CredentialHeader("Authorization")

_OPTIONS = (
    "url", "timeout", "request_headers", "upstream_headers", "consumer_header", "deny_headers",
    "max_body", "unsafe_fail_open", "cache",
)  # fmt: skip
_CACHE_OPTIONS = ("ttl", "key_headers", "max_entries")


def read_header_name(value: object, path: str) -> bytes:
    """A header field name, lower-cased."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise expected(path, "a header name like 'X-Auth-User'", value)
    return value.lower().encode("ascii")


read_header_names = read_list(read_header_name, single=True)


@dataclass(frozen=True, slots=True)
class CacheOptions:
    ttl: float
    key_headers: tuple[bytes, ...]
    max_entries: int = DEFAULT_CACHE_ENTRIES


@dataclass(frozen=True, slots=True)
class ForwardAuthOptions:
    service: Service
    request_headers: frozenset[bytes] | None = None  # None: all of them
    upstream_headers: tuple[bytes, ...] = ()
    consumer_header: bytes | None = None
    deny_headers: frozenset[bytes] = frozenset(DEFAULT_DENY_HEADERS)
    max_body: int = DEFAULT_MAX_BODY
    unsafe_fail_open: bool = False
    cache: CacheOptions | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """An allow decision: the header lines to add upstream, and who the request is from."""

    headers: tuple[tuple[bytes, bytes], ...]
    consumer: str | None


def read_cache(value: object, path: str) -> CacheOptions:
    section = Section(value, path, _CACHE_OPTIONS, required=("ttl", "key_headers"))
    key_headers = section.require("key_headers", read_list(read_header_name, non_empty=True, single=True))
    return CacheOptions(
        ttl=section.require("ttl", read_duration()),
        key_headers=key_headers,
        max_entries=section.get("max_entries", read_int(1)) or DEFAULT_CACHE_ENTRIES,
    )


def read_deny_header(value: object, path: str) -> bytes:
    name = read_header_name(value, path)
    if name in _OWN_RESPONSE_HEADERS:
        raise expected(path, "a header the gateway does not write itself", value)
    return name


def read_options(options: Mapping[str, Any], key_path: str) -> ForwardAuthOptions:
    section = Section(options, key_path, _OPTIONS, required=("url",))
    deny_headers = section.get("deny_headers", read_list(read_deny_header, single=True))
    request_headers = section.get("request_headers", read_header_names)
    return ForwardAuthOptions(
        service=read_service(section, "auth service"),
        request_headers=frozenset(request_headers) if request_headers is not None else None,
        upstream_headers=section.get("upstream_headers", read_header_names) or (),
        consumer_header=section.get("consumer_header", read_header_name),
        deny_headers=frozenset(deny_headers) if deny_headers is not None else frozenset(DEFAULT_DENY_HEADERS),
        max_body=section.get("max_body", read_size) or DEFAULT_MAX_BODY,
        unsafe_fail_open=bool(section.get("unsafe_fail_open", read_bool)),
        cache=section.get("cache", read_cache),
    )


@register_plugin
class ForwardAuth(Plugin):
    name: ClassVar[str] = "forward_auth"

    def __init__(self, options: ForwardAuthOptions) -> None:
        self.options = options
        self.service = options.service
        cache = options.cache
        self.cache: TTLCache[tuple[bytes | None, ...], Grant] | None = (
            TTLCache(cache.max_entries) if cache else None
        )
        self.cache_ttl = cache.ttl if cache else 0.0
        self.cache_key_headers = cache.key_headers if cache else ()
        # Counters, for metrics and tests.
        self.calls = 0
        self.failures = 0

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls(read_options(options, key_path))

    def on_request(self, ctx: RequestContext) -> HookResult:
        credentials = AUTHORIZATION.read(ctx)
        if isinstance(credentials, Response):
            return credentials  # two: the auth service might judge one, the upstream read the other
        key = None
        if self.cache is not None:
            key = self._cache_key(ctx)
            grant = self.cache.get(key) if key is not None else None
            if grant is not None:
                self._admit(ctx, grant)
                return None
        return self._ask(ctx, key)

    def _cache_key(self, ctx: RequestContext) -> tuple[bytes | None, ...] | None:
        """The values of the cache's key headers, or None when the request has none of them
        (a request without credentials is never answered from the cache)."""
        key = tuple(ctx.header(name) for name in self.cache_key_headers)
        return key if any(value is not None for value in key) else None

    def _admit(self, ctx: RequestContext, grant: Grant) -> None:
        for name in self.options.upstream_headers:
            ctx.remove_request_header(name)
        for name, value in grant.headers:
            ctx.add_request_header(name, value)
        if grant.consumer is not None:
            ctx.consumer = grant.consumer

    async def _ask(self, ctx: RequestContext, key: tuple[bytes | None, ...] | None) -> Response | None:
        self.calls += 1
        try:
            async with control_session().get(
                self.service.url,
                headers=self._auth_request_headers(ctx),
                allow_redirects=False,
                timeout=self.service.timeout,
            ) as answer:
                if 200 <= answer.status < 300:
                    await read_bounded(answer, self.options.max_body)  # so the connection is reused
                    grant = self._grant(answer)
                else:
                    return await self._refusal(answer)
        except CALL_ERRORS as error:
            self.failures += 1
            if not self.options.unsafe_fail_open:
                raise self.service.fault(error) from None
            grant = Grant((), None)  # let it through, but with nothing a client could have forged
        else:
            if key is not None and self.cache is not None:
                self.cache.put(key, grant, self.cache_ttl)
        self._admit(ctx, grant)
        return None

    def _auth_request_headers(self, ctx: RequestContext) -> list[tuple[str, str]]:
        chosen = self.options.request_headers
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in ctx.headers
            if (lower := name.lower()) not in _NOT_SENT and (chosen is None or lower in chosen)
        ]
        headers += [
            ("X-Forwarded-Method", ctx.method.decode("latin-1")),
            ("X-Forwarded-Proto", ctx.forwarded_proto.decode("latin-1")),
            ("X-Forwarded-Host", ctx.forwarded_host.decode("latin-1")),
            ("X-Forwarded-Uri", (ctx.path + ctx.query).decode("latin-1")),
            ("X-Forwarded-For", ctx.client_ip),
            ("X-Request-Id", ctx.request_id.decode("latin-1")),
        ]
        return headers

    def _grant(self, answer: aiohttp.ClientResponse) -> Grant:
        wanted = self.options.upstream_headers
        consumer_header = self.options.consumer_header
        headers = []
        consumer = None
        for name, value in answer.raw_headers:
            lower = name.lower()
            if lower in wanted:
                headers.append((name, value))
            if lower == consumer_header and consumer is None:
                consumer = value.decode("latin-1")
        return Grant(tuple(headers), consumer)

    async def _refusal(self, answer: aiohttp.ClientResponse) -> Response:
        """The auth service's refusal as the client's answer: its status, chosen headers, body."""
        body = await read_bounded(answer, self.options.max_body)
        deny = self.options.deny_headers
        headers = [(name, value) for name, value in answer.raw_headers if name.lower() in deny]
        content_type = next(
            (value for name, value in answer.raw_headers if name.lower() == b"content-type"), b"text/plain"
        )
        return Response(answer.status, body, headers, content_type)
