"""``rewrite_location``: redirects from an upstream point at the gateway, not at the upstream
(Ocelot's ``{BaseUrl}`` in DownstreamHeaderTransform, nginx's ``proxy_redirect default``).

    plugins:
      - name: rewrite_location
        public_url: https://api.example.com      # optional: derived from the request otherwise
        internal_urls: [http://orders.internal:8080]
        headers: [Location, Content-Location, Refresh]   # default [Location]

What counts as the upstream's own address: the chosen target's ``host:port``, the Host value the
gateway sent it (the upstream's ``host_header``, or the client's Host with ``preserve_host``),
and each of ``internal_urls`` (its path, when it has one, is part of what is replaced). Scheme
(``http`` or ``https``) does not matter: an upstream that honours X-Forwarded-Proto writes
``https://`` links to its own plain-HTTP address.

Such a URL becomes the public base URL plus the path the client must use. The public base is
``public_url`` when given, else the request's: ``ctx.forwarded_proto`` and
``ctx.forwarded_host`` (X-Forwarded-Proto and -Host only from a trusted proxy, else ``http`` and
the request's Host; none when a trusted proxy forwarded a malformed host, and then nothing is
rewritten). The path: when the route strips a prefix (``strip_prefix``, without a ``rewrite``),
the upstream never saw it, so it is put back: the upstream's ``/items/7`` on a route
``/api/{*rest}`` stripping ``/api`` becomes ``/api/items/7``. A
path-absolute reference (``Location: /items/7``) is the upstream's own address too, so it gets the
prefix back as well (and stays relative) unless ``relative: false``. A route with a ``rewrite``
template cannot be inverted in general: only the base is replaced there. Anything else (another
host, a relative path without a leading slash, which the client resolves correctly already) is
left alone. ``Refresh: 5; url=...`` has its URL rewritten the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from fastgw.config.validate import Section, expected, read_bool, read_list, read_one_of, read_str
from fastgw.hooks import Plugin, RequestContext, RouteInfo, register_plugin

_OPTIONS = ("public_url", "internal_urls", "headers", "relative")
_HEADERS = {"Location": b"location", "Content-Location": b"content-location", "Refresh": b"refresh"}
_REFRESH = re.compile(rb"^(\s*[0-9.]+\s*[;,]\s*url\s*=\s*)(['\"]?)(.*?)(\2\s*)$", re.IGNORECASE)


def _read_base(value: object, path: str) -> tuple[bytes, bytes]:
    """``scheme://authority[/path]`` -> (lower-cased ``scheme://authority``, path without its
    trailing slash)."""
    text = read_str(value, path)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise expected(path, "a URL like 'https://api.example.com'", value) from None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise expected(path, "an http or https URL like 'https://api.example.com', without query", value)
    if any(c in text for c in "\r\n\x00 "):
        raise expected(path, "a URL without spaces or control characters", value)
    return f"{parts.scheme}://{parts.netloc}".lower().encode(), parts.path.rstrip("/").encode()


def _read_internal(value: object, path: str) -> tuple[bytes, bytes]:
    """An internal base: (lower-cased authority, path prefix)."""
    base, prefix = _read_base(value, path)
    return base.partition(b"://")[2], prefix


def _split_absolute(url: bytes) -> tuple[bytes, bytes] | None:
    """(authority, rest) of ``http://``, ``https://`` or ``//`` URLs; None for anything else."""
    lower = url[:8].lower()
    if lower.startswith(b"http://"):
        start = 7
    elif lower.startswith(b"https://"):
        start = 8
    elif url.startswith(b"//"):
        start = 2
    else:
        return None
    end = start
    while end < len(url) and url[end] not in b"/?#":
        end += 1
    return url[start:end], url[end:]


@register_plugin
class RewriteLocation(Plugin):
    """Options: ``public_url``, ``internal_urls``, ``headers`` (of Location, Content-Location,
    Refresh), ``relative`` (rewrite path-absolute references too; default true)."""

    name: ClassVar[str] = "rewrite_location"

    def __init__(
        self,
        public: tuple[bytes, bytes] | None,
        internal: tuple[tuple[bytes, bytes], ...],
        headers: frozenset[bytes],
        relative: bool,
    ) -> None:
        self.public = public
        self.internal = internal
        self.headers = headers
        self.relative = relative

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        names = section.get("headers", read_list(read_one_of("a header", tuple(_HEADERS)), non_empty=True))
        relative = section.get("relative", read_bool)
        return cls(
            section.get("public_url", _read_base),
            section.get("internal_urls", read_list(_read_internal, non_empty=True)) or (),
            frozenset(_HEADERS[name] for name in names or ("Location",)),
            True if relative is None else relative,
        )

    def on_response(self, ctx: RequestContext) -> None:
        headers = ctx.response_headers
        assert headers is not None, "on_response runs once the response head is parsed"
        for i, (name, value) in enumerate(headers):
            if name.lower() not in self.headers:
                continue
            if name.lower() == b"refresh":
                match = _REFRESH.match(value)
                if match is not None:
                    url = self.rewrite(ctx, match[3])
                    if url is not None:
                        headers[i] = (name, match[1] + match[2] + url + match[4])
                continue
            url = self.rewrite(ctx, value)
            if url is not None:
                headers[i] = (name, url)

    def rewrite(self, ctx: RequestContext, url: bytes) -> bytes | None:
        """The public form of a URL pointing at the upstream, or None to leave it as it is."""
        route = ctx.route
        assert route is not None, "hooks run on a matched route"
        prefix: bytes = (
            route.strip_prefix.rstrip(b"/") if route.strip_prefix and route.rewrite is None else b""
        )
        if url.startswith(b"/") and not url.startswith(b"//"):
            if not self.relative or not prefix:
                return None
            base_path = self.public[1] if self.public is not None else b""
            return base_path + prefix + url
        split = _split_absolute(url)
        if split is None:
            return None
        authority, rest = split
        authority = authority.lower()
        if not self.is_upstream(ctx, route, authority):
            for internal, internal_path in self.internal:
                if authority == internal and rest.startswith(internal_path):
                    rest = rest[len(internal_path) :]
                    break
            else:
                return None
        base = self.public_base(ctx)
        if base is None:
            return None
        # ``http://up`` and ``http://up?x`` mean the path ``/``
        return base + prefix + (rest if rest.startswith(b"/") else b"/" + rest)

    def is_upstream(self, ctx: RequestContext, route: RouteInfo, authority: bytes) -> bool:
        target = ctx.target
        if target is None:
            return False
        if authority == target.label.encode().lower():
            return True
        sent = ctx.host_header if route.preserve_host and ctx.host_header else target.host_header
        return authority == sent.lower()

    def public_base(self, ctx: RequestContext) -> bytes | None:
        """``scheme://host[/path]`` the client reached the gateway at."""
        if self.public is not None:
            return self.public[0] + self.public[1]
        host = ctx.forwarded_host
        if not host:
            return None
        return ctx.forwarded_proto + b"://" + host
