"""HTTP/2 from clients, through real sockets: h2c by prior knowledge and h2 by ALPN, with the
``h2`` package as the client (and curl). Every stream is an exchange like an HTTP/1.1 request:
routing, forwarded headers, bodies both ways under flow control, interim responses; the
message rules of RFC 9113 section 8; and the defences against the known attacks, each of which
is counted in ``fastgw_http2_refusals_total``."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import hpack
import httpx
import pytest

from tests.support.certs import Pki
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.h2client import PREFACE, H2Client, frame, read_frames, settings_frame
from tests.support.rawhttp import build_request, connect, read_response

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


def h2c_doc(upstream: int, routes: list[dict[str, Any]] | None = None, **http2: Any) -> dict[str, Any]:
    return gateway_config(upstream, routes, http2={"h2c": True, **http2})


def echoed(body: bytes) -> dict[str, Any]:
    return json.loads(body)  # type: ignore[no-any-return]


def echoed_headers(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echoed(body)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def refusals(gw: RunningGateway) -> dict[str, int]:
    family = gw.call(gw.gateway.collect).get("fastgw_http2_refusals_total")
    if family is None:
        return {}
    return {dict(key[1])["kind"]: int(value) for key, value in family.samples.items()}


# -- requests and responses ------------------------------------------------------------------------


def test_h2c_prior_knowledge_request(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port) as client:
        answer = client.get(
            "/echo/a?b=1", headers=[("x-custom", "yes"), ("cookie", "a=1"), ("cookie", "b=2")]
        )
    assert answer.status == 200
    got = echoed(answer.body)
    assert got["method"] == "GET" and got["path"] == "/echo/a?b=1"
    headers = echoed_headers(answer.body)
    assert headers["x-custom"] == ["yes"]
    assert headers["cookie"] == ["a=1; b=2"]  # RFC 9113 8.2.3: crumbs joined for HTTP/1.1
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["gw.test"]
    assert "te" not in headers and "transfer-encoding" not in headers
    request_id = answer.header("x-request-id")
    assert request_id and headers["x-request-id"] == [request_id]
    names = [name for name, _ in answer.headers]
    assert all(name == name.lower() for name in names)
    assert not {"connection", "keep-alive", "transfer-encoding"} & set(names)


def test_h2_over_tls_by_alpn_with_curl(make_gateway: MakeGateway, upstream: int, pki: Pki) -> None:
    cert = pki.issue("gw.test")
    gw = make_gateway(gateway_config(upstream, tls={"certificates": [{"cert": cert.cert, "key": cert.key}]}))
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", pki.ca_file, "--resolve", f"gw.test:{gw.port}:127.0.0.1",
         "-w", "\\n%{http_version} %{http_code}", f"https://gw.test:{gw.port}/echo"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, result = out.stdout.rpartition(b"\n")
    assert result == b"2 200"
    assert echoed_headers(body)["x-forwarded-proto"] == ["https"]
    with H2Client(gw.port, tls=pki.client_context()) as client:
        assert client.get("/echo").status == 200


def test_streams_of_one_connection_are_routed_by_their_own_authority(
    make_gateway: MakeGateway, upstream: int
) -> None:
    """The connection remembers the last host it checked (a client repeats it): a stream naming
    another host must still be routed by its own, never the one before it."""
    routes = [
        {"id": "a", "path": "/{*rest}", "host": "a.test", "upstream": "up", "rewrite": "/echo/a"},
        {"id": "b", "path": "/{*rest}", "host": "b.test", "upstream": "up", "rewrite": "/echo/b"},
    ]
    gw = make_gateway(h2c_doc(upstream, routes))
    with H2Client(gw.port) as client:
        hosts = ["a.test", "a.test", "b.test", "A.test:443", "b.test", "c.test"]
        answers = [client.get("/x", authority=host) for host in hosts]
    assert [a.status for a in answers[:5]] == [200] * 5 and answers[5].status == 404
    paths = [echoed(a.body)["path"] for a in answers[:5]]
    assert paths == ["/echo/a", "/echo/a", "/echo/b", "/echo/a", "/echo/b"]


def test_h2c_by_prior_knowledge_with_curl(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-w", "\\n%{http_version} %{http_code}",
         "-H", "X-Probe: 1", f"http://127.0.0.1:{gw.port}/echo/curl"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, result = out.stdout.rpartition(b"\n")
    assert result == b"2 200"
    assert echoed(body)["path"] == "/echo/curl" and echoed_headers(body)["x-probe"] == ["1"]


def test_httpx_over_tls_streams_a_body_both_ways(make_gateway: MakeGateway, upstream: int, pki: Pki) -> None:
    cert = pki.issue("gw.test", "127.0.0.1")  # httpx connects by address: no SNI, the one certificate
    gw = make_gateway(gateway_config(upstream, tls={"certificates": [{"cert": cert.cert, "key": cert.key}]}))
    body = bytes(range(256)) * 1024  # 256 KiB: more than one stream window each way
    with httpx.Client(http2=True, verify=pki.client_context()) as client:
        answer = client.post(f"https://127.0.0.1:{gw.port}/echo/body", content=body)
    assert answer.http_version == "HTTP/2" and answer.status_code == 200
    assert echoed(answer.content)["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_h2load_gets_every_answer(make_gateway: MakeGateway, upstream: int) -> None:
    """h2load (nghttp2's load client): 4 connections of 10 concurrent streams, every request
    answered 2xx, none failed or errored."""
    gw = make_gateway(h2c_doc(upstream))
    out = subprocess.run(
        ["h2load", "-n", "400", "-c", "4", "-m", "10", f"http://127.0.0.1:{gw.port}/echo/load"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "400 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout
    assert "status codes: 400 2xx" in out.stdout, out.stdout


def test_many_concurrent_streams_on_one_connection(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port) as client:
        ids = [client.request(f"/slow/{20 + i % 5}?n={i}") for i in range(40)]
        answers = [client.wait(i) for i in ids]
    assert [a.status for a in answers] == [200] * 40
    assert sorted(echoed(a.body)["path"] for a in answers) == sorted(
        f"/slow/{20 + i % 5}?n={i}" for i in range(40)
    )


def test_bodies_both_ways_under_flow_control(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    upload = bytes(range(256)) * 20_000  # 5 MB: the window (64 KiB) opens many times
    with H2Client(gw.port) as client:
        sent = client.request("/sink", method="POST", body=upload)
        fetched = client.request("/bytes/3000000")
        chunked = client.request("/chunked/1000000")
        answers = [client.wait(sent, 60), client.wait(fetched, 60), client.wait(chunked, 60)]
    assert echoed(answers[0].body) == {
        "body_len": len(upload),
        "body_sha256": hashlib.sha256(upload).hexdigest(),
    }
    assert len(answers[1].body) == 3_000_000 and answers[1].header("content-length") == "3000000"
    assert len(answers[2].body) == 1_000_000 and answers[2].header("content-length") is None


def test_upload_with_content_length_and_interim_100(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port) as client:
        expecting = [("content-length", "5"), ("expect", "100-continue")]
        sid = client.request("/echo", method="PUT", headers=expecting, end=False)
        client.read_until(lambda: client.responses[sid].interim)  # the gateway's own 100 Continue
        assert client.responses[sid].interim == [100]
        client.send_data(sid, b"hello")
        answer = client.wait(sid)
    assert answer.status == 200 and echoed(answer.body)["body_len"] == 5


def test_head_and_no_content(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port) as client:
        head = client.get("/bytes/100", method="HEAD")
        empty = client.get("/status/204")
    assert (head.status, head.body, head.header("content-length")) == (200, b"", "100")
    assert (empty.status, empty.body) == (204, b"")


def test_gateway_answers_go_out_on_the_stream(make_gateway: MakeGateway, upstream: int) -> None:
    routes = [{"id": "only", "path": "/only/{*rest}", "upstream": "up", "methods": ["GET"]}]
    gw = make_gateway(h2c_doc(upstream, routes))
    with H2Client(gw.port) as client:
        missing = client.get("/nowhere")
        wrong = client.get("/only/x", method="DELETE")
    assert missing.status == 404 and json.loads(missing.body)["error"] == "no route matches this request"
    assert wrong.status == 405


def test_http_1_1_still_served_on_an_h2c_listener(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    sock = connect(gw.port)
    with sock:
        sock.sendall(build_request("GET", "/echo"))
        assert read_response(sock).status == 200


def test_a_cleartext_listener_without_h2c_does_not_speak_http2(
    make_gateway: MakeGateway, upstream: int
) -> None:
    gw = make_gateway(gateway_config(upstream))
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE + settings_frame())
        answer = read_response(sock)
    assert answer.status == 505 and b"h2c" in answer.body


# -- RFC 9113 section 8: malformed requests are refused --------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "gw.test"),
            (":path", "/echo"),
            ("connection", "x"),
        ],
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "gw.test"),
            (":path", "/echo"),
            ("Upper", "x"),
        ],
        [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test")],  # no :path
        [(":scheme", "http"), (":authority", "gw.test"), (":path", "/echo")],  # no :method
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/echo"),
            (":authority", "gw.test"),
            (":path", "/x"),
        ],
        [
            (":method", "GET"),
            ("x-a", "1"),
            (":scheme", "http"),
            (":authority", "gw.test"),
            (":path", "/echo"),
        ],
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "gw.test"),
            (":path", "/echo"),
            ("te", "gzip"),
        ],
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "gw.test"),
            (":path", "/echo"),
            (":status", "200"),
        ],
    ],
    ids=[
        "connection",
        "uppercase",
        "no-path",
        "no-method",
        "two-paths",
        "pseudo-after-regular",
        "te-gzip",
        "response-pseudo",
    ],
)
def test_malformed_request_headers_reset_the_stream(
    make_gateway: MakeGateway, upstream: int, fields: list[tuple[str, str]]
) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port, validate=False) as client:
        answer = client.wait(client.raw_request(fields))
        assert answer.status is None and answer.reset == 1  # PROTOCOL_ERROR
        assert client.get("/echo").status == 200  # the connection goes on


def test_content_length_must_match_the_data(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port, validate=False) as client:
        sid = client.request("/sink", method="POST", headers=[("content-length", "10")], end=False)
        client.send_data(sid, b"abc")
        answer = client.wait(sid)
    assert answer.reset == 1


def test_host_and_authority_must_agree(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    with H2Client(gw.port, validate=False) as client:
        answer = client.get("/echo", headers=[("host", "other.test")])
    assert answer.status == 400 and b"disagree" in answer.body


def test_a_bad_preface_ends_the_connection_and_is_counted(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    sock = connect(gw.port)
    with sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        sock.settimeout(10)
        while sock.recv(4096):
            pass
    assert refusals(gw).get("bad_preface") == 1


# -- limits and the known attacks ------------------------------------------------------------------------


def test_concurrent_streams_beyond_the_setting_are_refused(make_gateway: MakeGateway, upstream: int) -> None:
    """Five streams at once from a client that ignores SETTINGS_MAX_CONCURRENT_STREAMS 3 (raw
    frames: the h2 package would hold them back): three are served, two refused."""
    gw = make_gateway(h2c_doc(upstream, max_concurrent_streams=3))
    encoder = hpack.Encoder()
    fields = [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", "/slow/300")]
    headers = b"".join(frame(1, 0x5, sid, encoder.encode(fields)) for sid in (1, 3, 5, 7, 9))
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE + settings_frame() + headers)
        frames = read_frames(sock, until=lambda fs: len([f for f in fs if f[0] == 0 and f[1] & 1]) == 3)
    resets = {sid: int.from_bytes(payload, "big") for kind, _, sid, payload in frames if kind == 3}
    ended = {sid for kind, flags, sid, _ in frames if kind == 0 and flags & 1}
    assert len(ended) == 3 and len(resets) == 2 and not ended & set(resets)
    assert set(resets.values()) <= {1, 7}  # PROTOCOL_ERROR or REFUSED_STREAM


def test_an_oversize_header_list_gets_431_and_a_client_that_insists_is_cut_off(
    make_gateway: MakeGateway, upstream: int
) -> None:
    doc = h2c_doc(upstream)
    doc["listeners"][0]["limits"] = {"max_header_bytes": 4096}
    gw = make_gateway(doc)
    with H2Client(gw.port, validate=False) as client:
        answer = client.get("/echo", headers=[("x-big", "v" * 8000)])
        assert answer.status == 431
        assert client.get("/echo").status == 200
        for _ in range(10):
            sid = client.request("/echo", headers=[("x-big", "v" * 8000)])
            client.wait(sid)
            if client.closed or client.terminated is not None:
                break
        client.wait_closed()
    assert client.terminated is not None and client.terminated.error_code == 11  # ENHANCE_YOUR_CALM
    assert refusals(gw)["header_list_too_large"] >= 8


def test_hpack_bomb_stops_at_the_header_list_limit(make_gateway: MakeGateway, upstream: int) -> None:
    """One 4 KiB dynamic-table entry referenced a thousand times: 4 MB of header list from a few
    KiB of HPACK. The gateway stops keeping fields at its limit and answers 431."""
    doc = h2c_doc(upstream)
    doc["listeners"][0]["limits"] = {"max_header_bytes": 16384}
    gw = make_gateway(doc)
    encoder = hpack.Encoder()
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", "/echo")]
    first = encoder.encode([*request, ("x-bomb", "b" * 4000)])
    reference = bytes([0x80 | 62])  # the dynamic table's newest entry: x-bomb
    block = first + reference * 1000
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE + settings_frame() + frame(1, 0x5, 1, block))
        frames = read_frames(sock, until=lambda fs: any(f[0] == 1 for f in fs))
    decoder = hpack.Decoder()
    statuses = [dict(decoder.decode(payload)).get(":status") for kind, _, _, payload in frames if kind == 1]
    assert statuses == ["431"]
    assert refusals(gw)["header_list_too_large"] == 1


def test_rapid_reset_is_cut_off(make_gateway: MakeGateway, upstream: int) -> None:
    """CVE-2023-44487: streams opened and reset at once, each starting upstream work."""
    gw = make_gateway(h2c_doc(upstream, max_concurrent_streams=10))
    with H2Client(gw.port) as client:
        try:
            for _ in range(200):
                client.reset(client.request("/slow/1000"))
        except OSError:
            pass  # the gateway closed the connection under the loop: what is asserted below
        client.wait_closed()
    assert client.terminated is not None and client.terminated.error_code == 11
    assert refusals(gw)["rapid_reset"] == 1
    with H2Client(gw.port) as other:  # everyone else is served on
        assert other.get("/echo").status == 200


def test_continuation_flood_is_cut_off(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(h2c_doc(upstream))
    encoder = hpack.Encoder()
    block = encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", "/echo")]
    )
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE + settings_frame() + frame(1, 0x1, 1, block))  # HEADERS, no END_HEADERS
        try:
            for _ in range(1000):
                sock.sendall(frame(9, 0, 1, encoder.encode([("x-more", "y" * 10)])))
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    assert refusals(gw)["continuation_flood"] == 1


def test_ping_flood_is_cut_off(make_gateway: MakeGateway, upstream: int) -> None:
    """PINGs sent without reading the acknowledgements pile up: past a bound, GOAWAY."""
    gw = make_gateway(h2c_doc(upstream))
    sock = connect(gw.port, timeout=60)  # a loaded machine may take its time to read them
    pings = frame(6, 0, 0, b"12345678") * 50
    cut = False
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(PREFACE + settings_frame())
        try:
            for _ in range(200_000):
                sock.sendall(pings)
        except (BrokenPipeError, ConnectionResetError):
            cut = True  # the gateway ended the connection of a client that reads nothing
    assert cut, "the flooding connection was never cut"
    deadline = time.monotonic() + 10
    while "flood" not in refusals(gw) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refusals(gw).get("flood") == 1, refusals(gw)


def test_a_zero_window_stream_is_reset_after_the_send_timeout(
    make_gateway: MakeGateway, upstream: int
) -> None:
    doc = h2c_doc(upstream)
    doc["listeners"][0]["timeouts"] = {"send": "1s"}
    gw = make_gateway(doc)
    with H2Client(gw.port, settings={4: 0}, auto_window=False) as client:  # INITIAL_WINDOW_SIZE 0
        sid = client.request("/bytes/2000000")
        started = time.monotonic()
        answer = client.wait(sid, 15)
        assert time.monotonic() - started >= 0.9  # never before the send timeout
    assert answer.status == 200 and answer.body == b"" and answer.reset == 8  # CANCEL
    assert refusals(gw)["stream_send_stalled"] == 1


# -- timeouts, drain, reload -------------------------------------------------------------------------------


def test_a_request_body_that_stalls_gets_408(make_gateway: MakeGateway, upstream: int) -> None:
    doc = h2c_doc(upstream)
    doc["listeners"][0]["timeouts"] = {"body": "1s"}
    gw = make_gateway(doc)
    with H2Client(gw.port) as client:
        sid = client.request("/sink", method="POST", end=False)
        client.send_data(sid, b"part", end=False)
        answer = client.wait(sid, 15)
    assert answer.status == 408


def test_a_header_block_that_never_ends_is_cut_off(make_gateway: MakeGateway, upstream: int) -> None:
    doc = h2c_doc(upstream)
    doc["listeners"][0]["timeouts"] = {"head": "1s"}
    gw = make_gateway(doc)
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":authority", "gw.test")])
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE + settings_frame() + frame(1, 0x1, 1, block))
        sock.settimeout(15)
        started = time.monotonic()
        while sock.recv(65536):
            pass
        assert time.monotonic() - started >= 0.9
    assert refusals(gw)["header_timeout"] == 1


def test_idle_and_silent_connections_are_closed(make_gateway: MakeGateway, upstream: int) -> None:
    doc = h2c_doc(upstream)
    doc["listeners"][0]["timeouts"] = {"head": "1s", "keepalive": "1s"}
    gw = make_gateway(doc)
    with H2Client(gw.port) as client:
        assert client.get("/echo").status == 200
        client.wait_closed(15)  # idle after its request: GOAWAY, then closed
        assert client.terminated is not None and client.terminated.error_code == 0
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE[:10])  # never finishes its preface
        sock.settimeout(15)
        while sock.recv(4096):
            pass
    assert refusals(gw)["preface_timeout"] == 1


def test_drain_sends_goaway_and_finishes_streams_in_flight(upstream: int, loop_kind: str) -> None:
    """Raw frames: the h2 package treats GOAWAY as the end, where RFC 9113 6.8 lets the streams
    it names finish."""
    gw = RunningGateway(h2c_doc(upstream), loop_kind)
    stopping = threading.Thread(target=gw.stop, args=(5.0,))
    try:
        encoder = hpack.Encoder()
        fields = [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", "/slow/500")]
        sock = connect(gw.port)
        with sock:
            sock.sendall(PREFACE + settings_frame() + frame(1, 0x5, 1, encoder.encode(fields)))
            time.sleep(0.1)
            stopping.start()
            frames = read_frames(sock, until=lambda fs: any(f[0] == 0 and f[1] & 1 for f in fs))
            kinds = [kind for kind, _, _, _ in frames]
            goaway = next(payload for kind, _, _, payload in frames if kind == 7)
            assert int.from_bytes(goaway[:4], "big") == 1 and int.from_bytes(goaway[4:8], "big") == 0
            assert kinds.index(7) < kinds.index(0)  # GOAWAY first, then the stream's response
            assert b"".join(p for k, _, sid, p in frames if k == 0 and sid == 1).startswith(b"{")
            sock.settimeout(10)
            while sock.recv(65536):  # and then the connection ends
                pass
    finally:
        if stopping.is_alive():
            stopping.join(15)
        elif not stopping.ident:
            gw.stop()


def test_client_reset_cancels_the_upstream_request(
    make_gateway: MakeGateway, upstream: int, tmp_path: Any
) -> None:
    log = tmp_path / "access.log"
    doc = h2c_doc(upstream)
    doc["access_log"] = {"sink": str(log)}
    gw = make_gateway(doc)
    with H2Client(gw.port) as client:
        sid = client.request("/hang")
        time.sleep(0.2)
        client.reset(sid)
        assert client.get("/echo").status == 200  # the connection goes on
    gw.call(lambda: gw.gateway.access_log.flush())  # type: ignore[union-attr]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    hung = next(line for line in lines if line["path"] == "/hang")
    assert hung["status"] == 0 and "client closed" in hung["error"]
    assert all(line["protocol"] == "HTTP/2" for line in lines)
