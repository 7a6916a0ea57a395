"""WebSocket through the gateway: a real upstream built on the ``websockets`` package
(``tests/support/ws_upstream.py``) and the ``websockets`` client, on both event loops.

What a user of a production gateway relies on: messages of every kind and size pass unchanged
both ways; the route's plugins refuse an upgrade before any tunnel exists; close codes pass
through; the gateway's own closes (idle, lifetime, drain) say 1001 "going away" to both sides;
a reload leaves open tunnels alone; metrics and the access log account for each tunnel; TLS on
either side; the balancers place tunnels as they place requests."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from fastgw import hooks
from fastgw.hooks import Plugin, RequestContext, register_plugin
from fastgw.plugins.auth_key import hash_key
from tests.support import rawhttp
from tests.support.certs import Pki
from tests.support.gateway import RunningGateway
from tests.support.rawhttp import build_request, read_response
from tests.support.rawhttp import connect as raw_connect
from tests.support.ws_upstream import WsUpstream, pattern, ws_upstream_thread

MakeGateway = Callable[[dict[str, Any]], RunningGateway]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def ws_up() -> Iterator[WsUpstream]:
    with ws_upstream_thread() as server:
        yield server


def ws_doc(port: int, *routes: dict[str, Any], **listener: Any) -> dict[str, Any]:
    """A listener, the WebSocket upstream ``ws``, and the given routes (else one catch-all that
    upgrades to websocket)."""
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0", **listener}],
        "upstreams": {"ws": {"targets": [f"127.0.0.1:{port}"]}},
        "routes": list(routes) or [{"id": "ws", "path": "/{*rest}", "upstream": "ws", "websocket": True}],
    }


def open_ws(gw: RunningGateway, path: str, **options: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{gw.port}{path}", max_size=None, open_timeout=10, **options)


def closed_by(ws: ClientConnection) -> ConnectionClosed:
    """Read until the connection closes; the ConnectionClosed that says how."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=20)
    return info.value


def tunnel_stats(gw: RunningGateway, route: int = 0) -> dict[str, Any]:
    return dict(gw.call(lambda: gw.gateway.plan.routes[route].tunnel.stats.snapshot()))


