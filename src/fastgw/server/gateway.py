"""One process's gateway: its listeners, the current Plan, reload and graceful drain."""

from __future__ import annotations

import asyncio
import logging

from fastgw.config import load_config
from fastgw.config.schema import Config, OtlpConfig
from fastgw._proxy import plan_changed
from fastgw.control_http import close_control_session
from fastgw.errors import ConfigError
from fastgw.observe.access_log import AccessLog, access_log_for
from fastgw.observe.metrics import Families, ReloadRecord, collect_gateway
from fastgw.observe.otlp import SpanExport, span_export_for
from fastgw.plan import Plan, activate_plan, compile_plan, retire_plan
from fastgw.server.listener import ListenerServer
from fastgw.upstream.health import stop_monitors

log = logging.getLogger("fastgw")


def check_reloadable(old: Config, new: Config) -> None:
    """What a reload cannot change: listener names and binds, the admin listener."""
    old_binds = {lc.name: (lc.host, lc.port) for lc in old.listeners}
    new_binds = {lc.name: (lc.host, lc.port) for lc in new.listeners}
    if old_binds != new_binds:
        raise ConfigError(
            "listeners", "listener names and binds cannot change on reload; restart instead", new.source
        )
    old_admin = (old.admin.host, old.admin.port) if old.admin else None
    new_admin = (new.admin.host, new.admin.port) if new.admin else None
    if old_admin != new_admin:
        raise ConfigError(
            "admin.bind", "the admin listener cannot change on reload; restart instead", new.source
        )


def _otlp(config: Config) -> OtlpConfig | None:
    return config.tracing.otlp if config.tracing is not None else None


class Gateway:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.listeners: dict[str, ListenerServer] = {
            name: ListenerServer(lp) for name, lp in plan.listeners.items()
        }
        self.ready = False  # listening, and not draining
        self.access_log: AccessLog | None = None
        self._use_access_log(access_log_for(plan.config.access_log, None))
        self.spans: SpanExport | None = None
        self.retired_spans: list[SpanExport] = []  # replaced on reload, flushed again at drain
        self._use_span_export(span_export_for(_otlp(plan.config), None))
        self.reloads = ReloadRecord()

    async def start(self, reuse_port: bool = False) -> None:
        activate_plan(self.plan)  # health checks start before traffic, once per worker process
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
                out.append((name, f"http://{authority}:{port}"))
        return out

    def reload(self, path: str) -> None:
        """Validate and compile the file beside the running plan, then swap; raise ConfigError
        (the running plan stays) if it cannot be used. Listeners' binds cannot change here.
        Counted in ``reloads`` either way."""
        try:
            self._reload(path)
        except ConfigError as exc:
            self.reloads.failure(str(exc))
            raise
        self.reloads.success()

    def _reload(self, path: str) -> None:
        config = load_config(path)
        check_reloadable(self.plan.config, config)
        new = compile_plan(config, self.plan)
        activate_plan(new)
        old, self.plan = self.plan, new
        for name, server in self.listeners.items():
            server.plan = new.listeners[name]
        plan_changed()  # every connection takes its listener's new plan from its next request
        self._use_access_log(access_log_for(config.access_log, self.access_log))
        self._use_span_export(span_export_for(_otlp(config), self.spans))
        retire_plan(old, new)
        log.info("configuration reloaded from %s: %d routes", path, len(new.routes))

    def _use_access_log(self, access_log: AccessLog | None) -> None:
        """New connections log to ``access_log``; a replaced log hands late lines on to it."""
        if self.access_log is not None and access_log is not self.access_log:
            self.access_log.retire(access_log)
        self.access_log = access_log
        for server in self.listeners.values():
            server.access_log = access_log

    def _use_span_export(self, spans: SpanExport | None) -> None:
        """New connections record spans to ``spans``; a replaced exporter hands its queue on."""
        if self.spans is not None and spans is not self.spans:
            self.spans.retire(spans)
            self.retired_spans.append(self.spans)
        self.spans = spans
        for server in self.listeners.values():
            server.spans = spans
        if spans is not None and self.ready:
            spans.start()

    def collect(self) -> Families:
        """This process's metrics (see ``observe.metrics``)."""
        return collect_gateway(self.plan, self.listeners)

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
        """Stop accepting, let in-flight requests finish (bounded), then close what is left."""
        await self.stop_accepting()
        for server in self.listeners.values():
            server.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.connections for s in self.listeners.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = sum(len(s.connections) for s in self.listeners.values())
        if left:
            log.warning("drain timeout: closing %d connections still busy", left)
            for server in self.listeners.values():
                server.abort_all()
        for pool in self.plan.pools.values():
            pool.close()
        self.plan.client.close()
        await stop_monitors(self.plan.health.values())
        for breaker in self.plan.breakers.values():
            breaker.stop()  # its timers must not fire on a loop that is closing
        await close_control_session()  # the auth plugins' client, if a request made one
        if self.access_log is not None:
            self.access_log.flush()
        for spans in (*self.retired_spans, self.spans):
            if spans is not None:  # the spans of the requests just drained, within the drain's time
                await spans.close(deadline - loop.time())
