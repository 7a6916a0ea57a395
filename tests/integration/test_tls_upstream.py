"""HTTPS to upstreams: real TLS upstream processes (``upstream_server.py --tls-cert``) behind the
gateway. Verified by default; SNI and the name checked follow the target or ``server_name``;
client certificates for mTLS to the upstream; ``insecure_skip_verify`` works and warns; a
certificate that fails verification is a 502 and a log line naming the upstream; connections
are kept alive in the pool like cleartext ones."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.certs import Issued, Pki
from tests.support.gateway import RunningGateway
from tests.support.procs import ProcessReaper, reaper
from tests.support.rawhttp import build_request, connect, read_response, tcp_server
from tests.support.upstream_server import start_upstream_process

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


@pytest.fixture
def processes() -> Iterator[ProcessReaper]:
    with reaper() as procs:
        yield procs


@pytest.fixture(scope="module")
def upstream_certs(pki: Pki) -> dict[str, Issued]:
    return {
        "ip": pki.issue("127.0.0.1", "catalog.internal"),
        "named": pki.issue("catalog.internal"),
        "expired": pki.issue("127.0.0.1", "catalog.internal", expired=True),
        "foreign": pki.issue("127.0.0.1", ca=pki.other_ca),
        "gateway_client": pki.issue("gateway.internal", ca=pki.client_ca, common_name="gateway"),
    }


def https_upstream(processes: ProcessReaper, issued: Issued, client_ca: str | None = None) -> int:
    tls = (issued.cert, issued.key, *([client_ca] if client_ca else []))
    return start_upstream_process(processes=processes, tls=tls)[1]


def doc_for(port: int, tls: Any, host: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"catalog": {"targets": [f"{host}:{port}"], "tls": tls}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "catalog"}],
    }


def get(gw: RunningGateway, path: str = "/echo", count: int = 1) -> list[Any]:
    """``count`` requests on one keep-alive connection; their responses."""
    answers = []
    sock = connect(gw.port)
    with sock:
        for _ in range(count):
            sock.sendall(build_request("GET", path))
            answers.append(read_response(sock))
    return answers


def test_verified_upstream_with_keep_alive(
    make_gateway: MakeGateway, processes: ProcessReaper, pki: Pki, upstream_certs: dict[str, Issued]
) -> None:
    port = https_upstream(processes, upstream_certs["ip"])
    gw = make_gateway(doc_for(port, {"ca": pki.ca_file}))
    answers = get(gw, count=3)
    assert [a.status for a in answers] == [200, 200, 200]
    echoes = [json.loads(a.body) for a in answers]
    assert echoes[0]["tls"]["version"] == "TLSv1.3"
    assert echoes[0]["tls"]["server_name"] is None  # an IP target: no SNI (RFC 6066)
    # one upstream TLS connection carried all three
    assert {e["conn_id"] for e in echoes} == {echoes[0]["conn_id"]}
    assert [e["requests_on_conn"] for e in echoes] == [1, 2, 3]


def test_server_name_is_sent_and_checked(
    make_gateway: MakeGateway, processes: ProcessReaper, pki: Pki, upstream_certs: dict[str, Issued]
) -> None:
    port = https_upstream(processes, upstream_certs["named"])
    gw = make_gateway(doc_for(port, {"ca": pki.ca_file, "server_name": "catalog.internal"}))
    (answer,) = get(gw)
    assert answer.status == 200 and answer.json()["tls"]["server_name"] == "catalog.internal"


def test_system_store_is_the_default_and_refuses_a_private_ca(
    make_gateway: MakeGateway,
    processes: ProcessReaper,
    upstream_certs: dict[str, Issued],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``tls: true``: verified against the system's CAs, which do not know the test CA."""
    port = https_upstream(processes, upstream_certs["ip"])
    caplog.set_level(logging.WARNING, logger="fastgw")
    gw = make_gateway(doc_for(port, True))
    (answer,) = get(gw)
    assert answer.status == 502
    assert "unable to get local issuer certificate" in _tls_log(caplog, port)


