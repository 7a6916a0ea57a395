"""Backends for frontends in the bundled demo: the web gateway and the mobile gateway are two
listeners of one config (``fastgw/demo/gateway.yaml``) over the same upstream pools. The mobile
one answers the same services with smaller payloads and under a tighter rate limit; the live
basket is a WebSocket on both, so a change made through one is seen live through the other."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.sync.client import connect

from fastgw.demo import CONFIG_PATH, live_url, port_env
from tests.support.demo import listener_env, start_demo_services
from tests.support.gateway import RunningGateway
from tests.support.rawhttp import RawResponse, build_request, read_response
from tests.support.rawhttp import connect as raw_connect

MakeGateway = Callable[[dict[str, Any]], RunningGateway]


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, int]]:
    """The demo services' ports."""
    proc, ports = start_demo_services()
    yield ports
    proc.stop()


@pytest.fixture
def demo(
    make_gateway: MakeGateway, services: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RunningGateway:
    for name, value in {**port_env(services), **listener_env(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    return make_gateway(yaml.safe_load(Path(CONFIG_PATH).read_text()))


def get(port: int, target: str) -> RawResponse:
    with raw_connect(port) as sock:
        sock.sendall(build_request("GET", target))
        return read_response(sock)


def test_the_mobile_gateway_answers_the_same_services_with_smaller_payloads(demo: RunningGateway) -> None:
    web, mobile = demo.port_of("public"), demo.port_of("mobile")
    full, small = (
        get(web, "/api/catalog/items?page=0&size=5"),
        get(mobile, "/api/catalog/items?page=0&size=5"),
    )
    assert full.status == small.status == 200
    full_items, small_items = full.json()["data"], small.json()["data"]
    assert [item["id"] for item in full_items] == [item["id"] for item in small_items]
    assert all(set(item) == {"id", "name", "price"} for item in small_items)
    assert all({"catalog_type_id", "catalog_brand_id", "available_stock"} <= set(item) for item in full_items)
    assert len(small.body) < len(full.body) / 2
    item = get(mobile, "/api/catalog/items/3").json()
    assert set(item) == {"id", "name", "price", "catalog_brand", "available_stock"}


def test_each_gateway_has_its_own_routes_and_rate_limits(demo: RunningGateway) -> None:
    web, mobile = demo.port_of("public"), demo.port_of("mobile")
    home = get(mobile, "/api/home/alice")
    assert home.status == 200
    assert set(home.json()) == {"featured", "basket"} and len(home.json()["featured"]) == 2
    assert get(web, "/api/home/alice").status == 404
    assert get(mobile, "/api/dashboard/alice").status == 404
    assert get(web, "/api/dashboard/alice").status == 200
    web_limit = get(web, "/api/catalog/items/3").header("ratelimit-policy")
    mobile_limit = get(mobile, "/api/catalog/items/3").header("ratelimit-policy")
    assert web_limit is not None and mobile_limit is not None
    assert web_limit.startswith('"default";q=600') and mobile_limit.startswith('"default";q=120')


def test_the_web_gateway_offers_http2_over_tls(demo: RunningGateway) -> None:
    """curl offers h2 by ALPN to the demo's HTTPS listener, as ``fastgw demo`` prints, and gets it."""
    out = subprocess.run(
        ["curl", "-sSk", "--http2", "-w", "\\n%{http_version} %{http_code}",
         f"https://127.0.0.1:{demo.port_of('public-tls')}/api/catalog/items/3"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, result = out.stdout.rpartition(b"\n")
    assert result == b"2 200"
    assert json.loads(body)["id"] == 3


def test_one_pool_per_service_serves_both_gateways(demo: RunningGateway) -> None:
    for port in (demo.port_of("public"), demo.port_of("mobile")):
        assert get(port, "/api/catalog/items/3").status == 200
    pools = demo.call(lambda: {pool.label: pool.opened for pool in demo.gateway.plan.pools.values()})
    assert len(pools) == 4  # catalog, basket, discount, ordering: shared by every listener


def test_a_basket_changed_through_the_web_is_seen_live_through_the_mobile_gateway(
    demo: RunningGateway,
) -> None:
    web, mobile = demo.port_of("public"), demo.port_of("mobile")
    with connect(live_url(f"http://127.0.0.1:{mobile}", "carol"), open_timeout=10) as live:
        assert json.loads(live.recv(timeout=10)) == {"buyer_id": "carol", "items": []}
        with raw_connect(web) as sock:
            body = json.dumps({"items": [{"product_id": 1, "quantity": 2}]}).encode()
            sock.sendall(
                build_request("POST", "/api/basket/carol", [("Content-Type", "application/json")], body)
            )
            assert read_response(sock).status == 200
        update = json.loads(live.recv(timeout=10))
        assert [(line["product_id"], line["quantity"]) for line in update["items"]] == [(1, 2)]
        with raw_connect(web) as sock:
            sock.sendall(build_request("DELETE", "/api/basket/carol"))
            assert read_response(sock).status == 204
        assert json.loads(live.recv(timeout=10))["items"] == []
