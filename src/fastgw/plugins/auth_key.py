"""``api_key``: a key in a request header or query parameter names the consumer.

The config holds only SHA-256 digests of the keys, never the keys (``fastgw hash-key`` makes
one; so does ``printf %s "$KEY" | sha256sum``). A request's key is hashed once and looked up in
a dict of digest -> consumer: an API key is a long random secret, so a fast unsalted hash is
enough to keep the config from being a list of working keys, and the lookup leaks nothing a
timing attacker could use (it would have to find preimages of SHA-256).

On success ``ctx.consumer`` is the consumer's name, and (``hide``, the default) the key is
removed from the request before it goes upstream. A missing or unknown key answers 401, a
request with the key header twice 400 (which of the two would the upstream read?).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, expected, read_bool, read_mapping, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._auth import deny, query_param, quoted, read_header_name, without_query_params
from fastgw.plugins._credentials import CredentialHeader

_HEX_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


def hash_key(key: str) -> str:
    """What the config holds for ``key``: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random API key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def read_key_digest(value: object, path: str) -> str:
    match = _HEX_DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:  # the value is not echoed: it may be a key in clear
        raise ConfigError(path, "expected a key digest: 'sha256:' and 64 hex digits (fastgw hash-key)")
    return match[1].lower()


_OPTIONS = ("consumers", "header", "query", "hide", "realm")


@register_plugin
class ApiKeyAuth(Plugin):
    """Options: ``consumers`` (required): consumer name -> one key digest or a list of them;
    ``header`` (default ``X-API-Key``); ``query``: also accept the key in this query parameter;
    ``hide`` (default true): keep the key from the upstream; ``realm`` (default ``fastgw``)."""

    name: ClassVar[str] = "api_key"

    def __init__(
        self, digests: dict[str, str], header: str, query: str | None, hide: bool, realm: str
    ) -> None:
        self.digests = digests
        self.credential = CredentialHeader(header)
        self.header = self.credential.name
        self.query = query.encode() if query is not None else None
        self.hide = hide
        self.challenge = b"ApiKey realm=" + quoted(realm)

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS, required=("consumers",))
        digests: dict[str, str] = {}
        where: dict[str, str] = {}
        consumers_path = section.at("consumers")
        for consumer, value in read_mapping(
            section.items["consumers"], consumers_path, non_empty=True
        ).items():
            path = f"{consumers_path}.{consumer}"
            entries = value if isinstance(value, list) else [value]
            if not entries:
                raise expected(path, "a key digest or a non-empty list of them", value)
            for index, entry in enumerate(entries):
                entry_path = f"{path}[{index}]" if isinstance(value, list) else path
                digest = read_key_digest(entry, entry_path)
                if digest in digests:
                    raise ConfigError(entry_path, f"the same key is already given at {where[digest]}")
                digests[digest] = consumer
                where[digest] = entry_path
        hide = section.get("hide", read_bool)
        return cls(
            digests,
            section.get("header", read_header_name) or "X-API-Key",
            section.get("query", read_str),
            True if hide is None else hide,
            section.get("realm", read_str) or "fastgw",
        )

    def on_request(self, ctx: RequestContext) -> Response | None:
        key = self.credential.read(ctx)
        if isinstance(key, Response):
            return key  # the header came twice
        in_header = key is not None
        if key is None and self.query is not None:
            key = query_param(ctx.query, self.query)
        if not key:
            return deny(ctx, 401, "missing API key", self.challenge)
        consumer = self.digests.get(hashlib.sha256(key).hexdigest())
        if consumer is None:
            return deny(ctx, 401, "invalid API key", self.challenge)
        ctx.consumer = consumer
        if self.hide:
            if in_header:
                ctx.remove_request_header(self.header)
            if self.query is not None and ctx.query:
                ctx.query = without_query_params(ctx.query, (self.query,))
        return None
