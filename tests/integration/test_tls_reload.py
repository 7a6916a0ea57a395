"""Certificates change without dropping connections: a reload (same paths, new files; or new
settings) is seen by new handshakes while connections made before it carry on; a reload that
fails (a bad key) keeps the running certificates."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw.errors import ConfigError
from tests.integration.test_tls_listener import der_of
from tests.support.certs import Issued, Pki, https_get, tls_connect
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, read_response

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


def install(issued: Issued, directory: Path) -> Issued:
    """Copy a certificate and key to the fixed paths a config names (as certbot replaces them)."""
    target = Issued(str(directory / "live.pem"), str(directory / "live.key"))
    for source, dest in ((issued.cert, target.cert), (issued.key, target.key)):
        shutil.copyfile(source, dest + ".new")
        Path(dest + ".new").replace(dest)
    return target


def write(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_rotated_files_reach_new_connections_and_old_ones_carry_on(
    make_gateway: MakeGateway, upstream: int, pki: Pki, tmp_path: Path
) -> None:
    first, second = pki.issue("gw.test"), pki.issue("gw.test")
    live = install(first, tmp_path)
    doc = gateway_config(upstream, tls={"certificates": [{"cert": live.cert, "key": live.key}]})
    gw = make_gateway(doc)
    config = write(gw.document, tmp_path / "gateway.yaml")
    client = pki.client_context()
    before = tls_connect(gw.port, client, "gw.test")
    with before:
        before.sendall(build_request("GET", "/echo", host="gw.test"))
        assert read_response(before).status == 200  # type: ignore[arg-type]
        assert before.getpeercert(binary_form=True) == der_of(first)
        install(second, tmp_path)
        gw.reload(str(config))
        answer, _ = https_get(gw.port, client)
        assert answer.status == 200 and answer.peer == der_of(second)
        for _ in range(3):  # the connection from before is served on, with its certificate
            before.sendall(build_request("GET", "/echo", host="gw.test"))
            assert read_response(before).status == 200  # type: ignore[arg-type]


def test_a_reload_adds_names_and_client_certificate_rules(
    make_gateway: MakeGateway, upstream: int, pki: Pki, tmp_path: Path
) -> None:
    gw_cert, api_cert = pki.issue("gw.test"), pki.issue("api.test")
    alice = pki.issue("alice@shop.test", ca=pki.client_ca, common_name="alice")
    doc = gateway_config(upstream, tls={"certificates": [{"cert": gw_cert.cert, "key": gw_cert.key}]})
    gw = make_gateway(doc)
    lenient = pki.client_context(check_hostname=False)
    assert https_get(gw.port, lenient, sni="api.test")[0].peer == der_of(gw_cert)
    tls = gw.document["listeners"][0]["tls"]
    tls["certificates"].append({"cert": api_cert.cert, "key": api_cert.key})
    tls["client_certificates"] = {"mode": "required", "ca": pki.client_ca_file}
    gw.reload(str(write(gw.document, tmp_path / "gateway.yaml")))
    assert https_get(gw.port, pki.client_context(alice), sni="api.test")[0].peer == der_of(api_cert)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        answer, _ = https_get(gw.port, pki.client_context(), sni="api.test")  # no certificate now
        assert answer.status != 200
    # and back: the requirement goes away with the next reload
    del tls["client_certificates"]
    gw.reload(str(write(gw.document, tmp_path / "gateway.yaml")))
    assert https_get(gw.port, pki.client_context(), sni="api.test")[0].status == 200


def test_a_reload_with_a_bad_key_keeps_the_running_certificate(
    make_gateway: MakeGateway, upstream: int, pki: Pki, tmp_path: Path
) -> None:
    first, stranger = pki.issue("gw.test"), pki.issue("gw.test")
    live = install(first, tmp_path)
    gw = make_gateway(gateway_config(upstream, tls={"certificates": [{"cert": live.cert, "key": live.key}]}))
    config = write(gw.document, tmp_path / "gateway.yaml")
    shutil.copyfile(stranger.key, live.key)  # a half-done rotation: the new key, the old certificate
    with pytest.raises(
        ConfigError, match=r"listeners\[0\]\.tls\.certificates\[0\]\.key: .* is not the key of"
    ):
        gw.reload(str(config))
    answer, _ = https_get(gw.port, pki.client_context())
    assert answer.status == 200 and answer.peer == der_of(first)


def test_a_reload_reads_new_upstream_ca_files(
    make_gateway: MakeGateway, upstream: int, pki: Pki, tmp_path: Path
) -> None:
    """An upstream's CA bundle replaced on disk is read by the reload: pools kept (same settings)
    make their next connections with it."""
    from tests.support.procs import reaper
    from tests.support.upstream_server import start_upstream_process

    served = pki.issue("127.0.0.1")
    bundle = tmp_path / "upstream-ca.pem"
    shutil.copyfile(pki.other_ca_file, bundle)  # the wrong CA first
    with reaper() as processes:
        port = start_upstream_process(processes=processes, tls=(served.cert, served.key))[1]
        doc = {
            "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
            "upstreams": {"up": {"targets": [f"127.0.0.1:{port}"], "tls": {"ca": str(bundle)}}},
            "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
        }
        gw = make_gateway(doc)
        from tests.support.rawhttp import connect

        def status() -> int:
            sock = connect(gw.port)
            with sock:
                sock.sendall(build_request("GET", "/echo"))
                return read_response(sock).status

        assert status() == 502
        shutil.copyfile(pki.ca_file, bundle)
        gw.reload(str(write(gw.document, tmp_path / "gateway.yaml")))
        assert status() == 200
