"""Header transforms, the request id header, and the query edits of a downstream template.

``UpstreamHeaderTransform`` (request) and ``DownstreamHeaderTransform`` (response), the route's
merged over the global ones (24.1: a header the route names wins). A value is one of:

- ``find, replace`` (it has a comma): find-and-replace in the header's value. On a response's
  ``Location`` with ``{DownstreamBaseUrl}`` or an upstream URL to find and ``{BaseUrl}`` or a URL to
  put, that is what ``rewrite_location`` does (better: it also puts a stripped prefix back). fastgw
  has no general find-and-replace;
- a placeholder alone: ``{RemoteIpAddress}`` -> ``{client_ip}``, ``{UpstreamHost}`` -> ``{host}``,
  ``{BaseUrl}`` -> GlobalConfiguration.BaseUrl (default ``http://localhost:5000``); ``{TraceId}``
  has no fastgw counterpart; an unknown placeholder sets nothing (in Ocelot too);
- anything else: that literal value, replacing the header (``set``).

``RequestIdKey``: fastgw reads the request id from ``X-Request-Id`` (keeping a client's short,
plain one) and always sends it upstream as ``X-Request-Id``; another key also gets it (``set``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastgw.importers.ocelot.global_config import DEFAULT_BASE_URL, GlobalConfiguration
from fastgw.importers.ocelot.paths import Downstream
from fastgw.importers.ocelot.policies import ClaimEdits, settable_header
from fastgw.importers.ocelot.reading import OcelotObject
from fastgw.importers.ocelot.report import Report

__all__ = ["transform_plugins"]

_PLACEHOLDERS = {"{RemoteIpAddress}": "{client_ip}", "{UpstreamHost}": "{host}"}


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _is_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query


def _merged(route: OcelotObject, glob: GlobalConfiguration, name: str) -> list[tuple[str, str, str]]:
    """(header, value, key path) of the route's transform over the global one."""
    own = route.table(name)
    found = [(header, value, f"{route.at(name)}.{header}") for header, value in own.items()]
    names = {header.lower() for header in own}
    found += [
        (header, value, f"{route.at(name)}.{header} (from GlobalConfiguration)")
        for header, value in glob.table(name).items()
        if header.lower() not in names
    ]
    return found


