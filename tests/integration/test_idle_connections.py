"""What an idle keep-alive connection holds: no request parser (it waits on the listener's
shelf for the next read of any connection) and no pipeline queue; a connection in the middle of
a head keeps its own parser, and every connection parses its next request as if it had kept one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in 5 s"
        time.sleep(0.01)


def test_idle_keep_alive_connections_hold_no_parser(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(gateway_config(upstream))
    idle = [connect(gw.port) for _ in range(20)]
    slow = connect(gw.port)
    try:
        for sock in idle:
            sock.sendall(build_request("GET", "/echo"))
            assert read_response(sock).status == 200
        slow.sendall(b"GET /echo HTTP/1.1\r\nHost: test.local\r\nX-Half: ")  # a head under way
        server = gw.gateway.listeners["main"]

        def holders() -> list[Any]:
            return gw.call(lambda: [c for c in server.connections if c.parser is not None])

        wait_for(lambda: len(holders()) == 1)
        assert holders()[0].in_head  # only the connection in the middle of a head has one
        assert gw.call(lambda: all(c.queue is None for c in server.connections))
        # Each idle connection takes a parser at its next read, and parses as before.
        for sock in idle:
            sock.sendall(build_request("GET", "/echo", [("X-Again", "yes")]))
            response = read_response(sock)
            assert response.status == 200 and ["X-Again", "yes"] in response.json()["headers"]
        slow.sendall(b"1\r\n\r\n")
        assert read_response(slow).status == 200
    finally:
        for sock in [*idle, slow]:
            sock.close()


def test_pipelined_requests_on_a_connection_that_was_idle(make_gateway: Make, upstream: int) -> None:
    """The parser a connection takes from the shelf carries nothing over: three pipelined
    requests in one read, then three more split across reads, all answered in order."""
    gw = make_gateway(gateway_config(upstream))
    with connect(gw.port) as sock:
        for rounds in range(2):
            requests = b"".join(build_request("GET", f"/echo?n={rounds}{i}") for i in range(3))
            if rounds == 0:
                sock.sendall(requests)
            else:
                for start in range(0, len(requests), 17):
                    sock.sendall(requests[start : start + 17])
            for i in range(3):
                assert read_response(sock).json()["path"] == f"/echo?n={rounds}{i}"
