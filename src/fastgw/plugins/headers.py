"""``headers``: add, set and remove request and response headers, values from templates.

    plugins:
      - name: headers
        request:
          set: {X-User-Id: "{claim.sub}", X-Client-Ip: "{client_ip}"}
          add: {X-Via: "fastgw {request_id}"}
          remove: [X-Debug, Cookie]
        response:
          set: {X-Served-By: "{upstream_host}"}
          remove: [Server]

Per side: ``remove`` drops every copy of a header; ``set`` replaces it (every copy the client or
the upstream sent is dropped, then the gateway's is added); ``add`` adds one more copy and keeps
the others. Values are templates (``_template``): ``{client_ip}``, ``{request_id}``,
``{param.NAME}``, ``{claim.PATH}``, ``{consumer}``, ``{upstream_host}``, ``{host}``,
``{method}``, ``{path}``.

Request headers are written just before the head goes upstream (``on_upstream_request``, on
every attempt), so ``{upstream_host}`` is the target this attempt goes to, and every
``on_request`` plugin (authentication) still sees the client's own headers. A value that renders
with a control character (a claim holding CR LF, say) is not sent at all, and neither is one whose
variable has no value for this request (no such claim): a header line is never injected, and a
``set`` header is never left at the client's forged copy. Headers that frame the message or that
the gateway writes itself (Host, Content-Length, Transfer-Encoding, Connection, X-Forwarded-*,
X-Request-Id, ...) cannot be named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, read_list, read_mapping
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, register_plugin
from fastgw.plugins._auth import read_settable_header
from fastgw.plugins._template import Template, parse_template, unsafe_header_value
from fastgw.server.wire import HOP_BY_HOP

_SIDE_OPTIONS = ("set", "add", "remove")
# Framing and what the gateway writes itself: changing them would corrupt or spoof the message.
_RESERVED_REQUEST = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-request-id", b"traceparent"}
_RESERVED_RESPONSE = HOP_BY_HOP | {b"content-length"}

HeaderRule = tuple[bytes, Template]


class HeaderEdits:
    """One side's compiled edits: names to drop (lower-case), then (name, template) to add."""

    __slots__ = ("add", "drop", "templates")

    def __init__(self, drop: tuple[bytes, ...], add: tuple[HeaderRule, ...]) -> None:
        self.drop = drop
        self.add = add
        self.templates = tuple(template for _, template in add)

    def __bool__(self) -> bool:
        return bool(self.drop or self.add)

    def rendered(self, ctx: Any) -> list[tuple[bytes, bytes]]:
        """The header lines to add for this request: the ones whose value rendered safely."""
        lines = []
        for name, template in self.add:
            value = template.render(ctx)
            if value is not None and not unsafe_header_value(value):
                lines.append((name, value))
        return lines


def _read_edits(value: object, path: str, *, request: bool) -> HeaderEdits:
    section = Section(value, path, _SIDE_OPTIONS)
    if not section.items:
        raise ConfigError(path, "give at least one of set, add or remove")
    read_name = read_settable_header(
        _RESERVED_REQUEST if request else _RESERVED_RESPONSE,
        "frames the message or is written by the gateway itself",
    )
    rules: dict[str, list[HeaderRule]] = {"set": [], "add": []}
    for kind, found in rules.items():
        if kind in section.items:
            at = section.at(kind)
            for name, template in read_mapping(section.items[kind], at, non_empty=True).items():
                found.append(
                    (read_name(name, f"{at}.{name}"), parse_template(template, f"{at}.{name}", upstream=True))
                )
    removed = section.get("remove", read_list(read_name, non_empty=True, single=True)) or ()
    drop = tuple(dict.fromkeys(name.lower() for name in (*removed, *(n for n, _ in rules["set"]))))
    return HeaderEdits(drop, (*rules["set"], *rules["add"]))


@register_plugin
class Headers(Plugin):
    """Options: ``request`` and ``response``, each with ``set``, ``add`` and ``remove``."""

    name: ClassVar[str] = "headers"

    def __init__(self, request: HeaderEdits | None, response: HeaderEdits | None) -> None:
        self.request = request
        self.response = response
        self.templates = (*(request.templates if request else ()), *(response.templates if response else ()))

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, ("request", "response"))
        if not section.items:
            raise ConfigError(key_path, "give request or response (or both)")
        request = section.get("request", lambda v, p: _read_edits(v, p, request=True))
        response = section.get("response", lambda v, p: _read_edits(v, p, request=False))
        return cls(request, response)

    def check_route(self, param_names: tuple[str, ...], route: str) -> None:
        for template in self.templates:
            template.check_params(param_names, route)

    def on_upstream_request(self, ctx: Any) -> None:
        edits = self.request
        if edits is None:
            return
        for name in edits.drop:
            if ctx.header(name) is not None:
                ctx.remove_request_header(name)
        ctx.upstream_headers.extend(edits.rendered(ctx))

    def on_response(self, ctx: Any) -> None:
        edits = self.response
        if edits is None:
            return
        headers = ctx.response_headers
        if edits.drop:
            drop = edits.drop
            headers[:] = [(n, v) for n, v in headers if n.lower() not in drop]
        headers.extend(edits.rendered(ctx))
