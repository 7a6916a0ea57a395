"""gRPC through the gateway to an HTTP/2 upstream: a real ``grpcio`` server behind an upstream with
``protocol: h2c``, and ``grpcio`` clients on the gateway's h2c listener. Unary and the three
streaming kinds with their trailers (grpc-status, grpc-message) intact, the server's errors,
deadlines, and a client's cancellation reaching the server as RST_STREAM. The handlers take and
give raw bytes (no protobuf needed: the serializers are the identity)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from tests.support.gateway import RunningGateway

MakeGateway = Callable[[dict[str, Any]], RunningGateway]
SERVICE = "test.Echo"


class EchoService:
    """The handlers, and what the server saw (read from the test thread)."""

    def __init__(self) -> None:
        self.started = threading.Event()  # a Hang call reached the handler
        self.cancelled = threading.Event()
        self.calls = 0
        self.time_remaining: float | None = None  # the deadline the last Hang call came with

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        context.set_trailing_metadata((("x-served-by", "echo"),))
        return b"echo:" + request

    def server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield b"item %d" % i

    def client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b"%d messages, %d bytes" % tuple(map(sum, zip(*((1, len(r)) for r in requests), strict=True)))

    def bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield request.upper()

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item: " + request.decode())
        raise AssertionError("abort returns no more")

    def hang(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Answers only when cancelled (the client's cancel or deadline, as RST_STREAM)."""
        self.time_remaining = context.time_remaining()
        self.started.set()
        while context.is_active():
            time.sleep(0.01)
        self.cancelled.set()
        return b""

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Hang": grpc.unary_unary_rpc_method_handler(self.hang),
            },
        )


@pytest.fixture
def service() -> Iterator[tuple[EchoService, int]]:
    echo = EchoService()
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((echo.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield echo, port
    server.stop(0).wait(5)


@pytest.fixture
def gateway(make_gateway: MakeGateway, service: tuple[EchoService, int]) -> RunningGateway:
    """The gateway's h2c listener, routed by method path to the gRPC server."""
    return make_gateway(
        {
            "listeners": [{"name": "main", "bind": "127.0.0.1:0", "http2": {"h2c": True}}],
            "upstreams": {"echo": {"targets": [f"127.0.0.1:{service[1]}"], "protocol": "h2c"}},
            "routes": [
                {"id": "echo", "path": f"/{SERVICE}/{{method}}", "methods": ["POST"], "upstream": "echo"}
            ],
        }
    )


@pytest.fixture
def channel(gateway: RunningGateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as opened:
        yield opened


def test_unary_with_trailers(channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Unary")
    response, outcome = call.with_call(b"hello", timeout=10)
    assert response == b"echo:hello"
    assert outcome.code() == grpc.StatusCode.OK
    assert ("x-served-by", "echo") in outcome.trailing_metadata()


def test_server_streaming(channel: grpc.Channel) -> None:
    call = channel.unary_stream(f"/{SERVICE}/ServerStream")
    assert list(call(b"50", timeout=10)) == [b"item %d" % i for i in range(50)]


def test_client_streaming(channel: grpc.Channel) -> None:
    call = channel.stream_unary(f"/{SERVICE}/ClientStream")
    assert call(iter([b"a" * 1000] * 200), timeout=10) == b"200 messages, 200000 bytes"


def test_bidi_streaming(channel: grpc.Channel) -> None:
    call = channel.stream_stream(f"/{SERVICE}/Bidi")
    words = [b"alpha", b"beta", b"gamma"] * 20
    assert list(call(iter(words), timeout=10)) == [w.upper() for w in words]


def test_many_calls_share_the_upstream_connection(
    channel: grpc.Channel, gateway: RunningGateway, service: tuple[EchoService, int]
) -> None:
    """64 calls, 8 at a time: streams on one upstream connection, opened once."""
    call = channel.unary_unary(f"/{SERVICE}/Unary")
    with futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: call(b"%d" % i, timeout=10), range(64)))
    assert answers == [b"echo:%d" % i for i in range(64)]
    assert service[0].calls == 64
    (pool,) = gateway.call(lambda: list(gateway.gateway.plan.pools.values()))
    assert pool.opened == 1


def test_server_error_status_and_message(channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Fail")
    with pytest.raises(grpc.RpcError) as failed:
        call(b"42", timeout=10)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert failed.value.details() == "no such item: 42"


def test_cancel_reaches_the_server(channel: grpc.Channel, service: tuple[EchoService, int]) -> None:
    """The client cancels: its RST_STREAM becomes the gateway's RST_STREAM CANCEL upstream."""
    pending = channel.unary_unary(f"/{SERVICE}/Hang").future(b"", timeout=30)
    assert service[0].started.wait(10)
    pending.cancel()
    assert service[0].cancelled.wait(10)


def test_deadline_reaches_the_server(channel: grpc.Channel, service: tuple[EchoService, int]) -> None:
    """The server gets the call's deadline (grpc-timeout goes up), and its end as a reset."""
    call = channel.unary_unary(f"/{SERVICE}/Hang")
    with pytest.raises(grpc.RpcError) as failed:
        call(b"", timeout=0.5)
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert service[0].cancelled.wait(10)
    # The gateway's grpc-timeout, not none: what is left is at most the call's 0.5 s, give or
    # take grpcio reading its coarse clock at receipt (it can be a millisecond behind).
    assert service[0].time_remaining is not None and 0 < service[0].time_remaining <= 0.51
