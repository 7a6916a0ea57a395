"""Ocelot's WebSocket routes translated (tests/data/ocelot/websockets.json, after Ocelot's
Websockets page): a WebSocket opened through the gateway reaches a real WebSocket upstream
(``tests/support/ws_upstream.py``) at the path the route rewrites to, plain for ``ws`` and over
TLS verified against the system's CA store for ``wss``, and messages pass both ways."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support.certs import Pki
from tests.support.gateway import RunningGateway
from tests.support.ocelot_files import ocelot_gateway
from tests.support.ws_upstream import ws_upstream_thread

Make = Callable[..., RunningGateway]


@pytest.fixture
def gateway(
    make_gateway: Make, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningGateway]:
    # The system's CA store is the tests' CA: what a wss route's `tls: true` trusts, as .NET would
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)
    served = pki.issue("localhost", "127.0.0.1")
    upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_tls.load_cert_chain(served.cert, served.key)
    with ws_upstream_thread() as plain, ws_upstream_thread(tls=upstream_tls) as secure:
        ports = {51001: plain.port, 51002: secure.port}
        yield ocelot_gateway(make_gateway, "websockets.json", ports, tmp_path)


@pytest.mark.parametrize(
    ("path", "reached"),
    [
        ("/", "/headers/ws"),  # ws: the docs' Configuration route
        ("/gateway/chatHub?id=7", "/headers/chatHub?id=7"),  # ws: the docs' SignalR route
        ("/secure", "/headers/ws"),  # wss: the upstream speaks TLS only
    ],
)
def test_a_websocket_through_the_translated_route_reaches_the_upstream(
    gateway: RunningGateway, path: str, reached: str
) -> None:
    with connect(f"ws://127.0.0.1:{gateway.port_of('public')}{path}", open_timeout=10) as ws:
        handshake = json.loads(ws.recv(timeout=10))
        assert handshake["path"] == reached
        headers = {name.lower(): value for name, value in handshake["headers"]}
        assert headers["upgrade"].lower() == "websocket"
        ws.send("hello through fastgw")
        assert ws.recv(timeout=10) == "hello through fastgw"
        ws.send(bytes(range(256)))
        assert ws.recv(timeout=10) == bytes(range(256))
