"""``jwt``: bearer-token authentication with JSON Web Tokens (RFC 7519, RFC 6750, RFC 8725).

Theory of operation. Keys are decided at compile time: an HMAC ``secret``, a ``public_key`` (PEM
or JWK) or a ``key_file`` (PEM, JWK or JWKS) become a ``KeySet``, and ``jwks_url`` a
``RemoteKeys`` that fetches the set with aiohttp when first needed. Every key carries the
algorithms its *type* can verify (an RSA key: RS*/PS*; a P-256 key: ES256; an HMAC secret: HS*),
narrowed by the JWK's own ``alg`` and by the configured ``algorithms``. A token is checked in
this order:

1. the ``Authorization: Bearer`` value (or the configured header) is looked up in the
   verified-token cache: a hit is one dict lookup and one comparison with the entry's expiry,
   which is never later than the token's ``exp``;
2. otherwise its header is read: ``alg`` must be one of the configured algorithms (``none``
   never is), and the key is chosen by ``kid``, then checked to accept that ``alg`` (so an
   HS256 token "signed" with an RSA public key as the HMAC secret finds no key: RFC 8725 2.1);
3. PyJWT verifies the signature with that key and that one algorithm, then ``exp``/``nbf``/
   ``iat`` (with ``leeway``), ``iss``, ``aud`` and the required claims.

A ``kid`` the fetched set does not know triggers a refetch (keys rotated), at most once per
``jwks_min_refetch``; a set older than ``jwks_refresh`` is refetched in the background while
requests go on with the keys at hand. Only a request that must wait for keys (the first ones, or
an unknown ``kid`` while a refetch is allowed) leaves the synchronous path.

On success ``ctx.claims`` holds the claims (shared with the cache: read them, never change them)
and ``ctx.consumer`` the ``consumer_claim`` (``sub`` by default). Failures answer 401 with
``WWW-Authenticate: Bearer realm=..., error="invalid_token", error_description=...``; a request
without credentials gets the challenge without an error code (RFC 6750 section 3.1), and one with
the token header twice a 400 with ``error="invalid_request"``, whatever either token is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from fastgw.config.validate import (
    Section,
    expected,
    read_bool,
    read_duration,
    read_list,
    read_str,
    suggest,
)
from fastgw.errors import ConfigError
from fastgw.hooks import HookResult, Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._auth import (
    MISSING,
    ClaimPath,
    check_one_of,
    deny,
    quoted,
    read_cache,
    read_claim,
    read_header_name,
    read_names,
)
from fastgw.plugins._credentials import CachedTokenCheck, CredentialHeader, ExpiringCache

log = logging.getLogger("fastgw.plugins.jwt")

# -- algorithms and keys ---------------------------------------------------------------------------

HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: at least the hash size
HMAC = frozenset(HMAC_MIN_BYTES)
RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_BY_CURVE = {
    "secp256r1": frozenset({"ES256"}),
    "secp384r1": frozenset({"ES384"}),
    "secp521r1": frozenset({"ES512"}),
    "secp256k1": frozenset({"ES256K"}),
}
EDDSA = frozenset({"EdDSA"})
ASYMMETRIC = RSA | frozenset().union(*EC_BY_CURVE.values()) | EDDSA
ALGORITHMS = HMAC | ASYMMETRIC
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 1024 * 1024

_FAMILY_ORDER = ("HS", "RS", "PS", "ES", "Ed")
_ALGORITHM_ORDER = sorted(ALGORITHMS, key=lambda a: (_FAMILY_ORDER.index(a[:2]), len(a), a))


def algorithms_for(key: Any) -> frozenset[str]:
    """The algorithms a key of this type can verify (RFC 7518 section 3.1); an HMAC secret
    shorter than the hash is refused (RFC 7518 section 3.2)."""
    if isinstance(key, bytes):
        return frozenset(a for a, size in HMAC_MIN_BYTES.items() if len(key) >= size)
    if isinstance(key, rsa.RSAPublicKey):
        return RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_BY_CURVE.get(key.curve.name, frozenset())
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return EDDSA
    return frozenset()


def public_part(key: Any) -> Any:
    """Verification needs only the public half of a private key given by mistake."""
    if isinstance(
        key,
        (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey),
    ):
        return key.public_key()
    return key


def describe_key(key: Any) -> str:
    if isinstance(key, bytes):
        return f"an HMAC secret of {len(key)} bytes"
    if isinstance(key, rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "an EdDSA key"
    return f"a {type(key).__name__}"


class VerifyKey(NamedTuple):
    kid: str | None
    key: Any  # bytes (HMAC) or a cryptography public key
    algorithms: frozenset[str]  # the ones this key may verify


class KeySet:
    """Keys by ``kid``, plus the keys without one (tried for any token whose alg they accept)."""

    __slots__ = ("anonymous", "by_kid")

    def __init__(self, keys: Sequence[VerifyKey]) -> None:
        self.by_kid = {k.kid: k for k in keys if k.kid is not None}
        self.anonymous = tuple(k for k in keys if k.kid is None)

    def knows(self, kid: str) -> bool:
        return kid in self.by_kid

    def all(self) -> tuple[VerifyKey, ...]:
        return (*self.by_kid.values(), *self.anonymous)


def make_key(kid: str | None, key: Any, allowed: frozenset[str], declared_alg: object = None) -> VerifyKey:
    """A key with the algorithms it may verify; ValueError when that leaves none."""
    key = public_part(key)
    algorithms = algorithms_for(key)
    if isinstance(key, bytes) and not algorithms:
        raise ValueError(f"{describe_key(key)} is too short: HS256 needs at least 32")
    if not algorithms:
        raise ValueError(f"unsupported key type ({describe_key(key)})")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    if isinstance(declared_alg, str):
        if declared_alg not in algorithms:
            raise ValueError(f"its alg {declared_alg} does not fit {describe_key(key)}")
        algorithms = frozenset({declared_alg})
    usable = algorithms & allowed
    if not usable:
        raise ValueError(f"{describe_key(key)} verifies none of the allowed algorithms")
    return VerifyKey(kid, key, usable)


def key_from_jwk(data: Mapping[str, Any], allowed: frozenset[str]) -> VerifyKey:
    """One JWK (RFC 7517) as a VerifyKey; ValueError says why it cannot be used."""
    if data.get("use", "sig") != "sig":
        raise ValueError(f"its use is {data.get('use')!r}, not 'sig'")
    kid = data.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("its kid is not a string")
    try:
        parsed = jwt.PyJWK(dict(data))
    except jwt.PyJWTError as exc:
        raise ValueError(f"unusable JWK: {exc}") from None
    return make_key(kid, parsed.key, allowed, data.get("alg"))


def keys_from_jwks(document: object, allowed: frozenset[str], *, strict: bool) -> KeySet:
    """A JWK Set; with ``strict`` any unusable key is an error, else it is skipped (logged)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("expected a JWK Set: an object with a 'keys' list")
    keys: list[VerifyKey] = []
    for index, entry in enumerate(document["keys"]):
        try:
            if not isinstance(entry, Mapping):
                raise ValueError("not an object")
            keys.append(key_from_jwk(entry, allowed))
        except ValueError as exc:
            if strict:
                raise ValueError(f"keys[{index}]: {exc}") from None
            log.warning("JWKS key %d skipped: %s", index, exc)
    if not keys:
        raise ValueError("the JWK Set has no usable signing key")
    return KeySet(keys)


