"""A plain aiohttp reverse proxy: what Python users write today. One process, keep-alive pool.

``python aiohttp_proxy.py LISTEN_PORT UPSTREAM_PORT``
"""

from __future__ import annotations

import sys

from aiohttp import ClientSession, TCPConnector, web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def main() -> None:
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    base = f"http://127.0.0.1:{upstream}"

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=0, keepalive_timeout=60))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with request.app["session"].request(
            request.method, base + request.path_qs, headers=headers, data=body
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
            return web.Response(status=resp.status, body=payload, headers=out)

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=listen, print=None, access_log=None)


if __name__ == "__main__":
    main()
