"""``cors``: cross-origin requests from browsers (the Fetch standard's CORS protocol).

    plugins:
      - name: cors
        origins: ["https://app.example.com", "https://*.example.com"]   # or "*"
        methods: [GET, POST, DELETE]     # default: the route's methods (any, when it lists none)
        headers: [Content-Type, Authorization]   # request headers allowed; "*": whatever is asked
        expose_headers: [X-Request-Id]
        credentials: true
        max_age: 10m

Origins are exact (``https://app.example.com``, compared case-insensitively), ``*`` for any, or
patterns with one ``*`` standing for one or more DNS labels (``https://*.example.com`` matches
``https://a.b.example.com``, not ``https://example.com``); all are compiled into one regex.
``credentials: true`` with ``*`` is a config error: browsers refuse that pair (Fetch, CORS check).

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered here,
never forwarded: 204 with Allow-Origin (the request's origin; ``*`` for a wildcard without
credentials), Allow-Methods, Allow-Headers (the requested ones, when allowed), Max-Age,
Allow-Credentials and ``Vary: Origin``. A preflight from an origin not allowed, or asking for a
method or header not allowed, gets 403 and no CORS headers: the browser fails it either way
(a preflight passes only with an ok status and the CORS headers), and the 403 says why to whoever
reads logs or curl output. The route's ``methods`` need not list OPTIONS: the plugin declares
that it answers OPTIONS (``Plugin.answers_methods``), so the router lets them through, and a plain
OPTIONS that is not a preflight gets the 405 the route would have given.

Other requests go upstream as usual (CORS is enforced by browsers, not here); the response of an
allowed origin gets Allow-Origin, Allow-Credentials and Expose-Headers (the upstream's own
Access-Control-* headers are replaced), and every response gets ``Vary: Origin`` unless the
answer is the same ``*`` for everyone. List ``cors`` before authentication plugins: preflights
carry no credentials. Responses the gateway makes itself (a 401 from an auth plugin) carry no
CORS headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, expected, read_bool, read_duration, read_list, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from fastgw.http.wire import error_body
from fastgw.plugins._auth import read_header_name
from fastgw.plugins._refusal import Refusal

_OPTIONS = ("origins", "methods", "headers", "expose_headers", "credentials", "max_age")
_ORIGIN = re.compile(r"(https?)://([a-z0-9*.-]+)(:[0-9]{1,5})?")
_LABELS = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN_ORIGIN = Refusal(403, "CORS: origin not allowed")
_VARY_ORIGIN = (b"Vary", b"Origin")
_UPSTREAM_CORS = (
    b"access-control-allow-origin",
    b"access-control-allow-credentials",
    b"access-control-expose-headers",
)


def _read_origin(value: object, path: str) -> str:
    text = read_str(value, path).lower()
    match = _ORIGIN.fullmatch(text)
    host = match.group(2) if match else ""
    if text == "null":
        return text
    if match is None or "*" in host.lstrip("*") or (host.startswith("*") and not host.startswith("*.")):
        raise expected(
            path, "'*', an origin like 'https://app.example.com' or 'https://*.example.com'", value
        )
    return text


def _origin_regex(origins: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = [re.escape(o).replace(r"\*", _LABELS) for o in origins]
    return re.compile("|".join(alternatives))


def _read_method(value: object, path: str) -> str:
    text = read_str(value, path)
    if not _TOKEN.fullmatch(text):
        raise expected(path, "a method name like 'GET'", value)
    return (
        text.upper() if text.upper() in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH") else text
    )


def _read_star_or(item: Any) -> Any:
    def read(value: object, path: str) -> tuple[str, ...] | None:
        if value == "*":
            return None
        result: tuple[str, ...] = read_list(item, non_empty=True)(value, path)
        return result

    return read


def _route_methods(ctx: RequestContext) -> tuple[str, ...] | None:
    """The methods the request's route was configured for (None: any)."""
    route = ctx.route
    return route.methods if route is not None else None


