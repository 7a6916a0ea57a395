"""A route's protocol upgrades in the config (``websocket``, ``upgrade``, ``tunnel``): what each
form means, and the exact message of every mistake."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.config.schema import TunnelConfig
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan

SOURCE = "gw.yaml"


def doc(**route: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "public", "bind": "127.0.0.1:0"}],
        "upstreams": {"chat": {"targets": ["127.0.0.1:9001"]}},
        "routes": [{"id": "live", "path": "/live/{*rest}", "upstream": "chat", **route}],
    }


def route_of(**route: Any) -> Any:
    return parse_config(doc(**route), SOURCE).routes[0]


def error_of(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document, SOURCE)
    return str(info.value)


@pytest.mark.parametrize(
    ("keys", "protocols"),
    [
        ({}, ()),
        ({"websocket": False}, ()),
        ({"websocket": True}, ("websocket",)),
        ({"upgrade": ["websocket"]}, ("websocket",)),
        ({"upgrade": "WebSocket"}, ("websocket",)),
        ({"upgrade": ["my-proto", "websocket"], "websocket": True}, ("my-proto", "websocket")),
        ({"upgrade": ["a", "A", "b"]}, ("a", "b")),
    ],
)
def test_the_forms_of_opting_in(keys: dict[str, Any], protocols: tuple[str, ...]) -> None:
    route = route_of(**keys)
    assert route.upgrade == protocols
    assert route.tunnel == TunnelConfig()


def test_tunnel_settings_and_their_defaults() -> None:
    assert TunnelConfig() == TunnelConfig(idle_timeout=300.0, max_lifetime=0.0)
    route = route_of(websocket=True, tunnel={"idle_timeout": "90s", "max_lifetime": "12h"})
    assert route.tunnel == TunnelConfig(idle_timeout=90.0, max_lifetime=43200.0)
    policy = (
        compile_plan(parse_config(doc(websocket=True, tunnel={"idle_timeout": "1m"}), SOURCE))
        .routes[0]
        .tunnel
    )
    assert policy is not None
    assert (policy.protocols, policy.idle_timeout, policy.max_lifetime) == (
        frozenset({b"websocket"}),
        60.0,
        0.0,
    )
    assert compile_plan(parse_config(doc(), SOURCE)).routes[0].tunnel is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"websocket": "yes"}, "routes[0].websocket: expected true or false, found 'yes'"),
        (
            {"websocket": False, "upgrade": ["websocket"]},
            "routes[0].websocket: false contradicts upgrade: [websocket]",
        ),
        ({"upgrade": []}, "routes[0].upgrade: expected a string or a non-empty list, found an empty list"),
        (
            {"upgrade": ["web socket"]},
            "routes[0].upgrade[0]: expected a protocol name like 'websocket', found 'web socket'",
        ),
        ({"upgrade": [5]}, "routes[0].upgrade[0]: expected a protocol name like 'websocket', found 5"),
        (
            {"upgrade": ["h2c"]},
            "routes[0].upgrade[0]: h2c (HTTP/2 over cleartext) cannot be tunnelled: its requests would"
            " pass the gateway unrouted; only a protocol that is not HTTP, such as websocket",
        ),
        (
            {"tunnel": {"idle_timeout": "1m"}},
            "routes[0].tunnel: applies to a route that upgrades: set websocket: true or upgrade: [...]",
        ),
        (
            {"websocket": True, "tunnel": {"idle": "1m"}},
            "routes[0].tunnel: unknown key 'idle'; expected one of: idle_timeout, max_lifetime",
        ),
        (
            {"websocket": True, "tunnel": {"idle_timeout": 0}},
            "routes[0].tunnel.idle_timeout: expected a duration greater than 0, found 0",
        ),
        (
            {"websocket": True, "methods": ["POST"]},
            "routes[0].methods: a WebSocket handshake is a GET request: add GET, or leave methods out",
        ),
    ],
)
def test_mistakes_are_named(keys: dict[str, Any], message: str) -> None:
    assert error_of(doc(**keys)) == f"{SOURCE}: {message}"


def test_an_aggregate_route_cannot_upgrade() -> None:
    document = doc(websocket=True)
    route = document["routes"][0]
    del route["upstream"]
    route["aggregate"] = {"backends": [{"key": "a", "upstream": "chat", "path": "/a"}]}
    assert error_of(document) == (
        f"{SOURCE}: routes[0].websocket: applies to routes with an upstream; an aggregate route sets"
        " path and timeout per backend"
    )
