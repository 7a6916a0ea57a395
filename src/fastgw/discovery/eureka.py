"""Eureka: the UP instances of an app, from the registry's REST API, with delta fetches.

As Eureka's own clients do: one full fetch (``GET {url}/apps``), then every ``interval`` a delta
(``GET {url}/apps/delta``: the instances added, modified or deleted in the server's last few
minutes, each with its ``actionType``) merged into the local copy of the whole registry. Each
answer carries ``apps__hashcode``, the reconcile hash of the server's registry (per status, in
name order, ``STATUS_count_``: ``DOWN_1_UP_3_``); when the merged copy hashes otherwise (a delta
was missed), the next fetch is a full one. A server that does not offer deltas (403 or 404, as
with ``disableDelta``) gets a full fetch every interval.

Answers are JSON (asked with ``Accept: application/json``) or, from a server that answers its
default, XML: both shapes are read (``applications.application[].instance[]``, where a list of
one may come as the object itself). An instance counts when its ``status`` is ``UP`` and its
(non-secure) port is enabled; its address is ``ipAddr`` (``hostName`` when it has none), its
weight the integer in ``metadata.weight`` if any, else 1.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from fastgw.config.schema import DiscoveryConfig, EurekaRegistry
from fastgw.control_http import control_session
from fastgw.discovery.feed import Instance, Resolver, Sink
from fastgw.etcd import ssl_context


class EurekaError(Exception):
    """Eureka could not be reached, refused the fetch, or answered what is not a registry."""


@dataclass(frozen=True, slots=True)
class Record:
    """One instance of the registry, as Eureka lists it."""

    app: str
    id: str
    address: str
    port: int
    port_enabled: bool
    status: str
    weight: int = 1
    action: str = ""  # ADDED, MODIFIED or DELETED in a delta


@dataclass(frozen=True, slots=True)
class Applications:
    records: tuple[Record, ...]
    hashcode: str


def reconcile_hash(records: Any) -> str:
    """Eureka's ``apps__hashcode`` of a registry: ``STATUS_count_`` per status, in name order."""
    counts = Counter(record.status for record in records)
    return "".join(f"{status}_{counts[status]}_" for status in sorted(counts))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _json_record(app: str, raw: Any) -> Record | None:
    if not isinstance(raw, dict):
        return None
    port = raw.get("port")
    number, enabled = (
        (port.get("$"), str(port.get("@enabled", "true"))) if isinstance(port, dict) else (port, "true")
    )
    metadata = raw.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return _record(
        app, raw.get("instanceId"), raw.get("ipAddr") or raw.get("hostName"), number, enabled,
        raw.get("status"), metadata.get("weight"), raw.get("actionType"),
    )  # fmt: skip


def _xml_record(app: str, node: ElementTree.Element) -> Record:
    port = node.find("port")
    weight = node.find("metadata/weight")
    record = _record(
        app, node.findtext("instanceId"), node.findtext("ipAddr") or node.findtext("hostName"),
        port.text if port is not None else None, port.get("enabled", "true") if port is not None else "true",
        node.findtext("status"), weight.text if weight is not None else None, node.findtext("actionType"),
    )  # fmt: skip
    if record is None:
        raise EurekaError("an instance without an address, port or status")
    return record


def _record(
    app: str, instance_id: Any, address: Any, port: Any, enabled: str, status: Any, weight: Any, action: Any
) -> Record | None:
    try:
        number = int(port)
    except (TypeError, ValueError):
        return None
    if not isinstance(address, str) or not address or not isinstance(status, str):
        return None
    identity = instance_id if isinstance(instance_id, str) and instance_id else f"{address}:{app}:{number}"
    weight_text = str(weight) if weight is not None else ""
    return Record(
        app.upper(), identity, address, number, enabled.lower() == "true", status.upper(),
        int(weight_text) if weight_text.isdigit() and int(weight_text) > 0 else 1,
        action.upper() if isinstance(action, str) else "",
    )  # fmt: skip


