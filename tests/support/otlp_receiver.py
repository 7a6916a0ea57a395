"""A real OTLP/HTTP trace receiver for the gateway's tests: it records what collectors would get.

Run it: ``python tests/support/otlp_receiver.py --port N [--hang]`` (port 0 picks a free one); it
prints ``listening <port>`` when ready and stops on SIGTERM/SIGINT.

- ``POST /v1/traces`` with ``Content-Type: application/json``: an ExportTraceServiceRequest in
  the OTLP JSON encoding. It is checked as a collector would (resourceSpans / scopeSpans / spans,
  hex ids of the right length, enums as integers) and answered ``{}``; anything else is 400
  (415 for another content type). With ``--hang`` it is never answered (a stuck collector).
- ``GET /spans``: every span received so far, as received, plus ``resource`` (the resource's
  attributes as a plain mapping) and ``attrs`` (the span's attributes as a plain mapping).
- ``GET /exports``: one entry per export request: {spans, headers (lower-cased names)}.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from typing import Any

from aiohttp import web

_HEX = {"traceId": re.compile(r"[0-9a-f]{32}"), "spanId": re.compile(r"[0-9a-f]{16}")}


def _plain(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP KeyValues as {key: value}: stringValue as str, intValue (a string in JSON) as int."""
    plain: dict[str, Any] = {}
    for attribute in attributes:
        [(kind, value)] = attribute["value"].items()
        plain[attribute["key"]] = int(value) if kind == "intValue" else value
    return plain


def _check_span(span: dict[str, Any]) -> str | None:
    for key, pattern in _HEX.items():
        if not isinstance(span.get(key), str) or not pattern.fullmatch(span[key]):
            return f"{key} is not lower-case hex of the right length: {span.get(key)!r}"
    if "parentSpanId" in span and not _HEX["spanId"].fullmatch(span["parentSpanId"]):
        return f"parentSpanId: {span['parentSpanId']!r}"
    if not isinstance(span.get("kind"), int):
        return "kind must be an integer"
    if not int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"]):
        return "the span ends before it starts"
    return None


class Receiver:
    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.spans: list[dict[str, Any]] = []
        self.exports: list[dict[str, Any]] = []

    async def traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.json_response({"error": "expected application/json"}, status=415)
        if self.hang:
            await asyncio.Event().wait()
        try:
            document = await request.json()
            received = []
            for resource_spans in document["resourceSpans"]:
                resource = _plain(resource_spans["resource"]["attributes"])
                for scope_spans in resource_spans["scopeSpans"]:
                    for span in scope_spans["spans"]:
                        problem = _check_span(span)
                        if problem is not None:
                            return web.json_response({"error": problem}, status=400)
                        received.append({**span, "resource": resource, "attrs": _plain(span["attributes"])})
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"malformed export request: {exc!r}"}, status=400)
        self.spans += received
        self.exports.append(
            {"spans": len(received), "headers": {k.lower(): v for k, v in request.headers.items()}}
        )
        return web.json_response({})

    async def list_spans(self, request: web.Request) -> web.Response:
        return web.json_response(self.spans)

    async def list_exports(self, request: web.Request) -> web.Response:
        return web.json_response(self.exports)


async def _run(host: str, port: int, hang: bool) -> None:
    receiver = Receiver(hang)
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.traces)
    app.router.add_get("/spans", receiver.list_spans)
    app.router.add_get("/exports", receiver.list_exports)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening {bound}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OTLP/HTTP JSON trace receiver for fastgw's tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--hang", action="store_true", help="never answer export requests")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.host, args.port, args.hang))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
