"""From a configuration source to a running plan: the one place a gateway turns a file, or an
etcd key, into a Plan.

The server (``fastgw.server``) sees only compiled Plans: it starts from one and, on SIGHUP,
``POST /reload`` or a change its reloader's ``watch`` reports, asks its ``Reloader`` for the next
(``server.gateway.Reloader``: ``refresh`` reads the source, ``__call__`` makes the Plan, ``watch``
reports changes). A reloader reads and validates the source (``fastgw.config``), checks what a
reload cannot change (listener names and binds, the admin listener: the listening sockets stay
open across a reload), and compiles it beside the running plan so that unchanged live state is
adopted (``fastgw.plan``). A ConfigError leaves the running plan as it is.

- ``FileReloader``: a YAML or JSON file; ``watch`` (``--watch``) polls it.
- ``EtcdReloader``: the whole configuration in one etcd key, as YAML or JSON text, for a fleet of
  gateways sharing it (``fastgw run --etcd URL --key KEY``; ``fastgw config push`` writes it).
  ``watch`` follows the key with an etcd watch (a push reaches every gateway in one event);
  ``refresh(revision)`` reads the key at that revision, so that each worker of a supervisor
  reloads exactly the revision the supervisor validated. The revision applied is the plan's
  (``Plan.revision``): the admin API and metrics show it, and the one a reload rejected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastgw.config import load_config, load_text
from fastgw.config.schema import Config, EtcdRegistry
from fastgw.errors import ConfigError
from fastgw.plan import Plan, compile_plan
from fastgw.server.watch import POLL_INTERVAL, watch_files

log = logging.getLogger("fastgw")

WATCH_RETRY = (0.5, 15.0)  # an etcd watch that failed is set up again after a full-jitter backoff

OnChange = Callable[[], Awaitable[object]]


class FileReloader:
    """Loads ``path`` into a Plan: the first one, and each reload's beside the running one."""

    revision: int | None = None  # a file has no versions

    def __init__(self, path: str) -> None:
        self.path = path

    def first(self) -> Plan:
        return compile_plan(load_config(self.path))

    async def refresh(self, revision: int | None = None) -> None:
        """Nothing to fetch: ``__call__`` reads the file."""

    def __call__(self, running: Plan) -> Plan:
        config = load_config(self.path)
        check_reloadable(running, config)
        return compile_plan(config, running)

    async def watch(self, on_change: OnChange, interval: float = POLL_INTERVAL) -> None:
        """Call ``on_change`` each time the file changes (``server.watch``: polled)."""
        await watch_files(lambda: (self.path,), on_change, interval)


class EtcdReloader:
    """The configuration held in one etcd key (see the module docstring)."""

    def __init__(self, registry: EtcdRegistry, key: str) -> None:
        from fastgw.etcd import EtcdClient

        self.registry = registry
        self.key = key
        self.path = f"etcd key {key}"  # names the source in messages and errors
        self.client = EtcdClient(registry)
        self.revision: int | None = None  # the key's mod revision last read
        self.text: str | None = None

    def source(self, revision: int | None) -> str:
        return f"etcd key {self.key} at revision {revision}" if revision is not None else self.path

    def first(self) -> Plan:
        """The first plan, read before the server's loop runs (on a loop of its own)."""

        async def read() -> None:
            from fastgw.control_http import close_control_session

            try:
                await self.refresh()
            finally:
                await close_control_session()  # its session belongs to this short loop

        asyncio.run(read())
        return compile_plan(self._config())

    async def refresh(self, revision: int | None = None) -> None:
        """Read the key (as of ``revision`` when given); ConfigError when it cannot be read."""
        from fastgw.etcd import EtcdError

        try:
            _, kvs = await self.client.range(self.key.encode(), revision=revision)
        except EtcdError as exc:
            raise ConfigError("", f"cannot read the configuration: {exc}", self.path) from None
        if not kvs:
            at = f" at revision {revision}" if revision is not None else ""
            raise ConfigError("", f"the key does not exist{at}; write it with fastgw config push", self.path)
        self.revision = kvs[0].mod_revision
        self.text = kvs[0].value.decode("utf-8", "replace")

    def _config(self) -> Config:
        assert self.text is not None, "refresh first"
        return load_text(self.text, self.source(self.revision), self.revision)

    def __call__(self, running: Plan) -> Plan:
        config = self._config()
        check_reloadable(running, config)
        return compile_plan(config, running)

    async def watch(self, on_change: OnChange) -> None:
        """Call ``on_change`` for each new revision of the key, from the one last read on. The
        watch is set up again after a failure (etcd restarted, revisions compacted), first
        checking the key's revision, so that a change made meanwhile is not missed."""
        from fastgw.etcd import EtcdError

        failures = 0
        key = self.key.encode()
        while True:
            try:
                store_revision, kvs = await self.client.range(key)
                if kvs and kvs[0].mod_revision != self.revision:
                    await on_change()
                failures = 0
                async for batch in self.client.watch(key, prefix=False, start_revision=store_revision + 1):
                    changed = [
                        e for e in batch.events if not e.deleted and e.kv.mod_revision != self.revision
                    ]
                    if any(e.deleted for e in batch.events):
                        log.warning("%s was deleted; keeping the running configuration", self.path)
                    if changed:
                        await on_change()
            except EtcdError as exc:
                failures += 1
                import random  # here: only a failed watch needs it (PERF: memory of every process)

                delay = random.uniform(0.0, min(WATCH_RETRY[1], WATCH_RETRY[0] * 2 ** min(failures, 16)))
                log.warning("watching %s failed: %s; again in %.1fs", self.path, exc, delay)
                await asyncio.sleep(delay)


def check_reloadable(running: Plan, new: Config) -> None:
    """What a reload cannot change: listener names and binds, the admin listener."""
    old_binds = {name: (lp.host, lp.port) for name, lp in running.listeners.items()}
    new_binds = {lc.name: (lc.host, lc.port) for lc in new.listeners}
    if old_binds != new_binds:
        raise ConfigError(
            "listeners", "listener names and binds cannot change on reload; restart instead", new.source
        )
    old_admin = (running.admin.host, running.admin.port) if running.admin else None
    new_admin = (new.admin.host, new.admin.port) if new.admin else None
    if old_admin != new_admin:
        raise ConfigError(
            "admin.bind", "the admin listener cannot change on reload; restart instead", new.source
        )
