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
    gw.reload(str(path))


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


# -- a reload reaches connections opened before it ---------------------------------------------


def test_a_reload_reaches_requests_on_keep_alive_connections_opened_before_it(
    make_gateway: Make, upstream: int, tmp_path: Path
) -> None:
    """Each request runs on the plan current when it starts: a new route answers, a removed route
    404s, new listener limits apply, on a connection accepted before the reload; the request in
    flight during the reload finishes on its own plan."""
    doc = document(upstream)
    doc["routes"] = [{"id": "old", "path": "/old/{*rest}", "upstream": "up", "rewrite": "/slow/{rest}"}]
    gw = make_gateway(doc)
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/old/10"))
        assert read_response(sock).status == 200
        sock.sendall(build_request("GET", "/old/400"))  # in flight during the reload
        wait_for(lambda: gw.call(lambda: only_target(gw).in_flight) == 1, 5, "the request upstream")
        doc["routes"] = [{"id": "new", "path": "/new/{*rest}", "upstream": "up", "rewrite": "/echo/{rest}"}]
        doc["listeners"][0]["limits"] = {"max_body_bytes": 10}
        reload(gw, doc, tmp_path / "gw.yaml")
        assert read_response(sock).status == 200  # finished on the plan it started with
        sock.sendall(build_request("GET", "/new/x"))
        assert read_response(sock).json()["path"] == "/echo/x"  # the new route, same connection
        sock.sendall(build_request("GET", "/old/10"))
        assert read_response(sock).status == 404  # the removed one is gone for it too
        sock.sendall(build_request("POST", "/new/x", [("Content-Length", "11")], body=b"x" * 11))
        assert read_response(sock).status == 413  # and the new limits apply


def test_a_removed_target_gets_no_request_from_an_old_connection(
    make_gateway: Make, upstream: int, tmp_path: Path
) -> None:
    from tests.conftest import start_upstream

    other, other_port = start_upstream()
    try:
        doc = document(upstream)
        doc["upstreams"]["up"]["targets"] = [f"127.0.0.1:{other_port}"]
        gw = make_gateway(doc)
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/echo/x"))
            assert read_response(sock).json()["headers"]  # served by the first target
            doc["upstreams"]["up"]["targets"] = [f"127.0.0.1:{upstream}"]
            reload(gw, doc, tmp_path / "gw.yaml")
            other.stop()  # the removed target dies: an old connection must not be sent to it
            for _ in range(5):
                sock.sendall(build_request("GET", "/echo/x"))
                r = read_response(sock)
                assert r.status == 200
                assert dict((n.lower(), v) for n, v in r.json()["headers"])["host"] == f"127.0.0.1:{upstream}"
    finally:
        other.stop()
