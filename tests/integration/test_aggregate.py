"""Aggregate routes end to end: the in-process gateway calls the real upstream process
(tests/support/upstream_server.py) for each backend and merges the JSON bodies.

The upstream's ``/echo...`` and ``/slow/{ms}`` answer JSON describing the request they got
(method, path as sent, headers, conn_id), ``/status/{code}`` a plain-text status, ``/bytes/{n}``
n bytes that are not JSON, ``/hang`` nothing at all; ``/stats`` counts the requests it served.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw.config import parse_config
from fastgw.demo import CONFIG_PATH, port_env
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from fastgw.tls.selfsigned import write_self_signed
from fastgw.upstream.breaker import State
from tests.support.gateway import RunningGateway
from tests.support.ports import free_port
from tests.support.procs import start_process

Reply = tuple[int, dict[str, str], Any]


def document(upstream: int, aggregate: dict[str, Any], path: str = "/agg", **route: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {
            "up": {"targets": [f"127.0.0.1:{upstream}"]},
            "down": {"targets": [f"127.0.0.1:{free_port()}"]},  # nothing listens there
        },
        "routes": [{"id": "agg", "path": path, "aggregate": aggregate, **route}],
    }


def backend(key: str, path: str, **options: Any) -> dict[str, Any]:
    return {"key": key, "upstream": "up", "path": path, **options}


def get(
    gw: RunningGateway, path: str, headers: dict[str, str] | None = None, listener: str = "main"
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port_of(listener), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        reply = conn.getresponse()
        body = reply.read()
        found = {name.lower(): value for name, value in reply.getheaders()}
        return reply.status, found, json.loads(body) if body else None
    finally:
        conn.close()


def upstream_requests(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stats")
        return int(json.loads(conn.getresponse().read())["requests"])
    finally:
        conn.close()


Make = Callable[..., RunningGateway]


def test_branches_run_in_parallel(make_gateway: Make, upstream: int) -> None:
    backends = [backend(key, f"/slow/300?of={key}") for key in ("catalog", "basket", "discount")]
    gw = make_gateway(document(upstream, {"backends": backends}))
    started = time.monotonic()
    status, headers, body = get(gw, "/agg")
    elapsed = time.monotonic() - started
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert "x-aggregate-partial" not in headers
    assert {key: value["path"] for key, value in body.items()} == {
        "catalog": "/slow/300?of=catalog",
        "basket": "/slow/300?of=basket",
        "discount": "/slow/300?of=discount",
    }
    assert list(body) == ["catalog", "basket", "discount"]  # config order
    assert elapsed < 0.8, f"three 300 ms branches took {elapsed:.2f}s: not in parallel"


def test_calls_reuse_keep_alive_connections(make_gateway: Make, upstream: int) -> None:
    gw = make_gateway(document(upstream, {"backends": [backend("a", "/echo/a")]}))
    conn_ids = {get(gw, "/agg")[2]["a"]["conn_id"] for _ in range(3)}
    assert len(conn_ids) == 1


def test_optional_failures_are_left_out_and_marked(make_gateway: Make, upstream: int) -> None:
    backends = [
        backend("catalog", "/echo/catalog"),
        backend("basket", "/status/500", required=False),  # non-2xx
        backend("discount", "/bytes/10", required=False),  # not JSON
        backend("orders", "/echo/orders", required=False, upstream="down"),  # refused
    ]
    gw = make_gateway(document(upstream, {"backends": backends}))
    status, headers, body = get(gw, "/agg")
    assert status == 200, body
    assert list(body) == ["catalog"]
    assert headers["x-aggregate-partial"] == "basket,discount,orders"


@pytest.mark.parametrize(
    ("path", "upstream_name", "status", "message"),
    [
        ("/status/503", "up", 502, "answered status 503"),
        ("/bytes/10", "up", 502, "answered a body that is not JSON"),
        ("/echo/x", "down", 502, "upstream 'down': connect failed"),
        ("/bytes/5000", "up", 502, "upstream 'up' answered more than 1024 bytes"),
    ],
)
def test_a_required_failure_answers_an_error_naming_the_backend(
    make_gateway: Make, upstream: int, path: str, upstream_name: str, status: int, message: str
) -> None:
    backends = [
        backend("catalog", "/echo/catalog"),
        backend("basket", path, upstream=upstream_name, max_body="1KiB"),
    ]
    gw = make_gateway(document(upstream, {"backends": backends}))
    got, headers, body = get(gw, "/agg")
    assert got == status
    assert body["error"].startswith("backend 'basket' failed: ")
    assert message in body["error"]
    assert body["request_id"] == headers["x-request-id"]


def test_backend_calls_feed_the_upstreams_breaker(make_gateway: Make, upstream: int) -> None:
    """An aggregate's backend calls go through the same client as proxied requests: their
    failures open the upstream's breaker, and an open breaker answers them without a call."""
    doc = document(upstream, {"backends": [backend("basket", "/status/500")]})
    doc["upstreams"]["up"]["breaker"] = {"failures": 3, "open_for": "30s"}
    gw = make_gateway(doc)
    assert [get(gw, "/agg")[0] for _ in range(3)] == [502, 502, 502]
    (breaker,) = gw.gateway.plan.breakers.values()
    assert State(gw.call(breaker.state_of, f"127.0.0.1:{upstream}")) is State.OPEN
    before = upstream_requests(upstream)
    status, _, body = get(gw, "/agg")
    assert status == 503 and "circuit breaker open" in body["error"]
    assert upstream_requests(upstream) == before  # answered without calling the upstream


