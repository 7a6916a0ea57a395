"""WebSocket tunnels through ``fastgw run``: a client that stops reading costs the gateway its
buffers and no more (resident memory sampled from ``/proc``), and SIGTERM's drain closes open
tunnels with 1001 "going away" to both sides before the process exits."""

from __future__ import annotations

import json
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.conftest import RssSampler, RunGateway, wait_for
from tests.support.procs import ProcessReaper
from tests.support.rawhttp import build_request, read_response
from tests.support.rawhttp import connect as raw_connect
from tests.support.ws_upstream import PATTERN

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
FLOOD = 300  # messages of 1 MiB the upstream sends to a client that reads none of them
MAX_GROWTH = 20 * MiB  # the gateway's buffers are 256 KiB a side: far below what was sent
WS_SCRIPT = str(Path(__file__).parents[1] / "support" / "ws_upstream.py")


def start_ws_upstream(procs: ProcessReaper) -> int:
    proc = procs.start([sys.executable, WS_SCRIPT, "--port", "0"], ready_line="listening")
    return int(proc.wait_for_output("listening").split()[1])


def upstream_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


def ws_doc(upstream_port: int, **listener: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0", **listener}],
        "upstreams": {"ws": {"targets": [f"127.0.0.1:{upstream_port}"]}},
        "routes": [{"id": "ws", "path": "/{*rest}", "upstream": "ws", "websocket": True}],
    }


def masked_text(text: str) -> bytes:
    payload = text.encode()
    key = b"\x01\x02\x03\x04"
    return bytes((0x81, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_a_client_that_stops_reading_costs_the_gateway_its_buffers_only(
    run_gateway: RunGateway, procs: ProcessReaper
) -> None:
    upstream = start_ws_upstream(procs)
    gw = run_gateway(ws_doc(upstream, buffer_bytes="256KiB"))
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: a small window
    client.settimeout(30)
    client.connect(("127.0.0.1", gw.port))
    with client, RssSampler(gw.pid) as rss:
        client.sendall(build_request("GET", "/echo", [
            ("Connection", "Upgrade"), ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ]))  # fmt: skip
        assert read_response(client).status == 101
        client.sendall(masked_text(f"!flood {FLOOD}"))
        # The upstream sends until the pause reaches it: its count stops growing.
        counts: list[int] = []

        def stalled() -> bool:
            counts.append(int(upstream_stats(upstream)["flooded"]))
            return len(counts) > 5 and counts[-1] == counts[-6] > 0

        wait_for(stalled, 60, "the upstream to be paused", interval=0.2)
        held = counts[-1]
        assert held < FLOOD * MiB // 4, f"the upstream sent {held / MiB:.0f} MiB to a client that reads none"
        growth_while_stalled = rss.growth
        # Now the client reads it all: every byte arrives, in order.
        received = 0
        for _ in range(FLOOD):
            header = _exactly(client, 10)
            assert header[:2] == b"\x82\x7f" and int.from_bytes(header[2:], "big") == MiB
            assert _exactly(client, MiB) == PATTERN
            received += MiB
    assert received == FLOOD * MiB
    assert growth_while_stalled < MAX_GROWTH, (
        f"gateway RSS grew {growth_while_stalled / MiB:.1f} MiB"
        f" while the upstream had sent {held / MiB:.1f} MiB"
    )
    assert rss.growth < MAX_GROWTH, (
        f"gateway RSS grew {rss.growth / MiB:.1f} MiB passing {received / MiB:.0f} MiB"
    )


def _exactly(sock: socket.socket, n: int) -> bytes:
    view = bytearray(n)
    got = 0
    while got < n:
        count = sock.recv_into(memoryview(view)[got:], n - got)
        assert count, f"closed after {got} of {n} bytes"
        got += count
    return bytes(view)


def test_sigterm_drains_open_tunnels_with_1001_both_ways(
    run_gateway: RunGateway, procs: ProcessReaper
) -> None:
    upstream = start_ws_upstream(procs)
    gw = run_gateway(ws_doc(upstream, timeouts={"drain": "1s"}))
    with connect(f"ws://127.0.0.1:{gw.port}/echo", open_timeout=10) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        gw.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=20)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1001,
        "going away",
    )
    assert gw.wait_exit(20) == 0
    wait_for(lambda: upstream_stats(upstream)["closed"], 10, "the upstream to see the close")
    assert upstream_stats(upstream)["closed"] == [[1001, "going away"]]
    with raw_connect(upstream) as probe:  # the upstream is fine: only the gateway went away
        probe.sendall(build_request("GET", "/stats"))
        assert read_response(probe).status == 200
