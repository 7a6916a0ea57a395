"""Value templates for the transform plugins (``headers``, ``query``): ``"{claim.sub}@{host}"``.

A template is parsed once at compile time into literal bytes and variable readers; rendering is
one pass over those parts. Variables:

- ``{client_ip}``, ``{request_id}``, ``{consumer}``, ``{host}`` (the request's Host header as
  received), ``{method}``, ``{path}`` (the normalized request path, before any rewrite)
- ``{param.NAME}``: a route parameter (checked against each route the plugin is on)
- ``{claim.PATH}``: a claim of the verified token, by name or dotted path (as in ``claims``)
- ``{header.NAME}``: the request header's value (the first line of it), empty when the request
  has none; one holding a control character (which would break a header line) has no value
- ``{upstream_host}``: the chosen target's ``host:port``; known only once the request goes
  upstream, so only where the caller allows it (request headers, response headers)

``{{`` and ``}}`` stand for literal braces. A variable with no value for this request (no claim,
no consumer, a header with a control character) makes the whole template render as None: the
caller then sets nothing, rather than a half-filled value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from fastgw.config.validate import describe
from fastgw.errors import ConfigError
from fastgw.hooks import RequestContext
from fastgw.plugins._auth import MISSING, ClaimPath, claim_text, read_header_name

Reader = Callable[[RequestContext], bytes | None]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# A header value must never end a header line: no control characters but tab (RFC 9110 5.5).
_UNSAFE_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is fine (RFC 9110 5.5)
_SIMPLE = ("client_ip", "request_id", "consumer", "host", "method", "path")
VARIABLES = (*_SIMPLE, "upstream_host", "param.NAME", "claim.PATH", "header.NAME")


def unsafe_header_value(value: bytes) -> bool:
    """Would this value break the header block (CR, LF, NUL or another control character)?"""
    return _UNSAFE_HEADER_VALUE.search(value) is not None


def _client_ip(ctx: RequestContext) -> bytes:
    return ctx.client_address


def _request_id(ctx: RequestContext) -> bytes:
    return ctx.request_id


def _consumer(ctx: RequestContext) -> bytes | None:
    return None if ctx.consumer is None else ctx.consumer.encode()


def _host(ctx: RequestContext) -> bytes | None:
    return ctx.host_header or None


def _method(ctx: RequestContext) -> bytes:
    return ctx.method


def _path(ctx: RequestContext) -> bytes:
    return ctx.path


def _upstream_host(ctx: RequestContext) -> bytes | None:
    target = ctx.target
    if target is None:
        return None
    host = target.host
    return (f"[{host}]:{target.port}" if ":" in host else f"{host}:{target.port}").encode()


_READERS: dict[str, Reader] = {
    "client_ip": _client_ip,
    "request_id": _request_id,
    "consumer": _consumer,
    "host": _host,
    "method": _method,
    "path": _path,
    "upstream_host": _upstream_host,
}


def _param_reader(name: str) -> Reader:
    def read(ctx: RequestContext) -> bytes | None:
        return ctx.param(name)

    return read


def _claim_reader(path: ClaimPath) -> Reader:
    def read(ctx: RequestContext) -> bytes | None:
        value = path.find(ctx.claims)
        return None if value is MISSING or value is None else claim_text(value).encode()

    return read


def _header_reader(name: bytes) -> Reader:
    def read(ctx: RequestContext) -> bytes | None:
        value = ctx.header(name)
        if value is None:
            return b""  # absent: empty, so one template serves requests with and without it
        return None if unsafe_header_value(value) else value

    return read


class Template:
    """A parsed template: ``render(ctx)`` is its bytes for this request, or None."""

    __slots__ = ("headers", "key_path", "params", "parts", "text")

    def __init__(
        self,
        text: str,
        key_path: str,
        parts: tuple[bytes | Reader, ...],
        params: frozenset[str],
        headers: frozenset[bytes] = frozenset(),
    ):
        self.text = text
        self.key_path = key_path
        self.parts = parts
        self.params = params  # route parameters it reads, checked per route (check_params)
        self.headers = headers  # request headers it reads (lower-case)

    def render(self, ctx: RequestContext) -> bytes | None:
        out: list[bytes] = []
        for part in self.parts:
            if type(part) is bytes:
                out.append(part)
                continue
            value = part(ctx)  # type: ignore[operator]
            if value is None:
                return None
            out.append(value)
        return b"".join(out)

    def check_params(self, param_names: Collection[str], route: str) -> None:
        """A ``{param.NAME}`` the route does not define is a config error."""
        for name in sorted(self.params):
            if name not in param_names:
                raise ConfigError(self.key_path, f"uses '{{param.{name}}}', which {route} does not define")


def parse_template(value: object, path: str, *, upstream: bool) -> Template:
    """Parse a template from the config; ``upstream``: ``{upstream_host}`` is known where it is used."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(
            path, f"expected a string (a template like '{{client_ip}}'), found {describe(value)}"
        )
    parts: list[bytes | Reader] = []
    params: set[str] = set()
    headers: set[bytes] = set()
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(value):
        literal.append(value[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if match.group(1) is None:
            raise ConfigError(
                path, f"unbalanced '{token}' in {value!r}; write '{token * 2}' for a literal one"
            )
        if literal and "".join(literal):
            parts.append("".join(literal).encode())
        literal = []
        parts.append(_reader(match.group(1).strip(), path, upstream, params, headers))
    literal.append(value[pos:])
    if "".join(literal):
        parts.append("".join(literal).encode())
    return Template(value, path, tuple(parts), frozenset(params), frozenset(headers))


def _reader(name: str, path: str, upstream: bool, params: set[str], headers: set[bytes]) -> Reader:
    kind, dot, rest = name.partition(".")
    if dot and kind == "param" and rest.isidentifier():
        params.add(rest)
        return _param_reader(rest)
    if dot and kind == "claim" and rest:
        return _claim_reader(ClaimPath(rest))
    if dot and kind == "header":
        header = read_header_name(rest, f"{path}: {{header.NAME}}").lower().encode()
        headers.add(header)
        return _header_reader(header)
    if name == "upstream_host" and not upstream:
        raise ConfigError(
            path, "'{upstream_host}' is known only once the request goes upstream: use it in a header"
        )
    reader = _READERS.get(name)
    if reader is None:
        listed = ", ".join(VARIABLES)
        raise ConfigError(path, f"unknown variable '{{{name}}}'; expected one of: {listed}")
    return reader
