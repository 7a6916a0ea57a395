"""``compress``: gzip or brotli response bodies for clients that accept them, piece by piece.

    plugins:
      - name: compress
        encodings: [br, gzip]      # which, in the order preferred when the client's q-values tie
        min_bytes: 1KiB            # smaller known lengths are sent as they are
        gzip_level: 6              # 1-9
        brotli_quality: 4          # 0-11
        types: [text/*, application/json, "application/*+json"]   # default: the list below

The coding is the one the client's ``Accept-Encoding`` rates highest (RFC 9110 12.5.3: q-values,
``*`` for codings not named, ``x-gzip`` as ``gzip``, ``q=0`` for "not this one"); without the
header, or when nothing acceptable is offered, the body goes as it is (identity).

A response is compressed only when all of these hold: a status with a content (not 1xx, 204, 304)
that is not a range (206, ``Content-Range``); no ``Content-Encoding`` yet; a ``Content-Type`` in
``types`` and not an already compressed one (images but SVG, audio, video, archives, fonts: never,
whatever ``types`` says); no ``Cache-Control: no-transform``; and a Content-Length of at least
``min_bytes``. A response without a Content-Length (chunked, close-delimited) is compressed: its
head, and so the decision, goes out before any of its body is seen, and such bodies are mostly
streamed and large. Such a response gets ``Vary: Accept-Encoding`` whatever the client accepts
(a cache must tell the two forms apart); a compressed one also loses Content-Length (it is
re-framed, chunked) and ``Accept-Ranges``, and its ``ETag`` becomes weak (RFC 9110 8.8.1: the
bytes differ from the identity form's). A HEAD response gets the headers the GET would get.

Streaming: each piece of the upstream's body is compressed and flushed (zlib's ``Z_SYNC_FLUSH``,
brotli's ``flush``) as it arrives, so memory stays bounded and a slow stream is not held back.
List ``compress`` last: body filters of plugins after it would see compressed bytes
(``json_fields`` knows and puts its filter before this one).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import brotli

from fastgw.config.validate import (
    Section,
    expected,
    read_int,
    read_list,
    read_one_of,
    read_size,
    read_str,
)
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, register_plugin

_OPTIONS = ("encodings", "min_bytes", "gzip_level", "brotli_quality", "types")
_CODINGS = ("br", "gzip")
DEFAULT_TYPES = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "application/x-ndjson",
    "application/wasm",
    "image/svg+xml",
)
# Already compressed: compressing again costs CPU and usually makes them larger.
_COMPRESSED_FAMILIES = (b"image/", b"audio/", b"video/", b"font/woff")
_COMPRESSED = frozenset(
    {
        b"application/zip",
        b"application/gzip",
        b"application/x-gzip",
        b"application/x-bzip2",
        b"application/x-xz",
        b"application/zstd",
        b"application/x-7z-compressed",
        b"application/x-rar-compressed",
        b"application/vnd.rar",
        b"application/x-brotli",
    }
)
_CACHE_SIZE = 1024


def already_compressed(media: bytes) -> bool:
    return media in _COMPRESSED or (media.startswith(_COMPRESSED_FAMILIES) and media != b"image/svg+xml")


class MediaTypes:
    """``text/*``, ``application/*+json`` and exact media types, matched without parameters."""

    __slots__ = ("exact", "prefixes", "suffixed")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.exact = frozenset(p.encode() for p in patterns if "*" not in p)
        self.prefixes = tuple(p[:-1].encode() for p in patterns if p.endswith("/*"))
        self.suffixed = tuple(
            (p.partition("*")[0].encode(), p.partition("*")[2].encode()) for p in patterns if "/*+" in p
        )

    def match(self, media: bytes) -> bool:
        if media in self.exact or media.startswith(self.prefixes):
            return True
        return any(media.startswith(head) and media.endswith(tail) for head, tail in self.suffixed)


def _read_type(value: object, path: str) -> str:
    text = read_str(value, path).lower()
    kind, slash, sub = text.partition("/")
    if (
        not slash
        or not kind
        or kind == "*"
        or not sub
        or ("*" in sub and sub != "*" and not sub.startswith("*+"))
    ):
        raise expected(path, "a media type like 'text/html', 'text/*' or 'application/*+json'", value)
    if already_compressed(text.encode()) or (sub == "*" and already_compressed(f"{kind}/x".encode())):
        raise ConfigError(path, f"{text} is already compressed; compressing it again only costs")
    return text


def _read_min_bytes(value: object, path: str) -> int:
    return 0 if value == 0 or value == "0" else read_size(value, path)


def accepted_codings(header: bytes | None) -> dict[bytes, float]:
    """coding -> q of an Accept-Encoding value; malformed elements are ignored."""
    codings: dict[bytes, float] = {}
    if not header:
        return codings
    for element in header.lower().split(b","):
        coding, _, params = element.partition(b";")
        coding = coding.strip()
        q = 1.0
        for param in params.split(b";"):
            key, eq, value = param.strip().partition(b"=")
            if eq and key.strip() == b"q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if coding and 0.0 <= q <= 1.0:
            codings[b"gzip" if coding == b"x-gzip" else coding] = q
    return codings


def choose_coding(header: bytes | None, offered: tuple[bytes, ...]) -> bytes | None:
    """The offered coding the client rates highest (earlier in ``offered`` on a tie), or None."""
    codings = accepted_codings(header)
    star = codings.get(b"*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = codings.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best


class CompressingFilter:
    """Compresses each piece as it comes and flushes it (a ``hooks.BodyFilter``)."""

    __slots__ = ("brotli", "zlib")

    def __init__(self, coding: bytes, gzip_level: int, brotli_quality: int) -> None:
        self.zlib = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if coding == b"gzip" else None
        self.brotli = brotli.Compressor(quality=brotli_quality) if coding == b"br" else None

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self.zlib is not None:
            return self.zlib.compress(data) + self.zlib.flush(zlib.Z_SYNC_FLUSH)
        assert self.brotli is not None
        return bytes(self.brotli.process(data)) + bytes(self.brotli.flush())

    def end(self) -> bytes:
        if self.zlib is not None:
            return self.zlib.flush()
        assert self.brotli is not None
        return bytes(self.brotli.finish())


@register_plugin
class Compress(Plugin):
    """Options: ``encodings``, ``min_bytes``, ``gzip_level``, ``brotli_quality``, ``types``."""

    name: ClassVar[str] = "compress"

    def __init__(
        self,
        offered: tuple[bytes, ...],
        min_bytes: int,
        gzip_level: int,
        brotli_quality: int,
        types: MediaTypes,
    ) -> None:
        self.offered = offered
        self.min_bytes = min_bytes
        self.gzip_level = gzip_level
        self.brotli_quality = brotli_quality
        self.types = types
        # PERF: clients send a handful of distinct Accept-Encoding values: parse each once.
        self.choices: dict[bytes | None, bytes | None] = {}

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        encodings = section.get("encodings", read_list(read_one_of("an encoding", _CODINGS), non_empty=True))
        min_bytes = section.get("min_bytes", _read_min_bytes)
        gzip_level = section.get("gzip_level", read_int(1, 9))
        brotli_quality = section.get("brotli_quality", read_int(0, 11))
        types = section.get("types", read_list(_read_type, non_empty=True)) or DEFAULT_TYPES
        return cls(
            tuple(dict.fromkeys(e.encode() for e in encodings or _CODINGS)),
            1024 if min_bytes is None else min_bytes,
            6 if gzip_level is None else gzip_level,
            4 if brotli_quality is None else brotli_quality,
            MediaTypes(types),
        )

    def coding_for(self, accept_encoding: bytes | None) -> bytes | None:
        choices = self.choices
        try:
            return choices[accept_encoding]
        except KeyError:
            pass
        if len(choices) >= _CACHE_SIZE:
            choices.clear()
        coding = choices[accept_encoding] = choose_coding(accept_encoding, self.offered)
        return coding

    def compressible(self, headers: list[tuple[bytes, bytes]]) -> bool:
        media = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-type":
                media = value.partition(b";")[0].strip().lower()
            elif lower in (b"content-encoding", b"content-range") or (
                lower == b"cache-control" and b"no-transform" in value.lower()
            ):
                return False  # encoded already, a range, or a representation not to transform
            elif lower == b"content-length" and value.isdigit() and int(value) < self.min_bytes:
                return False
        return media is not None and self.types.match(media) and not already_compressed(media)

    def on_response(self, ctx: RequestContext) -> None:
        status = ctx.response_status
        if status < 200 or status in (204, 206, 304):
            return
        headers = ctx.response_headers
        assert headers is not None, "on_response runs once the response head is parsed"
        if not self.compressible(headers):
            return
        _add_vary(headers)
        coding = self.coding_for(ctx.header(b"accept-encoding"))
        if coding is None:
            return
        edited = []
        for name, value in headers:
            lower = name.lower()
            if lower in (b"content-length", b"accept-ranges"):
                continue
            if lower == b"etag" and not value.startswith(b"W/"):
                value = b"W/" + value
            edited.append((name, value))
        edited.append((b"Content-Encoding", coding))
        headers[:] = edited
        if ctx.method != b"HEAD":
            if ctx.body_filters is None:
                ctx.body_filters = []
            ctx.body_filters.append(CompressingFilter(coding, self.gzip_level, self.brotli_quality))


def _add_vary(headers: list[tuple[bytes, bytes]]) -> None:
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            tokens = [t.strip().lower() for t in value.split(b",")]
            if b"*" in tokens or b"accept-encoding" in tokens:
                return
            headers[i] = (name, value + b", Accept-Encoding" if value.strip() else b"Accept-Encoding")
            return
    headers.append((b"Vary", b"Accept-Encoding"))
