"""What the status page reads of one gateway process, with real requests over loopback: the ring
of recent errors and refusals (``observe/recent_errors.py``: which requests it keeps, their
reasons, never a query, header or body, bounded) and every target's state
(``observe/targets.py``: a failing active check, an outlier ejection with the time left, an open
breaker with the time to its trial)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from fastgw.observe.recent_errors import RING_SIZE
from fastgw.observe.targets import target_states
from tests.e2e.conftest import wait_for
from tests.support.gateway import RunningGateway
from tests.support.ports import free_port
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]


def _document(upstream: int, closed: int, **extra: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "admin": {"bind": f"127.0.0.1:{free_port()}"},  # the ring is kept where a page can show it
        "upstreams": {
            "up": {"targets": [f"127.0.0.1:{upstream}"]},
            "dead": {"targets": [f"127.0.0.1:{closed}"]},
            "narrow": {"targets": [f"127.0.0.1:{upstream}"], "concurrency": {"max_in_flight": 1}},
        },
        "routes": [
            {"id": "app", "path": "/app/{*rest}", "upstream": "up", "rewrite": "/{rest}"},
            {"id": "dead", "path": "/dead", "upstream": "dead"},
            {
                "id": "walled",
                "path": "/walled",
                "upstream": "up",
                "plugins": [{"name": "ip_filter", "deny": ["127.0.0.0/8"]}],
            },
            {"id": "narrow", "path": "/narrow/{*rest}", "upstream": "narrow", "rewrite": "/{rest}"},
        ],
        **extra,
    }


def _get(gw: RunningGateway, target: str, headers: list[tuple[str, str]] | None = None) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target, headers or []))
        return read_response(sock, timeout=10)


def _entries(gw: RunningGateway) -> list[dict[str, Any]]:
    ring = gw.gateway.recent_errors
    assert ring is not None
    return list(gw.call(ring.entries))


def test_the_ring_keeps_5xx_refusals_and_aborts_with_their_reasons_not_the_upstreams_4xx(
    make_gateway: Make, upstream: int
) -> None:
    gw = make_gateway(_document(upstream, free_port()))
    answers = {
        "ok": _get(gw, "/app/echo/1"),
        "upstream 404": _get(gw, "/app/no-such-thing"),  # the application's own answer: not kept
        "upstream 500": _get(gw, "/app/status/500"),
        "refused 502": _get(gw, "/dead?token=secret-in-query", [("Authorization", "Bearer secret-token")]),
        "no route": _get(gw, "/nowhere"),
        "ip_filter": _get(gw, "/walled"),
    }
    assert [r.status for r in answers.values()] == [200, 404, 500, 502, 404, 403]
    with connect(gw.port) as sock:  # a client that leaves before its answer
        sock.sendall(build_request("GET", "/app/hang"))
        wait_for(
            lambda: gw.call(lambda: gw.gateway.plan.upstreams["up"].targets[0].in_flight) == 1, 5, "sent"
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wait_for(lambda: len(_entries(gw)) == 5, 5, "the abort recorded")
    entries = _entries(gw)
    assert [(e["route"], e["status"]) for e in entries] == [
        ("app", 500), ("dead", 502), (None, 404), ("walled", 403), ("app", 0),
    ]  # fmt: skip
    by_status = {e["status"]: e for e in entries}
    assert by_status[500]["reason"] == "the upstream answered 500"
    assert by_status[502]["reason"].startswith("upstream 'dead': connect failed")
    assert by_status[404]["reason"] == "no route matches"
    assert by_status[403]["reason"] == "403 Forbidden, answered by the route's plugins (ip_filter)"
    assert by_status[0]["reason"].startswith("client left")
    for name, status in (("upstream 500", 500), ("refused 502", 502), ("no route", 404), ("ip_filter", 403)):
        assert by_status[status]["request_id"] == answers[name].header("x-request-id")
    assert by_status[502]["upstream"] == "dead" and by_status[502]["target"] is not None
    assert all(abs(e["at"] - time.time()) < 60 for e in entries)  # Unix time, not the loop's clock
    kept = repr(entries)
    assert "secret" not in kept and "token" not in kept  # neither the query nor a header


def test_a_gateway_503_says_which_limit_or_that_no_target_is_left(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(_document(upstream, free_port()))
    with connect(gw.port) as holder:  # holds the one slot of upstream 'narrow'
        holder.sendall(build_request("GET", "/narrow/slow/3000"))
        wait_for(
            lambda: gw.call(lambda: gw.gateway.plan.upstreams["narrow"].targets[0].in_flight) == 1,
            5,
            "slot held",
        )
        assert _get(gw, "/narrow/echo/x").status == 503
    (entry,) = [e for e in _entries(gw) if e["status"] == 503]
    assert entry["reason"] == "upstream 'narrow': 1 requests in flight (concurrency limit)"


def test_the_ring_is_bounded_and_keeps_the_newest(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(_document(upstream, free_port()))
    ids = [_get(gw, f"/nowhere/{i}").header("x-request-id") for i in range(RING_SIZE + 20)]
    entries = _entries(gw)
    assert [e["request_id"] for e in entries] == ids[-RING_SIZE:]


def test_without_an_admin_listener_nothing_is_kept(make_gateway: Make, upstream: int) -> None:
    document = _document(upstream, free_port())
    del document["admin"]
    gw = make_gateway(document)
    assert _get(gw, "/nowhere").status == 404
    assert gw.gateway.recent_errors is None
    assert all(server.observers.recent_errors is None for server in gw.gateway.listeners.values())


# -- the targets' states -------------------------------------------------------------------------


def _views(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    views = gw.call(lambda: target_states(gw.gateway.plan))
    return {f"{view['upstream']}/{view['target']}": view for view in views}


def test_targets_show_failing_checks_an_ejection_and_an_open_breaker_with_their_times(
    make_gateway: Make, upstream: int
) -> None:
    closed = free_port()
    document = _document(upstream, closed)
    document["upstreams"] = {
        "checked": {
            "targets": [f"127.0.0.1:{closed}"],
            "health": {"path": "/health", "interval": "100ms", "timeout": "100ms", "unhealthy_after": 2},
        },
        "ejecting": {
            "targets": [f"127.0.0.1:{upstream}", f"127.0.0.1:{closed}"],
            "outlier": {"consecutive_failures": 2, "base_ejection": "60s"},
        },
        "breaking": {"targets": [f"127.0.0.1:{closed}"], "breaker": {"failures": 2, "open_for": "60s"}},
    }
    document["routes"] = [
        {"id": name, "path": f"/{name}/{{*rest}}", "upstream": name, "rewrite": "/echo/{rest}"}
        for name in document["upstreams"]
    ]
    gw = make_gateway(document)
    down = f"127.0.0.1:{closed}"
    assert _views(gw)[f"breaking/{down}"]["state"] == "healthy"  # the regression's starting point
    for _ in range(4):
        _get(gw, "/ejecting/x")
    assert [_get(gw, "/breaking/x").status for _ in range(3)] == [502, 502, 503]
    wait_for(lambda: _views(gw)[f"checked/{down}"]["state"] == "failing_checks", 10, "checks failing")
    views = _views(gw)
    assert views[f"checked/{down}"]["check"] == {"up": False, "against": 0}
    assert views[f"checked/{down}"]["in_rotation"] is False
    ejected = views[f"ejecting/{down}"]
    assert ejected["state"] == "ejected" and 0 < ejected["ejected_for"] <= 60
    assert views[f"ejecting/127.0.0.1:{upstream}"]["state"] == "healthy"
    broken = views[f"breaking/{down}"]
    assert broken["state"] == "breaker_open" and broken["held_by"] == ["breaker"]
    assert broken["breaker"]["state"] == "open" and 0 < broken["breaker"]["trial_in"] <= 60
