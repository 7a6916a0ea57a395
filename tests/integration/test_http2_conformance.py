"""RFC 9113's connection and stream rules, frame by frame: what a peer that breaks them gets
from the gateway (a GOAWAY with the error the RFC names, or a RST_STREAM for a stream error),
written as raw frames no client library would send. A connection error ends the connection; a
stream error leaves the connection serving."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import hpack
import pytest

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.h2client import PREFACE, Frame, frame, read_frames, settings_frame
from tests.support.rawhttp import connect

MakeGateway = Callable[[dict[str, Any]], RunningGateway]

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x1, 0x3, 0x5, 0x6
HEADERS, DATA, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, PRIORITY = 1, 0, 3, 4, 6, 7, 8, 2
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def request_block(encoder: hpack.Encoder, path: str = "/echo") -> bytes:
    return encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", path)]
    )


def exchange(gw: RunningGateway, *frames: bytes, until: Callable[[list[Frame]], bool]) -> list[Frame]:
    sock = connect(gw.port)
    with sock:
        sock.sendall(PREFACE + settings_frame() + b"".join(frames))
        return read_frames(sock, until)


def goaway(frames: list[Frame]) -> int | None:
    """The error code of the gateway's GOAWAY, or None."""
    payload = next((p for kind, _, _, p in frames if kind == GOAWAY), None)
    return None if payload is None else int.from_bytes(payload[4:8], "big")


def resets(frames: list[Frame]) -> dict[int, int]:
    return {sid: int.from_bytes(p, "big") for kind, _, sid, p in frames if kind == RST_STREAM}


def has_goaway(frames: list[Frame]) -> bool:
    return goaway(frames) is not None


@pytest.fixture
def gw(make_gateway: MakeGateway, upstream: int) -> RunningGateway:
    return make_gateway(gateway_config(upstream, http2={"h2c": True}))


@pytest.mark.parametrize(
    ("name", "frames", "error"),
    [
        ("DATA on stream 0", [frame(DATA, 0, 0, b"x")], PROTOCOL_ERROR),
        ("HEADERS on stream 0", [frame(HEADERS, END_HEADERS, 0, b"\x82")], PROTOCOL_ERROR),
        ("an even stream id from a client", [frame(HEADERS, END_STREAM | END_HEADERS, 2, b"\x82\x86\x84")],
         PROTOCOL_ERROR),
        ("SETTINGS on a stream", [frame(SETTINGS, 0, 1)], PROTOCOL_ERROR),
        ("a SETTINGS length not a multiple of 6", [frame(SETTINGS, 0, 0, b"\x00\x01\x00")], FRAME_SIZE_ERROR),
        ("INITIAL_WINDOW_SIZE over 2^31-1", [frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 2**31))],
         FLOW_CONTROL_ERROR),
        ("MAX_FRAME_SIZE below 16384", [frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 100))], PROTOCOL_ERROR),
        ("ENABLE_PUSH other than 0 or 1", [frame(SETTINGS, 0, 0, struct.pack(">HI", 2, 2))], PROTOCOL_ERROR),
        ("a PING of 7 bytes", [frame(PING, 0, 0, b"1234567")], FRAME_SIZE_ERROR),
        ("a PING on a stream", [frame(PING, 0, 1, b"12345678")], PROTOCOL_ERROR),
        ("WINDOW_UPDATE of 0 on the connection", [frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0))],
         PROTOCOL_ERROR),
        ("a frame over SETTINGS_MAX_FRAME_SIZE", [frame(DATA, 0, 1, b"x" * 16385)], FRAME_SIZE_ERROR),
        ("CONTINUATION without HEADERS", [frame(9, END_HEADERS, 1, b"\x82")], PROTOCOL_ERROR),
        ("a connection window overflow",
         [frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)) * 2], FLOW_CONTROL_ERROR),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_connection_errors(gw: RunningGateway, name: str, frames: list[bytes], error: int) -> None:
    got = exchange(gw, *frames, until=has_goaway)
    assert goaway(got) == error, name


