"""TLS termination on a listener, with real certificates (trustme) and real clients (Python's
``ssl``, curl, ``openssl s_client``): SNI, versions, key types, ALPN, client certificates, the
facts a TLS request carries upstream and into logs and metrics, redirects to HTTPS, and what a
malformed or stalled handshake gets."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import Issued, Pki, https_get, tls_connect
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


def der_of(issued: Issued) -> bytes:
    """The leaf certificate of a chain file, as DER."""
    pem = Path(issued.cert).read_text()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return ssl.PEM_cert_to_DER_cert(first)


def tls_doc(
    upstream: int, *certificates: Issued, routes: list[dict[str, Any]] | None = None, **tls: Any
) -> dict[str, Any]:
    entries = [{"cert": c.cert, "key": c.key} for c in certificates]
    return gateway_config(upstream, routes, tls={"certificates": entries, **tls})


def echoed_headers(body: bytes) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


@pytest.fixture(scope="module")
def certs(pki: Pki) -> dict[str, Issued]:
    return {
        "gw": pki.issue("gw.test", "www.gw.test"),
        "gw_rsa": pki.issue("gw.test", "www.gw.test", key_type=pki_rsa()),
        "wild": pki.issue("*.wild.test"),
        "other": pki.issue("other.test"),
        "alice": pki.issue("alice@shop.test", "alice.shop.test", ca=pki.client_ca, common_name="alice"),
        "mallory": pki.issue("mallory@evil.test", ca=pki.other_ca, common_name="mallory"),
    }


def pki_rsa() -> Any:
    import trustme

    return trustme.KeyType.RSA


# -- certificates by name -------------------------------------------------------------------------


def test_sni_chooses_the_certificate_and_a_client_without_sni_gets_the_first(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    gw = make_gateway(tls_doc(upstream, certs["gw"], certs["wild"], certs["other"]))
    client = pki.client_context()
    for sni, expected in (
        ("gw.test", "gw"),
        ("WWW.GW.TEST", "gw"),
        ("other.test", "other"),
        ("a.wild.test", "wild"),
        ("b.wild.test", "wild"),
    ):
        answer, _ = https_get(gw.port, client, sni=sni)
        assert answer.status == 200, sni
        assert answer.peer == der_of(certs[expected]), sni
    # A name nobody serves, one label too deep for the wildcard, and no SNI at all: the default
    # (the first certificate), which the client then checks against the name it wanted.
    lenient = pki.client_context(check_hostname=False)
    for sni in ("nobody.test", "x.a.wild.test", "wild.test", None):
        answer, _ = https_get(gw.port, lenient, sni=sni)
        assert answer.peer == der_of(certs["gw"]), sni
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(gw.port, pki.client_context(), sni="x.a.wild.test")


def test_names_can_be_given_for_a_certificate(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    """``names`` overrides what the certificate says (here: the wildcard one also for api.test)."""
    doc = gateway_config(upstream, tls={"certificates": [
        {"cert": certs["gw"].cert, "key": certs["gw"].key},
        {"cert": certs["wild"].cert, "key": certs["wild"].key, "names": ["*.wild.test", "api.test"]},
    ]})  # fmt: skip
    gw = make_gateway(doc)
    answer, _ = https_get(gw.port, pki.client_context(check_hostname=False), sni="api.test")
    assert answer.peer == der_of(certs["wild"])


def test_ecdsa_and_rsa_certificates_side_by_side(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    """Both for the same names: each client gets the one its cipher suites can use."""
    gw = make_gateway(tls_doc(upstream, certs["gw"], certs["gw_rsa"]))
    for suite, expected in (
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "gw"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "gw_rsa"),
    ):
        client = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        client.set_ciphers(suite)
        answer, _ = https_get(gw.port, client)
        assert (answer.status, answer.version, answer.cipher) == (200, "TLSv1.2", suite)
        assert answer.peer == der_of(certs[expected])
    answer, _ = https_get(gw.port, pki.client_context())  # TLS 1.3 prefers the first: ECDSA
    assert answer.version == "TLSv1.3" and answer.peer == der_of(certs["gw"])


# -- versions, ciphers, ALPN ----------------------------------------------------------------------


def _old_client(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    client = pki.client_context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=version)
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what it is testing
    return client


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the point of the test
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_before_1_2_is_refused(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued], version: ssl.TLSVersion
) -> None:
    gw = make_gateway(tls_doc(upstream, certs["gw"]))
    with pytest.raises(ssl.SSLError):
        https_get(gw.port, _old_client(pki, version))
    # The same client allowed 1.2 gets through: the refusal was the version, not the client.
    answer, _ = https_get(gw.port, _old_client(pki, ssl.TLSVersion.TLSv1_2))
    assert (answer.status, answer.version) == (200, "TLSv1.2")


def test_min_version_1_3_refuses_tls_1_2(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    gw = make_gateway(tls_doc(upstream, certs["gw"], min_version="1.3"))
    with pytest.raises(ssl.SSLError):
        https_get(gw.port, pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    answer, _ = https_get(gw.port, pki.client_context())
    assert answer.version == "TLSv1.3"


def test_tls_1_2_uses_the_modern_cipher_list_only(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    """No CBC, no static RSA key exchange: a client offering only those finds nothing in common."""
    gw = make_gateway(tls_doc(upstream, certs["gw_rsa"]))
    for legacy in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"):
        client = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        client.set_ciphers(legacy)
        with pytest.raises(ssl.SSLError):
            https_get(gw.port, client)
    answer, _ = https_get(gw.port, pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert answer.cipher is not None and answer.cipher.startswith("ECDHE-RSA-")
    assert "GCM" in answer.cipher or "CHACHA20" in answer.cipher


def test_alpn_offers_h2_then_http_1_1(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    def chosen(gw: RunningGateway, offered: list[str]) -> str | None:
        client = pki.client_context()
        client.set_alpn_protocols(offered)
        with tls_connect(gw.port, client, "gw.test") as sock:
            return sock.selected_alpn_protocol()

    gw = make_gateway(tls_doc(upstream, certs["gw"]))
    assert chosen(gw, ["h2", "http/1.1"]) == "h2"
    assert chosen(gw, ["http/1.1"]) == "http/1.1"
    assert chosen(gw, ["h3"]) is None  # nothing in common: no protocol chosen (HTTP/1.1 served)
    answer, _ = https_get(gw.port, pki.client_context())  # no ALPN at all: HTTP/1.1
    assert answer.status == 200
    doc = tls_doc(upstream, certs["gw"])
    doc["listeners"][0]["http2"] = False
    without = make_gateway(doc)
    assert chosen(without, ["h2", "http/1.1"]) == "http/1.1"


def test_curl_over_https_sees_x_forwarded_proto_https(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    gw = make_gateway(tls_doc(upstream, certs["gw"]))
    out = subprocess.run(
        ["curl", "-sS", "--cacert", pki.ca_file, "--resolve", f"gw.test:{gw.port}:127.0.0.1",
         "-H", "X-Forwarded-Proto: http", f"https://gw.test:{gw.port}/echo"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    headers = echoed_headers(out.stdout)
    assert headers["x-forwarded-proto"] == ["https"]  # the client's own claim is not believed
    assert headers["x-forwarded-host"] == [f"gw.test:{gw.port}"]


def test_keep_alive_requests_share_one_handshake(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    gw = make_gateway(tls_doc(upstream, certs["gw"]))
    sock = tls_connect(gw.port, pki.client_context(), "gw.test")
    with sock:
        for i in range(5):
            sock.sendall(build_request("POST", f"/echo/{i}", body=b"x" * 70000, host="gw.test"))
            answer = read_response(sock)  # type: ignore[arg-type]
            assert answer.status == 200 and answer.json()["body_len"] == 70000
    assert _handshakes(gw) == {("TLSv1.3", "TLS_AES_256_GCM_SHA384", "false"): 1}


def _handshakes(gw: RunningGateway) -> dict[tuple[str, str, str], int]:
    """fastgw_tls_handshakes_total as /metrics reports it: by (version, cipher, resumed)."""
    family = gw.call(gw.gateway.collect).get("fastgw_tls_handshakes_total")
    if family is None:
        return {}
    return {
        (labels["version"], labels["cipher"], labels["resumed"]): int(value)
        for labels, value in ((dict(key[1]), value) for key, value in family.samples.items())
    }


# -- session resumption ---------------------------------------------------------------------------


def test_sessions_resume_with_tickets_and_are_counted(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    gw = make_gateway(tls_doc(upstream, certs["gw"]))
    client = pki.client_context()
    first, session = https_get(gw.port, client)
    assert not first.session_reused
    second, _ = https_get(gw.port, client, session=session)
    assert second.status == 200 and second.session_reused
    counts = _handshakes(gw)
    assert counts[("TLSv1.3", "TLS_AES_256_GCM_SHA384", "false")] == 1
    assert counts[("TLSv1.3", "TLS_AES_256_GCM_SHA384", "true")] == 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumption_can_be_turned_off(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued], version: ssl.TLSVersion
) -> None:
    """No tickets, and no per-process session cache either (with several workers it would
    resume a client only when it lands on the same one)."""
    gw = make_gateway(tls_doc(upstream, certs["gw"], session_tickets=False))
    client = pki.client_context(maximum_version=version)
    _, session = https_get(gw.port, client)
    answer, _ = https_get(gw.port, client, session=session)
    assert answer.status == 200 and not answer.session_reused
    assert session is None or not session.has_ticket


def test_gateways_sharing_a_ticket_secret_resume_each_others_sessions(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    tickets = {"secret": "a shared secret of the fleet", "rotate": "1h"}
    one = make_gateway(tls_doc(upstream, certs["gw"], session_tickets=tickets))
    two = make_gateway(tls_doc(upstream, certs["gw"], session_tickets=tickets))
    alone = make_gateway(tls_doc(upstream, certs["gw"]))
    client = pki.client_context()
    _, session = https_get(one.port, client)
    resumed, _ = https_get(two.port, client, session=session)
    assert resumed.session_reused
    elsewhere, _ = https_get(alone.port, client, session=session)
    assert elsewhere.status == 200 and not elsewhere.session_reused  # its own random secret


def test_the_ticket_key_changes_when_its_period_ends(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    """``rotate: 2s``: a ticket from an earlier period makes a full handshake; the rotation is
    the gateway's own timer (nothing else happens between the connections)."""
    gw = make_gateway(tls_doc(upstream, certs["gw"], session_tickets={"rotate": "2s"}))
    client = pki.client_context()
    period = int(time.time() // 2)
    _, session = https_get(gw.port, client)
    same, _ = https_get(gw.port, client, session=session)
    if int(time.time() // 2) == period:  # both in one period (almost always): resumed
        assert same.session_reused
    while int(time.time() // 2) <= period:
        time.sleep(0.1)
    time.sleep(0.3)
    later, _ = https_get(gw.port, client, session=session)
    assert later.status == 200 and not later.session_reused


# -- client certificates --------------------------------------------------------------------------


def _mtls_doc(
    upstream: int, pki: Pki, certs: dict[str, Issued], mode: str, routes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return tls_doc(
        upstream, certs["gw"], routes=routes,
        client_certificates={
            "mode": mode, "ca": pki.client_ca_file,
            "headers": {"subject": "X-Client-Subject", "sans": "X-Client-SANs",
                        "fingerprint": "X-Client-Fingerprint"},
        },
    )  # fmt: skip


def _refused_mtls(port: int, client: ssl.SSLContext) -> None:
    """A client the listener refuses fails its handshake, or (TLS 1.3, where the client finishes
    first) finds the connection closed on its first read: never a response."""
    try:
        sock = tls_connect(port, client, "gw.test")
    except (ssl.SSLError, ConnectionError):
        return
    with sock:
        try:
            sock.sendall(build_request("GET", "/echo", host="gw.test"))
            data = sock.recv(65536)
        except (ssl.SSLError, ConnectionError):
            return
    assert not data, f"refused client got a response: {data[:200]!r}"


def test_required_client_certificates(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    gw = make_gateway(_mtls_doc(upstream, pki, certs, "required"))
    _refused_mtls(gw.port, pki.client_context())
    _refused_mtls(gw.port, pki.client_context(certs["mallory"]))
    forged = {"X-Client-Subject": "CN=admin", "x-client-sans": "DNS:admin", "X-Client-Fingerprint": "00"}
    answer, _ = https_get(gw.port, pki.client_context(certs["alice"]), headers=forged)
    assert answer.status == 200
    headers = echoed_headers(answer.body)
    subject = headers["x-client-subject"]
    assert len(subject) == 1 and subject[0].startswith("CN=alice,")
    assert headers["x-client-sans"] == ["email:alice@shop.test, DNS:alice.shop.test"]
    import hashlib

    assert headers["x-client-fingerprint"] == [hashlib.sha256(der_of(certs["alice"])).hexdigest()]


def test_optional_client_certificates_and_routes_that_require_one(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    import hashlib

    alice_fp = hashlib.sha256(der_of(certs["alice"])).hexdigest()
    bob = pki.issue("bob@shop.test", ca=pki.client_ca, common_name="bob")
    carol = pki.issue("carol.shop.test", ca=pki.client_ca, common_name="carol")
    routes = [
        {"id": "open", "path": "/open/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}"},
        {"id": "any", "path": "/any/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}",
         "plugins": [{"name": "client_certificate"}]},
        {"id": "named", "path": "/named/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}",
         "plugins": [{"name": "client_certificate", "fingerprints": [alice_fp.upper()],
                      "sans": ["DNS:Carol.Shop.Test"]}]},
    ]  # fmt: skip
    gw = make_gateway(_mtls_doc(upstream, pki, certs, "optional", routes))
    anonymous = pki.client_context()
    answer, _ = https_get(gw.port, anonymous, path="/open/x", headers={"X-Client-Subject": "CN=admin"})
    assert answer.status == 200 and "x-client-subject" not in echoed_headers(answer.body)
    answer, _ = https_get(gw.port, anonymous, path="/any/x")
    assert answer.status == 401 and b"client certificate is required" in answer.body
    answer, _ = https_get(gw.port, pki.client_context(bob), path="/any/x")
    assert answer.status == 200
    answer, _ = https_get(gw.port, pki.client_context(bob), path="/named/x")
    assert answer.status == 403 and b"may not use this route" in answer.body
    for client in (certs["alice"], carol):
        answer, _ = https_get(gw.port, pki.client_context(client), path="/named/x")
        assert answer.status == 200
    # A certificate from another CA is refused by the handshake itself, even when optional.
    _refused_mtls(gw.port, pki.client_context(certs["mallory"]))


def test_client_certificate_plugin_on_a_cleartext_listener_answers_401(
    make_gateway: MakeGateway, upstream: int
) -> None:
    route = {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "client_certificate"}]}
    gw = make_gateway(gateway_config(upstream, [route]))
    sock = connect(gw.port)
    with sock:
        sock.sendall(build_request("GET", "/echo"))
        assert read_response(sock).status == 401


# -- redirects to HTTPS ---------------------------------------------------------------------------


def test_redirect_https_from_a_cleartext_listener(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    routes = [
        {"id": "web", "path": "/web/{*rest}", "upstream": "up", "redirect_https": True},
        {
            "id": "api",
            "path": "/api/{*rest}",
            "upstream": "up",
            "redirect_https": {"status": 301, "port": 8443},
        },
        {"id": "plain", "path": "/{*rest}", "upstream": "up"},
    ]
    doc = gateway_config(upstream, routes)
    doc["listeners"].append(
        {
            "name": "secure",
            "bind": "127.0.0.1:0",
            "tls": {"certificates": [{"cert": certs["gw"].cert, "key": certs["gw"].key}]},
        }
    )
    gw = make_gateway(doc)
    for request, status, location in (
        (build_request("POST", "/web/a/b?q=1&r=%20", body=b"kept", host="shop.test:8080"), 308,
         "https://shop.test/web/a/b?q=1&r=%20"),
        (build_request("GET", "/api/x", host="[::1]:8080"), 301, "https://[::1]:8443/api/x"),
        (build_request("GET", "/echo"), 200, None),
    ):  # fmt: skip
        sock = connect(gw.port)
        with sock:
            sock.sendall(request)
            answer = read_response(sock)
        assert (answer.status, answer.header("Location")) == (status, location)
        assert status == 200 or answer.body == b""
    # Over TLS the route is served, not redirected.
    answer, _ = https_get(gw.port_of("secure"), pki.client_context(), path="/web/echo")
    assert answer.status != 308 and answer.headers.get("Location") is None


def test_redirect_https_believes_a_trusted_proxys_scheme(make_gateway: MakeGateway, upstream: int) -> None:
    routes = [{"id": "web", "path": "/{*rest}", "upstream": "up", "redirect_https": True}]
    gw = make_gateway(gateway_config(upstream, routes, trusted_proxies=["127.0.0.1/32"]))
    sock = connect(gw.port)
    with sock:
        sock.sendall(build_request("GET", "/echo", [("X-Forwarded-Proto", "https")]))
        assert read_response(sock).status == 200  # the proxy in front terminated TLS
        sock.sendall(
            build_request("GET", "/echo", [("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "shop.test")])
        )
        answer = read_response(sock)
        assert answer.status == 308 and answer.header("Location") == "https://shop.test/echo"


def test_redirect_https_without_a_host_is_a_400(make_gateway: MakeGateway, upstream: int) -> None:
    routes = [{"id": "web", "path": "/{*rest}", "upstream": "up", "redirect_https": True}]
    gw = make_gateway(gateway_config(upstream, routes))
    sock = connect(gw.port)
    with sock:
        sock.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        answer = read_response(sock)
        assert answer.status == 400 and answer.header("Location") is None


# -- observed: access log, spans --------------------------------------------------------------------


def test_access_log_names_the_tls_version_and_cipher(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued], tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    doc = tls_doc(upstream, certs["gw"])
    doc["access_log"] = {"sink": str(log)}
    doc["listeners"].append({"name": "plain", "bind": "127.0.0.1:0"})
    gw = make_gateway(doc)
    https_get(gw.port, pki.client_context())
    sock = connect(gw.port_of("plain"))
    with sock:
        sock.sendall(build_request("GET", "/echo"))
        read_response(sock)
    gw.call(lambda: gw.gateway.access_log.flush())  # type: ignore[union-attr]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    by_listener = {r["listener"]: r for r in records}
    assert by_listener["main"]["tls_version"] == "TLSv1.3"
    assert by_listener["main"]["tls_cipher"] == "TLS_AES_256_GCM_SHA384"
    assert by_listener["plain"]["tls_version"] is None and by_listener["plain"]["tls_cipher"] is None


# -- hostile handshakes -----------------------------------------------------------------------------


def _closed_by_gateway(sock: socket.socket, limit: float = 15.0) -> float:
    """Read until the gateway closes; how long that took (it must close: the test's own timeout
    is far longer than the head timeout)."""
    sock.settimeout(limit)
    started = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_garbage_instead_of_a_client_hello_is_closed_at_once(
    make_gateway: MakeGateway, upstream: int, certs: dict[str, Issued]
) -> None:
    """Plain HTTP on the TLS port, a record header claiming 64 KiB then nothing valid, zeros."""
    doc = tls_doc(upstream, certs["gw"])
    doc["listeners"][0]["timeouts"] = {"head": "30s"}  # closed for the garbage, not by a timer
    gw = make_gateway(doc)
    for garbage in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\xff\xff" + b"\x00" * 100,
        b"\x00" * 4096,
    ):
        sock = connect(gw.port)
        with sock:
            sock.sendall(garbage)
            sock.settimeout(15)
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
        assert not received.startswith(b"HTTP/"), garbage  # at most a TLS alert
        assert len(received) < 64, received


def _client_hello(pki: Pki) -> bytes:
    """The bytes of a real ClientHello (made by Python's ssl over memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = pki.client_context().wrap_bio(incoming, outgoing, server_hostname="gw.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("sent", ["nothing", "half a client hello", "a whole client hello"])
def test_a_stalled_handshake_is_closed_after_the_head_timeout(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued], sent: str
) -> None:
    doc = tls_doc(upstream, certs["gw"])
    doc["listeners"][0]["timeouts"] = {"head": "1s"}
    gw = make_gateway(doc)
    hello = _client_hello(pki)
    data = {"nothing": b"", "half a client hello": hello[: len(hello) // 2], "a whole client hello": hello}[
        sent
    ]
    sock = connect(gw.port)
    with sock:
        if data:
            sock.sendall(data)
        waited = _closed_by_gateway(sock)
    assert waited >= 0.9  # never before the head timeout (the upper bound: the test's own limit)
    # and the gateway still serves
    answer, _ = https_get(gw.port, pki.client_context())
    assert answer.status == 200


def test_a_handshake_then_silence_is_a_head_timeout_like_any_idle_connection(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued]
) -> None:
    doc = tls_doc(upstream, certs["gw"])
    doc["listeners"][0]["timeouts"] = {"head": "1s"}
    gw = make_gateway(doc)
    sock = tls_connect(gw.port, pki.client_context(), "gw.test")
    with sock:
        sock.settimeout(15)
        started = time.monotonic()
        try:
            data = sock.recv(4096)
        except (ssl.SSLError, ConnectionError):
            data = b""
        assert time.monotonic() - started >= 0.9
    assert data == b"" or data.startswith(b"HTTP/1.1 408")


# -- OCSP stapling ----------------------------------------------------------------------------------


def _ocsp_response(pki: Pki, issued: Issued, path: Path) -> Path:
    """A signed 'good' OCSP response for ``issued`` from its CA, as DER."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    leaf = x509.load_pem_x509_certificate(Path(issued.cert).read_bytes())
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.UTC)
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf, issuer=ca_cert, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=now, next_update=now + datetime.timedelta(days=1),
        revocation_time=None, revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, ca_cert)  # fmt: skip
    response = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    path.write_bytes(response.public_bytes(serialization.Encoding.DER))
    return path


def test_ocsp_responses_are_stapled_for_clients_that_ask(
    make_gateway: MakeGateway, upstream: int, pki: Pki, certs: dict[str, Issued], tmp_path: Path
) -> None:
    ocsp_file = _ocsp_response(pki, certs["gw"], tmp_path / "gw.ocsp")
    doc = gateway_config(upstream, tls={"certificates": [
        {"cert": certs["gw"].cert, "key": certs["gw"].key, "ocsp": str(ocsp_file)},
        {"cert": certs["other"].cert, "key": certs["other"].key},
    ]})  # fmt: skip
    gw = make_gateway(doc)

    def s_client(name: str) -> str:
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port}", "-servername", name,
             "-status", "-CAfile", pki.ca_file],
            input=b"", capture_output=True, timeout=30,
        )  # fmt: skip
        return done.stdout.decode(errors="replace")

    stapled = s_client("gw.test")
    assert "OCSP Response Status: successful" in stapled and "Cert Status: good" in stapled
    assert "no response sent" in s_client("other.test")  # nothing given for that one
