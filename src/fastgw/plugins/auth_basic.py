"""``basic_auth``: HTTP Basic authentication (RFC 7617) against salted, slow password hashes.

Passwords are stored as self-describing PHC strings (``fastgw hash-password`` makes one):

- ``$scrypt$ln=14,r=8,p=5$<salt>$<hash>``: ``hashlib.scrypt`` with N = 2**ln (the default,
  OWASP's N=2^14, r=8, p=5: 16 MiB and about a quarter second on a small core);
- ``$pbkdf2-sha256$i=600000$<salt>$<hash>`` (or ``pbkdf2-sha512``): ``hashlib.pbkdf2_hmac``.

Salt and hash are base64 without padding. Theory of operation: a KDF this slow must not run on
the event loop, so a request whose credentials are not in the cache leaves the synchronous path
and the KDF runs on a small thread pool of its own (hashlib releases the GIL while it works);
at most ``MAX_PENDING`` checks wait there at once, beyond which the answer is 503. An unknown
user is checked against a dummy hash of the same cost, so timing does not tell which users
exist. A successful check is cached for ``cache.ttl`` (default 60s) under a keyed BLAKE2b digest
of the whole ``Authorization`` value (the process keeps no password in clear), so a client's
repeated requests cost a hash and a dict lookup, not a KDF. A failed check is never cached. A
request with two Authorization headers is refused with 400 before any of this.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, NamedTuple

from fastgw.config.validate import Section, read_bool, read_mapping, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import HookResult, Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._auth import deny, quoted, read_cache
from fastgw.plugins._credentials import CredentialHeader, ExpiringCache

MAX_PENDING = 64  # password checks queued or running at once, per plugin
KDF_THREADS = 2

_PHC = re.compile(r"\$([a-z0-9-]+)\$([a-z0-9=,]+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})")
_PBKDF2 = {"pbkdf2-sha256": "sha256", "pbkdf2-sha512": "sha512"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class PasswordHash(NamedTuple):
    """A parsed PHC string: the KDF, its cost parameters, the salt and the expected hash."""

    scheme: str  # "scrypt" or "pbkdf2-sha256"/"pbkdf2-sha512"
    params: tuple[int, ...]  # scrypt: (ln, r, p); pbkdf2: (iterations,)
    salt: bytes
    digest: bytes

    def derive(self, password: bytes) -> bytes:
        if self.scheme == "scrypt":
            ln, r, p = self.params
            n = 1 << ln
            return hashlib.scrypt(
                password,
                salt=self.salt,
                n=n,
                r=r,
                p=p,
                maxmem=128 * r * (n + p + 2) + (1 << 20),
                dklen=len(self.digest),
            )
        return hashlib.pbkdf2_hmac(
            _PBKDF2[self.scheme], password, self.salt, self.params[0], len(self.digest)
        )

    def verify(self, password: bytes) -> bool:
        return hmac.compare_digest(self.derive(password), self.digest)

    def render(self) -> str:
        if self.scheme == "scrypt":
            ln, r, p = self.params
            settings = f"ln={ln},r={r},p={p}"
        else:
            settings = f"i={self.params[0]}"
        return f"${self.scheme}${settings}${_b64(self.salt)}${_b64(self.digest)}"


def parse_password_hash(text: str) -> PasswordHash:
    """A PHC string as made by ``hash_password``; ValueError says what is wrong with it."""
    match = _PHC.fullmatch(text)
    if match is None:
        raise ValueError(
            "not a password hash like '$scrypt$ln=14,r=8,p=5$<salt>$<hash>' (fastgw hash-password)"
        )
    scheme, settings, salt_text, digest_text = match.groups()
    try:
        fields = dict(item.split("=", 1) for item in settings.split(","))
        values = {name: int(value) for name, value in fields.items()}
        salt, digest = _unb64(salt_text), _unb64(digest_text)
    except (ValueError, binascii.Error):
        raise ValueError("cannot read the hash's parameters, salt or base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the salt must have at least 8 bytes and the hash at least 16")
    if scheme == "scrypt":
        if set(values) != {"ln", "r", "p"}:
            raise ValueError("scrypt takes exactly ln, r and p")
        ln, r, p = values["ln"], values["r"], values["p"]
        if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt parameters out of range (ln 1-20, r 1-32, p 1-16)")
        return PasswordHash(scheme, (ln, r, p), salt, digest)
    if scheme in _PBKDF2:
        if set(values) != {"i"} or not 1 <= values["i"] <= 10_000_000:
            raise ValueError(f"{scheme} takes i, the iteration count (1 to 10000000)")
        return PasswordHash(scheme, (values["i"],), salt, digest)
    raise ValueError(f"unknown hash scheme {scheme!r}; expected scrypt, pbkdf2-sha256 or pbkdf2-sha512")


def hash_password(
    password: str, *, scheme: str = "scrypt", ln: int = 14, r: int = 8, p: int = 5, iterations: int = 600_000
) -> str:
    """A new PHC string for ``password`` with a random 16-byte salt."""
    if scheme == "scrypt":
        params: tuple[int, ...] = (ln, r, p)
    elif scheme in _PBKDF2:
        params = (iterations,)
    else:
        raise ValueError(f"unknown hash scheme {scheme!r}")
    unsalted = PasswordHash(scheme, params, os.urandom(16), bytes(32))
    return unsalted._replace(digest=unsalted.derive(password.encode())).render()


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0


def kdf_executor() -> ThreadPoolExecutor:
    """The threads password checks run on: made on first use in each (worker) process."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        _executor = ThreadPoolExecutor(KDF_THREADS, thread_name_prefix="fastgw-kdf")
        _executor_pid = os.getpid()
    return _executor


