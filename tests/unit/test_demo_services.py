"""The bundled demo services answer every documented endpoint; gateway.yaml loads and maps them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
import yaml

import fastgw
from fastgw.config.load import load_config, parse_config
from fastgw.demo import (
    CONFIG_PATH,
    demo_urls,
    instance_key,
    live_url,
    mobile_urls,
    port_env,
    registry_document,
    service_prefix,
)
from fastgw.demo.services import SERVICE_NAMES, DemoServices, start_services
from fastgw.plan import compile_plan
from tests.support.demo import listener_env

Check = Callable[[DemoServices, aiohttp.ClientSession], Awaitable[None]]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run_demo(request: pytest.FixtureRequest) -> Callable[[Check], None]:
    """Run a check against freshly started services, on asyncio and on uvloop."""
    loop_factory = LOOPS[request.param]

    def run(check: Check) -> None:
        async def main() -> None:
            services = await start_services()
            try:
                async with aiohttp.ClientSession() as session:
                    await check(services, session)
            finally:
                await services.close()

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())

    return run


async def fetch(
    session: aiohttp.ClientSession,
    services: DemoServices,
    service: str,
    method: str,
    path: str,
    json: Any = None,
) -> tuple[int, Any]:
    """(status, decoded JSON or None); also checks the X-Demo-Service tag."""
    async with session.request(method, services.url(service) + path, json=json) as reply:
        assert reply.headers["X-Demo-Service"] == service
        body = await reply.read()
        return reply.status, (await reply.json()) if body else None


def test_ports_and_health(run_demo: Callable[[Check], None]) -> None:
    async def check(services: DemoServices, session: aiohttp.ClientSession) -> None:
        assert sorted(services.ports) == sorted(SERVICE_NAMES)
        assert len(set(services.ports.values())) == 4
        for name in SERVICE_NAMES:
            assert await fetch(session, services, name, "GET", "/health") == (
                200,
                {"status": "ok", "service": name},
            )
            # unknown paths are 404 and still say which service answered
            status, _ = await fetch(session, services, name, "GET", "/nope")
            assert status == 404

    run_demo(check)


def test_catalog(run_demo: Callable[[Check], None]) -> None:
    async def check(services: DemoServices, session: aiohttp.ClientSession) -> None:
        status, page = await fetch(session, services, "catalog", "GET", "/items?page=1&size=4")
        assert status == 200
        assert (page["page"], page["size"], page["count"]) == (1, 4, 15)
        assert [item["id"] for item in page["data"]] == [5, 6, 7, 8]

        status, item = await fetch(session, services, "catalog", "GET", "/items/3")
        assert status == 200 and item["id"] == 3 and item["name"] == "Prism White T-Shirt"
        status, error = await fetch(session, services, "catalog", "GET", "/items/999")
        assert status == 404 and "999" in error["error"]

        status, mugs = await fetch(session, services, "catalog", "GET", "/items/type/1")
        assert status == 200 and mugs["count"] == 3
        assert {item["catalog_type"] for item in mugs["data"]} == {"Mug"}
        status, dotnet = await fetch(session, services, "catalog", "GET", "/items/brand/2?size=50")
        assert status == 200 and {item["catalog_brand"] for item in dotnet["data"]} == {".NET"}

        status, types = await fetch(session, services, "catalog", "GET", "/types")
        assert status == 200 and len(types) == 4
        status, brands = await fetch(session, services, "catalog", "GET", "/brands")
        assert status == 200 and len(brands) == 5
        status, _ = await fetch(session, services, "catalog", "GET", "/items?size=0")
        assert status == 400

    run_demo(check)


def test_basket(run_demo: Callable[[Check], None]) -> None:
    async def check(services: DemoServices, session: aiohttp.ClientSession) -> None:
        assert await fetch(session, services, "basket", "GET", "/basket/bob") == (
            200,
            {"buyer_id": "bob", "items": []},
        )
        items = [{"product_id": 1, "quantity": 2}, {"product_id": 2, "unit_price": 1.25}]
        status, basket = await fetch(session, services, "basket", "POST", "/basket/bob", {"items": items})
        assert status == 200
        assert basket["items"] == [
            {"product_id": 1, "quantity": 2, "unit_price": 19.5},
            {"product_id": 2, "quantity": 1, "unit_price": 1.25},
        ]
        assert await fetch(session, services, "basket", "GET", "/basket/bob") == (200, basket)
        with_coupon = {"items": items, "coupon": "DISC10"}
        status, basket = await fetch(session, services, "basket", "POST", "/basket/bob", with_coupon)
        assert (status, basket["coupon"]) == (200, "DISC10")
        assert await fetch(session, services, "basket", "GET", "/basket/bob") == (200, basket)
        status, _ = await fetch(
            session, services, "basket", "POST", "/basket/bob", {"items": [], "coupon": 1}
        )
        assert status == 400
        status, _ = await fetch(
            session, services, "basket", "POST", "/basket/bob", {"items": [{"quantity": 1}]}
        )
        assert status == 400
        assert await fetch(session, services, "basket", "DELETE", "/basket/bob") == (204, None)
        status, _ = await fetch(session, services, "basket", "DELETE", "/basket/bob")
        assert status == 404

    run_demo(check)


def test_discount(run_demo: Callable[[Check], None]) -> None:
    async def check(services: DemoServices, session: aiohttp.ClientSession) -> None:
        assert await fetch(session, services, "discount", "GET", "/coupons/disc10") == (
            200,
            {"code": "DISC10", "discount_percent": 10},
        )
        status, _ = await fetch(session, services, "discount", "GET", "/coupons/FREE")
        assert status == 404

    run_demo(check)


def test_ordering(run_demo: Callable[[Check], None]) -> None:
    async def check(services: DemoServices, session: aiohttp.ClientSession) -> None:
        items = {"items": [{"product_id": 1, "quantity": 2}, {"product_id": 5, "quantity": 1}]}
        await fetch(session, services, "basket", "POST", "/basket/carol", items)

        order_request = {"buyer_id": "carol", "coupon": "BOGUS"}
        status, _ = await fetch(session, services, "ordering", "POST", "/orders", order_request)
        assert status == 400  # unknown coupon; the basket is kept
        order_request["coupon"] = "DISC20"
        status, order = await fetch(session, services, "ordering", "POST", "/orders", order_request)
        assert status == 201
        assert (order["id"], order["buyer_id"], order["coupon"]) == (1, "carol", "DISC20")
        assert (order["subtotal"], order["total"]) == (47.5, 38.0)

        # checking out emptied the basket, so a second order has nothing to order
        status, _ = await fetch(session, services, "ordering", "POST", "/orders", order_request)
        assert status == 400
        status, _ = await fetch(session, services, "ordering", "POST", "/orders", {"coupon": 1})
        assert status == 400

        assert await fetch(session, services, "ordering", "GET", "/orders/1") == (200, order)
        status, _ = await fetch(session, services, "ordering", "GET", "/orders/2")
        assert status == 404
        assert await fetch(session, services, "ordering", "GET", "/orders") == (200, [order])
        assert await fetch(session, services, "ordering", "GET", "/orders?buyer_id=dan") == (
            200,
            [],
        )

    run_demo(check)


def test_gateway_config_maps_public_paths() -> None:
    ports = {name: 10001 + index for index, name in enumerate(SERVICE_NAMES)}
    config = load_config(CONFIG_PATH, env=port_env(ports))
    assert [(listener.name, listener.host, listener.port) for listener in config.listeners] == [
        ("public", "127.0.0.1", 8080),
        ("public-tls", "127.0.0.1", 8443),
        ("mobile", "127.0.0.1", 8081),
    ]
    tls = config.listeners[1].tls
    assert tls is not None and [(c.cert, c.key) for c in tls.certificates] == [
        ("demo-cert.pem", "demo-key.pem")
    ]
    for name, port in ports.items():
        assert [(t.host, t.port) for t in config.upstreams[name].targets] == [("127.0.0.1", port)]
    routes = {route.id: route for route in config.routes}
    assert routes["catalog-rest"].path == "/api/catalog/{*rest}"
    assert any(route.rewrite for route in config.routes)
    assert any(route.strip_prefix for route in config.routes)
    dashboard = routes["dashboard"].aggregate
    assert dashboard is not None
    assert [(b.key, b.upstream, b.required) for b in dashboard.backends] == [
        ("featured", "catalog", True),
        ("basket", "basket", True),
        ("discount", "discount", False),
    ]

    # Backends for frontends: web-only, mobile-only and shared routes; the live basket on both.
    web, mobile = ("public", "public-tls"), ("mobile",)
    assert routes["catalog-items"].listeners == web and routes["mobile-catalog-items"].listeners == mobile
    assert routes["basket-live"].listeners == () and routes["basket-live"].upgrade == ("websocket",)

    bound = load_config(CONFIG_PATH, env={**port_env(ports), "FASTGW_DEMO_BIND": "127.0.0.1:0"})
    assert (bound.listeners[0].host, bound.listeners[0].port) == ("127.0.0.1", 0)


def test_registry_mode_follows_etcd_with_the_same_listeners_and_routes(tmp_path: Path) -> None:
    ports = {name: 10001 + index for index, name in enumerate(SERVICE_NAMES)}
    listeners = listener_env(tmp_path)
    static = load_config(CONFIG_PATH, env={**port_env(ports), **listeners})
    document = yaml.safe_load(Path(CONFIG_PATH).read_text())
    # No port variable: every static target is gone, the registry is the only source of targets.
    config = parse_config(registry_document(document, "http://127.0.0.1:2379"), "registry", env=listeners)
    compile_plan(config)  # what fastgw check does after parsing
    assert config.listeners == static.listeners and config.routes == static.routes
    etcd = config.registries.etcd
    assert etcd is not None and etcd.endpoints == ("http://127.0.0.1:2379",)
    for name in SERVICE_NAMES:
        upstream = config.upstreams[name]
        assert upstream.targets == () and upstream.discovery is not None
        assert (upstream.discovery.provider, upstream.discovery.service) == ("etcd", service_prefix(name))
        assert instance_key(name, "127.0.0.1", 10001).startswith(service_prefix(name))
    assert config.upstreams["basket"].balance == static.upstreams["basket"].balance  # the other keys stay


def test_live_basket_pushes_each_change(run_demo: Callable[[Check], None]) -> None:
    async def check(services: DemoServices, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(services.url("basket") + "/basket/dana/live") as live:
            assert await live.receive_json(timeout=10) == {"buyer_id": "dana", "items": []}
            items = [{"product_id": 1, "quantity": 2}]
            status, _ = await fetch(session, services, "basket", "POST", "/basket/dana", {"items": items})
            assert status == 200
            update = await live.receive_json(timeout=10)
            assert [(line["product_id"], line["quantity"]) for line in update["items"]] == [(1, 2)]
            assert await fetch(session, services, "basket", "DELETE", "/basket/dana") == (204, None)
            assert (await live.receive_json(timeout=10))["items"] == []

    run_demo(check)


def test_demo_urls() -> None:
    urls = demo_urls("http://127.0.0.1:9999/")
    assert all("http://127.0.0.1:9999/api/" in url for url in urls)
    assert any(url.startswith("curl -X POST") and "/api/orders" in url for url in urls)
    assert not any(url.endswith(("/999", "/orders/1")) for url in urls if url.startswith("http"))


def test_standalone_main_prints_ports_and_stops_on_sigterm() -> None:
    source_root = os.path.dirname(os.path.dirname(fastgw.__file__))
    env = {**os.environ, "PYTHONPATH": source_root, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastgw.demo.services"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        ports = dict(part.split("=") for part in line)
        assert sorted(ports) == sorted(SERVICE_NAMES)
        assert all(port.isdigit() for port in ports.values())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mobile_and_live_urls() -> None:
    assert all(url.startswith("http://127.0.0.1:9998/api/") for url in mobile_urls("http://127.0.0.1:9998"))
    assert live_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/api/basket/alice/live"
    assert live_url("https://127.0.0.1:8443/", "bob") == "wss://127.0.0.1:8443/api/basket/bob/live"
