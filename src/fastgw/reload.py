"""From a configuration file to a running plan: the one place a gateway turns a file into a Plan.

The server (``fastgw.server``) sees only compiled Plans: it starts from one and, on SIGHUP,
``POST /reload`` or a ``--watch`` change, asks its ``Reloader`` for the next. This module is that
reloader for a file: read and validate it (``fastgw.config``), check what a reload cannot change
(listener names and binds, the admin listener: the listening sockets stay open across a reload),
compile it beside the running plan so that unchanged live state is adopted (``fastgw.plan``).
A ConfigError leaves the running plan as it is.
"""

from __future__ import annotations

from fastgw.config import load_config
from fastgw.config.schema import Config
from fastgw.errors import ConfigError
from fastgw.plan import Plan, compile_plan


class FileReloader:
    """Loads ``path`` into a Plan: the first one, and each reload's beside the running one."""

    def __init__(self, path: str) -> None:
        self.path = path

    def first(self) -> Plan:
        return compile_plan(load_config(self.path))

    def __call__(self, running: Plan) -> Plan:
        config = load_config(self.path)
        check_reloadable(running, config)
        return compile_plan(config, running)


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
