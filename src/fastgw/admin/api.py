"""The admin API, on its own listener (aiohttp), never on the data path.

    GET  /healthz     liveness: {"status": "ok"}                         (no token needed)
    GET  /readyz      200 {"status": "ready"} once listening, 503 while starting or draining
    GET  /routes      the loaded routes, with request counts by status class
    GET  /upstreams   the loaded upstreams and their targets (discovered ones included, with the
                      registry entry each came from): in rotation, pool connections; and per
                      upstream with discovery, its registry's state (healthy, stale seconds,
                      last success, last error)
    GET  /metrics     Prometheus text format
    GET  /config      where the configuration comes from, the revision running (an etcd key's,
                      or a file's SHA-256 as "digest"), when and by what it was loaded, the last
                      reload's outcome and the revision it refused, if any, the last failed
                      reloads with their key paths
    POST /reload      reload the config file: 200 {"ok": true, ...} or 400 {"ok": false, "error"}
    POST /cache/purge {"key": "host/path?query"} or {"prefix": "host/path/"}: the cached responses
                      under that base key (every variant) or key prefix, in every worker and
                      Redis cache: 200 {"ok": true, "purged": n}; 503 {"ok": false, "error"}
                      when a Redis cache could not be reached; 400 for a body that is not that
    GET  /            the status page; its data: /series, /targets, /errors, /config, /match
                      (``admin/page.py``)

Answers are JSON (``/metrics`` and the page aside); an unknown path is a JSON 404, a wrong
method a JSON 405. When ``admin.token`` is set every endpoint but ``/healthz``, ``/readyz`` and
the page's own files needs ``Authorization: Bearer TOKEN`` (the scheme in any case); otherwise
401 with ``WWW-Authenticate: Bearer realm="fastgw-admin"`` (RFC 6750, with ``error="invalid_token"`` for a
wrong token). The page asks for the token and sends it with its own requests.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from fastgw.admin.page import ASSETS, StatusPage
from fastgw.config.schema import AdminConfig
from fastgw.observe.metrics import Families, render, samples_by
from fastgw.server.control import Control

log = logging.getLogger("fastgw")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/healthz", "/readyz", *ASSETS})  # the page's files hold no data
REALM = "fastgw-admin"  # of the Bearer challenge a 401 carries
CONTROL: web.AppKey[Control] = web.AppKey("control")


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _refuse_token(authorization: str | None, token: str) -> web.Response | None:
    """None when ``authorization`` carries the admin token, else the 401 to send.

    The scheme name is case-insensitive (RFC 9110 section 11.1: ``bearer`` and ``BEARER`` are
    ``Bearer``). The challenge follows RFC 6750 section 3: no error code when no bearer token was
    sent (none at all, or another scheme), ``invalid_request`` for an empty one,
    ``invalid_token`` for a wrong one."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    given = credentials.strip()
    if scheme.lower() == "bearer" and given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    if scheme.lower() != "bearer":
        error, message = None, "missing admin token (Authorization: Bearer ...)"
    elif not given:
        error, message = "invalid_request", "empty admin token (Authorization: Bearer ...)"
    else:
        error, message = "invalid_token", "wrong admin token"
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    response = _json({"error": message}, 401)
    response.headers["WWW-Authenticate"] = challenge
    return response


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    control = request.app[CONTROL]
    admin = control.plan().config.admin
    token = admin.token if admin is not None else None
    if token is not None and request.path not in OPEN_PATHS:
        refusal = _refuse_token(request.headers.get("Authorization"), token)
        if refusal is not None:
            return refusal
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _json({"error": f"no admin endpoint {request.path}"}, 404)
    except web.HTTPMethodNotAllowed as exc:
        return _json(
            {
                "error": f"{request.method} not allowed on {request.path}",
                "allow": sorted(exc.allowed_methods),
            },
            405,
        )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[CONTROL].ready():
        return _json({"status": "ready"})
    return _json({"status": "not ready"}, 503)


async def metrics(request: web.Request) -> web.Response:
    text = render(await request.app[CONTROL].families())
    return web.Response(text=text, content_type="text/plain", headers={"X-Content-Type-Version": "0.0.4"})


