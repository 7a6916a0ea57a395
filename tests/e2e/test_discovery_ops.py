"""What an operator sees of discovery: ``/upstreams`` of the admin API lists the targets a real
etcd gave (with ``--workers 2``: only the workers follow registries) and where each came from, the
registry's state and its staleness once etcd is gone; ``/metrics`` has the same; ``fastgw routes
--match`` asks the registry and shows the targets it would use."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import RunGateway, StartUpstream, run_cli, wait_for, write_config
from tests.e2e.test_fleet import admin_json, admin_text, status
from tests.support.etcd_server import EtcdServer
from tests.support.ports import free_port

PREFIX = "/services/catalog/"


def config(etcd: EtcdServer, static: int, admin: int) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": f"127.0.0.1:{free_port()}"}],
        "admin": {"bind": f"127.0.0.1:{admin}"},
        "registries": {"etcd": {"endpoints": [etcd.url], "timeout": "1s"}},
        "upstreams": {
            "catalog": {
                "targets": [f"127.0.0.1:{static}"],
                "discovery": {
                    "provider": "etcd",
                    "prefix": PREFIX,
                    "retry": {"base": "50ms", "max": "500ms"},
                },
            }
        },
        "routes": [{"id": "items", "path": "/items/{id}", "upstream": "catalog", "rewrite": "/echo/{id}"}],
    }


def upstream_entry(state: dict[str, Any]) -> dict[str, Any]:
    (entry,) = state["upstreams"]
    return dict(entry)


def test_admin_metrics_and_routes_show_discovered_targets_and_staleness(
    run_gateway: RunGateway, etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Any
) -> None:
    static, found = start_upstream(), start_upstream()
    etcd.put(PREFIX + "node-7", json.dumps({"host": "127.0.0.1", "port": found.port, "weight": 3}))
    admin = free_port()
    doc = config(etcd, static.port, admin)
    gw = run_gateway(doc, workers=2)
    assert status(gw.port, "/items/1") == 200

    state = upstream_entry(admin_json(admin, "/upstreams"))
    by_target = {t["target"]: t for t in state["targets"]}
    assert by_target[f"127.0.0.1:{static.port}"]["source"] == "static"
    assert by_target[f"127.0.0.1:{found.port}"]["source"] == f"etcd prefix {PREFIX} ({PREFIX}node-7)"
    assert by_target[f"127.0.0.1:{found.port}"]["up"] is True
    assert state["discovery"]["healthy"] is True and state["discovery"]["targets"] == 1
    metrics = admin_text(admin, "/metrics")
    assert 'fastgw_discovery_targets{upstream="catalog",provider="etcd"} 1' in metrics
    assert 'fastgw_discovery_stale_seconds{upstream="catalog",provider="etcd"} 0' in metrics

    path = write_config(tmp_path, doc, "explain.yaml")
    explained = run_cli("routes", "-c", str(path), "--match", "GET http://localhost/items/7")
    assert explained.code == 0, explained.stderr
    assert f"127.0.0.1:{found.port} (etcd prefix {PREFIX}: {PREFIX}node-7)" in explained.stdout
    assert f"127.0.0.1:{static.port} (static)" in explained.stdout

    etcd.kill()  # the registry is gone: the targets stay, the state says stale, with the error
    stale = wait_for(
        lambda: (d := upstream_entry(admin_json(admin, "/upstreams"))["discovery"])["healthy"] is False and d,
        15,
        "the workers to notice etcd is gone",
    )
    assert etcd.url in stale["last_error"] and stale["errors"] >= 1  # names the registry
    assert status(gw.port, "/items/2") == 200
    assert any(
        t["target"] == f"127.0.0.1:{found.port}"
        for t in upstream_entry(admin_json(admin, "/upstreams"))["targets"]
    )
    explained = run_cli("routes", "-c", str(path), "--match", "GET http://localhost/items/7")
    assert "registry: etcd prefix" in explained.stdout and "etcd unreachable" in explained.stdout