def wait_until(gw: RunningGateway, predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` on the gateway's loop (no fixed sleep decides the outcome)."""
    done = threading.Event()
    for _ in range(1000):
        if gw.call(predicate):
            done.set()
            break
        done.wait(0.01)
    assert done.is_set(), f"gave up waiting for {what}"


def ended(up: WsUpstream) -> int:
    """How many of the upstream's connections have ended so far."""
    closed = up.stats()["closed"]
    assert isinstance(closed, list)
    return len(closed)


def upstream_closes(up: WsUpstream, since: int, count: int = 1) -> list[tuple[int, str]]:
    """The close codes and reasons of the upstream's connections that ended after the first
    ``since``, once ``count`` of them have and none is open."""
    for _ in range(1000):
        stats = up.stats()
        closed = stats["closed"]
        assert isinstance(closed, list)
        if len(closed) >= since + count and stats["open"] == 0:
            return [tuple(c) for c in closed[since:]]  # type: ignore[misc]
        threading.Event().wait(0.01)
    raise AssertionError(f"the upstream did not see {count} connections end: {up.stats()}")


# -- messages --------------------------------------------------------------------------------------


def test_text_and_binary_messages_pass_both_ways(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/echo") as ws:
        for message in ("hello", "ünïcödé ✓", "", b"\x00\xff" * 100, b""):
            ws.send(message)
            assert ws.recv(timeout=10) == message
        ws.send("!send 70000")  # a message the upstream starts (a 64-bit length field's neighbour)
        assert ws.recv(timeout=10) == pattern(70000)


def test_handshake_headers_pass_untouched_and_hop_by_hop_ones_are_the_gateways(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    # Sec-WebSocket-* are end to end: the client's key reaches the upstream as sent, and the
    # upstream's accept reaches the client (the websockets client checks it). Connection and
    # Upgrade are hop-by-hop: the upstream gets exactly the gateway's.
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/headers", subprotocols=["chat.v2"]) as ws:  # type: ignore[list-item]
        seen = json.loads(ws.recv(timeout=10))
        assert ws.subprotocol is None  # the upstream chose none: passed as it came
    headers: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    assert headers["upgrade"] == ["websocket"]
    assert headers["connection"] == ["Upgrade"]
    assert len(headers["sec-websocket-key"]) == 1 and headers["sec-websocket-version"] == ["13"]
    assert headers["sec-websocket-protocol"] == ["chat.v2"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert "x-request-id" in headers


class MarkingResponses(Plugin):
    """Adds a header to every response and a body filter that would garble any body it saw."""

    name = "test_marking_responses"
    fed: list[bytes] = []

    @classmethod
    def compile(cls, options: Any, key_path: str) -> Plugin:
        return cls()

    def on_response(self, ctx: RequestContext) -> None:
        assert ctx.response_headers is not None
        ctx.response_headers.append((b"x-marked", b"yes"))
        ctx.body_filters = [*(ctx.body_filters or []), self]

    def feed(self, data: bytes) -> bytes:
        MarkingResponses.fed.append(data)
        return data.upper()

    def end(self) -> bytes:
        return b""


def test_the_101_passes_the_response_hooks_but_no_body_filter(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    """The switch's head goes through on_response (headers added), but after it the bytes are the
    new protocol's: a body filter a hook registered never sees them."""
    register_plugin(MarkingResponses)
    MarkingResponses.fed.clear()
    try:
        route = {"id": "ws", "path": "/{*rest}", "upstream": "ws", "websocket": True,
                 "plugins": [{"name": MarkingResponses.name}]}  # fmt: skip
        gw = make_gateway(ws_doc(ws_up.port, route))
        with open_ws(gw, "/echo") as ws:
            assert ws.response is not None and ws.response.headers.get("x-marked") == "yes"
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
        assert MarkingResponses.fed == []
    finally:
        hooks._REGISTRY.pop(MarkingResponses.name, None)


def test_hop_by_hop_headers_named_in_connection_do_not_pass(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with raw_connect(gw.port) as sock:
        sock.sendall(
            build_request(
                "GET",
                "/headers",
                [
                    ("Connection", "Upgrade, X-Hop"),
                    ("Upgrade", "websocket"),
                    ("X-Hop", "secret"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ],
            )
        )
        head = read_response(sock)
        assert head.status == 101
        assert head.header("upgrade") == "websocket" and head.header("connection") == "Upgrade"
        assert head.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's example
        text = _read_frame(sock)
    names = {name.lower() for name, _ in json.loads(text)["headers"]}
    assert "x-hop" not in names


def _read_frame(sock: Any) -> str:
    """One unmasked text frame from the gateway (small payload), as text."""
    first = _recv_exactly(sock, 2)
    length = first[1] & 0x7F
    if length == 126:
        length = int.from_bytes(_recv_exactly(sock, 2), "big")
    return _recv_exactly(sock, length).decode()


def _recv_exactly(sock: Any, n: int) -> bytes:
    """``n`` bytes off ``sock``, first those read_response read past the 101's head."""
    left = rawhttp._LEFTOVERS.get(sock)
    data = b""
    if left:
        data = bytes(left[:n])
        del left[:n]
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_fragmented_messages_pass_both_ways(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/echo") as ws:
        ws.send(["frag", "mented ", "text"])  # one message in three frames
        assert ws.recv(timeout=10) == "fragmented text"
        ws.send([b"\x01" * 70000, b"\x02" * 3, b"\x03" * 200000])
        assert ws.recv(timeout=10) == b"\x01" * 70000 + b"\x02" * 3 + b"\x03" * 200000
        ws.send("!fragments 7 the upstream sends this one in seven frames")
        assert ws.recv(timeout=10) == "the upstream sends this one in seven frames"


def test_64_mib_messages_pass_both_ways(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    big = pattern(64 * MiB)
    with open_ws(gw, "/echo") as ws:
        ws.send(big)
        assert ws.recv(timeout=60) == big
        ws.send(f"!send {64 * MiB}")
        assert ws.recv(timeout=60) == big
    stats = tunnel_stats(gw)
    assert stats["bytes_in"] > 64 * MiB and stats["bytes_out"] > 128 * MiB


def test_ping_and_pong_both_ways(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/echo") as ws:
        assert ws.ping(b"are you there").wait(10)  # the upstream's pong came back through
        ws.send("!ping")  # the upstream pings; the client answers through the gateway
        assert ws.recv(timeout=10) == "pong"


def test_close_codes_pass_through_both_ways(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    mark = ended(ws_up)
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/echo") as ws:
        ws.send("!close 4000 upstream says bye")
        closed = closed_by(ws)
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (4000, "upstream says bye")
    with open_ws(gw, "/echo") as ws:
        ws.close(4001, "client says bye")
    assert upstream_closes(ws_up, mark, 2) == [(4000, "upstream says bye"), (4001, "client says bye")]
    wait_until(gw, lambda: gw.gateway.plan.routes[0].tunnel.stats.open == 0, "both tunnels to end")
    causes = tunnel_stats(gw)["ended"]
    assert causes["upstream"] + causes["client"] == 2 and causes["reset"] == 0


# -- the upgrade request: routed and refused like any request -----------------------------------


def test_the_routes_plugins_refuse_an_upgrade_before_any_tunnel(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    keyed = {
        "id": "keyed",
        "path": "/keyed/{*rest}",
        "upstream": "ws",
        "strip_prefix": "/keyed",
        "websocket": True,
        "plugins": [{"name": "api_key", "consumers": {"alice": hash_key("k-alice")}}],
    }
    limited = {
        "id": "limited",
        "path": "/limited/{*rest}",
        "upstream": "ws",
        "strip_prefix": "/limited",
        "websocket": True,
        "plugins": [{"name": "rate_limit", "limit": 1, "window": 60, "key": "route"}],
    }
    gw = make_gateway(ws_doc(ws_up.port, keyed, limited))
    mark = ended(ws_up)
    with pytest.raises(InvalidStatus) as refused:
        open_ws(gw, "/keyed/echo")
    assert refused.value.response.status_code == 401
    with open_ws(gw, "/keyed/echo", additional_headers={"X-API-Key": "k-alice"}) as ws:
        ws.send("in")
        assert ws.recv(timeout=10) == "in"
    with open_ws(gw, "/limited/echo") as ws:
        with pytest.raises(InvalidStatus) as limited_out:
            open_ws(gw, "/limited/echo")
        assert limited_out.value.response.status_code == 429
    assert len(upstream_closes(ws_up, mark, 2)) == 2  # the refused upgrades never arrived


@pytest.mark.parametrize(
    ("path", "upgrade", "status", "why"),
    [
        ("/plain/echo", "websocket", 501, "protocol upgrade to 'websocket' is not enabled on this route"),
        ("/ws/echo", "h2c", 501, "protocol upgrade to 'h2c' is not enabled on this route"),
        ("/ws/echo", "IRC/6.9, RTA/x11", 501, "protocol upgrade to 'IRC/6.9, RTA/x11' is not enabled"),
        ("/nowhere", "websocket", 404, "no route matches this request"),
    ],
)
def test_upgrades_a_route_does_not_allow_are_refused_with_a_clear_status(
    make_gateway: MakeGateway, ws_up: WsUpstream, path: str, upgrade: str, status: int, why: str
) -> None:
    routes = (
        {"id": "plain", "path": "/plain/{*rest}", "upstream": "ws", "strip_prefix": "/plain"},
        {"id": "ws", "path": "/ws/{*rest}", "upstream": "ws", "strip_prefix": "/ws", "websocket": True},
    )
    gw = make_gateway(ws_doc(ws_up.port, *routes))
    with raw_connect(gw.port) as sock:
        sock.sendall(build_request("GET", path, [("Connection", "upgrade"), ("Upgrade", upgrade)]))
        answer = read_response(sock)
        assert answer.status == status and why in answer.body.decode()
        assert answer.header("connection") == "close"
        assert sock.recv(1) == b""  # nothing after an upgrade request is HTTP: the connection ends


def test_connect_is_refused(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with raw_connect(gw.port) as sock:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        answer = read_response(sock)
    assert answer.status == 501 and "CONNECT is not supported" in answer.body.decode()


def test_an_upstream_refusing_the_upgrade_is_answered_as_a_normal_response(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with pytest.raises(InvalidStatus) as refused:
        open_ws(gw, "/refuse/403")
    response = refused.value.response
    assert (response.status_code, response.body) == (403, b"refused")
    assert response.headers["Connection"] == "close"
    assert tunnel_stats(gw)["opened"] == 0
    requests = gw.call(lambda: gw.gateway.plan.routes[0].stats.snapshot()["requests"])
    assert requests == {("GET", "4xx"): 1}


# -- the gateway's own closes: 1001 "going away" to both sides -------------------------------------


def test_idle_timeout_closes_with_1001_both_ways(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    mark = ended(ws_up)
    route = {
        "id": "ws",
        "path": "/{*rest}",
        "upstream": "ws",
        "websocket": True,
        "tunnel": {"idle_timeout": "300ms"},
    }
    gw = make_gateway(ws_doc(ws_up.port, route))
    with open_ws(gw, "/echo", ping_interval=None) as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"
        closed = closed_by(ws)
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1001, "going away")
    assert upstream_closes(ws_up, mark) == [(1001, "going away")]
    wait_until(gw, lambda: gw.gateway.plan.routes[0].tunnel.stats.open == 0, "the tunnel to end")
    assert tunnel_stats(gw)["ended"]["idle"] == 1


def test_max_lifetime_closes_a_busy_tunnel_with_1001(make_gateway: MakeGateway, ws_up: WsUpstream) -> None:
    mark = ended(ws_up)
    route = {
        "id": "ws", "path": "/{*rest}", "upstream": "ws", "websocket": True,
        "tunnel": {"idle_timeout": "1h", "max_lifetime": "400ms"},
    }  # fmt: skip
    gw = make_gateway(ws_doc(ws_up.port, route))
    with open_ws(gw, "/echo") as ws, pytest.raises(ConnectionClosed) as info:
        while True:  # busy all along: only the lifetime ends it
            ws.send("tick")
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert upstream_closes(ws_up, mark) == [(1001, "going away")]
    wait_until(gw, lambda: gw.gateway.plan.routes[0].tunnel.stats.open == 0, "the tunnel to end")
    assert tunnel_stats(gw)["ended"]["lifetime"] == 1


def test_drain_waits_then_closes_tunnels_with_1001_both_ways(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    mark = ended(ws_up)
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/echo") as ws:
        ws.send("before the drain")
        assert ws.recv(timeout=10) == "before the drain"
        stopping = threading.Thread(target=gw.stop, args=(0.5,))
        stopping.start()
        closed = closed_by(ws)
        stopping.join(15)
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1001, "going away")
    assert upstream_closes(ws_up, mark) == [(1001, "going away")]


def test_drain_lets_a_frame_in_flight_finish_before_its_close_frame(
    make_gateway: MakeGateway, ws_up: WsUpstream
) -> None:
    mark = ended(ws_up)
    # The client has sent half a frame when the drain timeout passes: the close frame to the
    # upstream must wait for the frame's end (a close in the middle of a payload would be read
    # as payload). The other direction is between frames: the client gets its 1001 at once.
    gw = make_gateway(ws_doc(ws_up.port))
    with raw_connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/echo", [
            ("Connection", "Upgrade"), ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ]))  # fmt: skip
        assert read_response(sock).status == 101
        payload = b"x" * 1000
        frame = bytes((0x82, 0x80 | 126)) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload
        sock.sendall(frame[:500])
        stopping = threading.Thread(target=gw.stop, args=(0.3,))
        stopping.start()
        assert _recv_exactly(sock, 2) == bytes((0x88, 12))  # 1001 + "going away", unmasked
        assert _recv_exactly(sock, 12) == (1001).to_bytes(2, "big") + b"going away"
        sock.sendall(frame[500:])  # the frame ends: then the upstream gets the gateway's close
        stopping.join(15)
    assert upstream_closes(ws_up, mark) == [(1001, "going away")]


def test_a_reload_does_not_cut_open_tunnels(
    make_gateway: MakeGateway, ws_up: WsUpstream, tmp_path: Path
) -> None:
    gw = make_gateway(ws_doc(ws_up.port))
    with open_ws(gw, "/echo") as ws:
        ws.send("one")
        assert ws.recv(timeout=10) == "one"
        changed = ws_doc(ws_up.port, {"id": "other", "path": "/other/{*rest}", "upstream": "ws"})
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(changed))
        gw.reload(str(path))
        ws.send("two")  # the route is gone from the new plan; this tunnel lives on with its own
        assert ws.recv(timeout=10) == "two"
    with pytest.raises(InvalidStatus) as after:
        open_ws(gw, "/echo")
    assert after.value.response.status_code == 404


# -- accounting --------------------------------------------------------------------------------------


def test_metrics_and_one_access_log_line_per_tunnel(
    make_gateway: MakeGateway, ws_up: WsUpstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    doc = ws_doc(ws_up.port)
    doc["access_log"] = {"sink": str(log)}
    gw = make_gateway(doc)
    with open_ws(gw, "/echo") as ws:
        wait_until(gw, lambda: gw.gateway.plan.routes[0].tunnel.stats.open == 1, "the tunnel to open")
        families = gw.call(gw.gateway.collect)
        assert families["fastgw_tunnels_open"].samples[("", (("route", "ws"),))] == 1
        ws.send(b"x" * 10000)
        assert len(ws.recv(timeout=10)) == 10000
    wait_until(gw, lambda: gw.gateway.plan.routes[0].tunnel.stats.open == 0, "the tunnel to end")
    families = gw.call(gw.gateway.collect)
    at = (("route", "ws"),)
    assert families["fastgw_tunnels_open"].samples[("", at)] == 0
    assert families["fastgw_tunnels_opened_total"].samples[("", at)] == 1
    closed = families["fastgw_tunnels_closed_total"].samples
    assert sum(closed.values()) == 1  # the upstream closes first after a client's close frame
    assert set(closed) <= {("", (*at, ("reason", "client"))), ("", (*at, ("reason", "upstream")))}
    bytes_in = families["fastgw_tunnel_bytes_total"].samples[("", (*at, ("direction", "in")))]
    bytes_out = families["fastgw_tunnel_bytes_total"].samples[("", (*at, ("direction", "out")))]
    assert bytes_in > 10000 and bytes_out > 10000
    assert families["fastgw_tunnel_duration_seconds"].samples[("_count", at)] == 1
    assert families["fastgw_requests_total"].samples[("", (*at, ("method", "GET"), ("status", "1xx")))] == 1
    gw.call(lambda: gw.gateway.access_log.flush())  # type: ignore[union-attr]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert (line["status"], line["route"], line["path"], line["error"]) == (101, "ws", "/echo", None)
    assert line["bytes_in"] == bytes_in and line["bytes_out"] > bytes_out  # out: the 101 head too


# -- TLS on both sides ---------------------------------------------------------------------------------


def test_wss_listener_and_https_upstream(make_gateway: MakeGateway, pki: Pki) -> None:
    server_cert = pki.issue("ws.test", "localhost")
    upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_tls.load_cert_chain(server_cert.cert, server_cert.key)
    with ws_upstream_thread(tls=upstream_tls) as up:
        doc = ws_doc(up.port, tls={"certificates": [{"cert": server_cert.cert, "key": server_cert.key}]})
        doc["upstreams"]["ws"]["tls"] = {"ca": pki.ca_file, "server_name": "localhost"}
        gw = make_gateway(doc)
        big = pattern(3 * MiB)
        with connect(
            f"wss://127.0.0.1:{gw.port}/echo", ssl=pki.client_context(), server_hostname="ws.test",
            max_size=None, open_timeout=10,
        ) as ws:  # fmt: skip
            ws.send("over TLS both ways")
            assert ws.recv(timeout=10) == "over TLS both ways"
            ws.send(big)
            assert ws.recv(timeout=30) == big
            ws.close(4002, "tls bye")
        assert upstream_closes(up, 0) == [(4002, "tls bye")]


# -- balancing ----------------------------------------------------------------------------------------


def test_least_conn_counts_open_tunnels_and_hash_keeps_a_client_on_its_target(
    make_gateway: MakeGateway,
) -> None:
    with ws_upstream_thread() as a, ws_upstream_thread() as b:
        doc = ws_doc(a.port)
        both = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        doc["upstreams"] = {
            "least": {"targets": both, "balance": "least_conn"},
            "hashed": {"targets": both, "balance": {"hash": "header:X-User"}},
        }
        doc["routes"] = [
            {
                "id": name,
                "path": f"/{name}/{{*rest}}",
                "upstream": name,
                "strip_prefix": f"/{name}",
                "websocket": True,
            }
            for name in ("least", "hashed")
        ]
        gw = make_gateway(doc)
        with open_ws(gw, "/least/echo") as first, open_ws(gw, "/least/echo") as second:
            first.send("1")
            second.send("2")
            assert (first.recv(timeout=10), second.recv(timeout=10)) == ("1", "2")
            assert (a.stats()["open"], b.stats()["open"]) == (1, 1)  # one tunnel each, not both on one
        for user in ("ann", "bob", "cy"):
            with contextlib.ExitStack() as opened:
                for _ in range(3):
                    opened.enter_context(open_ws(gw, "/hashed/echo", additional_headers={"X-User": user}))
                assert sorted((a.stats()["open"], b.stats()["open"])) == [0, 3]  # type: ignore[type-var]
            upstream_closes(a, ended(a), 0)
            upstream_closes(b, ended(b), 0)