def _tls_log(caplog: pytest.LogCaptureFixture, port: int) -> str:
    lines = [r.getMessage() for r in caplog.records if "TLS to" in r.getMessage()]
    assert lines, "no log line about the TLS failure"
    assert any(f"upstream 'catalog': TLS to 127.0.0.1:{port} failed" in line for line in lines), lines
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("which", "tls", "reason"),
    [
        ("expired", {}, "certificate has expired"),
        ("foreign", {}, "unable to get local issuer certificate"),
        ("named", {}, "IP address mismatch"),  # for catalog.internal, reached as 127.0.0.1
        ("ip", {"server_name": "other.internal"}, "Hostname mismatch"),
    ],
)
def test_a_certificate_that_fails_verification_is_a_502_and_a_log_line(
    make_gateway: MakeGateway,
    processes: ProcessReaper,
    pki: Pki,
    upstream_certs: dict[str, Issued],
    caplog: pytest.LogCaptureFixture,
    which: str,
    tls: dict[str, Any],
    reason: str,
) -> None:
    port = https_upstream(processes, upstream_certs[which])
    caplog.set_level(logging.WARNING, logger="fastgw")
    gw = make_gateway(doc_for(port, {"ca": pki.ca_file, **tls}))
    (answer,) = get(gw)
    assert answer.status == 502
    body = answer.body.decode()
    assert "127.0.0.1" not in body and str(port) not in body  # the client learns no internal address
    assert reason.lower() in _tls_log(caplog, port).lower()


def test_insecure_skip_verify_works_and_warns(
    processes: ProcessReaper,
    upstream_certs: dict[str, Issued],
    caplog: pytest.LogCaptureFixture,
    loop_kind: str,
) -> None:
    port = https_upstream(processes, upstream_certs["expired"])
    caplog.set_level(logging.WARNING, logger="fastgw")
    gw = RunningGateway(
        doc_for(port, {"insecure_skip_verify": True, "server_name": "anything.internal"}), loop_kind
    )
    try:
        warnings = [r.getMessage() for r in caplog.records if "insecure_skip_verify" in r.getMessage()]
        assert warnings == ["upstream 'catalog': TLS certificates are not verified (insecure_skip_verify)"]
        (answer,) = get(gw)
        assert answer.status == 200 and answer.json()["tls"]["server_name"] == "anything.internal"
    finally:
        gw.stop()


def test_client_certificate_to_the_upstream(
    make_gateway: MakeGateway, processes: ProcessReaper, pki: Pki, upstream_certs: dict[str, Issued]
) -> None:
    port = https_upstream(processes, upstream_certs["ip"], client_ca=pki.client_ca_file)
    client = upstream_certs["gateway_client"]
    gw = make_gateway(doc_for(port, {"ca": pki.ca_file, "cert": client.cert, "key": client.key}))
    (answer,) = get(gw)
    assert answer.status == 200
    assert "commonName=gateway" in answer.json()["tls"]["client_subject"]
    without = make_gateway(doc_for(port, {"ca": pki.ca_file}))
    (answer,) = get(without)
    assert answer.status == 200 and answer.json()["tls"]["client_subject"] is None


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    """A cleartext server that answers anything with a 400, as a web server does a ClientHello."""

    def answer(conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with tcp_server(answer) as port:
        yield port


def test_tls_to_a_cleartext_upstream_is_a_502(
    make_gateway: MakeGateway, plain_http_server: int, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastgw")
    gw = make_gateway(doc_for(plain_http_server, {"ca": pki.ca_file}))
    (answer,) = get(gw)
    assert answer.status == 502 and b"TLS handshake failed" in answer.body
    assert "wrong version number" in _tls_log(caplog, plain_http_server).lower()


def test_tls_and_cleartext_pools_to_one_address_stay_apart(
    make_gateway: MakeGateway,
    processes: ProcessReaper,
    pki: Pki,
    upstream_certs: dict[str, Issued],
    upstream: int,
) -> None:
    """Two upstreams naming the same target, one with tls: each gets connections of its kind."""
    port = https_upstream(processes, upstream_certs["ip"])
    doc = doc_for(port, {"ca": pki.ca_file})
    doc["upstreams"]["insecure"] = {"targets": [f"127.0.0.1:{port}"], "tls": {"insecure_skip_verify": True}}
    doc["routes"] = [
        {"id": "verified", "path": "/v/{*rest}", "upstream": "catalog", "rewrite": "/echo"},
        {"id": "skip", "path": "/s/{*rest}", "upstream": "insecure", "rewrite": "/echo"},
    ]
    gw = make_gateway(doc)
    assert get(gw, "/v/x")[0].status == 200
    assert get(gw, "/s/x")[0].status == 200
    pools = gw.call(lambda: [(key.host, key.port, key.tls is not None) for key in gw.gateway.plan.pools])
    assert len([p for p in pools if p[1] == port]) == 2
