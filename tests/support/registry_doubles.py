"""Protocol-faithful doubles of Consul's and Eureka's HTTP APIs, for the discovery tests: neither
server can be installed here, so these answer as their public API documentation says, on a free
loopback port, from an aiohttp app on a loop of their own (a thread). The test changes their
state from its own thread (``register``, ``set_status``, ...); every request is recorded.

Consul (``/v1/health/service/<service>``, the "Health - List Service Instances" endpoint):
entries ``[{"Node": {...}, "Service": {...}, "Checks": [...]}]``; ``passing`` keeps entries whose
checks all pass; ``tag`` (repeatable) keeps entries with every tag; ``dc`` picks the datacenter
(the agent's own by default); ``X-Consul-Index`` on every answer is the service's modify index; a
query with ``index`` at or above it blocks until the service changes or ``wait`` (``10s``,
``5m``; default 5m, at most 10m) runs out, then answers the same index. With an ACL token set, a
query without ``X-Consul-Token`` (or ``?token=``) equal to it gets 403 "ACL not found".

Eureka (``/eureka/apps``, ``/eureka/apps/delta``, the REST operations of Eureka's wiki): JSON when
asked with ``Accept: application/json``, else XML; ``applications`` with ``versions__delta``,
``apps__hashcode`` (``STATUS_count_`` per status in name order) and ``application[]`` of
``instance[]`` (``instanceId``, ``hostName``, ``app``, ``ipAddr``, ``status``, ``port`` with
``$`` and ``@enabled``, ``metadata``); the delta lists the instances changed since the changes
recorded (the server keeps about three minutes; here, until ``forget_changes``), each with its
``actionType``; ``disable_delta()`` makes ``/apps/delta`` answer 403 as ``disableDelta`` does.
HTTP basic auth when a login is set.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from .ports import free_port

__all__ = ["ConsulDouble", "EurekaDouble"]


class ThreadedApp:
    """An aiohttp app served on its own loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.requests: list[web.Request] = []
        self.lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            with self.lock:
                self.requests.append(request)
            return await handler(request)

        app = self.app()
        app.middlewares.append(record)
        # A blocking query is abandoned when its client goes away, and stopping waits at most a second
        # for the queries still open (else one from a gateway still running holds it for its wait).
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def on_loop(self, change: Callable[[], None]) -> None:
        """Run ``change`` on the app's loop and wait for it (state is only touched there)."""
        done = threading.Event()

        def run() -> None:
            change()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)

    def seen(self, path_start: str) -> list[web.Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_start)]


# -- Consul ---------------------------------------------------------------------------------------


@dataclass
class ConsulEntry:
    id: str
    service: str
    node: str
    address: str
    port: int
    tags: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    weight: int = 1
    status: str = "passing"  # of its one check: passing, warning or critical
    datacenter: str = "dc1"
    node_address: str = "127.0.0.1"

    def render(self) -> dict[str, Any]:
        return {
            "Node": {
                "ID": f"id-{self.node}", "Node": self.node, "Address": self.node_address,
                "Datacenter": self.datacenter,
            },
            "Service": {
                "ID": self.id, "Service": self.service, "Tags": self.tags, "Address": self.address,
                "Port": self.port, "Meta": self.meta, "Weights": {"Passing": self.weight, "Warning": 1},
            },
            "Checks": [{"CheckID": f"service:{self.id}", "ServiceID": self.id, "Status": self.status}],
        }  # fmt: skip


class ConsulDouble(ThreadedApp):
    def __init__(self, token: str | None = None, datacenter: str = "dc1") -> None:
        super().__init__()
        self.token = token
        self.datacenter = datacenter
        self.entries: dict[str, ConsulEntry] = {}
        self.index = 10  # the raft index: grows with every change
        self.service_index: dict[str, int] = {}
        self.changed = asyncio.Event()

    def _change(self, service: str) -> None:
        self.index += 1
        self.service_index[service] = self.index
        self.changed.set()
        self.changed = asyncio.Event()

    def register(self, entry: ConsulEntry) -> None:
        def change() -> None:
            self.entries[entry.id] = entry
            self._change(entry.service)

        self.on_loop(change)

    def deregister(self, entry_id: str) -> None:
        def change() -> None:
            self._change(self.entries.pop(entry_id).service)

        self.on_loop(change)

    def set_status(self, entry_id: str, status: str) -> None:
        def change() -> None:
            self.entries[entry_id] = replace(self.entries[entry_id], status=status)
            self._change(self.entries[entry_id].service)

        self.on_loop(change)

    def restore_snapshot(self, index: int) -> None:
        """A snapshot restore: every index goes back to ``index`` (smaller than before)."""

        def change() -> None:
            self.index = index
            for service in self.service_index:
                self.service_index[service] = index
            self.changed.set()
            self.changed = asyncio.Event()

        self.on_loop(change)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/health/service/{service}", self.health_service)
        return app

    async def health_service(self, request: web.Request) -> web.Response:
        if self.token is not None:
            given = request.headers.get("X-Consul-Token") or request.query.get("token")
            if given != self.token:
                return web.Response(status=403, text="ACL not found")
        service = request.match_info["service"]
        query = request.query
        if "index" in query:
            wait = _duration(query.get("wait", "5m"))
            if wait is None or not query["index"].isdigit():
                return web.Response(status=400, text="Invalid wait time or index")
            deadline = self.loop.time() + min(wait, 600.0)
            while int(query["index"]) >= self.service_index.get(service, self.index):
                left = deadline - self.loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except TimeoutError:
                    break
        datacenter = query.get("dc", self.datacenter)
        tags = query.getall("tag", [])
        passing = "passing" in query
        found = [
            e.render() for e in self.entries.values()
            if e.service == service and e.datacenter == datacenter and all(t in e.tags for t in tags)
            and (not passing or e.status == "passing")
        ]  # fmt: skip
        index = self.service_index.get(service, self.index)
        return web.json_response(
            found, headers={"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true"}
        )