def parse_applications(data: bytes, content_type: str) -> Applications:
    """A registry (or a delta) in Eureka's JSON or XML shape."""
    if "xml" in content_type or data.lstrip().startswith(b"<"):
        try:
            root = ElementTree.fromstring(data)
        except ElementTree.ParseError as exc:
            raise EurekaError(f"not an XML registry: {exc}") from None
        if root.tag != "applications":
            raise EurekaError(f"expected <applications>, found <{root.tag}>")
        records = tuple(
            _xml_record(app.findtext("name") or "", node)
            for app in root.findall("application")
            for node in app.findall("instance")
        )
        return Applications(records, root.findtext("apps__hashcode") or "")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise EurekaError("not a JSON registry") from None
    applications = document.get("applications") if isinstance(document, dict) else None
    if not isinstance(applications, dict):
        raise EurekaError('expected {"applications": {...}}')
    found = []
    for app in _as_list(applications.get("application")):
        if isinstance(app, dict):
            name = str(app.get("name", ""))
            found += [
                r for raw in _as_list(app.get("instance")) if (r := _json_record(name, raw)) is not None
            ]
    return Applications(tuple(found), str(applications.get("apps__hashcode", "")))


class EurekaResolver(Resolver):
    def __init__(self, config: DiscoveryConfig) -> None:
        registry = config.registry
        assert isinstance(registry, EurekaRegistry)
        self.registry = registry
        self.app = config.service.upper()
        self.headers = {"Accept": "application/json"}
        if registry.username is not None:
            login = f"{registry.username}:{registry.password}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(login).decode("ascii")
        self._ssl = ssl_context(registry.tls)
        self.registry_copy: dict[tuple[str, str], Record] = {}
        self.deltas = True  # the server offers deltas (until it says otherwise)
        self.full_fetches = 0
        self.delta_fetches = 0

    async def run(self, sink: Sink) -> None:
        import asyncio

        await self._full()  # after an error, start again from the whole registry
        while True:
            sink.publish(self.instances())
            await asyncio.sleep(self.registry.interval)
            if not self.deltas or not await self._delta():
                await self._full()

    def instances(self) -> list[Instance]:
        return [
            Instance(r.address, r.port, r.weight, f"instance {r.id}")
            for (app, _), r in sorted(self.registry_copy.items())
            if app == self.app and r.status == "UP" and r.port_enabled
        ]

    async def _full(self) -> None:
        answer = await self._fetch("/apps")
        assert answer is not None
        self.full_fetches += 1
        self.registry_copy = {(r.app, r.id): r for r in answer.records}

    async def _delta(self) -> bool:
        """Merge a delta; False when a full fetch must follow (no delta, or the hash disagrees)."""
        answer = await self._fetch("/apps/delta", delta=True)
        if answer is None:
            self.deltas = False
            return False
        self.delta_fetches += 1
        merged = dict(self.registry_copy)
        for record in answer.records:
            if record.action == "DELETED":
                merged.pop((record.app, record.id), None)
            else:
                merged[(record.app, record.id)] = record
        if reconcile_hash(merged.values()) != answer.hashcode:
            return False  # a change was missed: fetch the whole registry
        self.registry_copy = merged
        return True

    async def _fetch(self, path: str, delta: bool = False) -> Applications | None:
        import aiohttp

        url = self.registry.url + path
        try:
            async with control_session().get(
                url, headers=self.headers, ssl=self._ssl if self._ssl else True,
                timeout=aiohttp.ClientTimeout(total=self.registry.timeout),
            ) as response:  # fmt: skip
                data = await response.read()
                if delta and response.status in (403, 404):
                    return None  # deltas disabled on this server
                if response.status != 200:
                    raise EurekaError(f"{url}: status {response.status}")
                content_type = response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, OSError) as exc:
            raise EurekaError(f"{url}: {exc or type(exc).__name__}") from None
        except TimeoutError:
            raise EurekaError(f"{url}: no answer within {self.registry.timeout:g}s") from None
        try:
            return parse_applications(data, content_type)
        except EurekaError as exc:
            raise EurekaError(f"{url}: {exc}") from None
