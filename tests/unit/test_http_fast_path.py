"""The fast path of ``fastgw.http._parser.HttpParser`` against llhttp alone.

The fast path reads the common request and upstream response without llhttp. It must never
change what the proxy sees: for every input (valid or not, fed whole or split at any byte, one
message or several in a row) the events must be exactly those of the same parser with the fast
path switched off.
"""

from __future__ import annotations

import random

import pytest

from fastgw.http._parser import HttpParser

STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 200 ",
    b"HTTP/1.1 200",
    b"HTTP/1.1 404 Not Found",
    b"HTTP/1.1 503 Service  Unavailable ",
    b"HTTP/1.1 200 O\tK\x80",
    b"HTTP/1.1 200 OK\x01",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 099 Low",
    b"HTTP/1.1 600 High",
    b"HTTP/1.1 2x0 OK",
    b"HTTP/1.0 200 OK",
    b"HTTP/2 200 OK",
    b"http/1.1 200 OK",
]

HEADER_LINES = [
    b"Server: nginx/1.22.1",
    b"Date: Fri, 27 Nov 2026 08:00:00 GMT",
    b"Content-Type: application/json",
    b"X-Empty:",
    b"X-Blank: \t ",
    b"X-Spaced:   a  b  ",
    b"X-Obs-Text: \x80\xff",
    b"x-lower: v",
    b"Keep-Alive: timeout=5",
    b"Connection: keep-alive",
    b"connection: KEEP-ALIVE",
    b"Connection: close",
    b"Connection: upgrade",
    b"Connection: keep-alive, x-hop",
    b"Proxy-Connection: keep-alive",
    b"Upgrade: h2c",
    b"Transfer-Encoding: chunked",
    b"Content-Length: 0",
    b"X-Control: a\x01b",
    b"X-Space-Before-Colon : a",
    b": no-name",
    b"Bad\x7fName: a",
    b" folded continuation",
    b"X-Bare-CR: a\rb",
]

LENGTH_LINES = [
    b"Content-Length: %d",
    b"content-length:%d",
    b"CONTENT-LENGTH:  %d",
    b"Content-Length: 0%d",
    b"Content-Length: %d ",
    b"Content-Length: +%d",
    b"Content-Length: %d,%d",
    b"Content-Length: 99999999999999999999",
]


def events(
    data: list[bytes], *, fast: bool, head_only: bool = False, request: bool = False
) -> tuple[list[tuple[str, object]], int]:
    """The events of ``data`` fed piece by piece (the body pieces merged: their split follows
    the reads, not the parser), and how many messages took the fast path."""
    parser = HttpParser(request, 64 * 1024, 32, 200) if request else HttpParser(False, 64 * 1024, 32)
    parser.fast_path = fast
    if head_only:
        parser.expect_no_body()
    out: list[tuple[str, object]] = []
    for piece in data:
        for kind, value in parser.parse(piece):
            if kind == "body" and out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + value)  # type: ignore[operator]
            else:
                out.append((kind, value))
        if out and out[-1][0] not in ("head", "body", "done"):
            break  # an error ends the stream
    return out, parser.fast_messages


def random_message(rng: random.Random) -> bytes:
    body = b"x" * rng.choice([0, 1, 5, 35, 300])
    lines = [rng.choice(STATUS_LINES) if rng.random() < 0.4 else b"HTTP/1.1 200 OK"]
    lines += rng.sample(HEADER_LINES[:9], rng.randint(0, 4))
    if rng.random() < 0.35:
        lines.append(rng.choice(HEADER_LINES))
    if rng.random() < 0.9:
        template = rng.choice(LENGTH_LINES) if rng.random() < 0.4 else LENGTH_LINES[0]
        count = template.count(b"%d")
        lines.insert(rng.randint(1, len(lines)), template % ((len(body),) * count) if count else template)
    rng.shuffle(lines[1:])
    ending = b"\n" if rng.random() < 0.03 else b"\r\n"
    message = ending.join(lines) + b"\r\n\r\n" + body
    cut = rng.random()
    if cut < 0.05:
        return message[: rng.randrange(1, len(message))]  # incomplete
    if cut < 0.1:
        return message + b"garbage"
    return message


def splits(stream: bytes) -> list[list[bytes]]:
    return [[stream]] + [[stream[:i], stream[i:]] for i in range(1, len(stream))]


