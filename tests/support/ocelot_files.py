"""Ocelot configurations for the importer's tests: write one, translate it, look at the result.

``ocelot_route(**keys)`` is a minimal http route to localhost:51001 with the keys given on top;
``translate(tmp_path, document)`` writes the document as ocelot.json and translates it;
``entries(translation, ...)`` are the report's entries filtered by status and key path;
``retarget(text, ports)`` points the data files' placeholder ports (51001...) at real upstreams;
``upstream_ports`` (a fixture: three upstream processes), ``ocelot_gateway`` (a gateway from a data
file), ``request`` and ``echoed`` (what the upstream got) serve the integration tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from fastgw.importers.ocelot import Status, Translation, translate_files
from fastgw.importers.ocelot.report import Entry
from tests.support.gateway import RunningGateway
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

__all__ = [
    "DATA",
    "echoed",
    "entries",
    "ocelot_gateway",
    "ocelot_route",
    "plugin",
    "request",
    "retarget",
    "route_by_id",
    "translate",
    "upstream_ports",
]

DATA = Path(__file__).resolve().parents[1] / "data" / "ocelot"


def ocelot_route(
    template: str = "/api/{everything}", downstream: str | None = None, **keys: Any
) -> dict[str, Any]:
    """An http route to localhost:51001; the downstream template is the upstream one by default."""
    return {
        "UpstreamPathTemplate": template,
        "DownstreamPathTemplate": template if downstream is None else downstream,
        "DownstreamScheme": "http",
        "DownstreamHostAndPorts": [{"Host": "localhost", "Port": 51001}],
        **keys,
    }


def translate(tmp_path: Path, document: Mapping[str, Any] | str, name: str = "ocelot.json") -> Translation:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return translate_files([str(path)])


def entries(translation: Translation, status: Status | None = None, key: str | None = None) -> list[Entry]:
    """Entries with this status whose key path starts with ``key``."""
    return [
        e
        for e in translation.report.entries
        if (status is None or e.status is status) and (key is None or e.key_path.startswith(key))
    ]


def route_by_id(translation: Translation, route_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in translation.document["routes"] if r["id"] == route_id)
    return found


def plugin(route: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    found = [p for p in route.get("plugins", []) if p["name"] == name]
    return found[0] if found else None


def retarget(text: str, ports: Mapping[int, int]) -> str:
    """The data file's text with its placeholder ports replaced (comments and all kept)."""
    return re.sub(r"\b(5100[1-9])\b", lambda m: str(ports.get(int(m[1]), int(m[1]))), text)


# -- gateways started from the data files (integration tests) ---------------------------------------


@pytest.fixture(scope="module")
def upstream_ports() -> Iterator[dict[int, int]]:
    """Three real upstream processes for a test module: the data files' ports 51001-51003 -> theirs."""
    from tests.conftest import start_upstream

    started = [start_upstream() for _ in range(3)]
    yield {51001 + i: port for i, (_, port) in enumerate(started)}
    for proc, _ in started:
        proc.stop()


def ocelot_gateway(
    make: Callable[..., RunningGateway], source: str, ports: Mapping[int, int], tmp_path: Path
) -> RunningGateway:
    """A gateway started from a data file (or folder) translated, pointed at the real upstreams."""
    origin = DATA / source
    files = sorted(origin.glob("ocelot.*.json")) if origin.is_dir() else [origin]
    for file in files:
        (tmp_path / file.name).write_text(
            retarget(file.read_text(encoding="utf-8-sig"), ports), encoding="utf-8"
        )
    target = tmp_path if origin.is_dir() else tmp_path / origin.name
    translation = translate_files([str(target)], bind="127.0.0.1:0")
    return make(translation.document)


def request(
    gw: RunningGateway,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    host: str = "test.local",
) -> RawResponse:
    with connect(gw.port_of("public")) as sock:
        sock.sendall(build_request(method, target, headers, host=host))
        return read_response(sock)


def echoed(response: RawResponse) -> tuple[int, str, dict[str, str]]:
    """(port of the upstream that answered, the target it got, its request headers) of an /echo answer."""
    assert response.status == 200, (response.status, response.body)
    seen = response.json()
    headers = {name.lower(): value for name, value in seen["headers"]}
    return int(headers["host"].rsplit(":", 1)[1]), seen["path"], headers
