"""One process's gateway: its listeners, the current Plan, swapping in a reloaded one, and
graceful drain. It sees only compiled Plans (``fastgw.reload`` turns files into them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from fastgw._proxy import plan_changed
from fastgw.control_http import close_control_session
from fastgw.errors import ConfigError
from fastgw.observe.access_log import AccessLog, access_log_for
from fastgw.observe.metrics import Families, ReloadRecord, Trigger, collect_gateway
from fastgw.observe.otlp import SpanExport, span_export_for
from fastgw.observe.recent_errors import RecentErrors
from fastgw.plan import Plan, activate_plan, first_discovery, retire_plan, stop_feeds
from fastgw.server.listener import ListenerServer
from fastgw.upstream.health import stop_monitors

log = logging.getLogger("fastgw")

FIRST_DISCOVERY_WAIT = 10.0  # at start, how long listening waits for the registries' first answers
TUNNELS_CLOSING = 2.0  # after the drain timeout, how long closing tunnels may take to say 1001


class Reloader(Protocol):
    """Makes the next Plan beside the running one (``fastgw.reload``: a file, an etcd key).

    ``refresh`` reads the source (at ``revision``, when it has versions and one is given);
    ``__call__`` makes the Plan of what was read, beside the running one; both raise ConfigError
    when they cannot. ``watch`` calls ``on_change`` each time the source changes, until
    cancelled. ``path`` names the source in messages; ``revision`` is the version last read
    (None for a source without versions)."""

    path: str
    revision: int | None

    async def refresh(self, revision: int | None = None) -> None: ...
    def __call__(self, running: Plan) -> Plan: ...
    async def watch(self, on_change: Callable[[], Awaitable[object]]) -> None: ...


class Gateway:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.listeners: dict[str, ListenerServer] = {
            name: ListenerServer(lp) for name, lp in plan.listeners.items()
        }
        self.ready = False  # listening, and not draining
        self.access_log: AccessLog | None = None
        self._use_access_log(access_log_for(plan.access_log, None))
        self.spans: SpanExport | None = None
        self.retired_spans: list[SpanExport] = []  # replaced on reload, flushed again at drain
        self._use_span_export(span_export_for(plan.otlp, None))
        self.reloads = ReloadRecord(applied_revision=plan.revision)
        # The status page's list of errors: kept only where an admin listener can show it (with
        # --workers N the plan has one: the supervisor asks each worker for its list).
        self.recent_errors = RecentErrors() if plan.admin is not None else None
        for server in self.listeners.values():
            server.observers.recent_errors = self.recent_errors

    async def start(self, reuse_port: bool = False) -> None:
        activate_plan(self.plan)  # health checks start before traffic, once per worker process
        await first_discovery(self.plan, FIRST_DISCOVERY_WAIT)
        if self.spans is not None:
            self.spans.start()  # here, in the process that serves: after fork
        for server in self.listeners.values():
            await server.start(reuse_port)
        self.ready = True

    def urls(self) -> list[tuple[str, str]]:
        out = []
        for name, server in self.listeners.items():
            for host, port in server.addresses:
                authority = f"[{host}]" if ":" in host else host
                out.append((name, f"{server.plan.scheme.decode()}://{authority}:{port}"))
        return out

    def reload(self, load: Reloader, trigger: Trigger) -> None:
        """Swap in the plan ``load`` makes of what it read, beside the running one (it raises
        ConfigError, and the running plan stays, when that cannot be used). Recorded in
        ``reloads`` either way, with what asked (``trigger``)."""
        try:
            new = load(self.plan)
        except ConfigError as exc:
            self.reloads.failure(exc, trigger, load.revision)
            raise
        self.swap(new)
        self.reloads.success(trigger, new.revision)

    def swap(self, new: Plan) -> None:
        """Serve ``new`` from now on: each request that starts from here runs on it (also on
        keep-alive connections opened before); requests in flight finish on the old one."""
        activate_plan(new)
        old, self.plan = self.plan, new
        for name, server in self.listeners.items():
            server.plan = new.listeners[name]
        plan_changed()  # every connection takes its listener's new plan from its next request
        self._use_access_log(access_log_for(new.access_log, self.access_log))
        self._use_span_export(span_export_for(new.otlp, self.spans))
        retire_plan(old, new)
        log.info("configuration reloaded from %s: %d routes", new.source, len(new.routes))

    def _use_access_log(self, access_log: AccessLog | None) -> None:
        """Requests log to ``access_log`` from now on; a replaced log hands late lines on to it."""
        if self.access_log is not None and access_log is not self.access_log:
            self.access_log.retire(access_log)
        self.access_log = access_log
        for server in self.listeners.values():
            server.observers.access_log = access_log

    def _use_span_export(self, spans: SpanExport | None) -> None:
        """Requests record spans to ``spans`` from now on; a replaced exporter hands its queue on."""
        if self.spans is not None and spans is not self.spans:
            self.spans.retire(spans)
            self.retired_spans.append(self.spans)
        self.spans = spans
        for server in self.listeners.values():
            server.observers.spans = spans
        if spans is not None and self.ready:
            spans.start()

    def collect(self) -> Families:
        """This process's metrics (see ``observe.metrics``)."""
        servers = self.listeners
        return collect_gateway(
            self.plan,
            [server.unrouted for server in servers.values()],
            {name: server.handshakes for name, server in servers.items() if server.handshakes},
            {name: len(server.connections) for name, server in servers.items()},
            {name: server.h2_events for name, server in servers.items() if server.h2_events},
            {
                name: server.handshake_failures
                for name, server in servers.items()
                if server.handshake_failures
            },
            {name: server.send_timeouts for name, server in servers.items() if server.send_timeouts},
        )

    async def stop_accepting(self) -> None:
        """Close the listening sockets, and return once they are closed: uvloop closes a handle's
        descriptor on its next iteration, and until then the kernel still queues connections on it
        (each would be reset)."""
        self.ready = False
        for server in self.listeners.values():
            server.stop_accepting()
        for _ in range(2):
            await asyncio.sleep(0)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests and open tunnels finish (bounded), close the
        tunnels still open with a WebSocket close frame 1001 (going away) rather than a reset,
        then close what is left."""
        await self.stop_accepting()
        for server in self.listeners.values():
            server.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.connections for s in self.listeners.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if sum(server.close_tunnels() for server in self.listeners.values()):
            closing = loop.time() + TUNNELS_CLOSING
            while any(s.connections for s in self.listeners.values()) and loop.time() < closing:
                await asyncio.sleep(0.02)
        left = sum(len(s.connections) for s in self.listeners.values())
        if left:
            log.warning("drain timeout: closing %d connections still busy", left)
            for server in self.listeners.values():
                server.abort_all()
        for pool in self.plan.pools.values():
            pool.close()
        await stop_monitors(self.plan.health.values())
        await stop_feeds(self.plan)
        for breaker in self.plan.breakers.values():
            breaker.stop()  # its timers must not fire on a loop that is closing
        for front in self.plan.state.tls_fronts.values():
            front.stop()  # its ticket-key timer, likewise
        await close_control_session()  # the auth plugins' client, if a request made one
        if self.access_log is not None:
            self.access_log.flush()
        for spans in (*self.retired_spans, self.spans):
            if spans is not None:  # the spans of the requests just drained, within the drain's time
                await spans.close(deadline - loop.time())