def test_the_common_response_takes_the_fast_path() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 35\r\nConnection: keep-alive\r\n\r\n" + b'{"id":1,"name":"item","price":9.99}'
    )
    fast, taken = events([response * 3], fast=True)
    slow, _ = events([response * 3], fast=False)
    assert taken == 3
    assert fast == slow
    assert [kind for kind, _ in fast] == ["head", "body", "done"] * 3


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    ],
)
def test_what_the_fast_path_leaves_to_llhttp(response: bytes) -> None:
    fast, taken = events([response], fast=True)
    assert taken == 0
    assert fast == events([response], fast=False)[0]


@pytest.mark.parametrize("where", ["reason", "value"])
def test_every_byte_anywhere_in_a_reason_or_value_is_judged_as_llhttp_judges_it(where: str) -> None:
    """The fast path skips 8-byte blocks of plain bytes at once: each of the 256 byte values, at
    each place in and around a block, gets the events llhttp gives (control bytes, DEL, HTAB,
    obs-text, a bare CR or LF)."""
    taken_total = 0
    for place in range(19):
        for byte in range(256):
            text = bytearray(b"abcdefghijklmnopqrstuvwx")
            text[place] = byte
            if where == "reason":
                head = b"HTTP/1.1 200 " + bytes(text) + b"\r\nContent-Length: 1\r\n"
            else:
                head = b"HTTP/1.1 200 OK\r\nX-Value: " + bytes(text) + b"\r\nContent-Length: 1\r\n"
            response = head + b"\r\nx"
            fast, taken = events([response], fast=True)
            assert fast == events([response], fast=False)[0], (place, byte)
            taken_total += taken
    assert taken_total >= 19 * 200  # the plain bytes took the fast path


def test_a_body_split_over_many_reads_is_counted_down() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"
    body = bytes(range(256)) * 39 + b"0123456789012345"
    pieces = [head + body[:100]] + [body[i : i + 1000] for i in range(100, 10000, 1000)]
    fast, taken = events([*pieces, head + b"x" * 10000], fast=True)
    assert taken == 2
    assert fast == events([*pieces, head + b"x" * 10000], fast=False)[0]
    assert fast[1] == ("body", body) and fast[2] == ("done", None)


def test_a_response_to_head_is_llhttps() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 35\r\n\r\n"
    fast, taken = events([response * 2], fast=True, head_only=True)
    assert taken == 0
    assert fast == events([response * 2], fast=False, head_only=True)[0]
    assert [kind for kind, _ in fast] == ["head", "done"] * 2


def test_too_many_fields_are_refused_as_by_llhttp() -> None:
    response = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 40 + b"Content-Length: 0\r\n\r\n"
    fast, taken = events([response], fast=True)
    assert taken == 0
    assert fast == events([response], fast=False)[0] == [("too-many-fields", None)]


Events = list[tuple[str, object]]


def one_per_read(reads: list[tuple[bytes, bool]], *, fast: bool) -> tuple[list[Events], int]:
    """Each response in its own read, parsed up to its end only, as an upstream connection does
    (``True``: it answers a HEAD request)."""
    parser = HttpParser(False, 64 * 1024, 32)
    parser.fast_path = fast
    seen = []
    for data, head_only in reads:
        parser.expect_no_body(head_only)
        seen.append(parser.parse(data, until_done=True))
    return seen, parser.fast_messages


