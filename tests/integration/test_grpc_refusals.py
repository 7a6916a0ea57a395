"""A gRPC call the gateway refuses itself (no route, authentication, a rate limit, no upstream
to send it to, its deadline) gets what a gRPC client understands: HTTP 200 and a trailers-only
response whose grpc-status says why, never an HTTP error page. Driven by grpcio's own client
over h2c, and by raw HTTP/2 for what grpcio hides (the exact fields, the grpc-timeout)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.support.gateway import RunningGateway
from tests.support.h2client import H2Client
from tests.support.ports import free_port

MakeGateway = Callable[[dict[str, Any]], RunningGateway]

GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # one gRPC message: not compressed, zero bytes


def grpc_doc(upstream: int) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0", "http2": {"h2c": True}}],
        "upstreams": {
            "up": {"targets": [f"127.0.0.1:{upstream}"]},
            "down": {"targets": [f"127.0.0.1:{free_port()}"]},  # nothing listens there
        },
        "routes": [
            {"id": "down", "path": "/shop.Down/{method}", "upstream": "down"},
            {"id": "keyed", "path": "/shop.Keyed/{method}", "upstream": "up",
             "plugins": [{"name": "api_key", "consumers": {"svc": "sha256:" + "0" * 64}}]},
            {"id": "limited", "path": "/shop.Limited/{method}", "upstream": "up",
             "plugins": [{"name": "rate_limit", "limit": 1, "window": "60s", "key": "ip"}]},
            {"id": "hang", "path": "/shop.Slow/{method}", "upstream": "up", "rewrite": "/hang"},
        ],
    }  # fmt: skip


def call(port: int, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            stub(b"\x00", timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("/shop.Nowhere/Get", grpc.StatusCode.UNIMPLEMENTED),
        ("/shop.Down/Get", grpc.StatusCode.UNAVAILABLE),
        ("/shop.Keyed/Get", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_refusals_are_grpc_statuses(
    make_gateway: MakeGateway, upstream: int, method: str, code: grpc.StatusCode
) -> None:
    gw = make_gateway(grpc_doc(upstream))
    assert call(gw.port, method) == code


def test_a_rate_limited_call_is_resource_exhausted(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(grpc_doc(upstream))
    first = call(gw.port, "/shop.Limited/Get")
    assert first != grpc.StatusCode.RESOURCE_EXHAUSTED  # the HTTP/1.1 test upstream is no gRPC server
    assert call(gw.port, "/shop.Limited/Get") == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_refusal_is_trailers_only_with_a_percent_encoded_message(
    make_gateway: MakeGateway, upstream: int
) -> None:
    gw = make_gateway(grpc_doc(upstream))
    with H2Client(gw.port) as client:
        answer = client.get(
            "/shop.Down/Get", method="POST", headers=GRPC_HEADERS, body=b"\x00\x00\x00\x00\x00"
        )
    assert answer.status == 200 and answer.body == b"" and answer.trailers == []  # one HEADERS frame
    fields = dict(answer.headers)
    assert fields["content-type"] == "application/grpc"
    assert fields["grpc-status"] == "14"
    assert fields["grpc-message"].startswith("upstream 'down'")
    assert all(" " <= c <= "~" for c in fields["grpc-message"])


def test_grpc_timeout_bounds_the_call(make_gateway: MakeGateway, upstream: int) -> None:
    """The route has no total timeout; the client's grpc-timeout (300 ms) ends the call as
    DEADLINE_EXCEEDED, and not before it."""
    import time

    gw = make_gateway(grpc_doc(upstream))
    with H2Client(gw.port) as client:
        started = time.monotonic()
        headers = [*GRPC_HEADERS, ("grpc-timeout", "300m")]
        answer = client.get("/shop.Slow/Get", method="POST", headers=headers, body=EMPTY_MESSAGE)
        waited = time.monotonic() - started
    assert dict(answer.headers)["grpc-status"] == "4"
    assert waited >= 0.29


def test_a_malformed_grpc_timeout_is_ignored(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(grpc_doc(upstream))
    with H2Client(gw.port) as client:
        headers = [*GRPC_HEADERS, ("grpc-timeout", "soon")]
        answer = client.get("/shop.Down/Get", method="POST", headers=headers, body=EMPTY_MESSAGE)
    assert dict(answer.headers)["grpc-status"] == "14"  # the call went on to its real refusal


def test_non_grpc_requests_keep_http_error_pages(make_gateway: MakeGateway, upstream: int) -> None:
    gw = make_gateway(grpc_doc(upstream))
    with H2Client(gw.port) as client:
        answer = client.get("/shop.Down/Get")
    assert answer.status == 502 and answer.header("content-type") == "application/json"
