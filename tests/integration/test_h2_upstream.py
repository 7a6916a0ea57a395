"""HTTP/2 to upstreams (``protocol: h2c`` / ``h2``): the gateway against a real HTTP/2 server on
the ``h2`` library (``tests/support/h2_upstream_server.py``), with HTTP/1.1 clients and the
gateway's own HTTP/2 client side. Streams multiplexed over few connections (the server counts
them), flow control both ways, trailers, resets, GOAWAY, failures, TLS with ALPN, cancellation."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fastgw import hooks
from fastgw.hooks import Plugin, register_plugin
from fastgw.observe.metrics import samples_by
from tests.support.certs import Pki
from tests.support.gateway import RunningGateway
from tests.support.h2_upstream_server import H2Upstream, h2_server_tls, running_h2_upstream
from tests.support.h2client import H2Client
from tests.support.ports import free_port
from tests.support.rawhttp import RawResponse, build_request, connect, encode_chunked, read_response
from tests.support.upstream_server import pattern_sha256

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


@pytest.fixture
def h2_upstream() -> Iterator[H2Upstream]:
    with running_h2_upstream() as server:
        yield server


def doc_for(port: int, protocol: str = "h2c", **upstream: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0", "http2": {"h2c": True}}],
        "upstreams": {"grid": {"targets": [f"127.0.0.1:{port}"], "protocol": protocol, **upstream}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "grid"}],
    }


def request(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request(method, path, **kwargs))
        return read_response(sock)


def echo(response: RawResponse) -> dict[str, Any]:
    assert response.status == 200, (response.status, response.body)
    return json.loads(response.body)  # type: ignore[no-any-return]


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for something the test caused to be seen (never a bound on how long it takes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def target_outcomes(gw: RunningGateway) -> dict[str, int]:
    (target,) = gw.call(lambda: gw.gateway.plan.upstreams["grid"].targets)
    return dict(gw.call(target.snapshot)["responses"])


def the_pool(gw: RunningGateway) -> Any:
    (pool,) = gw.call(lambda: list(gw.gateway.plan.pools.values()))
    return pool


# -- requests and responses --------------------------------------------------------------------------


def test_request_head_as_http2_fields(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """RFC 9113 8.3.1 pseudo-headers from the request (:authority the Host the HTTP/1.1 side would
    send, :path the route's upstream path and the query), names in lower case, and no
    connection-specific field (8.2.2): Connection, the fields it names, Keep-Alive, TE,
    Transfer-Encoding, Upgrade. The response comes back with its fields, and a Date added."""
    gw = make_gateway(doc_for(h2_upstream.port))
    answer = request(
        gw, "GET", "/echo/items?id=7",
        headers=[("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                 ("TE", "trailers"), ("Upgrade", "websocket"), ("X-Custom-Field", "Kept")],
    )  # fmt: skip
    body = echo(answer)
    assert (body["method"], body["scheme"], body["path"]) == ("GET", "http", "/echo/items?id=7")
    assert body["authority"] == f"127.0.0.1:{h2_upstream.port}"
    names = [name for name, _ in body["headers"]]
    assert names == [name.lower() for name in names]
    assert ["x-custom-field", "Kept"] in body["headers"]
    assert not {"connection", "x-hop", "keep-alive", "te", "upgrade", "transfer-encoding", "host"} & set(
        names
    )
    assert {"x-forwarded-for", "x-request-id"} <= set(names)
    assert answer.header("x-conn-id") == "1" and answer.header("date")


def test_http11_clients_get_the_standard_reason_phrase(
    make_gateway: MakeGateway, h2_upstream: H2Upstream
) -> None:
    """HTTP/2 has no reason phrase (RFC 9113 8.3.2): an HTTP/1.1 client gets the standard one,
    not an empty one."""
    gw = make_gateway(doc_for(h2_upstream.port))
    answers = [request(gw, "GET", path) for path in ("/echo", "/status/404", "/status/503")]
    assert [(a.status, a.reason) for a in answers] == [
        (200, "OK"),
        (404, "Not Found"),
        (503, "Service Unavailable"),
    ]


def test_bodies_each_way_on_one_connection(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """A POST with a length and a chunked one go up as DATA (content-length only when the length is
    known); bodies come down framed for the HTTP/1.1 client; one connection carries them all."""
    gw = make_gateway(doc_for(h2_upstream.port))
    with connect(gw.port) as sock:
        sock.sendall(build_request("POST", "/echo", body=b"x" * 100_000))
        sized = echo(read_response(sock))
        chunked_body = encode_chunked([b"y" * 3000, b"y" * 2000])
        sock.sendall(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked_body))
        chunked = echo(read_response(sock))
        sock.sendall(build_request("GET", "/bytes/300000"))
        download = read_response(sock)
    assert sized["body_len"] == 100_000 and ["content-length", "100000"] in sized["headers"]
    assert chunked["body_len"] == 5000 and "content-length" not in dict(chunked["headers"])
    assert hashlib.sha256(download.body).hexdigest() == pattern_sha256(300_000)
    assert h2_upstream.stats.connections_opened == 1


def test_interim_and_streamed_responses(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    gw = make_gateway(doc_for(h2_upstream.port))
    hints = request(gw, "GET", "/early-hints")
    assert [r.status for r in hints.interim] == [103] and echo(hints)["path"] == "/early-hints"
    streamed = request(gw, "GET", "/stream/3/20")
    assert (
        streamed.body == b"piece 0\npiece 1\npiece 2\n" and streamed.header("transfer-encoding") == "chunked"
    )


# -- streams, not sockets -----------------------------------------------------------------------------


def concurrently(count: int, call: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def test_concurrent_requests_share_one_connection(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """Eight requests in flight at once (the server holds each until all eight are open) travel as
    eight streams of one connection; later requests reuse it."""
    gw = make_gateway(doc_for(h2_upstream.port))
    answers = concurrently(8, lambda _: request(gw, "GET", "/barrier/8"))
    assert len({echo(a)["stream_id"] for a in answers}) == 8
    assert (h2_upstream.stats.connections_opened, h2_upstream.stats.peak_streams) == (1, 8)
    assert echo(request(gw, "GET", "/echo"))["conn_id"] == 1
    pool = the_pool(gw)
    assert (pool.opened, pool.in_use, len(pool.sessions)) == (1, 0, 1)


def test_a_new_connection_only_when_all_are_full(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """With two streams per connection (pool.max_streams), five streams open at once need three
    connections, and no more."""
    gw = make_gateway(doc_for(h2_upstream.port, pool={"max_streams": 2}))
    answers = concurrently(5, lambda _: request(gw, "GET", "/barrier/5"))
    per_connection = [echo(a)["conn_id"] for a in answers]
    assert sorted(per_connection.count(c) for c in set(per_connection)) == [1, 2, 2]
    assert h2_upstream.stats.connections_opened == 3


def test_the_servers_stream_limit_counts(make_gateway: MakeGateway) -> None:
    """The server's SETTINGS_MAX_CONCURRENT_STREAMS (3) bounds a connection below pool.max_streams."""
    with running_h2_upstream(max_streams=3) as server:
        gw = make_gateway(doc_for(server.port))
        assert echo(request(gw, "GET", "/echo"))["conn_id"] == 1  # the server's SETTINGS are known
        answers = concurrently(6, lambda _: request(gw, "GET", "/barrier/6"))
        assert all(a.status == 200 for a in answers)
        assert server.stats.connections_opened == 2 and server.stats.peak_streams == 3


def test_streams_in_use_in_metrics(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    gw = make_gateway(doc_for(h2_upstream.port))
    socks = [connect(gw.port) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(build_request("GET", "/hang"))
        eventually(lambda: the_pool(gw).in_use == 3, "three streams in use")
        families = gw.call(gw.gateway.collect)
        target = (("target", f"127.0.0.1:{h2_upstream.port}"),)
        streams = samples_by(families, "fastgw_upstream_streams")
        connections = samples_by(families, "fastgw_upstream_connections")
        assert streams[(*target, ("state", "in_use"))] == 3
        assert streams[(*target, ("state", "limit"))] == 100
        assert connections[(*target, ("state", "in_use"))] == 1
        assert connections[(*target, ("state", "open"))] == 1
    finally:
        for sock in socks:
            sock.close()


# -- flow control --------------------------------------------------------------------------------------


def test_large_upload_follows_the_servers_window(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """8 MB up through a 64 KiB stream window: DATA only as WINDOW_UPDATEs allow, all of it."""
    gw = make_gateway(doc_for(h2_upstream.port))
    body = bytes(range(256)) * (8 * 4096)
    answer = echo(request(gw, "POST", "/sink", body=body))
    assert answer == {"body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


def test_a_stalled_upstream_window_holds_the_client_back(
    make_gateway: MakeGateway, h2_upstream: H2Upstream
) -> None:
    """The server never opens its window: the gateway queues at most its buffer, then stops
    reading the client, whose upload stalls far short of its 64 MB."""
    gw = make_gateway(doc_for(h2_upstream.port))
    total = 64 * 1024 * 1024
    sent = 0
    with connect(gw.port) as sock:
        sock.sendall(build_request("POST", "/sink-stalled", headers=[("Content-Length", str(total))]))
        sock.settimeout(3.0)
        piece = bytes(256 * 1024)
        try:
            while sent < total:
                sent += sock.send(piece)
        except TimeoutError:
            pass
    assert sent < total // 4
    assert h2_upstream.stats.unacknowledged <= 65535


def test_a_slow_client_holds_the_upstream_back(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """A client that stops reading: the gateway stops acknowledging DATA, the server's window
    closes and it stops sending, far short of the body; the whole body still arrives once the
    client reads."""
    gw = make_gateway(doc_for(h2_upstream.port))
    total = 64 * 1024 * 1024
    with connect(gw.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(build_request("GET", f"/bytes/{total}"))
        sent = [-1, -2, -3]
        while len(set(sent[-3:])) > 1:  # until the server has sent nothing more for two looks
            time.sleep(0.3)
            sent.append(h2_upstream.stats.data_sent)
        assert 0 < sent[-1] < total // 4
        assert gw.call(the_pool(gw).sessions[0].unconsumed_bytes) > 0  # DATA held back unacknowledged
        response = read_response(sock, timeout=60)
    assert hashlib.sha256(response.body).hexdigest() == pattern_sha256(total)


# -- trailers -------------------------------------------------------------------------------------------


def test_trailers_reach_an_http2_client(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    gw = make_gateway(doc_for(h2_upstream.port))
    with H2Client(gw.port) as client:
        response = client.get("/trailers")
    assert (response.status, response.body) == (200, b"message body")
    assert ("grpc-status", "0") in response.trailers and ("grpc-message", "done") in response.trailers


def test_trailers_are_dropped_for_http_1_1(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    gw = make_gateway(doc_for(h2_upstream.port))
    response = request(gw, "GET", "/trailers")
    assert (response.status, response.body, response.trailers) == (200, b"message body", [])


def test_grpc_requests_carry_te_trailers(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """gRPC servers refuse a request without ``te: trailers`` (the gateway drops a client's TE as
    hop-by-hop): a gRPC content type gets it back."""
    gw = make_gateway(doc_for(h2_upstream.port))
    grpc = echo(
        request(gw, "POST", "/echo", headers=[("Content-Type", "application/grpc+proto")], body=b"\0\0\0\0\0")
    )
    plain = echo(request(gw, "POST", "/echo", headers=[("Content-Type", "application/json")], body=b"{}"))
    assert ["te", "trailers"] in grpc["headers"]
    assert "te" not in dict(plain["headers"])


# -- failures ------------------------------------------------------------------------------------------


def test_reset_mid_response_cuts_the_client(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """RST_STREAM after the head: the client's response is cut (never a clean end), the attempt
    counts as failed against the target, and the connection serves on."""
    gw = make_gateway(doc_for(h2_upstream.port))
    cut = request(gw, "GET", "/rst-mid-body")
    assert cut.status == 200 and not cut.complete and len(cut.body) < 100_000
    assert target_outcomes(gw)["failed"] == 1
    assert echo(request(gw, "GET", "/echo"))["conn_id"] == 1


def test_refused_stream_is_retried_once_when_safe(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    """REFUSED_STREAM means not processed (RFC 9113 8.7): a GET is sent once more, a POST is not."""
    gw = make_gateway(doc_for(h2_upstream.port))
    refused = request(gw, "GET", "/refuse")
    assert refused.status == 502 and b"refused the stream" in refused.body
    assert h2_upstream.stats.refused == 2
    assert request(gw, "POST", "/refuse", body=b"order").status == 502
    assert h2_upstream.stats.refused == 3


def test_goaway_retries_the_streams_it_left_unprocessed(
    make_gateway: MakeGateway, h2_upstream: H2Upstream
) -> None:
    """GOAWAY naming the first of three streams in flight: that one completes on its connection,
    the other two go again on a new connection; each is processed once; the old connection
    closes once its stream ended."""
    gw = make_gateway(doc_for(h2_upstream.port))
    answers = concurrently(3, lambda _: request(gw, "GET", "/goaway/3"))
    conns = sorted(echo(a)["conn_id"] for a in answers)
    assert conns == [1, 2, 2]
    assert h2_upstream.stats.answered == 3 and h2_upstream.stats.connections_opened == 2
    eventually(lambda: h2_upstream.open_connections() == 1, "the connection that said GOAWAY closed")
    assert target_outcomes(gw)["2xx"] == 3


def test_connect_failure(make_gateway: MakeGateway) -> None:
    gw = make_gateway(doc_for(free_port()))
    answer = request(gw, "GET", "/echo")
    assert answer.status == 502 and b"upstream 'grid': connect failed" in answer.body
    assert the_pool(gw).connect_errors == 1


def test_head_timeout_resets_the_stream(make_gateway: MakeGateway, h2_upstream: H2Upstream) -> None:
    doc = doc_for(h2_upstream.port, timeouts={"head": "300ms"})
    gw = make_gateway(doc)
    answer = request(gw, "GET", "/hang")
    assert answer.status == 504
    eventually(lambda: h2_upstream.stats.resets == [("/hang", 8)], "RST_STREAM CANCEL at the server")


def test_client_leaving_resets_the_upstream_stream(
    make_gateway: MakeGateway, h2_upstream: H2Upstream
) -> None:
    """The client closes while its request is in flight: RST_STREAM CANCEL reaches the server (the
    way a cancelled call reaches a gRPC server); the connection carries the next request."""
    gw = make_gateway(doc_for(h2_upstream.port))
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/hang"))
        eventually(lambda: h2_upstream.stats.streams == 1, "the request at the server")
    eventually(lambda: h2_upstream.stats.resets == [("/hang", 8)], "RST_STREAM CANCEL at the server")
    assert echo(request(gw, "GET", "/echo"))["conn_id"] == 1


class FailingOnResponse(Plugin):
    """A plugin with a bug: its on_response hook raises for the streamed responses."""

    name = "test_failing_on_response"

    @classmethod
    def compile(cls, options: Any, key_path: str) -> Plugin:
        return cls()

    def on_response(self, ctx: Any) -> None:
        if ctx.path.startswith(b"/stream/"):
            raise RuntimeError("a plugin bug")


def test_a_bug_while_handling_a_response_fails_only_its_exchange(
    make_gateway: MakeGateway, h2_upstream: H2Upstream
) -> None:
    """Our code (here a plugin's hook) raising inside the HTTP/2 callbacks: that request gets 500
    and its stream a reset (INTERNAL_ERROR, the server was still sending), as with HTTP/1.1; the
    connection and its other streams go on."""
    register_plugin(FailingOnResponse)
    try:
        doc = doc_for(h2_upstream.port)
        doc["routes"][0]["plugins"] = [{"name": FailingOnResponse.name}]
        gw = make_gateway(doc)
        assert request(gw, "GET", "/stream/5/100").status == 500
        eventually(lambda: h2_upstream.stats.resets == [("/stream/5/100", 2)], "RST_STREAM INTERNAL_ERROR")
        assert echo(request(gw, "GET", "/echo/fine"))["conn_id"] == 1
        assert h2_upstream.stats.connections_opened == 1
    finally:
        hooks._REGISTRY.pop(FailingOnResponse.name, None)


# -- TLS -----------------------------------------------------------------------------------------------


def test_h2_over_verified_tls(make_gateway: MakeGateway, pki: Pki) -> None:
    issued = pki.issue("127.0.0.1", "grid.internal")
    with running_h2_upstream(tls=h2_server_tls(issued.cert, issued.key)) as server:
        gw = make_gateway(doc_for(server.port, "h2", tls={"ca": pki.ca_file}))
        body = echo(request(gw, "GET", "/echo"))
        assert (body["scheme"], body["conn_id"]) == ("https", 1)
        assert echo(request(gw, "GET", "/echo"))["conn_id"] == 1


def test_h2_refuses_an_unverified_certificate(make_gateway: MakeGateway, pki: Pki) -> None:
    issued = pki.issue("127.0.0.1", ca=pki.other_ca)
    with running_h2_upstream(tls=h2_server_tls(issued.cert, issued.key)) as server:
        gw = make_gateway(doc_for(server.port, "h2", tls={"ca": pki.ca_file}))
        answer = request(gw, "GET", "/echo")
        assert answer.status == 502 and b"TLS certificate verification failed" in answer.body
        assert server.stats.streams == 0


def test_h2_fails_clearly_when_the_target_does_not_choose_it(make_gateway: MakeGateway, pki: Pki) -> None:
    issued = pki.issue("127.0.0.1")
    with running_h2_upstream(tls=h2_server_tls(issued.cert, issued.key, alpn=("http/1.1",))) as server:
        gw = make_gateway(doc_for(server.port, "h2", tls={"ca": pki.ca_file}))
        answer = request(gw, "GET", "/echo")
        assert answer.status == 502 and b"did not agree to HTTP/2" in answer.body
        assert the_pool(gw).connect_errors == 1
