"""introspection: accept a request only with a bearer token its authorization server says is
active, asking it by OAuth 2.0 Token Introspection (RFC 7662).

Theory of operation, per request:

1. The token comes from ``Authorization: Bearer <token>`` (RFC 6750 2.1). None there: 401 with
   a bare ``WWW-Authenticate: Bearer`` challenge (RFC 6750 3.1: no error code when the request
   carried no credentials); a malformed one, or two Authorization headers: 400
   ``error="invalid_request"``.
2. The cache is asked first, keyed by the token's SHA-256 (tokens themselves are not kept).
3. Otherwise the endpoint is asked: ``POST url`` with ``token=...&token_type_hint=access_token``,
   the gateway authenticated as an OAuth client (RFC 7662 2.1) with HTTP Basic or in the body
   (``client_auth``; RFC 6749 2.3.1, both form-encoded first). Concurrent requests with the same
   uncached token wait for that one call. Anything but a 200 with a JSON object holding a
   boolean ``active`` is the endpoint's failure: 502 (504 when it did not answer in time).
4. ``active: false``, or an ``exp`` already past, or an ``nbf`` still ahead: 401
   ``error="invalid_token"``. Active, but short of a ``required_scopes`` entry: 403
   ``error="insufficient_scope"``. Otherwise ``ctx.claims`` is the answer and ``ctx.consumer``
   its ``sub`` (or ``client_id``), and the request goes on.

Cache (bounded by count, least recently used evicted first): an active answer is kept until the
token's ``exp`` and at most ``cache.max_ttl``; an inactive one ``cache.negative_ttl``, so a burst
of requests with a revoked or made-up token costs one call, yet a token issued moments later is
seen soon. A ttl of 0 turns that half of the cache off.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlencode

import orjson

from fastgw.config.validate import (
    Section,
    expected,
    read_duration,
    read_int,
    read_list,
    read_one_of,
    read_str,
)
from fastgw.control_http import control_session
from fastgw.errors import UpstreamFault
from fastgw.hooks import HookResult, Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._credentials import CredentialHeader
from fastgw.plugins._service import CALL_ERRORS, Service, read_bounded, read_service, refusal
from fastgw.plugins._ttlcache import TTLCache

# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 3.3 scope-token
_REALM = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # inside a quoted-string, nothing to escape

MAX_ANSWER = 64 * 1024  # an introspection answer is a small JSON object
DEFAULT_CACHE_ENTRIES = 10_000
DEFAULT_MAX_TTL = 60.0
DEFAULT_NEGATIVE_TTL = 5.0

_OPTIONS = (
    "url", "timeout", "client_id", "client_secret", "client_auth", "required_scopes", "realm", "cache",
)  # fmt: skip
_CACHE_OPTIONS = ("max_entries", "max_ttl", "negative_ttl")


@dataclass(frozen=True, slots=True)
class IntrospectionOptions:
    service: Service
    client_id: str
    client_secret: str
    client_auth: str = "basic"  # or "body"
    required_scopes: tuple[str, ...] = ()
    realm: str | None = None
    max_entries: int = DEFAULT_CACHE_ENTRIES
    max_ttl: float = DEFAULT_MAX_TTL
    negative_ttl: float = DEFAULT_NEGATIVE_TTL


@dataclass(frozen=True, slots=True)
class Introspected:
    """What the endpoint said about one token."""

    active: bool
    claims: Mapping[str, Any]
    scopes: frozenset[str] = frozenset()
    consumer: str | None = None


INACTIVE = Introspected(False, {})


def read_scope(value: object, path: str) -> str:
    if not isinstance(value, str) or not _SCOPE_TOKEN.fullmatch(value):
        raise expected(path, "a scope like 'orders:read' (no spaces or quotes)", value)
    return value


def read_realm(value: object, path: str) -> str:
    text = read_str(value, path)
    if not _REALM.fullmatch(text):
        raise expected(path, "printable text without '\"' or '\\'", value)
    return text


def read_options(options: Mapping[str, Any], key_path: str) -> IntrospectionOptions:
    section = Section(options, key_path, _OPTIONS, required=("url", "client_id", "client_secret"))
    fields = section.read(
        {
            "client_id": read_str,
            "client_secret": read_str,
            "client_auth": read_one_of("a client authentication method", ("basic", "body")),
            "required_scopes": read_list(read_scope, single=True),
            "realm": read_realm,
        }
    )
    if "cache" in section.items:
        cache = Section(section.items["cache"], section.at("cache"), _CACHE_OPTIONS)
        fields |= cache.read(
            {
                "max_entries": read_int(1),
                "max_ttl": read_duration(allow_zero=True),
                "negative_ttl": read_duration(allow_zero=True),
            }
        )
    return IntrospectionOptions(service=read_service(section, "introspection endpoint"), **fields)


def bearer_token(ctx: RequestContext) -> bytes | Response | None:
    """The request's bearer token, None when it has none, or the 400 for a malformed one."""
    value = _AUTHORIZATION.read(ctx)
    if value is None or isinstance(value, Response):
        return value
    match = _BEARER.fullmatch(value)
    if match is not None:
        return match[1]
    if value.split(b" ", 1)[0].lower() == b"bearer":
        return refusal(400, "malformed bearer token", ctx.request_id, _INVALID_REQUEST)
    return None  # another scheme: no bearer token


