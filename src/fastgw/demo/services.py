"""The bundled demo: four small e-commerce services in the style of eShopOnContainers.

Each service is an aiohttp app on its own free port, speaking JSON (orjson), answering
``GET /health``, and tagging every response (errors included) with ``X-Demo-Service: <name>``
so one can see behind the gateway which service answered.

- catalog:  ``GET /items?page=&size=``, ``GET /items/{id}`` (404 if unknown),
            ``GET /items/type/{type_id}``, ``GET /items/brand/{brand_id}``, ``GET /types``,
            ``GET /brands``
- basket:   ``GET|POST|DELETE /basket/{buyer}``; POST replaces the basket with
            ``{"items": [{"product_id", "quantity", "unit_price"?}], "coupon"?}``; state is in memory;
            ``GET /basket/{buyer}/live`` is a WebSocket: the basket as a JSON text message at once,
            and again each time it changes (live basket updates)
- discount: ``GET /coupons/{code}`` (404 if unknown)
- ordering: ``POST /orders`` with ``{"buyer_id", "coupon"?}`` checks out the buyer's basket (it
            asks the basket and discount services over HTTP, then empties the basket);
            ``GET /orders?buyer_id=``, ``GET /orders/{id}``

``python -m fastgw.demo.services`` runs them standalone: it prints one line
``catalog=PORT basket=PORT discount=PORT ordering=PORT`` and serves until SIGTERM or SIGINT. With
``--registry URL`` (an etcd) each service first registers its address there, under a lease kept
alive while it runs (``fastgw.demo.registration``); a second such process adds a second instance
of each service to a gateway in registry mode. The ordering service calls the basket and discount
services of its own process directly.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

__all__ = ["SERVICE_NAMES", "DemoServices", "main", "start_services"]

SERVICE_NAMES = ("catalog", "basket", "discount", "ordering")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _read_json(request: web.Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _new_app(name: str, routes: list[web.RouteDef]) -> web.Application:
    """An app answering ``/health`` and ``routes``, with JSON errors tagged with ``name``."""

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.empty_body or error.status < 400:
                raise
            return _error(error.status, error.reason)

    async def tag(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Demo-Service"] = name

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "ok", "service": name})

    app = web.Application(middlewares=[json_errors])
    app.on_response_prepare.append(tag)
    app.add_routes([web.get("/health", health), *routes])
    return app


# -- catalog -------------------------------------------------------------------------------------

CATALOG_TYPES = {1: "Mug", 2: "T-Shirt", 3: "Sheet", 4: "USB Memory Stick"}
CATALOG_BRANDS = {1: "Azure", 2: ".NET", 3: "Visual Studio", 4: "SQL Server", 5: "Other"}
_CATALOG_ROWS = [
    # id, name, price, type, brand, stock
    (1, ".NET Bot Black Hoodie", 19.5, 2, 2, 100),
    (2, ".NET Black & White Mug", 8.5, 1, 2, 89),
    (3, "Prism White T-Shirt", 12.0, 2, 5, 56),
    (4, ".NET Foundation T-shirt", 12.0, 2, 2, 120),
    (5, "Roslyn Red Sheet", 8.5, 3, 5, 55),
    (6, ".NET Blue Hoodie", 12.0, 2, 2, 17),
    (7, "Roslyn Red T-Shirt", 12.0, 2, 5, 8),
    (8, "Kudu Purple Hoodie", 8.5, 2, 5, 34),
    (9, "Cup<T> White Mug", 12.0, 1, 5, 76),
    (10, ".NET Foundation Sheet", 12.0, 3, 2, 11),
    (11, "Cup<T> Sheet", 8.5, 3, 2, 3),
    (12, "Prism White TShirt", 12.0, 2, 5, 0),
    (13, "Azure Functions USB Stick", 15.0, 4, 1, 42),
    (14, "Visual Studio Mug", 9.0, 1, 3, 25),
    (15, "SQL Server Sheet", 7.5, 3, 4, 60),
]
CATALOG_ITEMS: dict[int, dict[str, object]] = {
    item_id: {
        "id": item_id,
        "name": name,
        "price": price,
        "catalog_type_id": type_id,
        "catalog_type": CATALOG_TYPES[type_id],
        "catalog_brand_id": brand_id,
        "catalog_brand": CATALOG_BRANDS[brand_id],
        "available_stock": stock,
    }
    for item_id, name, price, type_id, brand_id, stock in _CATALOG_ROWS
}


def _page(request: web.Request, items: list[dict[str, object]]) -> web.Response:
    """``?page=`` (from 0) and ``?size=`` (1..50, default 10) over ``items``."""
    try:
        page = int(request.query.get("page", "0"))
        size = int(request.query.get("size", "10"))
    except ValueError:
        return _error(400, "page and size must be integers")
    if page < 0 or not 1 <= size <= 50:
        return _error(400, "page must be >= 0 and size from 1 to 50")
    data = items[page * size : (page + 1) * size]
    return _json({"page": page, "size": size, "count": len(items), "data": data})


async def _catalog_items(request: web.Request) -> web.Response:
    return _page(request, list(CATALOG_ITEMS.values()))


async def _catalog_item(request: web.Request) -> web.Response:
    item = CATALOG_ITEMS.get(int(request.match_info["id"]))
    if item is None:
        return _error(404, f"no catalog item {request.match_info['id']}")
    return _json(item)


def _catalog_filter(key: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        wanted = int(request.match_info["ref"])
        return _page(request, [item for item in CATALOG_ITEMS.values() if item[key] == wanted])

    return handler


async def _catalog_types(request: web.Request) -> web.Response:
    return _json([{"id": k, "type": v} for k, v in CATALOG_TYPES.items()])


async def _catalog_brands(request: web.Request) -> web.Response:
    return _json([{"id": k, "brand": v} for k, v in CATALOG_BRANDS.items()])


def catalog_app() -> web.Application:
    return _new_app(
        "catalog",
        [
            web.get("/items", _catalog_items),
            web.get(r"/items/{id:\d+}", _catalog_item),
            web.get(r"/items/type/{ref:\d+}", _catalog_filter("catalog_type_id")),
            web.get(r"/items/brand/{ref:\d+}", _catalog_filter("catalog_brand_id")),
            web.get("/types", _catalog_types),
            web.get("/brands", _catalog_brands),
        ],
    )


# -- basket --------------------------------------------------------------------------------------


def _basket_items(data: dict[str, Any]) -> list[dict[str, object]] | None:
    """The validated ``items`` of a basket update, or None when they are malformed."""
    items = data.get("items")
    if not isinstance(items, list):
        return None
    clean: list[dict[str, object]] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        product_id, quantity = item.get("product_id"), item.get("quantity", 1)
        if type(product_id) is not int or type(quantity) is not int or quantity < 1:
            return None
        catalog_item = CATALOG_ITEMS.get(product_id)
        default_price = catalog_item["price"] if catalog_item else 0.0
        price = item.get("unit_price", default_price)
        if not isinstance(price, (int, float)) or isinstance(price, bool) or price < 0:
            return None
        clean.append({"product_id": product_id, "quantity": quantity, "unit_price": price})
    return clean


def basket_app() -> web.Application:
    baskets: dict[str, list[dict[str, object]]] = {}
    coupons: dict[str, str] = {}  # the coupon a buyer put in the basket, if any
    watchers: dict[str, set[web.WebSocketResponse]] = {}  # live connections, by buyer

    def basket(buyer: str) -> dict[str, object]:
        coupon = coupons.get(buyer)
        return {"buyer_id": buyer, "items": baskets.get(buyer, []), **({"coupon": coupon} if coupon else {})}

    async def changed(buyer: str) -> None:
        """Push the buyer's basket to every live connection watching it."""
        message = orjson.dumps(basket(buyer)).decode()
        for ws in list(watchers.get(buyer, ())):
            if not ws.closed:
                await ws.send_str(message)

    async def live_basket(request: web.Request) -> web.WebSocketResponse:
        buyer = request.match_info["buyer"]
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        watchers.setdefault(buyer, set()).add(ws)
        try:
            await ws.send_str(orjson.dumps(basket(buyer)).decode())
            async for _ in ws:  # what the client sends is not asked for: read until it closes
                pass
        finally:
            watchers[buyer].discard(ws)
        return ws

    async def get_basket(request: web.Request) -> web.Response:
        return _json(basket(request.match_info["buyer"]))

    async def update_basket(request: web.Request) -> web.Response:
        buyer = request.match_info["buyer"]
        data = await _read_json(request)
        items = _basket_items(data) if data is not None else None
        coupon = data.get("coupon") if data is not None else None
        if items is None or not (coupon is None or isinstance(coupon, str)):
            return _error(400, 'expected {"items": [{"product_id": int, "quantity": int}], "coupon"?: str}')
        baskets[buyer] = items
        if coupon:
            coupons[buyer] = coupon
        else:
            coupons.pop(buyer, None)
        await changed(buyer)
        return _json(basket(buyer))

    async def delete_basket(request: web.Request) -> web.Response:
        buyer = request.match_info["buyer"]
        coupons.pop(buyer, None)
        if baskets.pop(buyer, None) is None:
            return _error(404, "no basket for this buyer")
        await changed(buyer)
        return web.Response(status=204)

    return _new_app(
        "basket",
        [
            web.get("/basket/{buyer}", get_basket),
            web.post("/basket/{buyer}", update_basket),
            web.delete("/basket/{buyer}", delete_basket),
            web.get("/basket/{buyer}/live", live_basket),
        ],
    )


