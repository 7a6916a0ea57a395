"""``RateLimitOptions``: two Ocelots, told apart per file by the keys it uses.

Up to 24.0 a route's block is on only with ``EnableRateLimiting: true``; ``Period`` is ``1s``,
``5m``, ``1h`` or ``1d``; after the ``Limit`` the client waits ``PeriodTimespan`` seconds. The
global block only names the client header (``ClientIdHeader``, default ``ClientId``), the refusal
(``QuotaExceededMessage``, ``HttpStatusCode``) and ``DisableRateLimitHeaders``. Counters are per
client header value, request path and method; a request without the header counts as client
``client``.

From 24.1 a block is on whenever it is present (``EnableRateLimiting`` defaults to true); the
global block is a full rule for the routes in its group, merged key by key under the route's;
``Wait`` replaces ``PeriodTimespan`` (a bare number is milliseconds), ``StatusCode`` and
``QuotaMessage`` (formatted with the limit and period) replace their predecessors; the client
header defaults to ``Oc-Client``, counters are per client and route, and a request without the
header is refused with 503.

A file is read as 24.1 when any block uses a key only 24.1 knows (``Wait``, ``StatusCode``,
``QuotaMessage``, ``EnableHeaders``, ``KeyPrefix``, or a global ``Limit``/``Period``/``RouteKeys``),
else as 24.0. fastgw counts a sliding window of ``Period`` per route (per process), keyed by the
client header; it has no ban period.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fastgw.importers.ocelot.global_config import GlobalConfiguration, Layered
from fastgw.importers.ocelot.reading import OcelotObject, Registry
from fastgw.importers.ocelot.report import Report

__all__ = ["is_modern_rate_limiting", "rate_limit_plugin"]

_MODERN_KEYS = {"wait", "statuscode", "quotamessage", "enableheaders", "keyprefix"}
_MODERN_GLOBAL_KEYS = _MODERN_KEYS | {"limit", "period", "routekeys", "enableratelimiting", "clientwhitelist"}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LEGACY_PERIOD = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([dhms])\s*")
_MODERN_PERIOD = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|)\s*", re.IGNORECASE)
_LEGACY_MESSAGE = "API calls quota exceeded! maximum admitted {0} per {1}."
_MODERN_MESSAGE = "API calls quota exceeded! Maximum admitted {0} per {1}."


def _keys_of(value: object) -> set[str]:
    return {str(key).casefold() for key in value} if isinstance(value, dict) else set()


def is_modern_rate_limiting(routes: list[OcelotObject], glob: OcelotObject | None) -> tuple[bool, str]:
    """Whether these routes' file reads as Ocelot 24.1 or later, and what says so."""
    used: set[str] = set()
    for route in routes:
        used |= _keys_of(route.peek("RateLimitOptions")) & _MODERN_KEYS
    if glob is not None:
        used |= _keys_of(glob.peek("RateLimitOptions")) & _MODERN_GLOBAL_KEYS
    if used:
        return True, f"as Ocelot 24.1 and later (the file uses {', '.join(sorted(used))})"
    return False, "as Ocelot 24.0 and earlier (no key only 24.1 knows)"


def _seconds(period: str, modern: bool) -> float | None:
    match = (_MODERN_PERIOD if modern else _LEGACY_PERIOD).fullmatch(period)
    if match is None:
        return None
    unit = match[2].lower() or "ms"
    return float(match[1]) * _UNITS[unit]


def _format(message: str, limit: int, period: str) -> str:
    """.NET's ``string.Format(message, limit, period)`` for the two arguments it is given."""
    return re.sub(r"\{([01])\}", lambda m: str(limit) if m[1] == "0" else period, message)


def rate_limit_plugin(
    route: OcelotObject,
    route_key: str | None,
    ident: str,
    modern: bool,
    glob: GlobalConfiguration,
    registry: Registry,
    report: Report,
) -> dict[str, Any] | None:
    """The route's ``rate_limit`` plugin, or None when it has no (enabled) rate limit."""
    if modern:
        options = glob.options(route, "RateLimitOptions", route_key)
        return _modern(route, ident, options, report)
    own = route.child("RateLimitOptions", registry)
    return _legacy(route, ident, own, glob.section("RateLimitOptions"), report)


def _legacy(
    route: OcelotObject, ident: str, own: OcelotObject | None, glob: OcelotObject | None, report: Report
) -> dict[str, Any] | None:
    if own is None:
        return None
    at = route.at("RateLimitOptions")
    if not own.flag("EnableRateLimiting"):
        for key in ("ClientWhitelist", "Period", "PeriodTimespan", "Limit"):
            own.raw(key)
        report.mapped(
            route.file, at, "EnableRateLimiting is not true: no rate limit (Ocelot 24.0 and earlier)"
        )
        return None
    header = (glob.text("ClientIdHeader") if glob else None) or "ClientId"
    status = (glob.integer("HttpStatusCode") if glob else None) or 429
    message = (glob.text("QuotaExceededMessage") if glob else None) or None
    quiet = bool(glob.flag("DisableRateLimitHeaders")) if glob else False
    if glob is not None:
        glob.raw("RateLimitCounterPrefix")
    period = own.text("Period") or ""
    limit = own.integer("Limit") or 0
    ban = own.number("PeriodTimespan")
    seconds = _seconds(period, modern=False)
    if seconds is None:
        raise own.error("Period", "a period like '1s', '5m', '1h' or '1d'", own.raw("Period"))
    if limit <= 0:
        report.mapped(route.file, at, f"Limit {limit}: Ocelot 24.0 counts nothing; no rate limit")
        return None
    body = message or _LEGACY_MESSAGE.format(limit, period)
    plugin = _plugin(ident, limit, seconds, f"header:{header}", quiet, status, body)
    report.approximated(
        route.file,
        at,
        f"{limit} requests per {period} per {header} header value -> rate_limit (limit {limit}, window"
        f" {plugin['window']}{_rounded(seconds)}), sliding window; counted per route where Ocelot 24.0"
        " counted"
        f" each path and method apart; after the limit Ocelot refused for PeriodTimespan ({ban or 0:g}s)"
        " where"
        " fastgw admits again as the window slides; requests without the header share one counter (as"
        " Ocelot's 'client')",
    )
    _refusal_report(route, at, status, quiet, legacy=True, report=report)
    _whitelist(route, at, own.strings("ClientWhitelist"), header, report)
    return plugin


