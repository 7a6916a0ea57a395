"""One process's gateway: its listeners, the current Plan, reload and graceful drain."""

from __future__ import annotations

import asyncio
import logging

from fastgw.config import load_config
from fastgw.control_http import close_control_session
from fastgw.errors import ConfigError
from fastgw.plan import Plan, activate_plan, compile_plan, retire_plan
from fastgw.server.clock import CLOCK
from fastgw.server.listener import ListenerServer
from fastgw.upstream.health import stop_monitors

log = logging.getLogger("fastgw")


class Gateway:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.listeners: dict[str, ListenerServer] = {
            name: ListenerServer(lp) for name, lp in plan.listeners.items()
        }

    async def start(self, reuse_port: bool = False) -> None:
        CLOCK.start(asyncio.get_running_loop())
        activate_plan(self.plan)  # health checks start before traffic, once per worker process
        for server in self.listeners.values():
            await server.start(reuse_port)

    def urls(self) -> list[tuple[str, str]]:
        out = []
        for name, server in self.listeners.items():
            for host, port in server.addresses:
                authority = f"[{host}]" if ":" in host else host
                out.append((name, f"http://{authority}:{port}"))
        return out

    def reload(self, path: str) -> None:
        """Validate and compile the file beside the running plan, then swap; raise ConfigError
        (the running plan stays) if it cannot be used. Listeners' binds cannot change here."""
        config = load_config(path)
        old_binds = {n: (lp.config.host, lp.config.port) for n, lp in self.plan.listeners.items()}
        new_binds = {lc.name: (lc.host, lc.port) for lc in config.listeners}
        if old_binds != new_binds:
            raise ConfigError(
                "listeners", "listener names and binds cannot change on reload; restart instead", path
            )
        new = compile_plan(config, self.plan)
        activate_plan(new)
        old, self.plan = self.plan, new
        for name, server in self.listeners.items():
            server.plan = new.listeners[name]
        retire_plan(old, new)
        log.info("configuration reloaded from %s: %d routes", path, len(new.routes))

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close what is left."""
        for server in self.listeners.values():
            server.stop_accepting()
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
        await stop_monitors(self.plan.health.values())
        for breaker in self.plan.breakers.values():
            breaker.stop()  # its timers must not fire on a loop that is closing
        await close_control_session()  # the auth plugins' client, if a request made one
        CLOCK.stop()
