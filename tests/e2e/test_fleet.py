"""A fleet of gateways configured from etcd: ``fastgw run --etcd URL --key KEY`` processes follow
the configuration ``fastgw config push`` writes to a real etcd (Debian's etcd-server). A push is
validated first and an invalid file is never written; a value written behind the CLI's back
(etcdctl) that does not validate is refused by every gateway, which keeps serving the revision it
had and reports the error and the refused revision (admin API, metrics)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import (
    GatewayProc,
    StartUpstream,
    _wait_listening,
    cli_env,
    fastgw_argv,
    run_cli,
    wait_for,
)
from tests.support.etcd_server import EtcdServer
from tests.support.ports import free_port
from tests.support.procs import ProcessReaper

KEY = "/fastgw/config"


def fleet_config(upstream: int, routes: list[str]) -> str:
    """One config for every gateway: each takes its ports from its own environment."""
    doc: dict[str, Any] = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:${GW_PORT:-8080}"}],
        "admin": {"bind": "127.0.0.1:${ADMIN_PORT:-9901}"},
        "upstreams": {"up": {"targets": [f"127.0.0.1:{upstream}"]}},
        "routes": [
            {"id": name, "path": f"/{name}/{{*rest}}", "upstream": "up", "rewrite": "/echo/{rest}"}
            for name in routes
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def admin_json(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def admin_text(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def start_fleet_gateway(procs: ProcessReaper, etcd: EtcdServer, workers: int) -> tuple[GatewayProc, int]:
    port, admin = free_port(), free_port()
    argv = fastgw_argv("run", "--etcd", etcd.url, "--key", KEY, "--workers", str(workers))
    proc = procs.start(argv, env=cli_env(GW_PORT=str(port), ADMIN_PORT=str(admin)))
    assert _wait_listening(proc, workers, 20) == port
    return GatewayProc(proc, port, Path(KEY), workers), admin


def push(tmp_path: Path, etcd: EtcdServer, text: str, name: str = "gateway.yaml") -> Any:
    path = tmp_path / name
    path.write_text(text)
    return run_cli("config", "push", "-c", str(path), "--etcd", etcd.url, "--key", KEY)


def test_two_gateways_follow_pushes_and_refuse_an_invalid_revision(
    procs: ProcessReaper, etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = start_upstream()
    first = push(tmp_path, etcd, fleet_config(upstream.port, ["one"]))
    assert first.code == 0, first.stderr
    assert f"pushed to etcd key {KEY} at revision" in first.stdout
    alone, alone_admin = start_fleet_gateway(procs, etcd, workers=1)
    pair, pair_admin = start_fleet_gateway(procs, etcd, workers=2)
    gateways = [(alone.port, alone_admin), (pair.port, pair_admin)]
    for port, _ in gateways:
        assert status(port, "/one/x") == 200 and status(port, "/two/x") == 404

    # A valid push: both follow, within the watch event (waited for, never slept on).
    assert push(tmp_path, etcd, fleet_config(upstream.port, ["one", "two"])).code == 0
    good = etcd.revision_of(KEY)
    for port, admin in gateways:
        wait_for(lambda port=port: status(port, "/two/x") == 200, 15, f"gateway on {port} to take the push")
        wait_for(lambda admin=admin: admin_json(admin, "/config")["revision"] == good, 10, "the revision")

    # An invalid file: refused by the CLI, never written.
    broken = fleet_config(upstream.port, ["one"]).replace("upstream: up", "upstream: nowhere")
    refused = push(tmp_path, etcd, broken, "broken.yaml")
    assert refused.code == 2
    assert "routes[0].upstream" in refused.stderr and "nowhere" in refused.stderr
    assert etcd.revision_of(KEY) == good

    # The same file written behind the CLI's back: each gateway refuses it and keeps serving.
    written = etcdctl_put(etcd, broken)
    assert written > good
    for port, admin in gateways:
        state = wait_for(
            lambda admin=admin: (s := admin_json(admin, "/config"))["rejected_revision"] == written and s,
            15,
            f"gateway with admin {admin} to refuse revision {written}",
        )
        assert state["revision"] == good and state["last_reload_ok"] is False
        assert f"etcd key {KEY} at revision {written}: routes[0].upstream" in state["last_error"]
        assert status(port, "/two/x") == 200  # still the last good configuration
        metrics = admin_text(admin, "/metrics")
        assert f"fastgw_config_revision {good}" in metrics
        assert f"fastgw_config_rejected_revision {written}" in metrics
        assert "fastgw_config_last_reload_successful 0" in metrics
    assert alone.proc.alive and pair.proc.alive


def etcdctl_put(etcd: EtcdServer, text: str) -> int:
    """Write the key with Debian's etcdctl, as an operator might by hand; its new revision."""
    done = etcd.etcdctl("put", KEY, input=text)
    assert done.returncode == 0, done.stderr
    revision = etcd.revision_of(KEY)
    assert revision is not None
    return revision
