"""``headers``: rename, remove, set and add request and response headers, values from templates.

    plugins:
      - name: headers
        request:
          rename: {X-Api-Version: X-Version}
          set: {X-User-Id: "{claim.sub}", X-Client-Ip: "{client_ip}"}
          add: {X-Via: "fastgw {request_id}", X-Tenant: "{header.X-Org}"}
          remove: [X-Debug, Cookie]
        response:
          rename: {X-Upstream-Time: X-Backend-Time}
          set: {X-Served-By: "{upstream_host}"}
          remove: [Server]

Per side, in this order: ``rename`` gives every line of a header a new name, keeping its values
and their order (the lines already under the new name go, as a file moved onto another; a header
that is not there renames nothing); ``remove`` drops every copy of a header; ``set`` replaces it
(every copy the client or the upstream sent is dropped, then the gateway's is added); ``add``
adds one more copy and keeps the others. Values are templates (``_template``): ``{client_ip}``,
``{request_id}``, ``{param.NAME}``, ``{claim.PATH}``, ``{header.NAME}`` (a request header),
``{consumer}``, ``{upstream_host}``, ``{host}``, ``{method}``, ``{path}``.

Request headers are written just before the head goes upstream (``on_upstream_request``, on
every attempt), so ``{upstream_host}`` is the target this attempt goes to, and every
``on_request`` plugin (authentication) still sees the client's own headers. Renamed lines go into
the forwarded block itself, so a retried attempt carries them too. A value that renders with a
control character (a claim holding CR LF, say) is not sent at all, and neither is one whose
variable has no value for this request (no such claim): a header line is never injected, and a
``set`` header is never left at the client's forged copy. Headers that frame the message or that
the gateway writes itself (Host, Content-Length, Transfer-Encoding, Connection, X-Forwarded-*,
X-Request-Id, ...) cannot be named, neither renamed nor renamed to. A template cannot read a
request header the request side renames, removes or sets: by the time it renders, the header is
gone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, read_list, read_mapping
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, register_plugin
from fastgw.http.wire import HOP_BY_HOP
from fastgw.plugins._auth import read_settable_header
from fastgw.plugins._template import Template, parse_template, unsafe_header_value

_SIDE_OPTIONS = ("rename", "set", "add", "remove")
# Framing and what the gateway writes itself: changing them would corrupt or spoof the message.
_RESERVED_REQUEST = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-request-id", b"traceparent"}
_RESERVED_RESPONSE = HOP_BY_HOP | {b"content-length"}

HeaderRule = tuple[bytes, Template]


class HeaderEdits:
    """One side's compiled edits: (old name lower-case, new name) to rename, names to drop
    (lower-case), then (name, template) to add."""

    __slots__ = ("add", "drop", "rename", "templates")

    def __init__(
        self, rename: tuple[tuple[bytes, bytes], ...], drop: tuple[bytes, ...], add: tuple[HeaderRule, ...]
    ) -> None:
        self.rename = rename
        self.drop = drop
        self.add = add
        self.templates = tuple(template for _, template in add)

    def __bool__(self) -> bool:
        return bool(self.rename or self.drop or self.add)

    def changed(self) -> frozenset[bytes]:
        """The names (lower-case) these edits take away from a request: what a template reading
        the request's headers would find gone."""
        renamed = [name for old, new in self.rename for name in (old, new.lower())]
        return frozenset((*self.drop, *renamed))

    def rendered(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
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
        raise ConfigError(path, "give at least one of rename, set, add or remove")
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
    rename = _read_renames(section, read_name, drop) if "rename" in section.items else ()
    return HeaderEdits(rename, drop, (*rules["set"], *rules["add"]))


def _read_renames(
    section: Section, read_name: Callable[[object, str], bytes], drop: tuple[bytes, ...]
) -> tuple[tuple[bytes, bytes], ...]:
    """``rename: {Old-Name: New-Name}``. No name is removed or set on the same side too, renamed
    and renamed to, or renamed to twice: the result would hang on the order of the edits."""
    at = section.at("rename")
    renames: dict[bytes, bytes] = {}
    renamed_from: dict[bytes, str] = {}  # new name (lower-case) -> the old one, as configured
    for old_name, new_name in read_mapping(section.items["rename"], at, non_empty=True).items():
        path = f"{at}.{old_name}"
        old, new = read_name(old_name, path).lower(), read_name(new_name, path)
        for lower, name in ((old, old_name), (new.lower(), new.decode())):
            if lower in drop:
                raise ConfigError(path, f"{name} is also removed or set on this side")
        if new.lower() in renamed_from:
            raise ConfigError(path, f"{new.decode()} is already the new name of {renamed_from[new.lower()]}")
        renames[old] = new
        renamed_from[new.lower()] = old_name
    for old_name in read_mapping(section.items["rename"], at):
        old = old_name.lower().encode()
        if old in renamed_from and renames[old].lower() != old:
            raise ConfigError(f"{at}.{old_name}", f"{old_name} is both renamed and renamed to")
    return tuple(renames.items())


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
        plugin = cls(request, response)
        gone = request.changed() if request else frozenset()
        for template in plugin.templates:
            for name in sorted(template.headers & gone):
                raise ConfigError(
                    template.key_path,
                    f"reads {{header.{name.decode()}}}, which request renames, removes or sets:"
                    " it is gone before the template renders",
                )
        return plugin

    def check_route(self, param_names: tuple[str, ...], route: str) -> None:
        for template in self.templates:
            template.check_params(param_names, route)

    def on_upstream_request(self, ctx: RequestContext) -> None:
        edits = self.request
        if edits is None:
            return
        for old, new in edits.rename:
            if ctx.header(old) is not None:  # PERF: a C scan; the pairs are made only if needed
                values = [value for name, value in ctx.headers if name.lower() == old]
                ctx.remove_request_header(old)
                if ctx.header(new.lower()) is not None:
                    ctx.remove_request_header(new.lower())
                for value in values:  # into the forwarded block: a retried attempt keeps them
                    ctx.add_request_header(new, value)
        for name in edits.drop:
            if ctx.header(name) is not None:
                ctx.remove_request_header(name)
        extra = ctx.upstream_headers
        assert extra is not None, "on_upstream_request runs once the list exists"
        extra.extend(edits.rendered(ctx))

    def on_response(self, ctx: RequestContext) -> None:
        edits = self.response
        if edits is None:
            return
        headers = ctx.response_headers
        assert headers is not None, "on_response runs once the response head is parsed"
        for old, new in edits.rename:
            if any(name.lower() == old for name, _ in headers):
                headers[:] = _renamed(headers, old, new)
        if edits.drop:
            drop = edits.drop
            headers[:] = [(n, v) for n, v in headers if n.lower() not in drop]
        headers.extend(edits.rendered(ctx))


def _renamed(headers: list[tuple[bytes, bytes]], old: bytes, new: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` with every ``old`` line (lower-case name) named ``new``, values and order kept,
    and the lines already named ``new`` gone."""
    target = new.lower()
    renamed = []
    for name, value in headers:
        lower = name.lower()
        if lower == old:
            renamed.append((new, value))
        elif lower != target:
            renamed.append((name, value))
    return renamed