def test_a_message_after_llhttp_paused_at_the_end_of_the_last_one() -> None:
    # llhttp decides whether the connection stays open only when it runs again after a message
    # end; a fast-path message in between must leave it everything it needs (a bodiless 304 read
    # as a 206 would have meant "read to EOF", then "data after Connection: close").
    reads = [
        (b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", False),
        (b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nabc", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ]
    fast, taken = one_per_read(reads, fast=True)
    assert taken == 2
    assert fast == one_per_read(reads, fast=False)[0]
    assert all(events[-1] == ("done", None) for events in fast)


def test_random_responses_one_per_read_as_the_upstream_side_reads_them() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        reads = [(random_message(rng), rng.random() < 0.15) for _ in range(rng.randint(2, 6))]
        assert one_per_read(reads, fast=True)[0] == one_per_read(reads, fast=False)[0], reads


def test_random_responses_split_anywhere_read_as_llhttp_reads_them() -> None:
    rng = random.Random(20261127)
    compared = fast_taken = 0
    for _ in range(400):
        stream = b"".join(random_message(rng) for _ in range(rng.randint(1, 3)))
        for pieces in splits(stream):
            fast, taken = events(pieces, fast=True)
            slow, _ = events(pieces, fast=False)
            assert fast == slow, (pieces, fast, slow)
            compared += 1
            fast_taken += taken
    # The corpus exercises both sides: the fast path, and everything it leaves to llhttp.
    assert fast_taken > compared // 4
    assert compared > 20_000


# -- requests --------------------------------------------------------------------------------------
REQUEST_LINES = [
    b"GET /items/1 HTTP/1.1",
    b"GET /a/b?x=1&y=%20z HTTP/1.1",
    b"HEAD / HTTP/1.1",
    b"POST /items HTTP/1.1",
    b"PUT /items/1 HTTP/1.1",
    b"PATCH /items/1 HTTP/1.1",
    b"DELETE /items/1 HTTP/1.1",
    b"OPTIONS /items HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"CONNECT example.com:443 HTTP/1.1",
    b"PROPFIND /dav HTTP/1.1",
    b"get /lower HTTP/1.1",
    b"GET http://example.com/absolute HTTP/1.1",
    b"GET /frag#ment HTTP/1.1",
    b"GET /sub-delims!$&'()*+,;=:@~._- HTTP/1.1",
    b'GET /quote"d HTTP/1.1',
    b"GET /brace{x}|^`[] HTTP/1.1",
    b"GET /ctl\x01 HTTP/1.1",
    b"GET /high\xc3\xa9 HTTP/1.1",
    b"GET /" + b"long/" * 50 + b" HTTP/1.1",  # past the 200-byte target limit
    b"GET /items/1 HTTP/1.0",
    b"GET /items/1 HTTP/2.0",
    b"GET  /two-spaces HTTP/1.1",
    b"GET /items/1  HTTP/1.1",
    b"GET /items/1 http/1.1",
]

REQUEST_HEADERS = [
    b"Host: localhost:8080",
    b"User-Agent: wrk",
    b"Accept: */*",
    b"Accept-Encoding: gzip, br",
    b"Cookie: a=1; b=2",
    b"X-Empty:",
    b"X-Spaced:  v  ",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Proxy-Connection: keep-alive",
    b"Transfer-Encoding: chunked",
    b"Expect: 100-continue",
    b"X-Control: a\x01b",
    b"Bad Name: v",
    b" folded",
]


def random_request(rng: random.Random) -> bytes:
    body = b"b" * rng.choice([0, 0, 0, 4, 4096])
    lines = [rng.choice(REQUEST_LINES) if rng.random() < 0.4 else REQUEST_LINES[0]]
    lines += rng.sample(REQUEST_HEADERS[:7], rng.randint(0, 4))
    if rng.random() < 0.3:
        lines.append(rng.choice(REQUEST_HEADERS))
    if body or rng.random() < 0.2:
        template = rng.choice(LENGTH_LINES) if rng.random() < 0.3 else LENGTH_LINES[0]
        count = template.count(b"%d")
        lines.insert(rng.randint(1, len(lines)), template % ((len(body),) * count) if count else template)
    if body and rng.random() < 0.1:
        lines.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    rng.shuffle(lines[1:])
    message = b"\r\n".join(lines) + b"\r\n\r\n" + body
    cut = rng.random()
    if cut < 0.05:
        return message[: rng.randrange(1, len(message))]
    return message


def test_the_common_request_takes_the_fast_path() -> None:
    request = b"GET /items/1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
    post = b"POST /items HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
    fast, taken = events([request + post + request], fast=True, request=True)
    assert taken == 3
    assert fast == events([request + post + request], fast=False, request=True)[0]
    assert [kind for kind, _ in fast] == ["head", "done", "head", "body", "done", "head", "done"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /y HTTP/1.1\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"GET /x HTTP/1.0\r\nHost: h\r\n\r\n",
        b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_what_the_fast_path_leaves_to_llhttp_in_requests(request_bytes: bytes) -> None:
    fast, taken = events([request_bytes], fast=True, request=True)
    assert taken == 0
    assert fast == events([request_bytes], fast=False, request=True)[0]


def test_random_requests_split_anywhere_read_as_llhttp_reads_them() -> None:
    rng = random.Random(1127)
    compared = fast_taken = 0
    for _ in range(300):
        stream = b"".join(random_request(rng) for _ in range(rng.randint(1, 3)))
        cuts = splits(stream) if len(stream) < 600 else [[stream], [stream[:7], stream[7:]]]
        for pieces in cuts:
            fast, taken = events(pieces, fast=True, request=True)
            slow, _ = events(pieces, fast=False, request=True)
            assert fast == slow, (pieces, fast, slow)
            compared += 1
            fast_taken += taken
    assert fast_taken > compared // 4
    assert compared > 20_000