def keys_from_text(text: str, allowed: frozenset[str]) -> KeySet:
    """PEM (public key, certificate or private key), a JWK or a JWK Set, as text."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        if isinstance(document, Mapping) and "keys" in document:
            return keys_from_jwks(document, allowed, strict=True)
        if not isinstance(document, Mapping):
            raise ValueError("expected a JWK or a JWK Set")
        return KeySet([key_from_jwk(document, allowed)])
    if not stripped.startswith("-----BEGIN "):
        raise ValueError("expected a PEM key or certificate, a JWK or a JWK Set")
    data = stripped.encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        elif b"PRIVATE KEY-----" in data:
            key = load_pem_private_key(data, password=None)
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot load the PEM data: {exc}") from None
    return KeySet([make_key(None, key, allowed)])


# -- the remote key set ----------------------------------------------------------------------------


class RemoteKeys:
    """A JWK Set fetched from ``url``: kept, refreshed when older than ``refresh`` (in the
    background), refetched early for an unknown kid, but never attempted twice within
    ``min_refetch``. Concurrent waiters share one fetch. A failed fetch keeps the last good set.

    One instance per compiled plugin, used on the loop of the process that serves it; nothing
    here touches a loop before the first request needs keys.
    """

    __slots__ = (
        "allowed",
        "attempted_at",
        "fetched_at",
        "fetches",
        "keys",
        "min_refetch",
        "refresh",
        "task",
        "timeout",
        "url",
    )

    def __init__(
        self, url: str, allowed: frozenset[str], refresh: float, min_refetch: float, timeout: float
    ) -> None:
        self.url = url
        self.allowed = allowed
        self.refresh = refresh
        self.min_refetch = min_refetch
        self.timeout = timeout
        self.keys: KeySet | None = None
        self.fetched_at = -math.inf  # monotonic time of the last good fetch
        self.attempted_at = -math.inf  # ... and of the last attempt, good or not
        self.fetches = 0  # attempts started
        self.task: asyncio.Future[KeySet | None] | None = None

    def may_refetch(self, now: float) -> bool:
        return self.task is None and now - self.attempted_at >= self.min_refetch

    def refresh_if_stale(self, now: float) -> None:
        """Start a background refetch when the set is older than ``refresh``."""
        if now - self.fetched_at >= self.refresh and self.may_refetch(now):
            self._start()

    async def fetch(self) -> KeySet | None:
        """The key set after a fetch (joining one in flight); without one when rate-limited."""
        task = self.task
        if task is None:
            if not self.may_refetch(time.monotonic()):
                return self.keys
            task = self._start()
        return await asyncio.shield(task)  # one waiter's cancellation does not cancel the others'

    def _start(self) -> asyncio.Future[KeySet | None]:
        self.attempted_at = time.monotonic()
        self.fetches += 1
        task = self.task = asyncio.ensure_future(self._fetch())
        return task

    async def _fetch(self) -> KeySet | None:
        try:
            keys = keys_from_jwks(orjson.loads(await self._download()), self.allowed, strict=False)
        except Exception as exc:  # any failure keeps the last good set
            log.warning("JWKS fetch from %s failed: %s", self.url, exc or type(exc).__name__)
        else:
            self.keys = keys
            self.fetched_at = time.monotonic()
        finally:
            self.task = None
        return self.keys

    async def _download(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise ValueError(f"status {response.status}")
            body = await response.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
            return body


# -- the plugin ------------------------------------------------------------------------------------

# Checked most specific first: InvalidSignatureError is a DecodeError, all are InvalidTokenError.
_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidIssuerError, "the token's issuer is not accepted"),
    (jwt.InvalidAudienceError, "the token's audience is not accepted"),
    (jwt.InvalidIssuedAtError, "the token's iat claim is invalid"),
    (jwt.InvalidSignatureError, "the token's signature is invalid"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.DecodeError, "the token is malformed"),
)


def failure_message(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the '{exc.claim}' claim"
    for kind, message in _FAILURES:
        if isinstance(exc, kind):
            return message
    return "the token is invalid"


def read_algorithm(value: object, path: str) -> str:
    if value == "none":
        raise ConfigError(path, "'none' is never allowed: unsigned tokens would be accepted")
    if not isinstance(value, str) or value not in ALGORITHMS:
        hint = suggest(value, ALGORITHMS) if isinstance(value, str) else ""
        raise ConfigError(
            path, f"unknown algorithm {value!r}; expected one of: {', '.join(_ALGORITHM_ORDER)}{hint}"
        )
    return value


def read_url(value: object, path: str) -> str:
    url = read_str(value, path)
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise expected(path, "an http:// or https:// URL", value)
    return url


_KEY_SOURCES = ("secret", "public_key", "key_file", "jwks_url")
_OPTIONS = (
    *_KEY_SOURCES,
    "algorithms",
    "issuer",
    "audience",
    "leeway",
    "require",
    "header",
    "consumer_claim",
    "optional",
    "forward_token",
    "realm",
    "cache",
    "jwks_refresh",
    "jwks_min_refetch",
    "jwks_timeout",
)


@register_plugin
class JwtAuth(Plugin):
    """Options (one key source is required):

    - ``secret``: an HMAC secret (at least as long as the hash: 32 bytes for HS256);
      ``public_key``: PEM text or a JWK mapping; ``key_file``: a file holding PEM, a JWK or a JWK
      Set; ``jwks_url``: an http(s) URL serving a JWK Set.
    - ``algorithms``: accepted ``alg`` values (default: every one the key(s) can verify; for a
      ``jwks_url``, every asymmetric one). ``none`` is refused.
    - ``issuer``, ``audience``: one value or a list; ``leeway`` (default 30s) for exp/nbf/iat;
      ``require``: claims that must be present (default ``[exp]``).
    - ``header`` (default Authorization, which takes ``Bearer <token>``); ``consumer_claim``
      (default ``sub``; a dotted path reaches nested claims); ``optional``: a request without a
      token passes unauthenticated (a bad token is still refused); ``forward_token`` (default
      true); ``realm`` (default ``fastgw``).
    - ``cache``: ``{ttl: 60s, max_entries: 10000}`` for verified tokens, or ``false``.
    - ``jwks_refresh`` (5m), ``jwks_min_refetch`` (10s), ``jwks_timeout`` (5s).
    """

    name: ClassVar[str] = "jwt"

    def __init__(
        self,
        *,
        algorithms: frozenset[str],
        keys: KeySet | None,
        remote: RemoteKeys | None,
        issuer: tuple[str, ...] | None,
        audience: tuple[str, ...] | None,
        leeway: float,
        require: tuple[str, ...],
        header: str,
        consumer_claim: ClaimPath,
        optional: bool,
        forward_token: bool,
        realm: str,
        cache: ExpiringCache[tuple[dict[str, Any], str | None]] | None,
    ) -> None:
        self.algorithms = algorithms
        self.keys = keys
        self.remote = remote
        self.issuer = issuer
        self.audience = list(audience) if audience else None
        self.leeway = leeway
        self.realm = b"Bearer realm=" + quoted(realm)
        # RFC 6750 3.1: a request with the header twice is a malformed one (invalid_request, 400).
        repeated = f"more than one {header} header"
        self.credential = CredentialHeader(
            header, self.realm + b', error="invalid_request", error_description=' + quoted(repeated)
        )
        self.header = self.credential.name
        self.bearer = self.header == b"authorization"
        self.consumer_claim = consumer_claim
        self.optional = optional
        self.forward_token = forward_token
        self.cache = cache
        if cache is not None:
            # PERF: a token seen before (until its exp at the latest) costs a header scan, a
            # dict lookup and a clock read, in C (build_chain takes the instance's callable: a
            # bound method, called without an argument tuple); any other goes to authenticate().
            self.on_request = CachedTokenCheck(  # type: ignore[method-assign]
                self.credential, cache, self.absent, self.authenticate, forward_token
            ).run
        self.decoder = jwt.PyJWT()
        self.decode_options: dict[str, Any] = {"require": list(require), "verify_aud": audience is not None}

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        source = _check_one_source(section)
        algorithms = section.get("algorithms", read_list(read_algorithm, non_empty=True))
        allowed = frozenset(algorithms) if algorithms else ALGORITHMS
        keys: KeySet | None = None
        remote: RemoteKeys | None = None
        if source == "jwks_url":
            url = section.require("jwks_url", read_url)
            allowed = frozenset(algorithms) if algorithms else ASYMMETRIC
            remote = RemoteKeys(
                url,
                allowed,
                section.get("jwks_refresh", read_duration()) or 300.0,
                _get(section, "jwks_min_refetch", read_duration(allow_zero=True), 10.0),
                section.get("jwks_timeout", read_duration()) or 5.0,
            )
        else:
            keys = _static_keys(section, source)
            usable = frozenset().union(*(k.algorithms for k in keys.all()))
            for index, algorithm in enumerate(algorithms or ()):
                if algorithm not in usable:
                    raise ConfigError(
                        section.at(f"algorithms[{index}]"),
                        f"{algorithm} cannot be verified with the configured key ({_describe_set(keys)})",
                    )
            allowed &= usable
            keys = KeySet([k._replace(algorithms=k.algorithms & allowed) for k in keys.all()])
        return cls(
            algorithms=allowed,
            keys=keys,
            remote=remote,
            issuer=section.get("issuer", read_names),
            audience=section.get("audience", read_names),
            leeway=_get(section, "leeway", read_duration(allow_zero=True), 30.0),
            require=_get(section, "require", read_list(read_str), ("exp",)),
            header=section.get("header", read_header_name) or "Authorization",
            consumer_claim=section.get("consumer_claim", read_claim) or ClaimPath("sub"),
            optional=_get(section, "optional", read_bool, False),
            forward_token=_get(section, "forward_token", read_bool, True),
            realm=section.get("realm", read_str) or "fastgw",
            cache=read_cache(section.items.get("cache", True), section.at("cache"), 60.0),
        )

    # -- per request -------------------------------------------------------------------------------

    def on_request(self, ctx: RequestContext) -> HookResult:
        """Without a cache (with one, the compiled CachedTokenCheck takes this place)."""
        value = self.credential.read(ctx)
        if value is None:
            return self.absent(ctx)
        if isinstance(value, Response):
            return value  # the header came twice
        return self.authenticate(ctx, value)

    def absent(self, ctx: RequestContext) -> Response | None:
        return None if self.optional else self.missing(ctx)

    def authenticate(self, ctx: RequestContext, value: bytes) -> HookResult:
        """A token not in the cache: choose its key (fetching keys if needed), then verify."""
        token = self.token_of(value)
        if token is None:
            return None if self.optional else self.missing(ctx)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return self.invalid(ctx, "the token is malformed")
        alg = header.get("alg")
        kid = header.get("kid")
        if alg not in self.algorithms:
            return self.invalid(ctx, "the token's algorithm is not allowed")
        if kid is not None and not isinstance(kid, str):
            return self.invalid(ctx, "the token is malformed")
        remote = self.remote
        if remote is None:
            return self.verify(ctx, value, token, alg, kid, self.keys)
        keys = remote.keys
        now = time.monotonic()
        if keys is None or (kid is not None and not keys.knows(kid) and remote.may_refetch(now)):
            return self.verify_after_fetch(ctx, value, token, alg, kid)
        remote.refresh_if_stale(now)
        return self.verify(ctx, value, token, alg, kid, keys)

    async def verify_after_fetch(
        self, ctx: RequestContext, value: bytes, token: str, alg: str, kid: str | None
    ) -> Response | None:
        assert self.remote is not None
        keys = await self.remote.fetch()
        if keys is None:
            return deny(ctx, 503, "the token signing keys are not available")
        return self.verify(ctx, value, token, alg, kid, keys)

    def verify(
        self, ctx: RequestContext, value: bytes, token: str, alg: str, kid: str | None, keys: KeySet | None
    ) -> Response | None:
        assert keys is not None
        known = keys.by_kid.get(kid) if kid is not None else None
        if known is not None:
            if alg not in known.algorithms:
                return self.invalid(ctx, "the token's algorithm does not match its key")
            candidates: Sequence[VerifyKey] = (known,)
        else:
            candidates = [k for k in keys.anonymous if alg in k.algorithms]
            if not candidates:
                return self.invalid(
                    ctx, "the token's key id is unknown" if kid is not None else "no key accepts the token"
                )
        claims: dict[str, Any] | None = None
        for candidate in candidates:
            try:
                claims = self.decoder.decode(
                    token,
                    candidate.key,
                    algorithms=(alg,),
                    options=self.decode_options,  # type: ignore[arg-type]
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                )
                break
            except jwt.InvalidSignatureError:
                continue  # another key without a kid may have signed it
            except jwt.PyJWTError as exc:
                return self.invalid(ctx, failure_message(exc))
        if claims is None:
            return self.invalid(ctx, "the token's signature is invalid")
        consumer = self.consumer_of(claims)
        if self.cache is not None:
            exp = claims.get("exp")
            not_after = float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
            self.cache.put(value, (claims, consumer), not_after)
        ctx.claims = claims
        ctx.consumer = consumer
        if not self.forward_token:
            ctx.remove_request_header(self.header)
        return None

    def token_of(self, value: bytes) -> str | None:
        if self.bearer:
            if value[:7].lower() != b"bearer ":
                return None
            value = value[7:]
        elif value[:7].lower() == b"bearer ":
            value = value[7:]
        value = value.strip()
        if not value or not value.isascii():
            return None
        return value.decode("ascii")

    def consumer_of(self, claims: dict[str, Any]) -> str | None:
        value = self.consumer_claim.find(claims)
        if value is MISSING or isinstance(value, bool) or not isinstance(value, (str, int)):
            return None
        return str(value)

    def missing(self, ctx: RequestContext) -> Response:
        return deny(ctx, 401, "missing bearer token", self.realm)

    def invalid(self, ctx: RequestContext, message: str) -> Response:
        challenge = self.realm + b', error="invalid_token", error_description=' + quoted(message)
        return deny(ctx, 401, message, challenge)


def _get(section: Section, key: str, reader: Any, default: Any) -> Any:
    value = section.get(key, reader)
    return default if value is None else value


def _check_one_source(section: Section) -> str:
    source = check_one_of(section, _KEY_SOURCES, "key")
    if source != "jwks_url":
        for key in ("jwks_refresh", "jwks_min_refetch", "jwks_timeout"):
            if key in section.items:
                raise ConfigError(section.at(key), "only applies with jwks_url")
    return source


def _static_keys(section: Section, source: str) -> KeySet:
    """The configured key(s), each with every algorithm its type can verify."""
    allowed = ALGORITHMS
    path = section.at(source)
    value = section.items[source]
    try:
        if source == "secret":
            secret = read_str(value, path).encode()
            return KeySet([make_key(None, secret, allowed)])
        if source == "public_key":
            if isinstance(value, Mapping):
                return KeySet([key_from_jwk(value, allowed)])
            return keys_from_text(read_str(value, path), allowed)
        file_name = read_str(value, path)
        try:
            with open(file_name, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(path, f"cannot read {file_name!r}: {reason}") from None
        return keys_from_text(text, allowed)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


def _describe_set(keys: KeySet) -> str:
    return ", ".join(sorted({describe_key(k.key) for k in keys.all()}))
