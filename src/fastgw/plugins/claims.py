"""``claims``: copy what authentication established into the upstream request (Ocelot's
claims-to-headers and claims-to-query), so upstreams need not verify tokens themselves.

Options (at least one)::

    headers: {X-User-Id: sub, X-Org-Id: org.id, X-Roles: realm_access.roles}
    query: {tenant: org.tenant}
    consumer_header: X-Consumer      # ctx.consumer, from any authentication plugin

A claim is named as in ``authorize``: its exact name, else a dotted path into nested objects. A
list is sent as its items joined with commas, an object as JSON, numbers and booleans as in JSON;
a missing claim sends nothing.

Forgery: the client's own copies of every configured header and query parameter are removed
first (``ctx.remove_request_header``), whether or not the token has the claim, so an upstream that
trusts ``X-User-Id`` only ever sees the gateway's. A claim value holding a control character (CR,
LF, NUL, ...) is not sent as a header at all; query values are percent-encoded. Put the plugin
after the authentication plugin in the route's list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from fastgw.config.validate import Section, read_mapping
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, register_plugin
from fastgw.http.wire import HOP_BY_HOP
from fastgw.plugins._auth import (
    MISSING,
    ClaimPath,
    claim_text,
    read_claim,
    read_settable_header,
    without_query_params,
)
from fastgw.plugins._template import unsafe_header_value

_OPTIONS = ("headers", "query", "consumer_header")
# Headers the gateway writes itself or that frame the message: never set from a claim.
_RESERVED = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-request-id"}


_read_settable_header = read_settable_header(_RESERVED, "is set by the gateway itself")


def _read_headers(value: object, path: str) -> tuple[tuple[bytes, ClaimPath], ...]:
    rules = []
    for name, claim in read_mapping(value, path, non_empty=True).items():
        header = _read_settable_header(name, f"{path}.{name}")
        rules.append((header, read_claim(claim, f"{path}.{name}")))
    return tuple(rules)


def _read_query(value: object, path: str) -> tuple[tuple[bytes, ClaimPath], ...]:
    return tuple(
        (quote(name, safe="").encode(), read_claim(claim, f"{path}.{name}"))
        for name, claim in read_mapping(value, path, non_empty=True).items()
    )


@register_plugin
class ClaimsToRequest(Plugin):
    """Options: ``headers`` (header -> claim), ``query`` (parameter -> claim),
    ``consumer_header`` (a header for ``ctx.consumer``)."""

    name: ClassVar[str] = "claims"

    def __init__(
        self,
        headers: tuple[tuple[bytes, ClaimPath], ...],
        query: tuple[tuple[bytes, ClaimPath], ...],
        consumer_header: bytes | None,
    ) -> None:
        self.headers = headers
        self.query = query
        self.consumer_header = consumer_header
        names = [name for name, _ in headers]
        if consumer_header is not None:
            names.append(consumer_header)
        self.forgeable = tuple(dict.fromkeys(name.lower() for name in names))  # strip these
        self.query_names = frozenset(name for name, _ in query)

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        if not section.items:
            raise ConfigError(key_path, "give at least one of headers, query or consumer_header")
        return cls(
            section.get("headers", _read_headers) or (),
            section.get("query", _read_query) or (),
            section.get("consumer_header", _read_settable_header),
        )

    def on_request(self, ctx: RequestContext) -> None:
        for name in self.forgeable:
            if ctx.header(name) is not None:
                ctx.remove_request_header(name)
        if self.query:
            query = without_query_params(ctx.query, self.query_names)
            parts = [query] if query else []
            for name, path in self.query:
                value = path.find(ctx.claims)
                if value is not MISSING and value is not None:
                    parts += (b"&" if parts else b"?", name, b"=", quote(claim_text(value), safe="").encode())
            ctx.query = b"".join(parts)

    def on_upstream_request(self, ctx: RequestContext) -> None:
        extra = ctx.upstream_headers
        assert extra is not None, "on_upstream_request runs once the list exists"
        claims = ctx.claims
        if claims is not None:
            for name, path in self.headers:
                value = path.find(claims)
                if value is not MISSING and value is not None:
                    text = claim_text(value).encode()
                    if not unsafe_header_value(text):
                        extra.append((name, text))
        if self.consumer_header is not None and ctx.consumer is not None:
            text = str(ctx.consumer).encode()
            if not unsafe_header_value(text):
                extra.append((self.consumer_header, text))
