"""Ocelot configurations for the importer's tests: write one, translate it, look at the result.

``ocelot_route(**keys)`` is a minimal http route to localhost:51001 with the keys given on top;
``translate(tmp_path, document)`` writes the document as ocelot.json and translates it;
``entries(translation, ...)`` are the report's entries filtered by status and key path;
``retarget(text, ports)`` points the data files' placeholder ports (51001...) at real upstreams.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastgw.importers.ocelot import Status, Translation, translate_files
from fastgw.importers.ocelot.report import Entry

__all__ = ["DATA", "entries", "ocelot_route", "plugin", "retarget", "route_by_id", "translate"]

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
