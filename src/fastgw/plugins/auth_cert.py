"""``client_certificate``: a route only for clients that presented a verified TLS certificate
(a listener with ``tls.client_certificates``), and optionally only some of them.

A request without a certificate (an ``optional`` listener, or a cleartext one) answers 401; one
whose certificate matches none of the rules answers 403. With no rules, any certificate the
listener's CAs verified is enough. Rules, any of which admits the client:

- ``subjects``: the certificate's subject, RFC 4514 as the gateway writes it (``CN=alice,O=Shop``)
- ``sans``: one of its subject alternative names, typed as ``DNS:api.shop.test``,
  ``email:alice@shop.test``, ``URI:spiffe://shop/ordering``, ``IP:10.0.0.7``
- ``fingerprints``: the SHA-256 of its DER (hex, upper or lower case, colons allowed)

An admitted client whose request no authentication plugin identified yet becomes the request's
``consumer`` (its subject), for ``authorize``, rate limits and the access log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, expected, read_list, read_str
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._auth import deny

_OPTIONS = ("subjects", "sans", "fingerprints")
_SAN_TYPES = ("DNS", "email", "URI", "IP")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def _read_san(value: object, path: str) -> str:
    san = read_str(value, path)
    kind, colon, rest = san.partition(":")
    if not colon or kind not in _SAN_TYPES or not rest:
        raise expected(path, "a typed name: DNS:..., email:..., URI:... or IP:...", value)
    return f"{kind}:{rest.lower()}" if kind in ("DNS", "email") else san


def _read_fingerprint(value: object, path: str) -> str:
    digest = read_str(value, path).replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(digest):
        raise expected(path, "a SHA-256 fingerprint (64 hex digits, colons allowed)", value)
    return digest


def _san_key(san: str) -> str:
    kind, _, rest = san.partition(":")
    return f"{kind}:{rest.lower()}" if kind in ("DNS", "email") else san


@register_plugin
class ClientCertificateAuth(Plugin):
    """Options: ``subjects``, ``sans``, ``fingerprints`` (all optional lists; any one matching admits)."""

    name: ClassVar[str] = "client_certificate"

    def __init__(self, subjects: frozenset[str], sans: frozenset[str], fingerprints: frozenset[str]) -> None:
        self.subjects = subjects
        self.sans = sans
        self.fingerprints = fingerprints
        self.any_certificate = not (subjects or sans or fingerprints)

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        return cls(
            frozenset(section.get("subjects", read_list(read_str, non_empty=True)) or ()),
            frozenset(section.get("sans", read_list(_read_san, non_empty=True)) or ()),
            frozenset(section.get("fingerprints", read_list(_read_fingerprint, non_empty=True)) or ()),
        )

    def on_request(self, ctx: RequestContext) -> Response | None:
        certificate = ctx.client_certificate
        if certificate is None:
            return deny(ctx, 401, "a client certificate is required")
        if not (
            self.any_certificate
            or certificate.subject in self.subjects
            or certificate.fingerprint in self.fingerprints
            or any(_san_key(san) in self.sans for san in certificate.sans)
        ):
            return deny(ctx, 403, "this client certificate may not use this route")
        if ctx.consumer is None:
            ctx.consumer = certificate.subject
        return None
