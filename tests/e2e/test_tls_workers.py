"""TLS in ``fastgw run`` as a user runs it: a session ticket issued by one worker resumes on
another, ``--watch`` reloads when a certificate file changes (alone and with workers), and
``fastgw check`` reads the TLS settings."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    RunGateway,
    Upstream,
    accepted_inodes,
    cli_env,
    fastgw_argv,
    gateway_doc,
    run_cli,
    socket_inodes,
    wait_for,
    write_config,
)
from tests.integration.test_tls_listener import der_of
from tests.support.certs import Issued, Pki, https_get, tls_connect
from tests.support.ports import free_port, wait_for_port
from tests.support.rawhttp import build_request, read_response


def _tls_doc(upstream: Upstream, cert: Issued, port: int | None = None, **tls: Any) -> dict[str, Any]:
    return gateway_doc(
        upstream.port, port=port, tls={"certificates": [{"cert": cert.cert, "key": cert.key}], **tls}
    )


def _served_by(pids: list[int], port: int, sock: ssl.SSLSocket) -> int:
    """The worker holding the server end of ``sock``: the one with the accepted socket whose
    peer is this socket's local address (one connection open at a time)."""
    established = accepted_inodes(port)
    holders = [pid for pid in pids if socket_inodes(pid) & established]
    assert len(holders) == 1, holders
    return holders[0]


def _open(port: int, client: ssl.SSLContext, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    sock = tls_connect(port, client, "gw.test", session)
    sock.sendall(build_request("GET", "/echo", host="gw.test"))
    assert read_response(sock).status == 200  # type: ignore[arg-type]
    return sock


def test_a_ticket_from_one_worker_resumes_on_another(
    run_gateway: RunGateway, upstream_proc: Upstream, pki: Pki
) -> None:
    cert = pki.issue("gw.test")
    gw = run_gateway(_tls_doc(upstream_proc, cert), workers=2)
    pids = gw.worker_pids()
    assert len(pids) == 2
    client = pki.client_context()
    first = _open(gw.port, client, None)
    with first:
        assert not first.session_reused
        issuer = _served_by(pids, gw.port, first)
        session = first.session
    assert session is not None and session.has_ticket
    # New connections land on either worker (SO_REUSEPORT hashes the client's port): open them
    # one at a time until one lands on the other worker, and check it resumed there.
    for _attempt in range(64):
        sock = _open(gw.port, client, session)
        with sock:
            worker = _served_by(pids, gw.port, sock)
            resumed = sock.session_reused
        if worker != issuer:
            assert resumed, "the other worker did not accept the first worker's ticket"
            return
        assert resumed
    pytest.fail("64 connections all reached the same worker")


def _watch_and_rotate(procs: Any, tmp_path: Path, upstream: Upstream, pki: Pki, workers: int) -> None:
    first, second = pki.issue("gw.test"), pki.issue("gw.test")
    live = Issued(str(tmp_path / "live.pem"), str(tmp_path / "live.key"))
    shutil.copyfile(first.cert, live.cert)
    shutil.copyfile(first.key, live.key)
    port = free_port()
    path = write_config(tmp_path, _tls_doc(upstream, live, port=port), "watched.yaml")
    argv = fastgw_argv("run", "-c", str(path), "--watch", "--workers", str(workers))
    procs.start(argv, env=cli_env(), timeout=20)
    wait_for_port(port)
    client = pki.client_context()
    wait_for(lambda: https_get(port, client)[0].status == 200, 10, "the gateway serving")
    assert https_get(port, client)[0].peer == der_of(first)
    before = tls_connect(port, client, "gw.test")
    with before:
        # certbot's way: new files written beside, then renamed over the old ones (key first)
        for source, dest in ((second.key, live.key), (second.cert, live.cert)):
            shutil.copyfile(source, dest + ".tmp")
            Path(dest + ".tmp").replace(dest)
        wait_for(
            lambda: all(https_get(port, client)[0].peer == der_of(second) for _ in range(8)),
            15,
            "new handshakes with the new certificate in every worker",
        )
        before.sendall(build_request("GET", "/echo", host="gw.test"))  # made before: carries on
        assert read_response(before).status == 200  # type: ignore[arg-type]


def test_watch_reloads_when_a_certificate_file_changes(
    procs: Any, tmp_path: Path, upstream_proc: Upstream, pki: Pki
) -> None:
    _watch_and_rotate(procs, tmp_path, upstream_proc, pki, workers=1)


def test_watch_with_workers_reloads_when_a_certificate_file_changes(
    procs: Any, tmp_path: Path, upstream_proc: Upstream, pki: Pki
) -> None:
    _watch_and_rotate(procs, tmp_path, upstream_proc, pki, workers=2)


def test_check_reads_tls_settings_and_names_a_bad_file(tmp_path: Path, pki: Pki) -> None:
    cert, other = pki.issue("gw.test"), pki.issue("other.test")
    doc = gateway_doc(9, tls={"certificates": [{"cert": cert.cert, "key": cert.key}]})
    good = write_config(tmp_path, doc, "good.yaml")
    result = run_cli("check", "-c", str(good))
    assert result.code == 0, result.stderr
    assert "https://" in result.stdout
    doc["listeners"][0]["tls"]["certificates"][0]["key"] = other.key
    bad = write_config(tmp_path, doc, "bad.yaml")
    result = run_cli("check", "-c", str(bad))
    assert result.code == 2
    key_path = "listeners[0].tls.certificates[0].key"
    assert result.stderr.strip() == (
        f"fastgw: invalid configuration: {bad}: {key_path}: {other.key} is not the key of {cert.cert}"
    )