def _modern(route: OcelotObject, ident: str, options: Layered, report: Report) -> dict[str, Any] | None:
    if not options:
        return None
    at = route.at("RateLimitOptions") + options.where()
    enabled = options.flag("EnableRateLimiting")
    if enabled is False:
        report.mapped(route.file, at, "EnableRateLimiting false: no rate limit")
        return None
    header = options.text("ClientIdHeader") or "Oc-Client"
    period = options.text("Period") or "1s"
    limit = options.integer("Limit")
    old_wait = options.number("PeriodTimespan")
    wait = f"{old_wait:g}s" if old_wait is not None else options.text("Wait")
    old_status = options.integer("HttpStatusCode")
    status = old_status if old_status is not None else options.integer("StatusCode") or 429
    message = options.text("QuotaExceededMessage") or options.text("QuotaMessage") or _MODERN_MESSAGE
    old_quiet = options.flag("DisableRateLimitHeaders")
    quiet = old_quiet if old_quiet is not None else options.flag("EnableHeaders") is False
    options.text("RateLimitCounterPrefix")
    options.text("KeyPrefix")
    options.strings("RouteKeys")
    seconds = _seconds(period, modern=True)
    if seconds is None or seconds <= 0:
        found = options.source("Period") or route
        raise found.error("Period", "a period like '500ms', '1s', '5m', '1h' or '1d'", period)
    if limit is None or limit <= 0:
        report.unsupported(route.file, at, "no Limit: Ocelot refuses to start without one; no rate limit")
        return None
    whitelist = options.strings("ClientWhitelist")
    body = _format(message, limit, period)
    plugin = _plugin(ident, limit, seconds, f"header:{header}", quiet, status, body)
    report.approximated(
        route.file,
        at,
        f"{limit} requests per {period} per {header} header value -> rate_limit (limit {limit}, window"
        f" {plugin['window']}{_rounded(seconds)}), a sliding window of this route's requests; after the limit"
        f" fastgw admits again as the window slides (Ocelot's Wait: {wait or 'none'}); a request without the"
        " header is counted with the others that lack it (Ocelot 24.1 refuses it with 503)",
    )
    _refusal_report(route, at, status, quiet, legacy=False, report=report)
    _whitelist(route, at, whitelist, header, report)
    return plugin


def _plugin(
    ident: str, limit: int, seconds: float, key: object, quiet: bool, status: int, body: str
) -> dict[str, Any]:
    reject: dict[str, Any] = {"body": body}
    if status != 429:
        reject["status"] = status if 400 <= status <= 599 else 429
    return {
        "name": "rate_limit",
        "policy": ident,
        "limit": limit,
        "window": f"{max(1, math.ceil(seconds))}s",
        "key": key,
        "headers": [] if quiet else ["x"],
        "reject": reject,
    }


def _rounded(seconds: float) -> str:
    if seconds == max(1, math.ceil(seconds)):
        return ""
    return f", rounded up from {seconds:g}s: fastgw's windows are whole seconds"


def _refusal_report(
    route: OcelotObject, at: str, status: int, quiet: bool, legacy: bool, report: Report
) -> None:
    names = "X-Rate-Limit-Limit/-Remaining/-Reset" if legacy else "X-RateLimit-Limit/-Remaining/-Reset"
    if not 400 <= status <= 599:
        report.unsupported(
            route.file, at, f"status {status}: fastgw refuses with a 4xx or 5xx status; 429 is used instead"
        )
    if quiet:
        report.approximated(
            route.file, at, "headers off -> headers: []; fastgw still sends Retry-After on a refusal"
        )
    else:
        report.approximated(
            route.file,
            at,
            f"Ocelot's {names} -> headers: [x]: X-RateLimit-Limit (the limit), -Remaining, -Reset (seconds"
            " until the quota is whole again, not a date) and Retry-After on a refusal",
        )


def _whitelist(route: OcelotObject, at: str, whitelist: list[str], header: str, report: Report) -> None:
    if not whitelist:
        return
    report.unsupported(
        route.file,
        at + ".ClientWhitelist",
        f"{', '.join(whitelist)}: a value of the {header} header is no identity (any client can send"
        " it); to exempt clients, authenticate them (api_key or jwt) and list them in the rate limit's"
        " bypass.consumers, or their addresses in bypass.ips",
    )