def test_timeouts_are_per_backend(make_gateway: Make, upstream: int) -> None:
    backends = [
        backend("fast", "/echo/fast"),
        backend("optional", "/hang", timeout="200ms", required=False),
        backend("patient", "/slow/400", timeout="2s"),
    ]
    gw = make_gateway(document(upstream, {"backends": backends}))
    status, headers, body = get(gw, "/agg")
    assert status == 200, body
    assert list(body) == ["fast", "patient"]
    assert headers["x-aggregate-partial"] == "optional"

    backends[1]["required"] = True
    gw = make_gateway(document(upstream, {"backends": backends}))
    started = time.monotonic()
    status, _, body = get(gw, "/agg")
    assert status == 504
    assert body["error"] == "backend 'optional' failed: no answer within 0.2s"
    # a required failure answers at once: it does not wait for the 400 ms branch
    assert time.monotonic() - started < 0.4 + 0.3


def test_chained_calls_use_route_params_and_earlier_fields(make_gateway: Make, upstream: int) -> None:
    backends = [
        backend("first", "/echo/users/{user}?page=1"),
        backend("second", "/echo/conn/{first.conn_id}/{first.method}"),
        {"upstream": "up", "path": "/echo/of/{second.path}"},  # a value with '/' and '?' is encoded
    ]
    gw = make_gateway(document(upstream, {"backends": backends}, path="/dash/{user}"))
    status, _, body = get(gw, "/dash/alice")
    assert status == 200, body
    first = body["first"]
    assert first["path"] == "/echo/users/alice?page=1"
    assert body["second"]["path"] == f"/echo/conn/{first['conn_id']}/GET"
    assert body["resp2"]["path"] == "/echo/of/" + "%2Fecho%2Fconn%2F" + f"{first['conn_id']}%2FGET"


def test_a_chain_on_a_failed_optional_backend_fails_too(make_gateway: Make, upstream: int) -> None:
    backends = [
        backend("first", "/echo/a"),
        backend("basket", "/status/404", required=False),
        backend("discount", "/echo/{basket.coupon}", required=False),
        backend("missing", "/echo/{first.no_such_field}", required=False),
    ]
    gw = make_gateway(document(upstream, {"backends": backends}))
    status, headers, body = get(gw, "/agg")
    assert status == 200, body
    assert list(body) == ["first"]
    assert headers["x-aggregate-partial"] == "basket,discount,missing"


def test_fields_mapping_and_target(make_gateway: Make, upstream: int) -> None:
    backends = [
        backend("a", "/echo/a", fields=["method", "path", "absent"], mapping={"path": "target"}),
        backend("b", "/echo/b", target="headers"),
    ]
    gw = make_gateway(document(upstream, {"backends": backends}))
    status, _, body = get(gw, "/agg")
    assert status == 200, body
    assert body["a"] == {"method": "GET", "target": "/echo/a"}
    assert ["Accept", "application/json"] in body["b"]


def test_deep_merge_and_group(make_gateway: Make, upstream: int) -> None:
    backends = [
        backend("a", "/echo/a", fields=["method", "path"], group="request"),
        backend("b", "/echo/b", fields=["path", "body_len"], mapping={"body_len": "size"}, group="request"),
        backend("c", "/echo/c", fields=["method"], mapping={"method": "verb"}),
    ]
    gw = make_gateway(document(upstream, {"merge": "deep", "backends": backends}))
    status, _, body = get(gw, "/agg")
    assert status == 200, body
    assert body == {"request": {"method": "GET", "path": "/echo/b", "size": 0}, "verb": "GET"}


def test_deep_merge_needs_objects(make_gateway: Make, upstream: int) -> None:
    backends = [backend("a", "/echo/a"), backend("list", "/echo/b", target="headers", required=False)]
    gw = make_gateway(document(upstream, {"merge": "deep", "backends": backends}))
    status, headers, body = get(gw, "/agg")
    assert status == 200, body
    assert body["path"] == "/echo/a"
    assert headers["x-aggregate-partial"] == "list"


def test_custom_aggregator(make_gateway: Make, upstream: int) -> None:
    backends = [backend("a", "/echo/a"), backend("b", "/status/500", required=False)]
    aggregate = {"backends": backends, "aggregator": "tests.support.aggregators:paths"}
    gw = make_gateway(document(upstream, aggregate))
    status, headers, body = get(gw, "/agg")
    assert status == 200, body
    assert body == {"paths": {"a": "/echo/a"}, "keys": ["a"]}
    assert headers["x-aggregate-partial"] == "b"


