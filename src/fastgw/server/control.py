"""What the admin API and the reload triggers act on: one process, or the supervisor of workers.

``Control`` is the interface: the running plan, readiness, the gateway's merged metrics, a
reload that reports its outcome, a cache purge that reaches every process, and what the status
page shows of every process (targets' states, recent errors). ``LocalControl`` is a
single-process gateway. With ``--workers N`` the supervisor (``server/workers.py``) is the
control: it holds one ``WorkerChannel`` per worker, a socketpair made before the fork, over which
it asks for the worker's metric families on each scrape (and its targets' states and recent
errors for the status page) and tells it to reload. Messages are length-prefixed
pickles: both ends are this program, forked from one process.

The line: the supervisor sends ``{"op": ..., "id": n}``, one request at a time; the worker answers
``(n, answer)`` (a late answer to a request that timed out is told apart by its number and
dropped). A worker answers until it has drained, then sends ``FinalCounters``, unasked, and
exits: the requests it finished while draining are counted too. The supervisor reads the line all
the time, so that last message never waits for a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from fastgw.errors import ConfigError
from fastgw.observe.metrics import Families, ReloadRecord, Trigger, collect_reloads, label_worker, merge
from fastgw.observe.recent_errors import merge_entries
from fastgw.observe.targets import TargetView, merge_states, target_states
from fastgw.plan import Plan
from fastgw.server.gateway import Gateway, Reloader

log = logging.getLogger("fastgw")

ReloadResult = dict[str, Any]  # {"ok": True, "routes": n, ...} or {"ok": False, "error": "file: key: ..."}
PurgeResult = dict[str, Any]  # {"purged": n, "errors": ["redis://...: why", ...]}
_LENGTH = struct.Struct("!I")
FINAL_TIMEOUT = 5.0  # a draining worker gives up sending its final counters after this long


class Control(Protocol):
    reloader: Reloader | None  # None: the gateway was not started from a file

    @property
    def reloads(self) -> ReloadRecord: ...  # where reloads are decided: outcomes, revisions, failures

    def plan(self) -> Plan: ...
    def ready(self) -> bool: ...
    async def families(self) -> Families: ...
    async def reload(self, trigger: Trigger) -> ReloadResult: ...
    async def purge_cache(self, key: str | None, prefix: str | None) -> PurgeResult: ...
    async def targets(self) -> list[TargetView]: ...  # observe.targets.merge_states of every process
    async def recent_errors(self) -> list[dict[str, Any]]: ...  # every process's, merged by time


class LocalControl:
    """A gateway running alone in this process."""

    def __init__(self, gateway: Gateway, reloader: Reloader | None) -> None:
        self.gateway = gateway
        self.reloader = reloader

    def plan(self) -> Plan:
        return self.gateway.plan

    @property
    def reloads(self) -> ReloadRecord:
        return self.gateway.reloads

    def ready(self) -> bool:
        return self.gateway.ready

    async def families(self) -> Families:
        return merge([label_worker(self.gateway.collect(), 0), collect_reloads(self.gateway.reloads, 1)])

    async def targets(self) -> list[TargetView]:
        return merge_states([(0, target_states(self.gateway.plan))])

    async def recent_errors(self) -> list[dict[str, Any]]:
        return merge_entries([(0, self.own_errors())])

    def own_errors(self) -> list[dict[str, object]]:
        ring = self.gateway.recent_errors
        return ring.entries() if ring is not None else []

    async def reload(self, trigger: Trigger, revision: int | None = None) -> ReloadResult:
        """Read the source again (at ``revision``: what the supervisor validated) and swap;
        ``trigger`` says what asked."""
        if self.reloader is None:
            return {"ok": False, "error": "the gateway was not started from a file"}
        try:
            try:
                await self.reloader.refresh(revision)
            except ConfigError as exc:
                self.gateway.reloads.failure(exc, trigger)  # (gateway.reload counts its own failures)
                raise
            self.gateway.reload(self.reloader, trigger)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return {"ok": False, "error": str(exc)}
        plan = self.gateway.plan
        result: ReloadResult = {"ok": True, "routes": len(plan.routes)}
        if plan.revision is not None:
            result["revision"] = plan.revision
        return result

    async def purge_cache(self, key: str | None, prefix: str | None) -> PurgeResult:
        from fastgw.plugins.cache import purge_entries  # the cache's modules: only when asked

        return await purge_entries(key, prefix)


# -- the supervisor's line to each worker ---------------------------------------------------------
# pickle is imported by the functions that use it: a single process (no workers) never loads it.


async def _send(writer: asyncio.StreamWriter, message: object) -> None:
    import pickle

    data = pickle.dumps(message)
    writer.write(_LENGTH.pack(len(data)) + data)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> Any:
    import pickle

    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))


@dataclass(frozen=True, slots=True)
class FinalCounters:
    """A worker's last message, unasked: its families once its requests have finished."""

    families: Families