async def routes(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    counts = _requests_by_route(await control.families())
    out = []
    for route in control.plan().routes:
        rc = route.config
        by_status = counts.get(rc.id, {})
        out.append(
            {
                "id": rc.id,
                "path": rc.path,
                "methods": list(rc.methods) if rc.methods else None,
                "hosts": list(rc.hosts),
                "listeners": list(rc.listeners),
                "upstream": rc.upstream,
                "plugins": [p.name for p in route.plugins],
                "requests": int(sum(by_status.values())),
                "requests_by_status": by_status,
            }
        )
    return _json({"routes": out})


def _requests_by_route(families: Families) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for labels, value in samples_by(families, "fastgw_requests_total").items():
        named = dict(labels)
        route = counts.setdefault(named["route"], {})
        route[named["status"]] = route.get(named["status"], 0) + int(value)
    return counts


async def upstreams(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    families = await control.families()
    up = {
        dict(k)["target"] + "@" + dict(k)["upstream"]: v
        for k, v in samples_by(families, "fastgw_upstream_target_up").items()
    }
    pools: dict[str, dict[str, int]] = {}
    for labels, value in samples_by(families, "fastgw_upstream_connections").items():
        named = dict(labels)
        pools.setdefault(named["target"], {})[named["state"]] = int(value)
    for name in ("opened", "reused"):
        for labels, value in samples_by(families, f"fastgw_upstream_connections_{name}_total").items():
            pools.setdefault(dict(labels)["target"], {})[name] = int(value)
    # The targets as the serving processes report them: with workers, discovered targets exist
    # only there (the supervisor does not follow registries).
    sources: dict[str, dict[str, str]] = {}
    for labels, _ in samples_by(families, "fastgw_upstream_target_source").items():
        named = dict(labels)
        sources.setdefault(named["upstream"], {})[named["target"]] = named["source"]
    weights = {f"{t.label}@{n}": t.weight for n, g in control.plan().upstreams.items() for t in g.targets}
    out = []
    for name, group in control.plan().upstreams.items():
        listed = sources.get(name) or {t.label: "static" for t in group.targets}
        targets = [
            {
                "target": label,
                "weight": weights.get(f"{label}@{name}"),
                "up": bool(up.get(f"{label}@{name}", 0.0)),
                "source": where,
                "pool": pools.get(label, {}),
            }
            for label, where in listed.items()
        ]
        entry: dict[str, Any] = {"name": name, "balance": group.config.balance.algorithm, "targets": targets}
        if group.config.discovery is not None:
            entry["discovery"] = _discovery_state(families, name, group.config.discovery.describe())
        out.append(entry)
    return _json({"upstreams": out})


def _discovery_state(families: Families, upstream: str, source: str) -> dict[str, Any]:
    """A discovery feed's state as the serving processes report it (the worst of them)."""

    def value(family: str) -> float | None:
        for labels, found in samples_by(families, family).items():
            if dict(labels).get("upstream") == upstream:
                return found
        return None

    errors = [
        (at, dict(labels)["error"])
        for labels, at in samples_by(families, "fastgw_discovery_last_error_timestamp_seconds").items()
        if dict(labels).get("upstream") == upstream
    ]
    stale = value("fastgw_discovery_stale_seconds")
    last_at, last_error = max(errors) if errors else (None, None)
    return {
        "source": source,
        "targets": int(value("fastgw_discovery_targets") or 0),
        "healthy": stale == 0.0,
        "stale_seconds": stale,
        "last_success": value("fastgw_discovery_last_success_timestamp_seconds"),
        "errors": int(value("fastgw_discovery_errors_total") or 0),
        "last_error": last_error,
        "last_error_at": last_at,
    }


async def config_state(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    plan, record = control.plan(), control.reloads
    return _json(
        {
            "source": plan.source,
            "revision": plan.revision,
            "digest": f"sha256:{plan.config.digest}" if plan.config.digest else None,
            "loaded_at": record.loaded_at,
            "loaded_by": record.loaded_by,
            "reloads": {"succeeded": record.succeeded, "failed": record.failed},
            "last_reload_ok": record.last_ok,
            "last_error": record.last_error,
            "rejected_revision": record.rejected_revision,
            "reload_failures": [asdict(failure) for failure in record.failures],
            "listeners": [{"name": name, "bind": lp.bind} for name, lp in plan.listeners.items()],
            "routes": len(plan.routes),
            "upstreams": len(plan.upstreams),
        }
    )


async def reload(request: web.Request) -> web.Response:
    result = await request.app[CONTROL].reload("admin")
    return _json(result, 200 if result.get("ok") else 400)


async def purge_cache(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    selection = body if isinstance(body, dict) else {}
    chosen = [name for name in ("key", "prefix") if name in selection]
    unknown = sorted(set(selection) - {"key", "prefix"})
    value = selection.get(chosen[0]) if len(chosen) == 1 else None
    if unknown or not isinstance(value, str) or not value:
        return _json(
            {
                "ok": False,
                "error": 'expected a JSON object with one non-empty string: {"key": "host/path?query"} '
                'or {"prefix": "host/path/"}',
            },
            400,
        )
    key, prefix = (value, None) if chosen[0] == "key" else (None, value)
    result = await request.app[CONTROL].purge_cache(key, prefix)
    if result["errors"]:
        log.error("cache purge incomplete: %s", "; ".join(result["errors"]))
        error = "could not purge " + "; ".join(result["errors"])
        return _json({"ok": False, "purged": result["purged"], "error": error}, 503)
    return _json({"ok": True, "purged": result["purged"]})


def make_app(control: Control) -> web.Application:
    app = web.Application(middlewares=[_errors_and_auth])
    app[CONTROL] = control
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/routes", routes)
    app.router.add_get("/upstreams", upstreams)
    app.router.add_get("/config", config_state)
    app.router.add_post("/reload", reload)
    app.router.add_post("/cache/purge", purge_cache)
    StatusPage(control).mount(app)
    return app


class AdminServer:
    """The running admin listener."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite) -> None:
        self.runner = runner
        self.site = site

    @property
    def address(self) -> tuple[str, int]:
        server: Any = self.site._server  # aiohttp keeps the asyncio Server here
        host, port = server.sockets[0].getsockname()[:2]
        return host, port

    def sockets(self) -> list[Any]:
        """The listening sockets (a forked worker closes its inherited copies)."""
        server: Any = self.site._server
        return list(server.sockets) if server is not None else []

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_admin(control: Control, config: AdminConfig) -> AdminServer:
    """Listen on ``admin.bind``; logs ``admin API on http://HOST:PORT``."""
    runner = web.AppRunner(make_app(control), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(
            exc.errno, f"admin listener on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    server = AdminServer(runner, site)
    host, port = server.address
    log.info("admin API on http://%s:%d", host if ":" not in host else f"[{host}]", port)
    return server
