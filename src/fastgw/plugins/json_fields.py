"""``json_fields``: only some fields of a JSON response reach the client (an allow list), or all
but some (a deny list).

    plugins:
      - name: json_fields
        deny: [password_hash, owner.email]    # or allow: [id, name, owner.id]
        max_bytes: 1MiB                       # default

Paths are dotted (``owner.email``). The body is an object, or a list of them (a list at any
level is walked item by item; items that are not objects stay as they are). With ``allow``, a
listed object keeps only the listed fields (``owner.id`` keeps ``owner`` with only ``id``);
with ``deny``, the listed fields are removed and the rest kept.

Only ``application/json`` and ``*/*+json`` responses with a body are filtered; the body is
buffered (at most ``max_bytes``), filtered, and sent re-framed (chunked). A response the
upstream compressed (gzip, deflate, br) is decoded first, within the same bound, and sent
decoded (a ``compress`` plugin encodes it again).

Fail closed: a list that hides fields must not let them out when it cannot be applied. A body
over ``max_bytes`` is answered 502 when its Content-Length says so up front; when the length is
not known, the head has already gone out once the limit is crossed, so the response is cut (the
connection closes, the chunked body never ends), and a warning is logged once per plugin. A
body that does not parse as JSON (or cannot be decoded) is cut the same way.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import brotli
import orjson

from fastgw.config.validate import Section, expected, read_list, read_size, read_str
from fastgw.errors import UpstreamFault
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._auth import check_one_of
from fastgw.plugins._refusal import Refusal
from fastgw.plugins.compress import CompressingFilter

log = logging.getLogger("fastgw")

_OPTIONS = ("allow", "deny", "max_bytes")
_TOO_LARGE = Refusal(502, "upstream response too large to filter")
_CANNOT_DECODE = Refusal(502, "upstream response encoding cannot be filtered")

# field -> subtree; None: the whole field (allowed, or denied)
FieldTree = dict[str, "FieldTree | None"]


def _read_field(value: object, path: str) -> tuple[str, ...]:
    parts = tuple(read_str(value, path).split("."))
    if not all(parts):
        raise expected(path, "a field name or a dotted path like 'owner.email'", value)
    return parts


def build_tree(paths: tuple[tuple[str, ...], ...]) -> FieldTree:
    """Dotted paths as a tree; a shorter path covers the longer ones under it."""
    tree: FieldTree = {}
    for parts in sorted(paths, key=len):
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is None:
                break  # a whole-field entry already covers this path
            node = child
        else:
            node[parts[-1]] = None
    return tree


def allow_fields(value: Any, tree: FieldTree) -> Any:
    if isinstance(value, list):
        return [allow_fields(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    kept = {}
    for name, sub in tree.items():
        if name in value:
            kept[name] = value[name] if sub is None else allow_fields(value[name], sub)
    return kept


def deny_fields(value: Any, tree: FieldTree) -> Any:
    if isinstance(value, list):
        return [deny_fields(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    kept = {}
    for name, item in value.items():
        sub = tree.get(name, ...)
        if sub is None:
            continue
        kept[name] = item if sub is ... else deny_fields(item, sub)
    return kept


def is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _Decoder:
    """The upstream's content coding undone, never producing more than ``limit`` bytes."""

    def __init__(self, coding: bytes) -> None:
        self.coding = coding
        self.zlib = zlib.decompressobj(47) if coding in (b"gzip", b"x-gzip", b"deflate") else None
        self.brotli = brotli.Decompressor() if coding == b"br" else None

    def decode(self, data: bytes, limit: int) -> bytes | None:
        """Decoded bytes, or None past ``limit``; raises ValueError for a corrupt body."""
        try:
            if self.zlib is not None:
                out = self.zlib.decompress(data, limit + 1)
                return None if len(out) > limit or self.zlib.unconsumed_tail else out
            if self.brotli is not None:
                out = self.brotli.process(data, output_buffer_limit=limit + 1)
                return None if len(out) > limit or not self.brotli.can_accept_more_data() else out
        except (zlib.error, brotli.error) as exc:
            raise ValueError(str(exc)) from None
        return data


