"""An upstream's ``protocol``: HTTP/1.1 by default, h2c (cleartext HTTP/2) or h2 (over TLS, ALPN),
and what each needs, with errors naming the file and the key path."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config.schema import PoolConfig
from fastgw.upstream.pool import PoolKey, TargetPool
from tests.support.config_docs import error_of, minimal, parse

SOURCE_UP = "gw.yaml: upstreams.catalog"


def upstream(**settings: Any) -> dict[str, Any]:
    doc = minimal()
    doc["upstreams"]["catalog"].update(settings)
    return doc


def test_default_is_http_1_1() -> None:
    assert parse(minimal()).upstreams["catalog"].protocol == "http/1.1"


@pytest.mark.parametrize("protocol", ["h2c", "http/1.1"])
def test_cleartext_protocols(protocol: str) -> None:
    config = parse(upstream(protocol=protocol, pool={"max_streams": 50} if protocol == "h2c" else {}))
    assert config.upstreams["catalog"].protocol == protocol


def test_h2_over_tls_with_a_stream_cap() -> None:
    config = parse(upstream(protocol="h2", tls={"insecure_skip_verify": True}, pool={"max_streams": 8}))
    catalog = config.upstreams["catalog"]
    assert (catalog.protocol, catalog.pool.max_streams) == ("h2", 8)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"protocol": "http2"},
            f"{SOURCE_UP}.protocol: expected the name of a protocol (http/1.1, h2c, h2), found 'http2';"
            " did you mean 'http/1.1'?",
        ),
        (
            {"protocol": "h2"},
            f"{SOURCE_UP}.protocol: h2 is HTTP/2 over TLS and needs tls: (cleartext HTTP/2 is h2c)",
        ),
        (
            {"protocol": "h2c", "tls": {"insecure_skip_verify": True}},
            f"{SOURCE_UP}.protocol: h2c is cleartext HTTP/2; with tls: write protocol: h2",
        ),
        (
            {"pool": {"max_streams": 10}},
            f"{SOURCE_UP}.pool.max_streams: streams per connection are for protocol h2c or h2 (HTTP/2)",
        ),
        (
            {"protocol": "h2c", "pool": {"max_streams": 0}},
            f"{SOURCE_UP}.pool.max_streams: expected an integer from 1 to 10000, found 0",
        ),
        (
            {"protocol": "h2c", "health": {"path": "/healthz"}},
            f"{SOURCE_UP}.health: active health checks speak HTTP/1.1, which an upstream with protocol"
            " h2c may not (passive checks, outlier:, work with any protocol)",
        ),
    ],
)
def test_protocol_errors(settings: dict[str, Any], message: str) -> None:
    assert error_of(upstream(**settings)) == message


def test_pools_differ_by_protocol() -> None:
    """The same target under HTTP/1.1 and HTTP/2 gets two pools; the HTTP/2 one counts streams."""
    h1 = PoolKey("127.0.0.1", 1, PoolConfig())
    h2 = PoolKey("127.0.0.1", 1, PoolConfig(max_streams=7), protocol="h2c")
    assert h1 != h2
    assert TargetPool(h1).max_streams == 0
    assert TargetPool(h2).max_streams == 7
