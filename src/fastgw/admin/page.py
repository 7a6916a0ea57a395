"""The status page and the data it polls, beside the admin API (``admin/api.py`` mounts them).

    GET /             the page (``status.html``), its script (``/status.js``): no token needed,
                      they hold no data; everything below needs the admin token when one is set
    GET /series       the graphs' points (``observe/timeseries.py``): ``?since=T`` (Unix time)
                      returns only the points taken after T, so the page asks each second for
                      what is new and keeps its own 15 minutes
    GET /targets      every upstream target's state (``observe/targets.py``), with its latency
                      average and pool connections from the last sample
    GET /errors       the recent 5xx, refusals and client aborts (``observe/recent_errors.py``)
    GET /config       (``admin/api.py``) the running configuration's revision, when and how it
                      was loaded, the reload counts and the last failures with their key paths
    GET /match        ``?method=GET&url=http://host/path`` and ``header=Name: value`` (repeated):
                      which route that request would take and why, as ``fastgw routes --match``

The page is plain HTML, CSS and a script drawing its graphs as SVG: nothing from elsewhere (its
Content-Security-Policy allows only this origin), nothing to build.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources

from aiohttp import web

from fastgw.errors import ClientFault
from fastgw.explain import explain_match, parse_header
from fastgw.observe.metrics import samples_by
from fastgw.observe.recent_errors import RING_SIZE
from fastgw.observe.timeseries import EWMA_DECAY, Sampler
from fastgw.server.control import Control

ASSETS = {"/": ("status.html", "text/html"), "/status.js": ("status.js", "text/javascript")}
# Only this origin: the page works offline and cannot be made to load anything from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
)


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def asset(request: web.Request) -> web.Response:
    name, content_type = ASSETS[request.path]
    text = resources.files("fastgw.admin").joinpath(name).read_text(encoding="utf-8")
    response = web.Response(text=text, content_type=content_type)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"  # a new version shows after an upgrade
    return response


class StatusPage:
    """The page's data endpoints over one control, and the sampler behind its graphs."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.sampler = Sampler(control.families)

    def mount(self, app: web.Application) -> None:
        """Add the page and its endpoints to the admin app; sample while it runs."""
        app.cleanup_ctx.append(self._sampling)
        for path in ASSETS:
            app.router.add_get(path, asset)
        app.router.add_get("/series", self.series)
        app.router.add_get("/targets", self.targets)
        app.router.add_get("/errors", self.errors)
        app.router.add_get("/match", self.match)

    async def _sampling(self, app: web.Application) -> AsyncIterator[None]:
        """Sample while the admin listener runs (aiohttp's cleanup context)."""
        task = asyncio.get_running_loop().create_task(self.sampler.run(), name="status page sampler")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def series(self, request: web.Request) -> web.Response:
        sampler = self.sampler
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return _json({"error": "since: expected a Unix time in seconds, e.g. since=1700000000.5"}, 400)
        return _json(
            {
                "period": sampler.period,
                "spacing": sampler.spacing,
                "window": sampler.window,
                "points": sampler.since(since),
            }
        )

    async def targets(self, request: web.Request) -> web.Response:
        sampler = self.sampler
        rows = await self.control.targets()
        pools: dict[str, dict[str, int]] = {}
        if sampler.latest is not None:
            for labels, value in samples_by(sampler.latest, "fastgw_upstream_connections").items():
                named = dict(labels)
                pools.setdefault(named["target"], {})[named["state"]] = int(value)
        for row in rows:
            average = sampler.target_latency.get((row["upstream"], row["target"]))
            row["latency_ewma_ms"] = round(average * 1000.0, 3) if average is not None else None
            row["pool"] = pools.get(row["target"], {})
        return _json({"targets": rows, "latency_decay_seconds": EWMA_DECAY})

    async def errors(self, request: web.Request) -> web.Response:
        entries = await self.control.recent_errors()
        return _json({"errors": entries, "kept_per_process": RING_SIZE})

    async def match(self, request: web.Request) -> web.Response:
        method = request.query.get("method", "GET").strip() or "GET"
        url = request.query.get("url", "").strip()
        if not url:
            return _json(
                {"error": 'expected ?url=http://host/path (with method= and header="Name: value")'}, 400
            )
        try:
            headers = [parse_header(line) for line in request.query.getall("header", [])]
        except ValueError as exc:
            return _json({"error": f"header: {exc}"}, 400)
        try:
            lines, found = explain_match(self.control.plan(), f"{method} {url}", headers)
        except (ValueError, ClientFault) as exc:
            return _json({"error": f"cannot explain {method} {url}: {exc}"}, 400)
        return _json({"request": f"{method} {url}", "matched": found, "lines": lines})