def challenge(realm: str | None, *params: str) -> bytes:
    """A ``WWW-Authenticate: Bearer`` challenge (RFC 6750 3)."""
    parts = [f'realm="{realm}"', *params] if realm else list(params)
    return ("Bearer " + ", ".join(parts)).rstrip().encode()


_INVALID_REQUEST = challenge(None, 'error="invalid_request"')
_AUTHORIZATION = CredentialHeader("Authorization", _INVALID_REQUEST)


@register_plugin
class Introspection(Plugin):
    name: ClassVar[str] = "introspection"

    def __init__(self, options: IntrospectionOptions) -> None:
        self.options = options
        self.service = options.service
        self.cache: TTLCache[bytes, Introspected] = TTLCache(options.max_entries)
        # One call per uncached token at a time: the others wait for it (token hash -> call).
        self.in_flight: dict[bytes, asyncio.Future[Introspected]] = {}
        self.headers, self.credentials = self._client_authentication()
        realm, scope = options.realm, " ".join(options.required_scopes)
        self.challenge = challenge(realm)
        self.invalid_token = challenge(realm, 'error="invalid_token"')
        self.insufficient_scope = challenge(realm, 'error="insufficient_scope"', f'scope="{scope}"')
        # Counters, for metrics and tests.
        self.calls = 0
        self.coalesced = 0
        self.failures = 0

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        return cls(read_options(options, key_path))

    def _client_authentication(self) -> tuple[dict[str, str], dict[str, str]]:
        """The request headers and extra form fields that authenticate the gateway as a client."""
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        client_id, secret = self.options.client_id, self.options.client_secret
        if self.options.client_auth == "body":
            return headers, {"client_id": client_id, "client_secret": secret}
        # RFC 6749 2.3.1: each part form-encoded, then joined by ":" and base64-encoded.
        userpass = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(userpass).decode("ascii")
        return headers, {}

    def on_request(self, ctx: RequestContext) -> HookResult:
        token = bearer_token(ctx)
        if token is None:
            return refusal(401, "missing bearer token", ctx.request_id, self.challenge)
        if isinstance(token, Response):
            return token
        key = hashlib.sha256(token).digest()
        known = self.cache.get(key)
        if known is not None:
            return self._decide(ctx, known)
        return self._introspect_then_decide(ctx, key, token)

    async def _introspect_then_decide(self, ctx: RequestContext, key: bytes, token: bytes) -> Response | None:
        call = self.in_flight.get(key)
        if call is None:
            # A task of its own, so a client that goes away does not cancel the others' answer.
            call = asyncio.ensure_future(self._introspect(key, token))
            self.in_flight[key] = call
            call.add_done_callback(lambda _: self.in_flight.pop(key, None))
        else:
            self.coalesced += 1
        return self._decide(ctx, await asyncio.shield(call))

    def _decide(self, ctx: RequestContext, known: Introspected) -> Response | None:
        if not known.active:
            return refusal(401, "invalid or expired token", ctx.request_id, self.invalid_token)
        if not known.scopes.issuperset(self.options.required_scopes):
            return refusal(403, "insufficient scope", ctx.request_id, self.insufficient_scope)
        ctx.claims = dict(known.claims)  # a copy: a later hook may change it, the cache must not
        ctx.consumer = known.consumer
        return None

    async def _introspect(self, key: bytes, token: bytes) -> Introspected:
        self.calls += 1
        form = {"token": token.decode("ascii"), "token_type_hint": "access_token", **self.credentials}
        try:
            async with control_session().post(
                self.service.url,
                data=urlencode(form),
                headers=self.headers,
                allow_redirects=False,
                timeout=self.service.timeout,
            ) as answer:
                status = answer.status
                body = await read_bounded(answer, MAX_ANSWER)
        except CALL_ERRORS as error:
            self.failures += 1
            raise self.service.fault(error) from None
        try:
            known, ttl = self._read_answer(status, body)
        except UpstreamFault:
            self.failures += 1
            raise
        self.cache.put(key, known, ttl)
        return known

    def _read_answer(self, status: int, body: bytes) -> tuple[Introspected, float]:
        """What the endpoint's answer says about the token, and how long that may be cached."""
        if status != 200:
            raise self.service.bad_answer(f"answered {status}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("active"), bool):
            raise self.service.bad_answer("answered without a boolean 'active' in a JSON object")
        now = time.time()
        exp, nbf = _number(doc.get("exp")), _number(doc.get("nbf"))
        if not doc["active"] or (exp is not None and exp <= now) or (nbf is not None and nbf > now):
            return INACTIVE, self.options.negative_ttl
        scope = doc.get("scope")
        consumer = next((doc[k] for k in ("sub", "client_id") if isinstance(doc.get(k), str)), None)
        known = Introspected(
            active=True,
            claims=doc,
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            consumer=consumer,
        )
        ttl = self.options.max_ttl if exp is None else min(self.options.max_ttl, exp - now)
        return known, ttl


def _number(value: object) -> float | None:
    """A NumericDate (RFC 7519 2): seconds since the epoch, as an integer or a fraction."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