# -- discount ------------------------------------------------------------------------------------

COUPONS: dict[str, int] = {"DISC10": 10, "DISC20": 20, "WELCOME5": 5}  # code -> percent off


async def _coupon(request: web.Request) -> web.Response:
    code = request.match_info["code"].upper()
    percent = COUPONS.get(code)
    if percent is None:
        return _error(404, f"unknown coupon {code}")
    return _json({"code": code, "discount_percent": percent})


def discount_app() -> web.Application:
    return _new_app("discount", [web.get("/coupons/{code}", _coupon)])


# -- ordering ------------------------------------------------------------------------------------


def ordering_app(basket_url: str, discount_url: str) -> web.Application:
    orders: dict[int, dict[str, object]] = {}
    client_key = web.AppKey("client", aiohttp.ClientSession)

    async def client_session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            app[client_key] = session
            yield

    async def create_order(request: web.Request) -> web.Response:
        data = await _read_json(request)
        buyer = data.get("buyer_id") if data is not None else None
        coupon = data.get("coupon") if data is not None else None
        if not isinstance(buyer, str) or not buyer or not isinstance(coupon, (str, type(None))):
            return _error(400, 'expected {"buyer_id": str, "coupon": str (optional)}')
        session = request.app[client_key]
        try:
            async with session.get(f"{basket_url}/basket/{buyer}") as reply:
                items = (await reply.json(loads=orjson.loads))["items"]
            if not items:
                return _error(400, f"the basket of {buyer} is empty")
            percent = 0
            if coupon:
                async with session.get(f"{discount_url}/coupons/{coupon}") as reply:
                    if reply.status == 404:
                        return _error(400, f"unknown coupon {coupon}")
                    percent = (await reply.json(loads=orjson.loads))["discount_percent"]
            async with session.delete(f"{basket_url}/basket/{buyer}"):
                pass
        except (TimeoutError, aiohttp.ClientError, KeyError, ValueError) as error:
            return _error(502, f"basket or discount service failed: {error!r}")
        subtotal = sum(item["unit_price"] * item["quantity"] for item in items)
        order_id = len(orders) + 1
        order: dict[str, object] = {
            "id": order_id,
            "buyer_id": buyer,
            "items": items,
            "coupon": coupon.upper() if coupon else None,
            "subtotal": round(subtotal, 2),
            "total": round(subtotal * (100 - percent) / 100, 2),
            "status": "submitted",
        }
        orders[order_id] = order
        return _json(order, 201)

    async def list_orders(request: web.Request) -> web.Response:
        buyer = request.query.get("buyer_id")
        return _json([o for o in orders.values() if buyer is None or o["buyer_id"] == buyer])

    async def get_order(request: web.Request) -> web.Response:
        order = orders.get(int(request.match_info["id"]))
        if order is None:
            return _error(404, f"no order {request.match_info['id']}")
        return _json(order)

    app = _new_app(
        "ordering",
        [
            web.post("/orders", create_order),
            web.get("/orders", list_orders),
            web.get(r"/orders/{id:\d+}", get_order),
        ],
    )
    app.cleanup_ctx.append(client_session)
    return app