class _Edits:
    """The ``headers`` plugin being built, and a ``rewrite_location`` when one is needed."""

    def __init__(self) -> None:
        self.request_set: dict[str, str] = {}
        self.request_remove: list[str] = []
        self.response_set: dict[str, str] = {}
        self.location: dict[str, Any] | None = None

    def plugins(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {}
        if self.request_set:
            request["set"] = self.request_set
        if self.request_remove:
            request["remove"] = self.request_remove
        response = {"set": self.response_set} if self.response_set else {}
        if request or response:
            found.append(
                {
                    "name": "headers",
                    **({"request": request} if request else {}),
                    **({"response": response} if response else {}),
                }
            )
        if self.location is not None:
            found.append(self.location)
        return found


def _value(value: str, base_url: str, request: bool) -> tuple[str | None, str]:
    """The fastgw template of a non-find-and-replace value, or None and why it sets nothing."""
    if value.startswith("{") and value.endswith("}"):
        if value in _PLACEHOLDERS:
            return _PLACEHOLDERS[value], f"{value} -> {_PLACEHOLDERS[value]}"
        if value == "{BaseUrl}":
            return _literal(base_url), f"{{BaseUrl}} -> {base_url!r}"
        if value == "{TraceId}":
            return None, "{TraceId} (Butterfly tracing): fastgw has no such value; traceparent goes upstream"
        if value == "{DownstreamBaseUrl}" and not request:
            return None, "{DownstreamBaseUrl} only works as the text to find (in Ocelot too)"
        return None, f"{value} is no Ocelot placeholder here; Ocelot sets nothing either"
    return _literal(value), f"{value!r}"


def _find_and_replace(
    header: str,
    value: str,
    key: str,
    request: bool,
    glob: GlobalConfiguration,
    edits: _Edits,
    report: Report,
    file: str,
) -> None:
    find, _, replace = value.partition(",")
    find, replace = find.strip(), replace.strip()
    if request or header.lower() != "location":
        report.unsupported(
            file,
            key,
            f"find {find!r}, replace with {replace!r}: fastgw's headers plugin sets, adds and removes"
            " headers; it does not edit a value in place",
        )
        return
    location: dict[str, Any] = edits.location or {"name": "rewrite_location"}
    if find != "{DownstreamBaseUrl}":
        if not _is_url(find):
            report.unsupported(file, key, f"find {find!r}: rewrite_location replaces URLs, and this is none")
            return
        location.setdefault("internal_urls", []).append(find)
    if replace == "{BaseUrl}":
        if glob.base_url:
            location["public_url"] = glob.base_url
    elif _is_url(replace):
        location["public_url"] = replace
    else:
        report.unsupported(
            file, key, f"replace with {replace!r}: rewrite_location puts a URL, and this is none"
        )
        return
    edits.location = location
    report.approximated(
        file,
        key,
        f"find {find!r}, replace with {replace!r} -> rewrite_location: a Location pointing at the upstream"
        f" ({'its address' if find == '{DownstreamBaseUrl}' else find}) now points at "
        f"{location.get('public_url', 'the address the client used (Host and X-Forwarded-*)')}, with a prefix"
        " the route strips put back",
    )


def transform_plugins(
    route: OcelotObject,
    glob: GlobalConfiguration,
    claims: ClaimEdits,
    downstream: Downstream | None,
    report: Report,
) -> list[dict[str, Any]]:
    """``query``, ``headers`` and ``rewrite_location`` for the route (in that order)."""
    edits = _Edits()
    base_url = glob.base_url or DEFAULT_BASE_URL
    for side, request in (("UpstreamHeaderTransform", True), ("DownstreamHeaderTransform", False)):
        for header, value, key in _merged(route, glob, side):
            if "," in value:
                _find_and_replace(header, value, key, request, glob, edits, report, route.file)
                continue
            if request and header.lower() == "x-forwarded-for":
                report.mapped(
                    route.file,
                    key,
                    f"{value!r}: fastgw sends X-Forwarded-For itself (the client's address,"
                    " appended to a trusted proxy's list)",
                )
                continue
            if not settable_header(header):
                report.unsupported(
                    route.file, key, f"{header} frames the message or is written by the gateway itself"
                )
                continue
            template, how = _value(value, base_url, request)
            if template is None:
                report.unsupported(route.file, key, how)
                continue
            (edits.request_set if request else edits.response_set)[header] = template
            side_name = "request" if request else "response"
            report.mapped(route.file, key, f"{how} -> headers.{side_name}.set")
    _request_id(route, glob, edits, report)
    edits.request_remove.extend(h for h in claims.strip_headers if h not in edits.request_set)
    found: list[dict[str, Any]] = []
    query: dict[str, Any] = {}
    if claims.strip_query:
        query["remove"] = claims.strip_query
    if downstream is not None and downstream.query_rename:
        query["rename"] = downstream.query_rename
    if downstream is not None and downstream.query_set:
        query["set"] = downstream.query_set
    if query:
        found.append({"name": "query", **query})
    return found + edits.plugins()


def _request_id(route: OcelotObject, glob: GlobalConfiguration, edits: _Edits, report: Report) -> None:
    owner, name = glob.scalar(route, "RequestIdKey")
    key = owner.text(name) if owner is not None else None
    if not key:
        return
    at = route.at(name) + ("" if owner is route else " (from GlobalConfiguration)")
    if key.lower() == "x-request-id":
        report.mapped(
            route.file,
            at,
            "X-Request-Id: fastgw keeps a client's (when short and plain) or makes one, and sends it",
        )
    elif not settable_header(key):
        report.unsupported(route.file, at, f"{key}: the gateway writes this header itself")
    else:
        edits.request_set[key] = "{request_id}"
        report.approximated(
            route.file,
            at,
            f"{key}: the upstream gets the request id as {key} too (headers.request.set); fastgw takes a"
            f" client's id from X-Request-Id, so a client's own {key} is replaced by it",
        )