class FieldFilter:
    """Buffers the body (bounded), then answers it filtered (a ``hooks.BodyFilter``)."""

    __slots__ = ("ctx", "decoder", "parts", "plugin", "size")

    def __init__(self, plugin: JsonFields, ctx: RequestContext, decoder: _Decoder | None) -> None:
        self.plugin = plugin
        self.ctx = ctx
        self.decoder = decoder
        self.parts: list[bytes] | None = []  # None once cut
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        if self.parts is None:
            return b""
        if self.decoder is not None:
            try:
                decoded = self.decoder.decode(data, self.plugin.max_bytes - self.size)
            except ValueError:
                return self.cut("could not be decoded")
            if decoded is None:
                return self.cut(f"is over max_bytes ({self.plugin.max_bytes})")
            data = decoded
        self.size += len(data)
        if self.size > self.plugin.max_bytes:
            return self.cut(f"is over max_bytes ({self.plugin.max_bytes})")
        self.parts.append(data)
        return b""

    def end(self) -> bytes:
        if self.parts is None:
            return b""
        try:
            document = orjson.loads(b"".join(self.parts))
        except orjson.JSONDecodeError:
            return self.cut("is not valid JSON")
        return orjson.dumps(self.plugin.apply(document, self.plugin.tree))

    def cut(self, why: str) -> bytes:
        """The head went out: the only honest end is an incomplete response."""
        self.parts = None
        self.plugin.warn_once(why)
        self.ctx.fail(UpstreamFault(f"response body {why}", 502))
        return b""


@register_plugin
class JsonFields(Plugin):
    """Options: ``allow`` or ``deny`` (field names or dotted paths), ``max_bytes`` (default 1 MiB)."""

    name: ClassVar[str] = "json_fields"

    def __init__(self, allow: bool, tree: FieldTree, max_bytes: int) -> None:
        self.apply = allow_fields if allow else deny_fields
        self.tree = tree
        self.max_bytes = max_bytes
        self.warned = False

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        kind = check_one_of(section, ("allow", "deny"), "the fields")
        paths = section.require(kind, read_list(_read_field, non_empty=True))
        return cls(kind == "allow", build_tree(paths), section.get("max_bytes", read_size) or 1024 * 1024)

    def warn_once(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("json_fields: a response body %s; cut instead of sent unfiltered (logged once)", why)

    def on_response(self, ctx: RequestContext) -> Response | None:
        status = ctx.response_status
        if status < 200 or status in (204, 304) or ctx.method == b"HEAD":
            return None
        headers = ctx.response_headers
        assert headers is not None, "on_response runs once the response head is parsed"
        content_type = coding = length = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-type":
                content_type = value
            elif lower == b"content-encoding":
                coding = value.strip().lower()
            elif lower == b"content-length":
                length = value
        if content_type is None or not is_json(content_type):
            return None
        filters = ctx.body_filters
        # A compress plugin listed earlier may have encoded this (identity) body already: its
        # filter must stay last, and the Content-Encoding it set is its own.
        encoder = next((i for i, f in enumerate(filters or ()) if isinstance(f, CompressingFilter)), None)
        decoder = None
        if coding not in (None, b"identity") and encoder is None:
            decoder = _Decoder(coding)
            if decoder.zlib is None and decoder.brotli is None:
                return _CANNOT_DECODE.response(ctx)
        elif length is not None and length.isdigit() and int(length) > self.max_bytes:
            self.warn_once(f"is over max_bytes ({self.max_bytes})")
            return _TOO_LARGE.response(ctx)
        drop = (b"content-length", b"content-encoding") if decoder is not None else (b"content-length",)
        headers[:] = [(n, v) for n, v in headers if n.lower() not in drop]
        if filters is None:
            filters = ctx.body_filters = []
        body_filter = FieldFilter(self, ctx, decoder)
        if encoder is None:
            filters.append(body_filter)
        else:
            filters.insert(encoder, body_filter)
        return None