def test_an_invalid_header_block_is_a_compression_error(gw: RunningGateway) -> None:
    got = exchange(gw, frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), until=has_goaway)
    assert goaway(got) == 0x9  # COMPRESSION_ERROR


def test_a_stream_id_below_one_used_is_never_answered(gw: RunningGateway) -> None:
    """RFC 9113 5.1.1 calls it a connection error; nghttp2 ignores such HEADERS instead (a
    trailer for a stream it reset may legitimately arrive late), so no request is ever made
    from it, and the connection goes on."""
    encoder = hpack.Encoder()
    got = exchange(
        gw,
        frame(HEADERS, END_STREAM | END_HEADERS, 5, request_block(encoder)),
        frame(HEADERS, END_STREAM | END_HEADERS, 3, request_block(encoder)),
        frame(HEADERS, END_STREAM | END_HEADERS, 7, request_block(encoder)),
        until=lambda fs: any(kind == DATA and flags & END_STREAM and sid == 7 for kind, flags, sid, _ in fs),
    )
    answered = {sid for kind, _, sid, _ in got if kind == HEADERS}
    assert answered == {5, 7} and not has_goaway(got)


def test_data_after_end_stream_is_stream_closed(gw: RunningGateway) -> None:
    encoder = hpack.Encoder()
    got = exchange(
        gw,
        frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(encoder, "/slow/200")),
        frame(DATA, 0, 1, b"late"),
        until=lambda fs: bool(resets(fs)) or has_goaway(fs),
    )
    assert resets(got).get(1) == STREAM_CLOSED or goaway(got) == STREAM_CLOSED


def test_window_update_of_zero_ends_the_connection(gw: RunningGateway) -> None:
    """RFC 9113 6.9 makes it a stream error on a stream; nghttp2 treats it as a connection error
    either way (an endpoint may always escalate)."""
    encoder = hpack.Encoder()
    got = exchange(
        gw,
        frame(HEADERS, END_HEADERS, 1, request_block(encoder, "/slow/300")),
        frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)),
        until=has_goaway,
    )
    assert goaway(got) == PROTOCOL_ERROR


def test_stream_errors_leave_the_connection_serving(gw: RunningGateway) -> None:
    encoder = hpack.Encoder()
    malformed = encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "gw.test"), (":path", "/echo"), ("Bad", "x")]
    )
    got = exchange(
        gw,
        frame(HEADERS, END_STREAM | END_HEADERS, 1, malformed),  # an uppercase name: a stream error
        frame(HEADERS, END_STREAM | END_HEADERS, 3, request_block(encoder)),
        until=lambda fs: any(kind == DATA and flags & END_STREAM and sid == 3 for kind, flags, sid, _ in fs),
    )
    assert resets(got).get(1) == PROTOCOL_ERROR and not has_goaway(got)


def test_unknown_frame_types_and_priority_are_ignored(gw: RunningGateway) -> None:
    encoder = hpack.Encoder()
    got = exchange(
        gw,
        frame(0xFA, 0, 0, b"whatever"),
        frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 16)),
        frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(encoder)),
        until=lambda fs: any(kind == DATA and flags & END_STREAM for kind, flags, _, _ in fs),
    )
    assert not has_goaway(got) and not resets(got)


def test_ping_is_answered_and_settings_acknowledged(gw: RunningGateway) -> None:
    got = exchange(
        gw,
        frame(PING, 0, 0, b"fastgw!!"),
        until=lambda fs: (
            any(kind == PING for kind, _, _, _ in fs)
            and any(kind == SETTINGS and flags & ACK for kind, flags, _, _ in fs)
        ),
    )
    pong = next((flags, p) for kind, flags, _, p in got if kind == PING)
    assert pong == (ACK, b"fastgw!!")
    server_settings = next(p for kind, flags, _, p in got if kind == SETTINGS and not flags & ACK)
    values = dict(struct.unpack(">HI", server_settings[i : i + 6]) for i in range(0, len(server_settings), 6))
    assert values[3] == 100 and values[2] == 0  # MAX_CONCURRENT_STREAMS, ENABLE_PUSH off