# -- running them --------------------------------------------------------------------------------


@dataclass(slots=True)
class DemoServices:
    """The running services: ``ports`` by service name; ``close()`` stops them all."""

    host: str
    ports: dict[str, int] = field(default_factory=dict)
    _runners: list[web.AppRunner] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    async def close(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()


async def _serve(services: DemoServices, name: str, app: web.Application) -> None:
    sock = socket.socket(socket.AF_INET6 if ":" in services.host else socket.AF_INET)
    sock.bind((services.host, 0))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    services._runners.append(runner)
    await web.SockSite(runner, sock).start()
    services.ports[name] = sock.getsockname()[1]


async def start_services(host: str = "127.0.0.1") -> DemoServices:
    """Start catalog, basket, discount and ordering on free ports of ``host`` in this loop."""
    services = DemoServices(host)
    try:
        await _serve(services, "catalog", catalog_app())
        await _serve(services, "basket", basket_app())
        await _serve(services, "discount", discount_app())
        await _serve(services, "ordering", ordering_app(services.url("basket"), services.url("discount")))
    except BaseException:
        await services.close()
        raise
    return services


async def _run(host: str, registry: str | None, lease_ttl: int) -> int:
    services = await start_services(host)
    registration = None
    if registry is not None:
        from fastgw.demo.registration import Registration
        from fastgw.etcd import EtcdError

        registration = Registration(registry, lease_ttl)
        try:
            await registration.register(host, services.ports)
        except EtcdError as error:
            print(f"demo services: cannot register in etcd at {registry}: {error}", file=sys.stderr)
            await registration.close()
            await services.close()
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(" ".join(f"{name}={port}" for name, port in services.ports.items()), flush=True)
    try:
        await stop.wait()
    finally:
        if registration is not None:  # out of etcd first: no gateway sends to a closing service
            await registration.close()
        await services.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the four services until SIGTERM or SIGINT; ``--host`` defaults to 127.0.0.1. With
    ``--registry URL`` each registers its address in that etcd (``fastgw.demo.registration``)."""
    import argparse

    from fastgw.demo.registration import DEFAULT_LEASE_TTL

    parser = argparse.ArgumentParser(prog="python -m fastgw.demo.services")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--registry", metavar="URL", help="etcd to register in, e.g. http://127.0.0.1:2379")
    parser.add_argument(
        "--lease-ttl", type=int, default=DEFAULT_LEASE_TTL, metavar="SECONDS",
        help=f"how long a dead service stays registered (default {DEFAULT_LEASE_TTL})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.lease_ttl < 1:
        parser.error("--lease-ttl must be at least 1 (seconds)")
    return asyncio.run(_run(args.host, args.registry, args.lease_ttl))


if __name__ == "__main__":
    raise SystemExit(main())
