"""The four hook points, in order, on a real request: answering early, awaiting I/O, adding
upstream headers, editing or replacing the response, and observing completion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from fastgw import hooks
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, Response, register_plugin
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.rawhttp import build_request, connect, read_response

Make = Callable[..., RunningGateway]
EVENTS: list[str] = []


class Recorder(Plugin):
    """Records each hook; options pick what it does at each point."""

    name: ClassVar[str] = "test_recorder"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        unknown = set(options) - {"deny", "slow_allow", "tag", "replace_status", "raise_in", "add_header"}
        if unknown:
            raise ConfigError(key_path, f"unknown option {sorted(unknown)[0]!r}")
        return cls(options)

    def on_request(self, ctx: Any) -> Any:
        EVENTS.append(f"request {ctx.path.decode()}")
        self.maybe_raise("request")
        if self.options.get("add_header"):
            ctx.add_response_headers = [(b"X-Added", b"by-recorder")]
        if self.options.get("deny") and ctx.header(b"x-deny"):
            return Response(403, b'{"error": "denied"}')
        if self.options.get("slow_allow"):
            return self._slowly()
        return None

    async def _slowly(self) -> Response | None:
        await asyncio.sleep(0.05)  # stands for a Redis or JWKS round trip
        EVENTS.append("awaited")
        return None

    def maybe_raise(self, hook: str) -> None:
        if self.options.get("raise_in") == hook:
            raise RuntimeError(f"a plugin bug in {hook}")

    def on_upstream_request(self, ctx: Any) -> None:
        EVENTS.append("upstream_request")
        self.maybe_raise("upstream_request")
        if self.options.get("tag"):
            ctx.upstream_headers.append((b"X-Tag", self.options["tag"].encode()))

    def on_response(self, ctx: Any) -> Response | None:
        EVENTS.append(f"response {ctx.response_status}")
        self.maybe_raise("response")
        if self.options.get("replace_status") == ctx.response_status:
            return Response(502, b'{"error": "replaced"}')
        ctx.response_headers.append((b"X-Seen-By", b"recorder"))
        return None

    def on_complete(self, ctx: Any) -> None:
        EVENTS.append(f"complete {ctx.response_status}")
        self.maybe_raise("complete")


@pytest.fixture(autouse=True)
def recorder() -> Iterator[None]:
    register_plugin(Recorder)
    EVENTS.clear()
    yield
    hooks._REGISTRY.pop(Recorder.name, None)


def doc(upstream: int, **options: Any) -> dict[str, Any]:
    return gateway_config(
        upstream,
        routes=[
            {
                "id": "hooked",
                "path": "/echo/{*rest}",
                "upstream": "up",
                "plugins": [{"name": "test_recorder", **options}],
            },
            {"id": "plain", "path": "/{*rest}", "upstream": "up"},
        ],
    )


def events_become(expected: list[str], timeout: float = 2.0) -> bool:
    """on_complete runs in the gateway's thread just after the last write: wait for it."""
    deadline = time.monotonic() + timeout
    while expected != EVENTS and time.monotonic() < deadline:
        time.sleep(0.01)
    return expected == EVENTS


def call(gw: RunningGateway, target: str, headers: list[tuple[str, str]] | None = None) -> Any:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", target, headers or []))
        return read_response(sock)


def test_hooks_run_in_order_and_edit_both_directions(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, tag="blue"))
    r = call(gw, "/echo/a")
    assert r.status == 200 and r.header("X-Seen-By") == "recorder"
    seen = dict((n.lower(), v) for n, v in r.json()["headers"])
    assert seen["x-tag"] == "blue"
    assert events_become(["request /echo/a", "upstream_request", "response 200", "complete 200"]), EVENTS


def test_route_without_plugins_runs_no_hook(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream))
    assert call(gw, "/status/200").status == 200
    assert EVENTS == []


def test_on_request_can_answer_without_the_upstream(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, deny=True))
    r = call(gw, "/echo/secret", [("X-Deny", "1")])
    assert r.status == 403 and r.json() == {"error": "denied"}
    assert r.header("X-Request-Id")
    assert events_become(["request /echo/secret", "complete 403"]), EVENTS


def test_awaitable_on_request_continues_the_request(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, slow_allow=True))
    with connect(gw.port) as sock:
        for i in range(3):  # and the connection stays usable for the next ones
            sock.sendall(build_request("GET", f"/echo/{i}"))
            assert read_response(sock).json()["path"] == f"/echo/{i}"
    assert EVENTS.count("awaited") == 3


def test_on_response_can_replace_the_upstream_answer(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, replace_status=200))
    r = call(gw, "/echo/x")
    assert r.status == 502 and r.json() == {"error": "replaced"}
    # the upstream connection it dropped does not break the next request
    assert call(gw, "/status/204").status == 204


def test_plugin_option_errors_name_the_key_path(upstream: int) -> None:
    from fastgw.config import parse_config
    from fastgw.plan import compile_plan

    with pytest.raises(ConfigError) as err:
        compile_plan(parse_config(doc(upstream, colour="red"), "gw.yaml"))
    assert str(err.value) == "gw.yaml: routes[0].plugins[0]: unknown option 'colour'"


@pytest.mark.parametrize("hook", ["request", "upstream_request", "response"])
def test_a_hook_that_raises_gets_its_request_a_500_and_the_connection_goes_on(
    make_gateway: Make, upstream: int, hook: str
) -> None:
    gw = make_gateway(doc(upstream, raise_in=hook))
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/echo/a"))
        r = read_response(sock)
        assert r.status == 500 and r.json()["error"] == "internal error"
        sock.sendall(build_request("GET", "/status/200"))  # a route without the plugin, same connection
        assert read_response(sock).status == 200


def test_an_on_complete_hook_that_raises_changes_nothing_for_the_client(
    make_gateway: Make, upstream: int
) -> None:
    gw = make_gateway(doc(upstream, raise_in="complete"))
    with connect(gw.port) as sock:
        for _ in range(2):  # the response went out, and the connection stays usable
            sock.sendall(build_request("GET", "/echo/a"))
            assert read_response(sock).status == 200


def test_headers_added_for_the_response_go_on_a_hook_answer_too(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(doc(upstream, add_header=True, deny=True))
    r = call(gw, "/echo/a", [("X-Deny", "1")])
    assert r.status == 403 and r.header("X-Added") == "by-recorder"
    assert call(gw, "/echo/a").header("X-Added") == "by-recorder"  # and on the proxied response
