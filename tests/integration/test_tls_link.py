"""The compiled TLS layer (``proxy/tls_link.pyx``) at the edges of a connection, with real
clients (Python's ``ssl``) and real upstreams: what a refused handshake is told (an alert naming
why), close_notify both ways, large bodies both ways under flow control, many requests decrypted
from one read, a stalled upstream handshake, and the event loop's own TLS layer taking over where
the compiled one cannot be enabled."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastgw.server.listener
import fastgw.upstream.pool
from tests.support.certs import Issued, Pki, https_get, tls_connect
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.procs import ProcessReaper, reaper
from tests.support.rawhttp import build_request, connect, read_response, tcp_server
from tests.support.upstream_server import pattern_sha256, start_upstream_process

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


@pytest.fixture(scope="module")
def gw_cert(pki: Pki) -> Issued:
    return pki.issue("gw.test", "127.0.0.1")


def tls_doc(upstream: int, cert: Issued, **tls: Any) -> dict[str, Any]:
    return gateway_config(upstream, None, tls={"certificates": [{"cert": cert.cert, "key": cert.key}], **tls})


def gateway_session(gw: RunningGateway, pki: Pki) -> ssl.SSLSocket:
    sock = tls_connect(gw.port, pki.client_context(), "gw.test")
    sock.settimeout(30)
    return sock


def refusal_reason(port: int, client: ssl.SSLContext) -> str:
    """The reason OpenSSL gives the client for its refusal: during the handshake, or (TLS 1.3,
    where the client finishes first) on its first read. Never a response."""
    try:
        sock = tls_connect(port, client, "gw.test")
        with sock:
            sock.settimeout(10)
            sock.sendall(build_request("GET", "/echo", host="gw.test"))
            data = sock.recv(65536)
    except ssl.SSLError as exc:
        return str(exc.reason)
    raise AssertionError(f"the refused client got {data[:200]!r}, not an alert")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("TLS 1.2 to a listener of TLS 1.3 only", "TLSV1_ALERT_PROTOCOL_VERSION"),
        ("no client certificate (TLS 1.3)", "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
        ("a client certificate from another CA", "TLSV1_ALERT_UNKNOWN_CA"),
    ],
)
def test_a_refused_handshake_is_told_why_by_an_alert(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued, case: str, expected: str
) -> None:
    if case.startswith("TLS 1.2"):
        gw = make_gateway(tls_doc(upstream, gw_cert, min_version="1.3"))
        client = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        accepted = pki.client_context()
    else:
        mtls = {"mode": "required", "ca": pki.client_ca_file}
        gw = make_gateway(tls_doc(upstream, gw_cert, client_certificates=mtls))
        foreign = pki.issue("mallory@evil.test", ca=pki.other_ca) if "another CA" in case else None
        client = pki.client_context(foreign)
        accepted = pki.client_context(pki.issue("alice@shop.test", ca=pki.client_ca))
    assert refusal_reason(gw.port, client) == expected
    # the listener refused that client, and still serves one it accepts
    assert https_get(gw.port, accepted)[0].status == 200


def test_failed_handshakes_are_counted_by_reason(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued
) -> None:
    doc = tls_doc(upstream, gw_cert, min_version="1.3")
    doc["listeners"][0]["timeouts"] = {"head": "1s"}
    gw = make_gateway(doc)
    with pytest.raises(ssl.SSLError):
        https_get(gw.port, pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""):  # cleartext HTTP; then silence
        with connect(gw.port) as sock:
            sock.sendall(garbage)
            sock.settimeout(10)
            sock.recv(4096)  # the alert, or the end once the head timeout passed
    with connect(gw.port):
        pass  # gone before saying anything
    assert https_get(gw.port, pki.client_context())[0].status == 200  # and a good one is not counted

    def failures() -> dict[str, int]:
        family = gw.gateway.collect().get("fastgw_tls_handshake_failures_total")
        samples = family.samples.items() if family is not None else ()
        return {dict(key[1])["reason"]: int(value) for key, value in samples}

    deadline = time.monotonic() + 10
    while gw.call(failures).get("closed") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the last close reaches the gateway's loop in its own time
    assert gw.call(failures) == {"unsupported_protocol": 1, "http_request": 1, "timeout": 1, "closed": 1}


def test_close_sends_close_notify_and_a_clients_close_notify_is_answered(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued
) -> None:
    gw = make_gateway(tls_doc(upstream, gw_cert))
    client = pki.client_context()
    # The gateway ends a Connection: close exchange with close_notify: a client that refuses a
    # bare FIN (suppress_ragged_eofs=False raises SSLEOFError on one) reads to a clean end.
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    with client.wrap_socket(raw, server_hostname="gw.test", suppress_ragged_eofs=False) as sock:
        sock.sendall(build_request("GET", "/echo", host="gw.test", headers=[("Connection", "close")]))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    # A client's close_notify between requests: the gateway answers with its own and closes.
    sock = tls_connect(gw.port, client, "gw.test")
    sock.settimeout(10)
    sock.sendall(build_request("GET", "/echo", host="gw.test"))
    assert read_response(sock).status == 200
    plain = sock.unwrap()  # sends close_notify, returns once the gateway's has come
    plain.settimeout(10)
    assert plain.recv(1) == b""  # then the FIN
    plain.close()


def test_large_bodies_both_ways_under_flow_control(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued
) -> None:
    with gateway_session(make_gateway(tls_doc(upstream, gw_cert)), pki) as sock:
        body = bytes(range(256)) * (24 * 1024)  # 6 MiB up
        sock.sendall(build_request("POST", "/sink", host="gw.test", body=body))
        sunk = read_response(sock)
        assert sunk.status == 200
        assert json.loads(sunk.body) == {
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        # 24 MiB down, read slowly at first: the gateway's writes back up and it must pause the
        # upstream, then resume, losing and reordering nothing.
        size = 24 * 1024 * 1024
        sock.sendall(build_request("GET", f"/bytes/{size}", host="gw.test"))
        time.sleep(1.0)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ")
        digest = hashlib.sha256(rest)
        got = len(rest)
        while got < size:
            chunk = sock.recv(1 << 20)
            assert chunk, f"the connection ended after {got} of {size} bytes"
            digest.update(chunk)
            got += len(chunk)
        assert got == size and digest.hexdigest() == pattern_sha256(size)
        # and the connection carries on
        sock.sendall(build_request("GET", "/echo", host="gw.test"))
        assert read_response(sock).status == 200


def test_many_requests_in_one_write_are_each_answered_in_order(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued
) -> None:
    with gateway_session(make_gateway(tls_doc(upstream, gw_cert)), pki) as sock:
        count = 60
        sock.sendall(b"".join(build_request("GET", f"/echo/{i}", host="gw.test") for i in range(count)))
        paths = [json.loads(read_response(sock).body)["path"] for _ in range(count)]
    assert paths == [f"/echo/{i}" for i in range(count)]


def _transport_kind(gw: RunningGateway) -> str:
    def kind() -> str:
        (conn,) = gw.gateway.listeners["main"].connections
        return type(conn.transport).__name__

    return str(gw.call(kind))


def test_the_compiled_layer_carries_tls_connections(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued
) -> None:
    gw = make_gateway(tls_doc(upstream, gw_cert))
    with tls_connect(gw.port, pki.client_context(), "gw.test") as sock:
        sock.sendall(build_request("GET", "/echo", host="gw.test"))
        assert read_response(sock).status == 200
        assert _transport_kind(gw) == "TLSLink"


def test_the_event_loops_tls_layer_serves_where_the_compiled_one_cannot_be_enabled(
    make_gateway: MakeGateway, upstream: int, pki: Pki, gw_cert: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastgw.server.listener, "enable_tls_link", lambda path: False)
    gw = make_gateway(tls_doc(upstream, gw_cert))
    with tls_connect(gw.port, pki.client_context(), "gw.test") as sock:
        sock.sendall(build_request("GET", "/echo", host="gw.test"))
        assert read_response(sock).status == 200
        assert _transport_kind(gw) != "TLSLink"


def test_the_layer_is_not_enabled_without_the_loaded_libssl() -> None:
    """dlopen with RTLD_NOLOAD: a library this process has not loaded is never loaded for it."""
    probe = (
        "from fastgw._proxy import enable_tls_link, tls_link_ready;"
        "print(enable_tls_link(b'libnot-ssl.so.9'), tls_link_ready())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False"]


# -- the upstream side ------------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[ProcessReaper]:
    with reaper() as procs:
        yield procs


def _https_doc(port: int, pki: Pki) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {
            "catalog": {
                "targets": [f"127.0.0.1:{port}"],
                "tls": {"ca": pki.ca_file},
                "timeouts": {"connect": "1s"},
            }
        },
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "catalog"}],
    }


@pytest.mark.parametrize("compiled", [True, False])
def test_large_bodies_both_ways_to_an_https_upstream(
    make_gateway: MakeGateway,
    processes: ProcessReaper,
    pki: Pki,
    compiled: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not compiled:
        monkeypatch.setattr(fastgw.upstream.pool, "enable_tls_link", lambda path: False)
    issued = pki.issue("127.0.0.1")
    port = start_upstream_process(processes=processes, tls=(issued.cert, issued.key))[1]
    gw = make_gateway(_https_doc(port, pki))
    sock = connect(gw.port)
    with sock:
        sock.settimeout(30)
        body = bytes(range(256)) * (16 * 1024)  # 4 MiB
        sock.sendall(build_request("POST", "/sink", body=body))
        assert json.loads(read_response(sock).body)["body_sha256"] == hashlib.sha256(body).hexdigest()
        size = 16 * 1024 * 1024
        sock.sendall(build_request("GET", f"/bytes/{size}"))
        answer = read_response(sock)
        assert answer.status == 200 and hashlib.sha256(answer.body).hexdigest() == pattern_sha256(size)


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[float]]]:
    """Accepts connections and never answers; records when each was closed by the other side."""
    closed_after: list[float] = []

    def hear_out(conn: socket.socket) -> None:
        started = time.monotonic()
        conn.settimeout(15)
        try:
            while conn.recv(65536):
                pass  # the ClientHello, unanswered
        except OSError:
            pass
        closed_after.append(time.monotonic() - started)

    with tcp_server(hear_out) as port:
        yield port, closed_after


def test_an_upstream_that_never_answers_the_client_hello_is_a_504_and_its_socket_is_closed(
    make_gateway: MakeGateway, pki: Pki, silent_server: tuple[int, list[float]]
) -> None:
    port, closed_after = silent_server
    gw = make_gateway(_https_doc(port, pki))
    sock = connect(gw.port)
    with sock:
        sock.sendall(build_request("GET", "/echo"))
        answer = read_response(sock)
    assert answer.status == 504 and b"connect timed out" in answer.body
    deadline = time.monotonic() + 10
    while not closed_after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed_after and closed_after[0] < 10  # closed by the gateway, not by our 15 s limit
