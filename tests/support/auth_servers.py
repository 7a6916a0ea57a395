"""Real auth services for the external-authorization plugins' tests, run as child processes.

``python tests/support/auth_servers.py forward --port N`` is a forward-auth service;
``python tests/support/auth_servers.py introspection --port N --client-id ID --client-secret S``
an OAuth 2.0 token introspection endpoint (RFC 7662). Each prints ``listening <port>`` when
ready. Tests steer them and read their counters over HTTP under ``/_control`` (see ``Control``).

Forward auth, ``GET /verify`` decides by the Authorization header:

- ``Bearer allow-<user>``: 200 with ``X-Auth-User: <user>``, ``X-Auth-Roles: reader`` and
  ``X-Unlisted: not-for-upstream``
- ``Bearer redirect``: 302 to ``https://login.example/?next=<X-Forwarded-Uri>`` with two
  Set-Cookie headers
- ``Bearer big``: 403 with a text body of ``BIG_BODY`` bytes
- anything else: 401 with ``WWW-Authenticate: Bearer realm="test"``, ``X-Internal: secret`` and
  the JSON body ``{"reason": "no valid credentials"}``

Introspection, ``POST /introspect``: the client must authenticate (HTTP Basic, or client_id and
client_secret in the form; RFC 6749 2.3.1, form-decoded) or gets 401 ``invalid_client``. A token
set with ``POST /_control/tokens {token: answer}`` is answered with that answer; any other with
``{"active": false}``. ``POST /_control/hold`` makes calls wait until ``/_control/release``.

Both: ``GET /hang`` never answers, ``GET /hang-up`` closes the connection without answering;
``GET /_control/stats`` gives the counters (``calls``, and what the last call carried);
``POST /_control/reset`` forgets everything set and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aiohttp import web

if TYPE_CHECKING:
    from .procs import ProcessReaper

BIG_BODY = 100_000


class State:
    def __init__(self, client_id: str = "", client_secret: str = "") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens: dict[str, dict[str, Any]] = {}
        self.release = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.calls_by_token: dict[str, int] = {}
        self.last_headers: list[list[str]] = []
        self.last_client_auth: str | None = None
        self.rejected_clients = 0
        self.tokens.clear()
        self.release.set()

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "calls_by_token": self.calls_by_token,
            "last_headers": self.last_headers,
            "last_client_auth": self.last_client_auth,
            "rejected_clients": self.rejected_clients,
        }


STATE = web.AppKey("state", State)


def count(request: web.Request) -> State:
    state = request.app[STATE]
    state.calls += 1
    state.last_headers = [[name, value] for name, value in request.headers.items()]
    return state


# -- forward auth --------------------------------------------------------------------------------


async def verify(request: web.Request) -> web.Response:
    count(request)
    credentials = request.headers.get("Authorization", "")
    if credentials.startswith("Bearer allow-"):
        user = credentials.removeprefix("Bearer allow-")
        headers = {"X-Auth-User": user, "X-Auth-Roles": "reader", "X-Unlisted": "not-for-upstream"}
        return web.Response(text="ok", headers=headers)
    if credentials == "Bearer redirect":
        response = web.Response(status=302, text="to the login page")
        response.headers["Location"] = "https://login.example/?next=" + request.headers["X-Forwarded-Uri"]
        response.headers.add("Set-Cookie", "state=abc; HttpOnly")
        response.headers.add("Set-Cookie", "flow=login")
        return response
    if credentials == "Bearer big":
        return web.Response(status=403, text="x" * BIG_BODY)
    headers = {"WWW-Authenticate": 'Bearer realm="test"', "X-Internal": "secret"}
    return web.json_response({"reason": "no valid credentials"}, status=401, headers=headers)


# -- introspection -------------------------------------------------------------------------------


def client_of(request: web.Request, form: Any) -> tuple[str | None, str, str]:
    """(how the client authenticated, client id, secret); RFC 6749 2.3.1."""
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Basic "):
        user_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        return "basic", unquote_plus(user_id), unquote_plus(secret)
    if "client_id" in form:
        return "body", form.get("client_id", ""), form.get("client_secret", "")
    return None, "", ""


async def introspect(request: web.Request) -> web.Response:
    state = count(request)
    form = await request.post()
    method, client_id, secret = client_of(request, form)
    if method is None or (client_id, secret) != (state.client_id, state.client_secret):
        state.rejected_clients += 1
        headers = {"WWW-Authenticate": 'Basic realm="introspection"'}
        return web.json_response({"error": "invalid_client"}, status=401, headers=headers)
    state.last_client_auth = method
    token = str(form.get("token", ""))
    state.calls_by_token[token] = state.calls_by_token.get(token, 0) + 1
    await state.release.wait()
    return web.json_response(state.tokens.get(token, {"active": False}))


async def set_tokens(request: web.Request) -> web.Response:
    request.app[STATE].tokens.update(await request.json())
    return web.json_response({})


async def hold(request: web.Request) -> web.Response:
    request.app[STATE].release.clear()
    return web.json_response({})


async def release(request: web.Request) -> web.Response:
    request.app[STATE].release.set()
    return web.json_response({})


# -- both ----------------------------------------------------------------------------------------


async def hang(request: web.Request) -> web.Response:
    count(request)
    await asyncio.Event().wait()  # until the caller gives up and the connection closes
    return web.Response()


async def hang_up(request: web.Request) -> web.Response:
    count(request)
    assert request.transport is not None
    request.transport.close()  # no answer at all
    await asyncio.Event().wait()
    return web.Response()


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({})


def make_app(kind: str, client_id: str = "", client_secret: str = "") -> web.Application:
    app = web.Application()
    app[STATE] = State(client_id, client_secret)
    app.router.add_get("/hang", hang)
    app.router.add_get("/hang-up", hang_up)
    app.router.add_get("/_control/stats", stats)
    app.router.add_post("/_control/reset", reset)
    if kind == "forward":
        app.router.add_get("/verify", verify)
    else:
        app.router.add_post("/introspect", introspect)
        app.router.add_post("/hang", hang)
        app.router.add_post("/_control/tokens", set_tokens)
        app.router.add_post("/_control/hold", hold)
        app.router.add_post("/_control/release", release)
    return app


class Control:
    """The test's side: steer a running server and read its counters (blocking calls)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def post(self, path: str, doc: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path, data=json.dumps(doc or {}).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_control/stats", timeout=10) as answer:
            result: dict[str, Any] = json.load(answer)
            return result

    def reset(self) -> None:
        self.post("/_control/reset")

    def set_tokens(self, tokens: dict[str, dict[str, Any]]) -> None:
        self.post("/_control/tokens", tokens)


def start_auth_server(processes: ProcessReaper, kind: str, *extra: str) -> Control:
    """This server as a child process of ``processes`` (``kind``: forward or introspection)."""
    from .ports import free_port

    port = free_port()
    processes.start([sys.executable, __file__, kind, "--port", str(port), *extra], ready_line="listening")
    return Control(port)


async def _serve(app: web.Application, port: int) -> None:
    # handler_cancellation: a /hang handler ends when its caller gives up (aiohttp keeps it otherwise)
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening {port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="auth services for fastgw's tests")
    parser.add_argument("kind", choices=["forward", "introspection"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", default="")
    parser.add_argument("--client-secret", default="")
    args = parser.parse_args(argv)

    async def run() -> None:
        await _serve(make_app(args.kind, args.client_id, args.client_secret), args.port)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
