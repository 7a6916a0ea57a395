"""A JWKS endpoint for the jwt plugin's tests: a small aiohttp app run as its own process.

``python tests/support/jwks_server.py --port N`` prints ``listening <port>`` when ready.

- ``GET /jwks.json``: the current JWK Set (at first ``{"keys": []}``), counted as a fetch; or the
  status set by ``/fail``, after the delay set by ``/delay``
- ``PUT /jwks.json``: replace the set (rotation) with the JSON body
- ``POST /fail/{status}``: answer fetches with that status (0: serve the set again)
- ``POST /delay/{ms}``: wait that long before answering a fetch
- ``GET /stats``: ``{"fetches": N}``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import urllib.request
from typing import Any

from aiohttp import web

__all__ = ["JwksControl"]


def make_app() -> web.Application:
    state: dict[str, Any] = {"jwks": {"keys": []}, "fetches": 0, "fail": 0, "delay": 0.0}

    async def get_jwks(request: web.Request) -> web.Response:
        state["fetches"] += 1
        if state["delay"]:
            await asyncio.sleep(state["delay"])
        if state["fail"]:
            return web.Response(status=state["fail"], text="failing on purpose")
        return web.json_response(state["jwks"])

    async def put_jwks(request: web.Request) -> web.Response:
        state["jwks"] = await request.json()
        return web.json_response({"ok": True})

    async def fail(request: web.Request) -> web.Response:
        state["fail"] = int(request.match_info["status"])
        return web.json_response({"ok": True})

    async def delay(request: web.Request) -> web.Response:
        state["delay"] = int(request.match_info["ms"]) / 1000
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"fetches": state["fetches"]})

    app = web.Application()
    app.router.add_get("/jwks.json", get_jwks)
    app.router.add_put("/jwks.json", put_jwks)
    app.router.add_post("/fail/{status}", fail)
    app.router.add_post("/delay/{ms}", delay)
    app.router.add_get("/stats", stats)
    return app


class JwksControl:
    """The test's side: set the keys, make fetches fail or slow, count them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/jwks.json"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def set_keys(self, jwks: dict[str, Any]) -> None:
        self._call("PUT", "/jwks.json", jwks)

    def fail(self, status: int) -> None:
        self._call("POST", f"/fail/{status}")

    def delay(self, ms: int) -> None:
        self._call("POST", f"/delay/{ms}")

    @property
    def fetches(self) -> int:
        return int(self._call("GET", "/stats")["fetches"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def serve() -> None:
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening {port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
