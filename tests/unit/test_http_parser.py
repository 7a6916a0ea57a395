"""fastgw.http._parser.HttpParser, the llhttp wrapper that parses both sides of the proxy.

Three claims, each checked on a fixed corpus that names the interesting cases and on streams that
hypothesis assembles (and sometimes corrupts by one byte):

1. It reports what httptools reports (the same llhttp, driven through Python callbacks): the same
   heads (method or status, version, target or reason phrase, fields in order, keep-alive), the same
   body bytes, the same number of message ends, and the same refusals with llhttp's own reason.
2. Where reads end does not matter: any split of a stream gives the events of the whole stream.
   Body pieces follow reads, so adjacent pieces are merged before any comparison.
3. The limits hold while bytes arrive: a head, a request-target or a field table that grows past
   its limit is refused on the read that passes the limit, however the bytes trickle in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.http._parser import HttpParser

Event = tuple[str, Any]
Stream = tuple[bool, bytes]  # (a request stream?, its bytes)

REFUSALS = frozenset({"malformed", "head-too-big", "too-many-fields", "target-too-long", "upgrade"})
ROOMY = {"max_head": 1 << 16, "max_fields": 256, "max_target": 0}
LLHTTP_SWITCH_PAUSES = frozenset({"Pause on CONNECT/Upgrade", "Pause on PRI/Upgrade"})
PROPERTY = settings(max_examples=200, deadline=None, database=None)


# -- driving both parsers ------------------------------------------------------------------------


def merged(events: Iterable[Event]) -> list[Event]:
    """Adjacent body pieces joined: how the body is cut follows the reads, not the message."""
    out: list[Event] = []
    for kind, value in events:
        if kind == "body" and out and out[-1][0] == "body":
            out[-1] = ("body", out[-1][1] + value)
        else:
            out.append((kind, value))
    return out


def pieces(data: bytes, size: int | None = None, cuts: Iterable[int] = ()) -> list[bytes]:
    """``data`` cut every ``size`` bytes, or at ``cuts``; whole when neither is given."""
    points = range(size, len(data), size) if size else cuts
    bounds = [0, *sorted({c for c in points if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run(parser: HttpParser, chunks: Iterable[bytes]) -> list[Event]:
    """The events of ``chunks`` fed one call each, up to the refusal that ends the stream."""
    events: list[Event] = []
    for chunk in chunks:
        events += parser.parse(chunk)
        if events and events[-1][0] in REFUSALS:
            break
    return merged(events)


def make_parser(request: bool, limits: Mapping[str, int] | None = None) -> HttpParser:
    lim = {**ROOMY, **(limits or {})}
    return HttpParser(request, lim["max_head"], lim["max_fields"], lim["max_target"])


def fastgw(
    request: bool, chunks: Iterable[bytes], limits: Mapping[str, int] | None = None, *, no_body: bool = False
) -> list[Event]:
    parser = make_parser(request, limits)
    if no_body:
        parser.expect_no_body()
    return run(parser, chunks)


class Recorder:
    """An httptools protocol that writes fastgw's events, translating what fastgw documents.

    A request asking to switch protocols (CONNECT, or Upgrade with Connection: upgrade) is refused
    at its head: its head is reported as ("upgrade", None) and nothing after it. Fields after the
    head (chunked trailers) are not reported. HttpParserError becomes ("malformed", llhttp's
    reason), except llhttp's pause for a protocol switch: httptools raises HttpParserUpgrade only
    when llhttp's upgrade flag is set, but llhttp also switches on a 101 without Upgrade fields and
    on the HTTP/2 preface, which fastgw reports as ("upgrade", None) too.
    """

    def __init__(self, request: bool) -> None:
        self.request = request
        kind = httptools.HttpRequestParser if request else httptools.HttpResponseParser
        self.parser = kind(self)
        self.events: list[Event] = []
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.in_head = False

    def emit(self, kind: str, value: Any = None) -> None:
        if not (self.events and self.events[-1][0] == "upgrade"):
            self.events.append((kind, value))

    def on_message_begin(self) -> None:
        self.target, self.fields, self.in_head = b"", [], True

    def on_url(self, span: bytes) -> None:
        self.target += span

    on_status = on_url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:
            self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        p = self.parser
        if self.request and p.should_upgrade():
            self.emit("upgrade")
            return
        major, minor = p.get_http_version().split(".")
        head = {
            "method": p.get_method() if isinstance(p, httptools.HttpRequestParser) else None,
            "status": p.get_status_code() if isinstance(p, httptools.HttpResponseParser) else None,
            "version": (int(major), int(minor)),
            "target": self.target,
            "fields": self.fields,
            "keep_alive": p.should_keep_alive(),
        }
        self.emit("head", head)

    def on_body(self, body: bytes) -> None:
        self.emit("body", body)

    def on_message_complete(self) -> None:
        self.emit("done")

    def feed(self, data: bytes) -> list[Event]:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.emit("upgrade")
        except httptools.HttpParserError as exc:
            reason = str(exc)
            self.emit(*(("upgrade", None) if reason in LLHTTP_SWITCH_PAUSES else ("malformed", reason)))
        return merged(self.events)


def reference(request: bool, data: bytes) -> list[Event]:
    return Recorder(request).feed(data)


def kinds(events: list[Event]) -> list[str]:
    return [kind for kind, _ in events]


# -- the corpus: (id, stream, kind of the last event) ------------------------------------------------

CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"
REQUESTS: list[tuple[str, bytes, str | None]] = [
    (
        "get",
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n",
        "done",
    ),
    ("empty-values", b"GET / HTTP/1.1\r\nX-Empty:\r\nX-Blank: \r\nHost: a\r\n\r\n", "done"),
    ("ows", b"GET / HTTP/1.1\r\nHost:   a.example  \r\nX-Tab:\tv \t\r\nX-In: a  b\r\n\r\n", "done"),
    ("repeated-names", b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n", "done"),
    ("obs-text", b"GET / HTTP/1.1\r\nX-Latin: caf\xe9 \x80\xff\r\n\r\n", "done"),
    ("query", b"GET /search?q=a%20b&x=1&y=&z HTTP/1.1\r\nHost: a\r\n\r\n", "done"),
    (
        "absolute-form",
        b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        "done",
    ),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "done"),
    ("leading-crlf", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "done"),
    ("post-length", b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world", "done"),
    ("post-empty", b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "done"),
    (
        "chunked-ext-trailers",
        b"POST /up HTTP/1.1\r\nHost: a\r\n" + CHUNKED + b'5;name=value\r\nhello\r\n6;a;b="q d"\r\n world\r\n'
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
        "done",
    ),
    (
        "pipelined",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"PUT /3 HTTP/1.1\r\n" + CHUNKED + b"2\r\nxy\r\n0\r\n\r\nDELETE /4 HTTP/1.1\r\n\r\n",
        "done",
    ),
    ("http10", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", "done"),
    ("http10-keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", "done"),
    ("http11-close", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "done"),
    ("http20", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "done"),
    ("upgrade-header-only", b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", "done"),
    (
        "websocket",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00",
        "upgrade",
    ),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "upgrade"),
    ("head-incomplete", b"GET / HTTP/1.1\r\nHost: a", None),
    ("body-incomplete", b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "body"),
    ("chunk-incomplete", b"POST / HTTP/1.1\r\n" + CHUNKED + b"a\r\nabc", "body"),
    # refused
    ("bare-lf", b"GET / HTTP/1.1\nHost: a\n\n", "malformed"),
    ("bare-lf-in-fields", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", "malformed"),
    ("bare-cr", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "malformed"),
    ("obs-fold", b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", "malformed"),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "malformed"),
    ("no-colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n", "malformed"),
    ("empty-name", b"GET / HTTP/1.1\r\n: v\r\n\r\n", "malformed"),
    ("nul-in-value", b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "malformed"),
    ("nul-in-name", b"GET / HTTP/1.1\r\nX\x00A: a\r\n\r\n", "malformed"),
    ("cl-and-te", b"POST / HTTP/1.1\r\nContent-Length: 3\r\n" + CHUNKED + b"0\r\n\r\n", "malformed"),
    ("duplicate-cl", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "malformed"),
    ("cl-not-a-number", b"POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc", "malformed"),
    ("cl-negative", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "malformed"),
    ("cl-list", b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\na", "malformed"),
    ("te-not-chunked-last", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "malformed"),
    ("chunk-size-invalid", b"POST / HTTP/1.1\r\n" + CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n", "malformed"),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\n" + CHUNKED + b"fffffffffffffffff\r\n", "malformed"),
    ("chunk-data-overrun", b"POST / HTTP/1.1\r\n" + CHUNKED + b"2\r\nabc\r\n0\r\n\r\n", "malformed"),
    ("method-invalid", b"BREW / HTTP/1.1\r\n\r\n", "malformed"),
    ("method-lowercase", b"get / HTTP/1.1\r\n\r\n", "malformed"),
    ("version-invalid", b"GET / HTTP/1.x\r\n\r\n", "malformed"),
    ("version-unknown", b"GET / HTTP/3.1\r\n\r\n", "malformed"),
    ("space-in-target", b"GET /a b HTTP/1.1\r\n\r\n", "malformed"),
    ("control-in-target", b"GET /\x01 HTTP/1.1\r\n\r\n", "malformed"),
    ("data-after-close", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n", "malformed"),
    ("bad-second-of-pipeline", b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost : a\r\n\r\n", "malformed"),
]
RESPONSES: list[tuple[str, bytes, str | None]] = [
    ("length", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", "done"),
    ("chunked-trailers", b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", "done"),
    (
        "1xx-then-final",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        "done",
    ),
    (
        "204-304-bodiless",
        b'HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "done",
    ),
    ("reason-empty", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "done"),
    ("reason-missing", b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", "done"),
    ("reason-spaces", b"HTTP/1.1 500 Internal  Server Error \r\nContent-Length: 0\r\n\r\n", "done"),
    ("http10-keep-alive", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", "done"),
    ("http10-until-close", b"HTTP/1.0 200 OK\r\nServer: s\r\n\r\nbody until the connection closes", "body"),
    ("http11-until-close", b"HTTP/1.1 200 OK\r\n\r\nabc", "body"),
    (
        "upgrade-announced",
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 1\r\n\r\nx",
        "done",
    ),
    (
        "switching",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81",
        "upgrade",
    ),
    # refused
    ("status-short", b"HTTP/1.1 20 OK\r\n\r\n", "malformed"),
    ("status-long", b"HTTP/1.1 2000 OK\r\n\r\n", "malformed"),
    ("status-letters", b"HTTP/1.1 abc OK\r\n\r\n", "malformed"),
    ("protocol-invalid", b"HTTX/1.1 200 OK\r\n\r\n", "malformed"),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "malformed"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "malformed"),
    ("nul-in-value", b"HTTP/1.1 200 OK\r\nX-A: \x00\r\nContent-Length: 0\r\n\r\n", "malformed"),
    ("duplicate-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "malformed"),
    ("chunk-size-invalid", b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"-1\r\n", "malformed"),
    (
        "data-after-close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1.1",
        "malformed",
    ),
]
CORPUS = [(True, data, last, f"request-{name}") for name, data, last in REQUESTS] + [
    (False, data, last, f"response-{name}") for name, data, last in RESPONSES
]
CORPUS_STREAMS: list[Stream] = [(request, data) for request, data, _, _ in CORPUS]


@pytest.mark.parametrize(("request_side", "data", "last"), [pytest.param(*c[:3], id=c[3]) for c in CORPUS])
def test_corpus_like_httptools(request_side: bool, data: bytes, last: str | None) -> None:
    events = fastgw(request_side, [data])
    assert events == reference(request_side, data)
    assert (events[-1][0] if events else None) == last  # the case is what its name says


# -- streams hypothesis assembles -----------------------------------------------------------------

NAMES = [b"Host", b"X-A", b"x-a", b"Accept", b"Cookie", b"Via", b"Connection", b"Upgrade", b"X-Empty"]
VALUES = [b"", b"v", b"  padded  ", b"a, b;q=0.5", b"\tx\t", b"caf\xe9", b"close", b"keep-alive", b"upgrade"]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]
TARGETS = [b"/", b"/a/b?c=d&e", b"http://h.example/p", b"*", b"/%7Euser/"]
VERSIONS = [b"1.1"] * 6 + [b"1.0", b"2.0", b"1.2"]
STATUSES = [b"200"] * 4 + [b"100", b"101", b"204", b"206", b"304", b"404"]
NOISE = b"\r\n \t:;\x00\x7f0aZ"


def field_lines(most: int) -> st.SearchStrategy[list[bytes]]:
    line = st.builds(
        lambda name, value: name + b":" + value + b"\r\n", st.sampled_from(NAMES), st.sampled_from(VALUES)
    )
    return st.lists(line, max_size=most)


@st.composite
def message(draw: st.DrawFn, request: bool) -> bytes:
    """A message of assorted fields, framed by nothing, Content-Length or chunks (with trailers)."""
    version = draw(st.sampled_from(VERSIONS))
    if request:
        start = b"%s %s HTTP/%s\r\n" % (
            draw(st.sampled_from(METHODS)),
            draw(st.sampled_from(TARGETS)),
            version,
        )
    else:
        reason = draw(st.sampled_from([b" OK", b" ", b"", b" Some Reason"]))
        start = b"HTTP/%s %s%s\r\n" % (version, draw(st.sampled_from(STATUSES)), reason)
    fields = draw(field_lines(most=4))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=24))
        fields.insert(draw(st.integers(0, len(fields))), b"Content-Length: %d\r\n" % len(body))
    elif framing == "chunked":
        ext = draw(st.sampled_from([b"", b";e", b";e=1", b';e="q"']))
        chunks = draw(st.lists(st.binary(min_size=1, max_size=12), max_size=3))
        body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks)
        body += b"0\r\n" + b"".join(draw(field_lines(most=2))) + b"\r\n"
        fields.insert(draw(st.integers(0, len(fields))), b"Transfer-Encoding: chunked\r\n")
    return start + b"".join(fields) + b"\r\n" + body


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    """One to three messages of one direction, maybe with one byte replaced, inserted or dropped."""
    request = draw(st.booleans())
    data = b"".join(draw(st.lists(message(request), min_size=1, max_size=3)))
    if draw(st.integers(0, 2)) == 0:
        at = draw(st.randoms()).randrange(len(data))  # uniform: integers() favours the first byte
        byte = bytes([draw(st.sampled_from(NOISE))])
        op = draw(st.sampled_from([byte, data[at : at + 1] + byte, b""]))
        data = data[:at] + op + data[at + 1 :]
    return request, data


any_stream = st.one_of(st.sampled_from(CORPUS_STREAMS), streams())


@PROPERTY
@given(any_stream)
def test_assembled_streams_like_httptools(stream: Stream) -> None:
    request, data = stream
    assert fastgw(request, [data]) == reference(request, data)


def cut_points(data_size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, max(1, data_size - 1)), max_size=12)


@PROPERTY
@given(st.data(), any_stream)
def test_any_split_gives_the_events_of_the_whole(data: st.DataObject, stream: Stream) -> None:
    request, raw = stream
    whole = fastgw(request, [raw])
    if data.draw(st.booleans()):
        chunks = pieces(raw, size=data.draw(st.integers(1, 8)))  # 1-byte reads among them
    else:
        chunks = pieces(raw, cuts=data.draw(cut_points(len(raw))))
    assert fastgw(request, chunks) == whole


def until_refusal(events: list[Event]) -> tuple[list[Event], bool]:
    refused = bool(events) and events[-1][0] in REFUSALS
    return (events[:-1] if refused else events), refused


@PROPERTY
@given(st.data(), any_stream)
def test_limits_split_alike(data: st.DataObject, stream: Stream) -> None:
    """Under tight limits any split gives the same events, and refuses or not alike.

    Head size is checked where reads end and when a head completes, while a bad byte or one field too
    many stops llhttp at once, so a head that breaks two rules may be refused under either by split
    (b"GET / HTTP/1.1\r\nX: <40 bytes>\r\nBad Header: x" with max_head=30: "malformed" whole,
    "head-too-big" byte by byte). That a refusal comes, and what came before it, may not depend on it.
    """
    request, raw = stream
    limits = {
        "max_head": data.draw(st.integers(1, 120)),
        "max_fields": data.draw(st.integers(0, 6)),
        "max_target": data.draw(st.integers(0, 20)),
    }
    whole = fastgw(request, [raw], limits)
    split = fastgw(request, pieces(raw, cuts=data.draw(cut_points(len(raw)))), limits)
    assert until_refusal(split) == until_refusal(whole)


# -- limits ---------------------------------------------------------------------------------------

HEAD = b"GET /some/target HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Trace: 0123456789\r\n\r\n"
FED_WAYS = [pytest.param(None, id="whole"), pytest.param(1, id="bytewise"), pytest.param(5, id="by-5")]


@pytest.mark.parametrize("size", FED_WAYS)
@pytest.mark.parametrize(
    ("limit", "at_limit", "refusal"),
    [
        ("max_head", len(HEAD), "head-too-big"),
        ("max_fields", 3, "too-many-fields"),
        ("max_target", len(b"/some/target"), "target-too-long"),
    ],
)
def test_limit_is_inclusive(size: int | None, limit: str, at_limit: int, refusal: str) -> None:
    assert kinds(fastgw(True, pieces(HEAD, size), {limit: at_limit})) == ["head", "done"]
    assert fastgw(True, pieces(HEAD, size), {limit: at_limit - 1}) == [(refusal, None)]


@pytest.mark.parametrize("size", [1, 7, 100])
@pytest.mark.parametrize(
    ("limits", "prefix", "filler", "refusal", "passed_at"),
    [
        ({"max_head": 300}, b"GET / HTTP/1.1\r\nX-Pad: ", b"a", "head-too-big", 301),
        ({"max_head": 300}, b"GET / HTTP/1.1\r\n", b"X", "head-too-big", 301),  # an endless name
        ({"max_head": 300}, b"HTTP/1.1 200 ", b"r", "head-too-big", 301),  # an endless reason
        ({"max_target": 50}, b"GET /", b"t", "target-too-long", len(b"GET ") + 51),
        # a 16-byte request line, ten 8-byte fields, then the eleventh name's first byte
        ({"max_fields": 10}, b"GET / HTTP/1.1\r\n", b"X-N: 1\r\n", "too-many-fields", 16 + 10 * 8 + 1),
    ],
)
def test_refused_on_the_read_that_passes_the_limit(
    size: int, limits: dict[str, int], prefix: bytes, filler: bytes, refusal: str, passed_at: int
) -> None:
    """A head that never ends is refused on the read that passes the limit, however small the reads."""
    parser = make_parser(not prefix.startswith(b"HTTP/"), limits)
    fed = 0
    for chunk in pieces(prefix + filler * (4000 // len(filler)), size):
        fed += len(chunk)
        if events := parser.parse(chunk):
            break
    assert events == [(refusal, None)]
    assert fed - size < passed_at <= fed


@pytest.mark.parametrize("size", FED_WAYS)
@pytest.mark.parametrize(
    ("request_side", "data", "expected"),
    [
        (
            True,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00junk",
            ["upgrade"],
        ),
        (True, b"GET / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n", ["upgrade"]),
        (True, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", ["upgrade"]),
        (True, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", ["head", "done"]),
        (True, b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n", ["head", "done"]),
        # The HTTP/2 preface: llhttp pauses on it; httptools calls that an error, fastgw a switch.
        (True, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ["upgrade"]),
        (
            False,
            b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            ["head", "done", "upgrade"],
        ),
    ],
)
def test_protocol_switch_is_reported(
    request_side: bool, data: bytes, expected: list[str], size: int | None
) -> None:
    events = fastgw(request_side, pieces(data, size))
    assert kinds(events) == expected
    assert all(value is None for kind, value in events if kind == "upgrade")


HEAD_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
]


@pytest.mark.parametrize("size", FED_WAYS)
@pytest.mark.parametrize("data", HEAD_RESPONSES, ids=["length", "chunked"])
def test_response_to_head_has_no_body(data: bytes, size: int | None) -> None:
    events = fastgw(False, pieces(data, size), no_body=True)
    assert kinds(events) == ["head", "done"]
    assert events[0][1]["fields"] == reference(False, data)[0][1]["fields"]
    assert kinds(fastgw(False, pieces(data, size))) == ["head"]  # without the mark: a body to wait for


RESPONSE = (
    b"HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-4/10\r\n"
    b"X-Empty:\r\nCache-Control: max-age=60,  public \r\nContent-Length: 5\r\n\r\nhello"
)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 40])
def test_response_head_gathered_across_many_reads(size: int) -> None:
    events = fastgw(False, pieces(RESPONSE, size))
    assert events == [
        (
            "head",
            {
                "method": None,
                "status": 206,
                "version": (1, 1),
                "target": b"Partial Content",
                "fields": [
                    (b"Content-Type", b"text/plain"),
                    (b"Content-Range", b"bytes 0-4/10"),
                    (b"X-Empty", b""),
                    (b"Cache-Control", b"max-age=60,  public "),
                    (b"Content-Length", b"5"),
                ],
                "keep_alive": True,
            },
        ),
        ("body", b"hello"),
        ("done", None),
    ]


# -- regressions: divergences this module found ------------------------------------------------------


def test_trailers_do_not_count_against_max_fields() -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert kinds(fastgw(True, [data], {"max_fields": 1})) == ["head", "body", "done"]


def test_long_target_in_big_head_refused_alike_whole_or_trickled() -> None:
    data = b"GET /" + b"a" * 20 + b" HTTP/1.1\r\nHost: example.com\r\n\r\n"
    limits = {"max_head": 16, "max_target": 8}
    assert fastgw(True, [data], limits) == fastgw(True, pieces(data, 1), limits)


def test_long_target_before_too_many_fields_refused_alike_whole_or_trickled() -> None:
    data = b"GET /" + b"a" * 20 + b" HTTP/1.1\r\nHost: a\r\nX-B: b\r\n\r\n"
    limits = {"max_fields": 1, "max_target": 8}
    assert fastgw(True, [data], limits) == fastgw(True, pieces(data, 1), limits)


@pytest.mark.parametrize("size", [None, 1, 7])
@pytest.mark.parametrize("request_side", [True, False])
def test_the_field_table_grows_to_max_fields_and_keeps_its_size(size: int | None, request_side: bool) -> None:
    """The field table starts small and doubles when a head has more fields, up to max_fields;
    a reused parser keeps what it grew to: every field comes out, in order, whatever the count
    and the reads (fast path or llhttp), and one field past max_fields is refused."""
    parser = make_parser(request_side, {"max_fields": 100})
    start = b"GET / HTTP/1.1\r\n" if request_side else b"HTTP/1.1 200 OK\r\n"

    def head(count: int) -> bytes:
        fields = b"".join(b"X-F%d: v%d\r\n" % (i, i) for i in range(count))
        return start + fields + b"Content-Length: 0\r\n\r\n"

    for count in (3, 17, 40, 99, 5, 99, 16):
        events = run(parser, pieces(head(count), size))
        assert [kind for kind, _ in events] == ["head", "done"]
        fields = events[0][1]["fields"]
        assert fields == [(b"X-F%d" % i, b"v%d" % i) for i in range(count)] + [(b"Content-Length", b"0")]
    assert run(parser, pieces(head(100), size)) == [("too-many-fields", None)]
