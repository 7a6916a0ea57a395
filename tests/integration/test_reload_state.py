"""Upstream state a reload keeps when the upstream did not change: requests in flight on the old
plan still count on the new plan's targets (least-conn) and against its concurrency limits, and
a changed upstream starts afresh."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fastgw._proxy import Target
from tests.e2e.conftest import wait_for
from tests.support.gateway import RunningGateway
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]


def document(upstream: int, **extra: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": [f"127.0.0.1:{upstream}"], "balance": "least_conn", **extra}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up", "concurrency": {"max_in_flight": 1}}],
    }


def get(gw: RunningGateway, target: str) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target))
        return read_response(sock, timeout=10)


def reload(gw: RunningGateway, doc: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(doc))
    gw.call(gw.gateway.reload, str(path))


def only_target(gw: RunningGateway) -> Target:
    (target,) = gw.gateway.plan.upstreams["up"].targets
    return target


def test_in_flight_requests_count_across_a_reload(make_gateway: Make, upstream: int, tmp_path: Path) -> None:
    doc = document(upstream)
    gw = make_gateway(doc)
    slow: list[RawResponse] = []
    thread = threading.Thread(target=lambda: slow.append(get(gw, "/slow/600")))
    thread.start()
    wait_for(lambda: gw.call(lambda: only_target(gw).in_flight) == 1, 5, "the slow request upstream")
    doc["routes"].append({"id": "more", "path": "/more/{*rest}", "upstream": "up"})
    reload(gw, doc, tmp_path / "gw.yaml")
    assert gw.call(lambda: only_target(gw).in_flight) == 1  # the new plan sees the old plan's request
    assert get(gw, "/echo/x").status == 503  # and the route's limit of 1 is still taken by it
    thread.join(10)
    assert slow[0].status == 200
    wait_for(lambda: gw.call(lambda: only_target(gw).in_flight) == 0, 5, "the slow request to end")
    assert get(gw, "/echo/x").status == 200


def test_a_changed_upstream_starts_afresh(make_gateway: Make, upstream: int, tmp_path: Path) -> None:
    doc = document(upstream)
    gw = make_gateway(doc)
    before = gw.call(only_target, gw)
    doc["upstreams"]["up"]["host_header"] = "catalog.internal"
    reload(gw, doc, tmp_path / "gw.yaml")
    after = gw.call(only_target, gw)
    assert after is not before and after.host_header == b"catalog.internal"
    assert get(gw, "/echo/x").status == 200