def _duration(text: str) -> float | None:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    return None


# -- Eureka ---------------------------------------------------------------------------------------


@dataclass
class EurekaInstance:
    app: str
    instance_id: str
    ip: str
    port: int
    status: str = "UP"
    port_enabled: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    action: str = "ADDED"

    def json(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id, "hostName": f"{self.instance_id}.local", "app": self.app,
            "ipAddr": self.ip, "status": self.status, "overriddenStatus": "UNKNOWN",
            "port": {"$": self.port, "@enabled": "true" if self.port_enabled else "false"},
            "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
            "dataCenterInfo": {
                "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn",
            },
            "metadata": self.metadata or {"@class": "java.util.Collections$EmptyMap"},
            "vipAddress": self.app.lower(), "actionType": self.action,
        }  # fmt: skip

    def xml(self) -> str:
        metadata = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in self.metadata.items())
        enabled = "true" if self.port_enabled else "false"
        return (
            f"<instance><instanceId>{self.instance_id}</instanceId><hostName>{self.instance_id}.local</hostName>"
            f"<app>{self.app}</app><ipAddr>{self.ip}</ipAddr><status>{self.status}</status>"
            f'<overriddenstatus>UNKNOWN</overriddenstatus><port enabled="{enabled}">{self.port}</port>'
            f'<securePort enabled="false">443</securePort><metadata>{metadata}</metadata>'
            f"<vipAddress>{self.app.lower()}</vipAddress><actionType>{self.action}</actionType></instance>"
        )


class EurekaDouble(ThreadedApp):
    def __init__(self, login: tuple[str, str] | None = None, always_xml: bool = False) -> None:
        super().__init__()
        self.login = login
        self.always_xml = always_xml  # answers its default (XML) whatever Accept says
        self.instances: dict[tuple[str, str], EurekaInstance] = {}
        self.changes: list[EurekaInstance] = []  # the recently changed queue
        self.version = 1
        self.delta_enabled = True

    def _record(self, instance: EurekaInstance) -> None:
        self.changes.append(instance)
        self.version += 1

    def register(self, instance: EurekaInstance) -> None:
        def change() -> None:
            key = (instance.app, instance.instance_id)
            action = "MODIFIED" if key in self.instances else "ADDED"
            self.instances[key] = replace(instance, action=action)
            self._record(self.instances[key])

        self.on_loop(change)

    def cancel(self, app: str, instance_id: str) -> None:
        def change() -> None:
            gone = self.instances.pop((app, instance_id))
            self._record(replace(gone, action="DELETED"))

        self.on_loop(change)

    def set_status(self, app: str, instance_id: str, status: str) -> None:
        self.register(replace(self.instances[(app, instance_id)], status=status))

    def forget_changes(self) -> None:
        """The recently changed queue expired (Eureka keeps about three minutes of it)."""
        self.on_loop(self.changes.clear)

    def disable_delta(self) -> None:
        def change() -> None:
            self.delta_enabled = False

        self.on_loop(change)

    def hashcode(self) -> str:
        counts: dict[str, int] = {}
        for instance in self.instances.values():
            counts[instance.status] = counts.get(instance.status, 0) + 1
        return "".join(f"{status}_{counts[status]}_" for status in sorted(counts))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/eureka/apps", self.apps)
        app.router.add_get("/eureka/apps/delta", self.delta)
        return app

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.login is None:
            return None
        expected = "Basic " + base64.b64encode(":".join(self.login).encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="eureka"'})
        return None

    async def apps(self, request: web.Request) -> web.Response:
        return self._refuse(request) or self._render(request, list(self.instances.values()))

    async def delta(self, request: web.Request) -> web.Response:
        if not self.delta_enabled:
            return web.Response(status=403)
        return self._refuse(request) or self._render(request, list(self.changes))

    def _render(self, request: web.Request, instances: list[EurekaInstance]) -> web.Response:
        by_app: dict[str, list[EurekaInstance]] = {}
        for instance in instances:
            by_app.setdefault(instance.app, []).append(instance)
        if "json" in request.headers.get("Accept", "") and not self.always_xml:
            applications = [
                # Eureka's JSON renders a list of one as the object itself.
                {"name": name, "instance": [i.json() for i in found] if len(found) > 1 else found[0].json()}
                for name, found in by_app.items()
            ]
            body = {
                "applications": {
                    "versions__delta": str(self.version), "apps__hashcode": self.hashcode(),
                    "application": applications,
                }
            }  # fmt: skip
            return web.json_response(body)
        apps = "".join(
            f"<application><name>{name}</name>{''.join(i.xml() for i in found)}</application>"
            for name, found in by_app.items()
        )
        xml = (
            f"<applications><versions__delta>{self.version}</versions__delta>"
            f"<apps__hashcode>{self.hashcode()}</apps__hashcode>{apps}</applications>"
        )
        return web.Response(text=xml, content_type="application/xml")