def parse_basic(value: bytes) -> tuple[str, bytes] | None:
    """``Basic base64(user:password)`` -> (user, password bytes), or None if it is not that."""
    if value[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True)
        user, colon, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if colon else None
    except (binascii.Error, UnicodeDecodeError):
        return None


_OPTIONS = ("users", "realm", "cache", "hide")

AUTHORIZATION = CredentialHeader("Authorization")


@register_plugin
class BasicAuth(Plugin):
    """Options: ``users`` (required): user name -> password hash; ``realm`` (default ``fastgw``);
    ``cache``: ``{ttl: 60s, max_entries: 10000}`` for successful checks, or ``false``;
    ``hide`` (default true): keep the Authorization header from the upstream."""

    name: ClassVar[str] = "basic_auth"

    def __init__(
        self, users: dict[str, PasswordHash], realm: str, cache: ExpiringCache[str] | None, hide: bool
    ) -> None:
        self.users = users
        self.cache = cache
        self.hide = hide
        self.challenge = b"Basic realm=" + quoted(realm) + b', charset="UTF-8"'
        self.cache_key = os.urandom(32)  # the cache's keys are keyed digests, not credentials
        some = next(iter(users.values()))
        # An unknown user costs the same as a known one: same KDF and cost, a hash nothing matches.
        self.dummy = some._replace(salt=os.urandom(len(some.salt)), digest=os.urandom(len(some.digest)))
        self.pending = 0

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS, required=("users",))
        users_path = section.at("users")
        users: dict[str, PasswordHash] = {}
        for user, value in read_mapping(section.items["users"], users_path, non_empty=True).items():
            path = f"{users_path}.{user}"
            if ":" in user:
                raise ConfigError(path, "a user name cannot contain ':' (RFC 7617)")
            try:
                users[user] = parse_password_hash(read_str(value, path))
            except ValueError as exc:  # the value is not echoed: it may be a password in clear
                raise ConfigError(path, str(exc)) from None
        hide = section.get("hide", read_bool)
        return cls(
            users,
            section.get("realm", read_str) or "fastgw",
            read_cache(section.items.get("cache", True), section.at("cache"), 60.0),
            True if hide is None else hide,
        )

    def on_request(self, ctx: RequestContext) -> HookResult:
        value = AUTHORIZATION.read(ctx)
        if value is None:
            return deny(ctx, 401, "missing credentials", self.challenge)
        if isinstance(value, Response):
            return value  # the header came twice
        key = b""
        if self.cache is not None:
            # PERF: a client's repeated requests cost one keyed BLAKE2b and a dict lookup.
            key = hashlib.blake2b(value, digest_size=16, key=self.cache_key).digest()
            user = self.cache.get(key)
            if user is not None:
                self.accept(ctx, user)
                return None
        credentials = parse_basic(value)
        if credentials is None:
            return deny(ctx, 401, "expected Basic credentials", self.challenge)
        if self.pending >= MAX_PENDING:
            busy = deny(ctx, 503, "too many password checks in progress")
            busy.headers.append((b"Retry-After", b"1"))
            return busy
        return self.check(ctx, key, *credentials)

    async def check(self, ctx: RequestContext, key: bytes, user: str, password: bytes) -> Response | None:
        stored = self.users.get(user)
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(kdf_executor(), (stored or self.dummy).verify, password)
        finally:
            self.pending -= 1
        if not ok or stored is None:
            return deny(ctx, 401, "invalid credentials", self.challenge)
        if self.cache is not None:
            self.cache.put(key, user)
        self.accept(ctx, user)
        return None

    def accept(self, ctx: RequestContext, user: str) -> None:
        ctx.consumer = user
        if self.hide:
            ctx.remove_request_header(b"authorization")
