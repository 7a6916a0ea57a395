"""What the admin API and the reload triggers act on: one process, or the supervisor of workers.

``Control`` is the interface: the running plan, readiness, the gateway's merged metrics, a
reload that reports its outcome, and a cache purge that reaches every process. ``LocalControl``
is a single-process gateway. With
``--workers N`` the supervisor (``server/workers.py``) is the control: it holds one
``WorkerChannel`` per worker, a socketpair made before the fork, over which it asks for the
worker's metric families on each scrape and tells it to reload. Messages are length-prefixed
pickles: both ends are this program, forked from one process.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from typing import Any, Protocol

from fastgw.errors import ConfigError
from fastgw.observe.metrics import Families, collect_reloads, merge
from fastgw.plan import Plan
from fastgw.plugins.cache import purge_entries
from fastgw.server.gateway import Gateway

log = logging.getLogger("fastgw")

ReloadResult = dict[str, Any]  # {"ok": True, "routes": n, ...} or {"ok": False, "error": "file: key: ..."}
PurgeResult = dict[str, Any]  # {"purged": n, "errors": ["redis://...: why", ...]}
_LENGTH = struct.Struct("!I")


class Control(Protocol):
    config_path: str | None

    def plan(self) -> Plan: ...
    def ready(self) -> bool: ...
    async def families(self) -> Families: ...
    async def reload(self) -> ReloadResult: ...
    async def purge_cache(self, key: str | None, prefix: str | None) -> PurgeResult: ...


class LocalControl:
    """A gateway running alone in this process."""

    def __init__(self, gateway: Gateway, config_path: str | None) -> None:
        self.gateway = gateway
        self.config_path = config_path

    def plan(self) -> Plan:
        return self.gateway.plan

    def ready(self) -> bool:
        return self.gateway.ready

    async def families(self) -> Families:
        return merge([self.gateway.collect(), collect_reloads(self.gateway.reloads, 1)])

    async def reload(self) -> ReloadResult:
        if self.config_path is None:
            return {"ok": False, "error": "the gateway was not started from a file"}
        try:
            self.gateway.reload(self.config_path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "routes": len(self.gateway.plan.routes)}

    async def purge_cache(self, key: str | None, prefix: str | None) -> PurgeResult:
        return await purge_entries(key, prefix)


# -- the supervisor's line to each worker ---------------------------------------------------------


async def _send(writer: asyncio.StreamWriter, message: object) -> None:
    data = pickle.dumps(message)
    writer.write(_LENGTH.pack(len(data)) + data)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> Any:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))


class WorkerChannel:
    """The supervisor's end: one request at a time, each answered or timed out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def ask(self, message: dict[str, Any], timeout: float) -> Any:
        async with self._lock:
            if self._streams is None:
                self._streams = await asyncio.open_connection(sock=self.sock)
            reader, writer = self._streams
            await _send(writer, message)
            return await asyncio.wait_for(_receive(reader), timeout)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        else:
            self.sock.close()


async def answer_supervisor(sock: socket.socket, gateway: Gateway, config_path: str | None) -> None:
    """The worker's end: answer the supervisor until it closes the channel."""
    local = LocalControl(gateway, config_path)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        while True:
            try:
                message = await _receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if message.get("op") == "collect":
                await _send(writer, gateway.collect())
            elif message.get("op") == "reload":
                await _send(writer, await local.reload())
            elif message.get("op") == "purge_cache":
                await _send(writer, await local.purge_cache(message.get("key"), message.get("prefix")))
            else:
                await _send(writer, {"ok": False, "error": f"unknown operation {message!r}"})
    finally:
        writer.close()