def test_a_failing_aggregator_answers_500(make_gateway: Make, upstream: int) -> None:
    aggregate = {"backends": [backend("a", "/echo/a")], "aggregator": "tests.support.aggregators:broken"}
    gw = make_gateway(document(upstream, aggregate))
    status, _, body = get(gw, "/agg")
    assert status == 500
    assert body["error"] == "the route's aggregator failed"


def test_headers_sent_to_backends(make_gateway: Make, upstream: int) -> None:
    backends = [backend("a", "/echo/a", headers=["Authorization"]), backend("b", "/echo/b")]
    gw = make_gateway(document(upstream, {"backends": backends}))
    status, headers, body = get(gw, "/agg", {"Authorization": "Bearer t", "X-Secret": "s"})
    assert status == 200, body
    sent = {key: {name.lower(): value for name, value in body[key]["headers"]} for key in ("a", "b")}
    assert sent["a"]["authorization"] == "Bearer t"
    assert "authorization" not in sent["b"]
    assert "x-secret" not in sent["a"]
    for key in ("a", "b"):
        assert sent[key]["x-request-id"] == headers["x-request-id"]
        assert sent[key]["x-forwarded-for"] == "127.0.0.1"
        assert sent[key]["host"] == f"127.0.0.1:{upstream}"


def test_route_plugins_run_before_the_backends(make_gateway: Make, upstream: int) -> None:
    digest = "sha256:" + hashlib.sha256(b"k1").hexdigest()
    plugins = [{"name": "api_key", "consumers": {"alice": digest}}]
    gw = make_gateway(document(upstream, {"backends": [backend("a", "/echo/a")]}, plugins=plugins))
    before = upstream_requests(upstream)
    status, _, _ = get(gw, "/agg")
    assert status == 401
    assert upstream_requests(upstream) == before  # refused before any backend call
    status, _, body = get(gw, "/agg", {"X-API-Key": "k1"})
    assert status == 200, body
    assert upstream_requests(upstream) == before + 1


def test_an_unknown_aggregator_is_a_config_error(upstream: int) -> None:
    for name, message in [
        ("tests.support.no_such_module:f", "cannot import module 'tests.support.no_such_module'"),
        ("tests.support.aggregators:nothing", "expected a function 'nothing' in"),
        ("tests.support.aggregators:NOT_CALLABLE", "found a int"),
        ("tests.support.aggregators:two_arguments", "must take one argument"),
    ]:
        doc = document(upstream, {"backends": [backend("a", "/echo/a")], "aggregator": name})
        with pytest.raises(ConfigError) as caught:
            compile_plan(parse_config(doc, "gw.yaml"))
        assert str(caught.value).startswith("gw.yaml: routes[0].aggregate.aggregator: "), caught.value
        assert message in str(caught.value)


@pytest.fixture
def demo_services() -> Iterator[dict[str, int]]:
    """The bundled demo services as a real process: {name: port}."""
    proc = start_process([sys.executable, "-m", "fastgw.demo.services"], ready_line="ordering=")
    try:
        line = proc.wait_for_output("ordering=")
        ports = dict(item.split("=") for item in line.split() if "=" in item)
        yield {name: int(port) for name, port in ports.items()}
    finally:
        proc.stop()


def test_the_demo_dashboard(
    make_gateway: Make, demo_services: dict[str, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in port_env(demo_services).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FASTGW_DEMO_BIND", "127.0.0.1:0")
    monkeypatch.setenv("FASTGW_DEMO_TLS_BIND", "127.0.0.1:0")
    cert, key = write_self_signed(tmp_path)
    monkeypatch.setenv("FASTGW_DEMO_CERT", str(cert))
    monkeypatch.setenv("FASTGW_DEMO_KEY", str(key))
    with open(CONFIG_PATH, encoding="utf-8") as file:
        gw = make_gateway(yaml.safe_load(file))
    status, headers, body = get(gw, "/api/dashboard/bob", listener="public")
    assert status == 200, body
    assert [item["id"] for item in body["featured"]] == [1, 2, 3]
    assert body["basket"] == {"buyer_id": "bob", "items": []}
    assert headers["x-aggregate-partial"] == "discount"  # bob's basket has no coupon

    conn = http.client.HTTPConnection("127.0.0.1", gw.port_of("public"), timeout=10)
    basket = {"items": [{"product_id": 2, "quantity": 1}], "coupon": "DISC20"}
    conn.request(
        "POST", "/api/basket/bob", body=json.dumps(basket), headers={"Content-Type": "application/json"}
    )
    assert conn.getresponse().status == 200
    conn.close()
    status, headers, body = get(gw, "/api/dashboard/bob", listener="public")
    assert status == 200, body
    assert body["discount"] == {"code": "DISC20", "percent": 20}
    assert body["basket"]["coupon"] == "DISC20"
    assert "x-aggregate-partial" not in headers