class WorkerChannel:
    """The supervisor's end: one request at a time, each answered or timed out. A reader takes
    every message the worker sends, from ``start`` until the worker exits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.final: Families | None = None  # what the worker sent as it exited, if it drained
        self._lock = asyncio.Lock()
        self._asked = 0
        self._waiting: tuple[int, asyncio.Future[Any]] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None
        self._ended = False

    def start(self) -> None:
        """Start reading (in the supervisor's loop, right after the fork)."""
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self.sock)
        self._connected.set()
        try:
            while True:
                message = await _receive(reader)
                if isinstance(message, FinalCounters):
                    self.final = message.families
                elif self._waiting is not None and message[0] == self._waiting[0]:
                    answer = self._waiting[1]
                    if not answer.done():  # not timed out this very moment
                        answer.set_result(message[1])
                # else: the late answer to a request that timed out, dropped
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker exited
        finally:
            self._ended = True
            if self._waiting is not None and not self._waiting[1].done():
                self._waiting[1].set_exception(ConnectionError("the worker closed its channel"))

    async def ask(self, message: dict[str, Any], timeout: float) -> Any:
        async with self._lock:
            await asyncio.wait_for(self._connected.wait(), timeout)
            assert self._writer is not None
            self._asked += 1
            answer = asyncio.get_running_loop().create_future()
            self._waiting = (self._asked, answer)
            try:
                if self._ended:
                    raise ConnectionError("the worker closed its channel")
                await _send(self._writer, {**message, "id": self._asked})
                return await asyncio.wait_for(answer, timeout)
            finally:
                self._waiting = None

    async def ended(self, timeout: float) -> Families | None:
        """Once the worker has exited: its final counters, or None if it sent none (killed)."""
        if self._reading is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reading), timeout)
        return self.final

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            self._writer.close()
        else:
            self.sock.close()


class SupervisorLine:
    """The worker's end: ``answer`` the supervisor until the worker has drained, then ``finish``:
    send the final counters and close."""

    def __init__(self, sock: socket.socket, gateway: Gateway, reloader: Reloader | None) -> None:
        self.sock = sock
        self.gateway = gateway
        self.local = LocalControl(gateway, reloader)
        self._writer: asyncio.StreamWriter | None = None

    async def answer(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self.sock)
        try:
            while True:
                message = await _receive(reader)
                await _send(self._writer, (message.get("id"), await self._answer(message)))
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the supervisor is gone

    async def _answer(self, message: dict[str, Any]) -> Any:
        op = message.get("op")
        if op == "collect":
            return self.gateway.collect()
        if op == "reload":
            return await self.local.reload("supervisor", message.get("revision"))
        if op == "targets":
            return target_states(self.gateway.plan)
        if op == "recent_errors":
            return self.local.own_errors()
        if op == "purge_cache":
            return await self.local.purge_cache(message.get("key"), message.get("prefix"))
        return {"ok": False, "error": f"unknown operation {message!r}"}

    async def finish(self, answering: asyncio.Task[None]) -> None:
        """Stop ``answering``, send the counters as they are now (nothing runs any more), close."""
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answering
        if self._writer is None:
            return
        with contextlib.suppress(ConnectionError, TimeoutError):  # the supervisor is gone or stuck
            await asyncio.wait_for(_send(self._writer, FinalCounters(self.gateway.collect())), FINAL_TIMEOUT)
        self._writer.close()
