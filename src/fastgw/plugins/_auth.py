"""What the authentication and authorization plugins share (a private module: not a plugin).

- ``deny``: the 401/403 answer, a small JSON error body as the core's own (``wire.error_body``)
  with the ``WWW-Authenticate`` challenge RFC 9110 section 11.6.1 asks of every 401.
- ``CredentialHeader`` (compiled, in ``_credentials.pyx`` beside the jwt token check that uses
  it): the header a credential comes in, and the 400 for a request that carries it twice.
- ``read_cache``: the ``cache:`` option of a plugin that keeps verified credentials in an
  ``ExpiringCache`` (``_credentials.pyx``, compiled: a bounded dict of key -> (expires_at, value)).
- ``ClaimPath``: a claim by name or dotted path (``org.id``), and how a claim value is written
  into a header or a query parameter.
- ``read_settable_header``: a header name a plugin may set (not one the gateway writes itself).
- ``without_query_params``: a query string minus some parameters (a credential sent in the query,
  or a client's forged copy of a parameter the gateway sets); ``rename_query_params`` renames some.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from fastgw.config.validate import Section, expected, read_duration, read_int, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import RequestContext, Response
from fastgw.http.wire import error_body
from fastgw.plugins._credentials import ExpiringCache


def deny(ctx: RequestContext, status: int, message: str, challenge: bytes | None = None) -> Response:
    """A 401 (with its challenge) or 403 answered by an auth plugin."""
    headers = [(b"WWW-Authenticate", challenge)] if challenge else []
    return Response(status, error_body(message, ctx.request_id), headers)


def quoted(text: str) -> bytes:
    """An auth-param value as a quoted-string (RFC 9110 section 5.6.4)."""
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


# -- the verified-credentials cache (compiled: _credentials.pyx) ------------------------------------


def read_cache(value: object, path: str, default_ttl: float) -> ExpiringCache[Any] | None:
    """``cache: false``, or ``cache: {ttl: 60s, max_entries: 10000}`` (both optional)."""
    if value is False or value == "false":
        return None
    if value is True or value == "true":
        value = {}
    section = Section(value, path, ("ttl", "max_entries"))
    ttl = section.get("ttl", read_duration())
    max_entries = section.get("max_entries", read_int(1, 10_000_000))
    return ExpiringCache(max_entries or 10_000, default_ttl if ttl is None else ttl)


# -- claims ----------------------------------------------------------------------------------------

MISSING: Any = object()


class ClaimPath:
    """A claim named in the config: a top-level claim of that exact name if the token has one
    (namespaced claims such as ``https://example.com/roles`` contain dots), else a dotted path
    into nested objects (``realm_access.roles``)."""

    __slots__ = ("name", "parts")

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts = tuple(name.split("."))

    def find(self, claims: Mapping[str, Any] | None) -> Any:
        """The claim's value, or ``MISSING``."""
        if claims is None:
            return MISSING
        value = claims.get(self.name, MISSING)
        if value is not MISSING or len(self.parts) == 1:
            return value
        node: Any = claims
        for part in self.parts:
            if not isinstance(node, Mapping) or part not in node:
                return MISSING
            node = node[part]
        return node


def read_claim(value: object, path: str) -> ClaimPath:
    return ClaimPath(read_str(value, path))


def claim_text(value: Any) -> str:
    """A claim value as text: strings as they are, numbers and booleans as in JSON, a list as its
    items joined with commas, an object as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return ",".join(claim_text(item) for item in value)
    return orjson.dumps(value).decode()


def claim_values(value: Any) -> tuple[str, ...]:
    """The values a claim holds, for membership tests: a list's items, or the one scalar."""
    if isinstance(value, list):
        return tuple(claim_text(item) for item in value)
    return (claim_text(value),)


# -- query strings ---------------------------------------------------------------------------------


def query_param(query: bytes, name: bytes) -> bytes | None:
    """The first value of parameter ``name`` (percent-decoded, ``+`` as space) in ``b"?..."``."""
    if not query:
        return None
    for part in query[1:].split(b"&"):
        key, _, value = part.partition(b"=")
        if _unquote(key) == name:
            return _unquote(value)
    return None


def without_query_params(query: bytes, names: Collection[bytes]) -> bytes:
    """``query`` (``b""`` or ``b"?..."``) with every parameter named in ``names`` removed; the
    others are kept byte for byte."""
    if not query:
        return query
    parts = query[1:].split(b"&")
    kept = [part for part in parts if _unquote(part.partition(b"=")[0]) not in names]
    if len(kept) == len(parts):
        return query
    kept = [part for part in kept if part]
    return b"?" + b"&".join(kept) if kept else b""


def rename_query_params(query: bytes, renames: Mapping[bytes, bytes]) -> bytes:
    """``query`` with each parameter named in ``renames`` (decoded name -> new name, encoded)
    renamed; values, order and every other byte kept as they were."""
    if not query:
        return query
    parts = query[1:].split(b"&")
    for i, part in enumerate(parts):
        key, eq, value = part.partition(b"=")
        new = renames.get(_unquote(key))
        if new is not None:
            parts[i] = new + eq + value
    return b"?" + b"&".join(parts)


def _unquote(text: bytes) -> bytes:
    return unquote_to_bytes(text.replace(b"+", b" ")) if b"%" in text or b"+" in text else text


# -- config helpers --------------------------------------------------------------------------------


def read_names(value: object, path: str) -> tuple[str, ...]:
    """One string or a non-empty list of strings."""
    if isinstance(value, str) and value:
        return (value,)
    if not isinstance(value, list) or not value:
        raise expected(path, "a string or a non-empty list of strings", value)
    return tuple(read_str(item, f"{path}[{i}]") for i, item in enumerate(value))


def read_header_name(value: object, path: str) -> str:
    name = read_str(value, path)
    if not name.isascii() or any(not (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name):
        raise expected(path, "a header name (letters, digits and !#$%&'*+-.^_`|~)", value)
    return name


def read_settable_header(reserved: Collection[bytes], why: str) -> Callable[[object, str], bytes]:
    """A reader of a header name a plugin may set: not one of ``reserved`` (lower-case) nor an
    ``X-Forwarded-*`` one, which the gateway writes itself; ``why`` ends the refusal's message."""

    def read(value: object, path: str) -> bytes:
        name = read_header_name(value, path)
        lower = name.lower().encode()
        if lower in reserved or lower.startswith(b"x-forwarded-"):
            raise ConfigError(path, f"{name} {why}")
        return name.encode()

    return read


def check_one_of(section: Section, keys: Iterable[str], what: str) -> str:
    """Exactly one of ``keys`` is present in the section: return it."""
    keys = tuple(keys)
    present = [key for key in keys if key in section.items]
    listed = ", ".join(keys[:-1]) + f" or {keys[-1]}"
    if not present:
        raise ConfigError(section.path, f"missing {what}: give one of {listed}")
    if len(present) > 1:
        raise ConfigError(section.at(present[1]), f"give only one of {listed} (found {present[0]} too)")
    return present[0]
