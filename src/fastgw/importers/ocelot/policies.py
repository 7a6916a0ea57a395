"""Who may use a route and what it keeps: authentication, authorization, claims, IP lists, cache.

- ``AuthenticationOptions`` -> ``jwt``. The provider key (``AuthenticationProviderKey(s)``) names
  a scheme registered in C# (``AddJwtBearer("MyKey", ...)``), which the file does not describe:
  it becomes a JWT setting named after the key, completed through the environment:
  ``jwks_url: ${FASTGW_JWT_MYKEY_JWKS_URL:-https://mykey.jwks.invalid/...}``. Until it is set the
  route refuses every request (503: no keys), never lets one through.
- ``AllowedScopes`` (one of them, in the ``scope`` claim) and ``RouteClaimsRequirement`` (each claim
  equals its value) -> ``authorize``. A requirement on a route placeholder (``{userId}``) or on a
  claim made by ``AddClaimsToRequest`` cannot be checked: such a route is left out, not opened.
- ``AddHeadersToRequest``/``AddQueriesToRequest`` (``Claims[sub] > value``) -> ``claims``; an
  indexed value (``value[1] > |``) is not supported, and the client's own copy of that header or
  parameter is removed all the same (``headers``/``query`` plugins), so it cannot be forged.
- ``SecurityOptions`` -> ``ip_filter``: single addresses, ranges (``a-b``, ``a.b.c.d-e``), subnet
  masks and CIDRs become CIDR lists; ``ExcludeAllowedFromBlocked`` subtracts the allowed networks
  from the blocked ones.
- ``CacheOptions`` (``FileCacheOptions`` before 24.1) -> ``cache`` for ``TtlSeconds``.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

from fastgw.importers.ocelot.global_config import GlobalConfiguration
from fastgw.importers.ocelot.reading import OcelotObject, Registry
from fastgw.importers.ocelot.report import Report

__all__ = ["ClaimEdits", "auth_plugins", "cache_plugin", "claim_edits", "ip_filter_plugin", "settable_header"]

_CLAIM = re.compile(r"\s*Claims\[([^\]]+)\]\s*>\s*value\s*(?:>\s*)?", re.IGNORECASE)
_INDEXED = re.compile(r"\s*Claims\[([^\]]+)\]\s*>\s*value\[\s*\d+\s*\]\s*>.*", re.IGNORECASE | re.DOTALL)
_DYNAMIC = re.compile(r"\{(.+)\}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the gateway writes itself or that frame the message: no plugin may set them.
_RESERVED = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
        "te", "trailer", "upgrade", "expect", "x-request-id", "traceparent",
    }
)  # fmt: skip

Network = IPv4Network | IPv6Network
_N = TypeVar("_N", IPv4Network, IPv6Network)


def settable_header(name: str) -> bool:
    """May a fastgw plugin set a header of this name?"""
    lower = name.lower()
    return bool(_TOKEN.fullmatch(name)) and lower not in _RESERVED and not lower.startswith("x-forwarded-")


def _env_name(provider: str) -> str:
    return "FASTGW_JWT_" + (re.sub(r"[^A-Za-z0-9]+", "_", provider).strip("_").upper() or "DEFAULT")


def _host_label(provider: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", provider.lower()).strip("-") or "default"


def auth_plugins(
    route: OcelotObject,
    route_key: str | None,
    glob: GlobalConfiguration,
    made_claims: set[str],
    report: Report,
) -> list[dict[str, Any]] | None:
    """``jwt`` and ``authorize`` for the route; None when its requirements cannot be kept."""
    options = glob.options(route, "AuthenticationOptions", route_key)
    at = route.at("AuthenticationOptions") + options.where()
    anonymous = options.flag("AllowAnonymous") if options else None
    providers = options.strings("AuthenticationProviderKeys") if options else []
    single = options.text("AuthenticationProviderKey") if options else None
    if single:
        providers = [single, *(p for p in providers if p != single)]
    scopes = options.strings("AllowedScopes") if options else []
    if options.route is not None:
        for old in ("Provider", "ProviderRootUrl", "ApiName", "ApiSecret", "RequireHttps"):
            if options.route.raw(old) is not None:
                report.unsupported(
                    route.file,
                    options.route.at(old),
                    "Ocelot 1.x IdentityServer options: complete the jwt plugin",
                )
    requirements = route.table("RouteClaimsRequirement")
    plugins: list[dict[str, Any]] = []
    if anonymous:
        report.mapped(route.file, at, "AllowAnonymous: no authentication")
    elif providers:
        provider = providers[0]
        env = _env_name(provider)
        plugins.append(
            {
                "name": "jwt",
                "jwks_url": f"${{{env}_JWKS_URL:-https://{_host_label(provider)}.jwks.invalid/.well-known/jwks.json}}",
            }
        )
        report.approximated(
            route.file,
            at,
            f"provider {provider!r} -> jwt with the JWT setting {env}_JWKS_URL: set it to the provider's JWKS"
            " URL (the jwks_uri of the Authority's /.well-known/openid-configuration), and add issuer and"
            " audience as AddJwtBearer had them; until then the route answers 503 (no keys), never lets a"
            " request through",
        )
        if len(providers) > 1:
            report.unsupported(
                route.file,
                at,
                f"providers {', '.join(providers[1:])} after the first: one jwt plugin per route; fastgw"
                " tries"
                f" {provider!r} only",
            )
    elif options:
        report.mapped(route.file, at, "no provider key: no authentication")
    authorize: dict[str, Any] = {}
    if scopes and not anonymous:
        authorize["any_scopes"] = scopes
        authorize["scope_claims"] = ["scope"]
        report.mapped(
            route.file, at + ".AllowedScopes", f"{', '.join(scopes)} -> authorize.any_scopes (one of them)"
        )
    claims: dict[str, str] = {}
    for claim, value in requirements.items():
        key = f"{route.at('RouteClaimsRequirement')}.{claim}"
        if _DYNAMIC.fullmatch(value):
            report.unsupported(
                route.file,
                key,
                f"{value}: a claim compared with a path placeholder; fastgw's authorize compares with fixed"
                " values, so the route is left out rather than opened",
            )
            return None
        if claim in made_claims:
            report.unsupported(
                route.file,
                key,
                "the claim is made by AddClaimsToRequest, which fastgw cannot do; the route is left out"
                " rather"
                " than opened",
            )
            return None
        claims[claim] = value
        note = " (a claim type URI: .NET maps some JWT claims to such names; name the token's own claim)"
        report.mapped(
            route.file, key, f"{value!r} -> authorize.claims" + (note if claim.startswith("http") else "")
        )
    if claims:
        authorize["claims"] = claims
    if authorize:
        plugins.append({"name": "authorize", **authorize})
    return plugins


class ClaimEdits:
    """What the claims transforms of a route become: ``claims`` options, and names to strip."""

    __slots__ = ("headers", "made", "query", "strip_headers", "strip_query")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.query: dict[str, str] = {}
        self.strip_headers: list[str] = []
        self.strip_query: list[str] = []
        self.made: set[str] = set()  # claims AddClaimsToRequest would have made

    def plugin(self) -> dict[str, Any] | None:
        options = {k: v for k, v in (("headers", self.headers), ("query", self.query)) if v}
        return {"name": "claims", **options} if options else None


def _claim_name(value: str, made: set[str]) -> tuple[str | None, str]:
    """The claim a ``Claims[x] > value`` instruction copies whole, or None and why not."""
    if _INDEXED.fullmatch(value):
        return (
            None,
            "an indexed value (value[n] > delimiter) splits the claim; fastgw's claims copies it whole",
        )
    match = _CLAIM.fullmatch(value)
    if match is None:
        return None, "not a Claims[...] > value instruction (Ocelot refuses it too)"
    if match[1] in made:
        return None, "the claim is made by AddClaimsToRequest, which fastgw cannot do"
    return match[1], ""


def claim_edits(route: OcelotObject, report: Report) -> ClaimEdits:
    edits = ClaimEdits()
    for claim, value in route.table("AddClaimsToRequest").items():
        edits.made.add(claim)
        report.unsupported(
            route.file,
            f"{route.at('AddClaimsToRequest')}.{claim}",
            f"{value!r}: fastgw's authentication plugins do not rewrite the verified claims",
        )
    for header, value in route.table("AddHeadersToRequest").items():
        key = f"{route.at('AddHeadersToRequest')}.{header}"
        found, why = _claim_name(value, edits.made)
        if not settable_header(header):
            report.unsupported(
                route.file, key, "the gateway writes this header itself (or it frames the message)"
            )
        elif found is None:
            edits.strip_headers.append(header)
            report.unsupported(route.file, key, f"{value!r}: {why}; the client's own {header} is removed")
        else:
            edits.headers[header] = found
            report.mapped(
                route.file, key, f"claim {found!r} -> claims.headers (the client's own copy removed)"
            )
    for name, value in route.table("AddQueriesToRequest").items():
        key = f"{route.at('AddQueriesToRequest')}.{name}"
        found, why = _claim_name(value, edits.made)
        if found is None:
            edits.strip_query.append(name)
            report.unsupported(route.file, key, f"{value!r}: {why}; the client's own {name} is removed")
        else:
            edits.query[name] = found
            report.mapped(route.file, key, f"claim {found!r} -> claims.query (the client's own copy removed)")
    return edits


# -- SecurityOptions -------------------------------------------------------------------------------


def _networks(entry: str) -> list[Network] | None:
    """The CIDRs of one IPAddressRange pattern, or None when it is not one."""
    text = entry.strip()
    try:
        if "-" not in text:
            return [ipaddress.ip_network(text, strict=False)]
        first, _, last = (part.strip() for part in text.partition("-"))
        if "." in first and last.isdigit():  # "192.168.1.1-250": a range of the last octet
            last = first.rsplit(".", 1)[0] + "." + last
        start, end = ipaddress.ip_address(first), ipaddress.ip_address(last)
    except ValueError:
        return None
    if isinstance(start, IPv4Address) and isinstance(end, IPv4Address) and start <= end:
        return list(ipaddress.summarize_address_range(start, end))
    if isinstance(start, IPv6Address) and isinstance(end, IPv6Address) and start <= end:
        return list(ipaddress.summarize_address_range(start, end))
    return None


def _cut_same(net: _N, hole: _N) -> list[Network]:
    if not net.overlaps(hole):
        return [net]
    if hole.supernet_of(net):
        return []
    return list(net.address_exclude(hole))


def _cut(net: Network, hole: Network) -> list[Network]:
    """``net`` without the addresses of ``hole``."""
    if isinstance(net, IPv4Network) and isinstance(hole, IPv4Network):
        return _cut_same(net, hole)
    if isinstance(net, IPv6Network) and isinstance(hole, IPv6Network):
        return _cut_same(net, hole)
    return [net]


def _subtract(networks: list[Network], holes: list[Network]) -> list[Network]:
    result = list(networks)
    for hole in holes:
        result = [piece for net in result for piece in _cut(net, hole)]
    return result


def _collapsed(networks: list[Network]) -> list[Network]:
    v4 = [n for n in networks if isinstance(n, IPv4Network)]
    v6 = [n for n in networks if isinstance(n, IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def ip_filter_plugin(
    route: OcelotObject, glob: GlobalConfiguration, registry: Registry, report: Report
) -> dict[str, Any] | None:
    own = route.child("SecurityOptions", registry)
    chosen, note = own, ""
    if own is None or not (own.strings("IPAllowedList") or own.strings("IPBlockedList")):
        if own is not None:
            own.flag("ExcludeAllowedFromBlocked")
        chosen, note = glob.section("SecurityOptions"), " (from GlobalConfiguration)"
    if chosen is None:
        return None
    at = route.at("SecurityOptions") + note
    lists: dict[str, list[Network]] = {}
    for name in ("IPAllowedList", "IPBlockedList"):
        found: list[Network] = []
        for entry in chosen.strings(name):
            networks = _networks(entry)
            if networks is None:
                report.ignored(
                    route.file,
                    f"{at}.{name}",
                    f"{entry!r} is no address, range or network (Ocelot skips it too)",
                )
            else:
                found.extend(networks)
        lists[name] = found
    allowed, blocked = lists["IPAllowedList"], lists["IPBlockedList"]
    if chosen.flag("ExcludeAllowedFromBlocked"):
        blocked = _subtract(blocked, allowed)
    if not allowed and not blocked:
        report.mapped(route.file, at, "no addresses: no IP filter")
        return None
    plugin: dict[str, Any] = {"name": "ip_filter"}
    if allowed:
        plugin["allow"] = [str(n) for n in _collapsed(allowed)]
    if blocked:
        plugin["deny"] = [str(n) for n in _collapsed(blocked)]
    report.mapped(
        route.file,
        at,
        "-> ip_filter (allow: only these; deny wins; 403) on the TCP peer's address, as Ocelot's"
        " RemoteIpAddress"
        + (
            "; ExcludeAllowedFromBlocked: the allowed networks cut out of the blocked ones"
            if "deny" in plugin and allowed
            else ""
        ),
    )
    return plugin


# -- caching ----------------------------------------------------------------------------------------


def cache_plugin(
    route: OcelotObject, route_key: str | None, authenticated: bool, glob: GlobalConfiguration, report: Report
) -> dict[str, Any] | None:
    name = "FileCacheOptions" if route.has("FileCacheOptions") else "CacheOptions"
    route.raw("FileCacheOptions")
    options = glob.options(route, name, route_key)
    if not options:
        return None
    at = route.at(name) + options.where()
    ttl = options.integer("TtlSeconds")
    region = options.text("Region")
    header = options.text("Header")
    hashing = options.flag("EnableContentHashing")
    if not ttl or ttl <= 0:
        report.mapped(route.file, at, "TtlSeconds 0: no caching")
        return None
    plugin: dict[str, Any] = {"name": "cache", "ttl": f"{ttl}s", "max_ttl": f"{ttl}s"}
    if region:
        plugin["zone"] = region
    keyed = ""
    if header and _TOKEN.fullmatch(header):
        plugin["key"] = {"headers": [header]}
        keyed = f", keyed by {header}"
    detail = (
        f"TtlSeconds {ttl} -> cache (ttl and max_ttl {ttl}s{', zone ' + repr(region) if region else ''}"
        f"{keyed}) of GET and HEAD responses; fastgw follows"
        " the upstream's Cache-Control (no-store, private and shorter lifetimes are honoured, Ocelot stored"
        " every answer for the TTL) and purges through the admin API (POST /cache/purge) instead of"
        " Ocelot's DELETE /outputcache/{region}"
    )
    if authenticated:
        detail += (
            "; requests with Authorization bypass the cache, where Ocelot served one user's cached answer to"
            " another: to share anyway set unsafe_cache_authorized: true, or key by authorization"
        )
    report.approximated(route.file, at, detail)
    if hashing:
        report.unsupported(
            route.file,
            at + ".EnableContentHashing",
            "true: fastgw caches GET and HEAD only; no body is keyed",
        )
    return plugin