@register_plugin
class Cors(Plugin):
    """Options: ``origins`` (required), ``methods``, ``headers``, ``expose_headers``,
    ``credentials``, ``max_age``."""

    name: ClassVar[str] = "cors"
    answers_methods: ClassVar[tuple[str, ...]] = ("OPTIONS",)

    def __init__(
        self,
        origins: re.Pattern[str] | None,
        methods: tuple[str, ...] | None,
        headers: tuple[str, ...] | None,
        expose: tuple[str, ...],
        credentials: bool,
        max_age: int | None,
    ) -> None:
        self.origins = origins  # None: any origin
        self.methods = methods  # None: the route's
        self.allowed_headers = None if headers is None else frozenset(h.lower() for h in headers)
        self.credentials = credentials
        # The answer is the same "*" for everyone only for a wildcard without credentials.
        self.wildcard = origins is None and not credentials
        extra: list[tuple[bytes, bytes]] = []
        if credentials:
            extra.append((b"Access-Control-Allow-Credentials", b"true"))
        self.preflight_extra = list(extra)
        if max_age is not None:
            self.preflight_extra.append((b"Access-Control-Max-Age", b"%d" % max_age))
        if expose:
            extra.append((b"Access-Control-Expose-Headers", ", ".join(expose).encode()))
        self.response_extra = extra

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS, required=("origins",))
        origins = section.require("origins", _read_star_or(_read_origin))
        credentials = bool(section.get("credentials", read_bool))
        if credentials and origins is None:
            raise ConfigError(
                section.at("credentials"),
                "cannot be true with origins '*': browsers refuse credentials for '*'",
            )
        max_age = section.get("max_age", read_duration(allow_zero=True))
        return cls(
            None if origins is None else _origin_regex(origins),
            section.get("methods", read_list(_read_method, non_empty=True)),
            section.get("headers", _read_star_or(read_header_name)),
            section.get("expose_headers", read_list(read_header_name, non_empty=True)) or (),
            credentials,
            None if max_age is None else int(max_age),
        )

    def allowed_origin(self, origin: bytes | None) -> bytes | None:
        """The Allow-Origin value for this request's Origin, or None."""
        if origin is None:
            return b"*" if self.wildcard else None
        if self.wildcard:
            return b"*"
        if self.origins is None:
            return origin  # any origin, with credentials: echo it
        return origin if self.origins.fullmatch(origin.decode("latin-1").lower()) else None

    def on_request(self, ctx: RequestContext) -> Response | None:
        if ctx.method != b"OPTIONS":
            return None
        origin = ctx.header(b"origin")
        requested = ctx.header(b"access-control-request-method")
        if origin is None or requested is None:
            route_methods = _route_methods(ctx)
            if route_methods is not None and "OPTIONS" not in route_methods:
                # Not a preflight: the router let it through only for preflights (answers_methods).
                allow = ", ".join(sorted(route_methods)).encode()
                return Response(
                    405, error_body("method not allowed for this path", ctx.request_id), [(b"Allow", allow)]
                )
            return None
        return self.preflight(ctx, origin, requested.strip())

    def preflight(self, ctx: RequestContext, origin: bytes, requested: bytes) -> Response:
        allow_origin = self.allowed_origin(origin)
        if allow_origin is None:
            return _FORBIDDEN_ORIGIN.response(ctx, [_VARY_ORIGIN])
        methods = self.methods or _route_methods(ctx)
        method = requested.decode("latin-1")
        if methods is not None and method not in methods and method not in ("GET", "HEAD", "POST"):
            return self.refuse(ctx, f"CORS: method {method} not allowed")
        asked = ctx.header(b"access-control-request-headers") or b""
        names = [h.strip() for h in asked.split(b",") if h.strip()]
        if self.allowed_headers is not None:
            for name in names:
                if name.decode("latin-1").lower() not in self.allowed_headers:
                    return self.refuse(ctx, f"CORS: request header {name.decode('latin-1')} not allowed")
        headers = [
            (b"Access-Control-Allow-Origin", allow_origin),
            (b"Access-Control-Allow-Methods", ", ".join(methods).encode() if methods else requested),
            *self.preflight_extra,
            _VARY_ORIGIN,
        ]
        if names:
            headers.append((b"Access-Control-Allow-Headers", b", ".join(names)))
        return Response(204, b"", headers)

    def refuse(self, ctx: RequestContext, message: str) -> Response:
        return Response(403, error_body(message, ctx.request_id), [_VARY_ORIGIN])

    def on_response(self, ctx: RequestContext) -> None:
        headers = ctx.response_headers
        assert headers is not None, "on_response runs once the response head is parsed"
        headers[:] = [(n, v) for n, v in headers if n.lower() not in _UPSTREAM_CORS]
        allow_origin = self.allowed_origin(ctx.header(b"origin"))
        if allow_origin is not None:
            headers.append((b"Access-Control-Allow-Origin", allow_origin))
            headers.extend(self.response_extra)
        if not self.wildcard:
            headers.append(_VARY_ORIGIN)
