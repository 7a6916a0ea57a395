"""Process model: one event loop per process; ``--workers N`` forks N of them on one port.

Each worker binds its own listening sockets with SO_REUSEPORT, so the kernel spreads new
connections across workers without a shared accept lock. The parent does no I/O of its own: it
waits for signals, restarts a worker that died (with a backoff if they keep dying), decides
reloads (``Supervisor``), serves the admin API with every worker's counters summed, and on
SIGTERM/SIGINT tells every worker to drain: stop accepting, finish the requests in flight within
the drain timeout, exit 0. Reloading never closes a listening socket: with SO_REUSEPORT, closing
one worker's socket resets the connections queued on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import uvloop

from fastgw.errors import ConfigError
from fastgw.observe.metrics import (
    Families,
    ReloadRecord,
    Trigger,
    collect_reloads,
    counters_of,
    label_worker,
    merge,
)
from fastgw.observe.recent_errors import merge_entries
from fastgw.observe.targets import TargetView, merge_states
from fastgw.plan import Plan
from fastgw.server.control import (
    LocalControl,
    PurgeResult,
    ReloadResult,
    SupervisorLine,
    WorkerChannel,
)
from fastgw.server.gateway import Gateway, Reloader
from fastgw.server.watch import watch_files

if TYPE_CHECKING:
    from fastgw.admin.api import AdminServer  # imported when an admin listener is configured

log = logging.getLogger("fastgw")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHANNEL_TIMEOUT = 10.0  # a worker that cannot answer the supervisor in this long is counted out
_PR_SET_PDEATHSIG = 1


def serve(
    plan: Plan,
    reloader: Reloader | None,
    reuse_port: bool = False,
    on_ready: Callable[[Gateway], None] | None = None,
    watch: bool = False,
    supervisor: socket.socket | None = None,
) -> int:
    """Run one gateway process until SIGTERM/SIGINT, then drain; returns the exit code.

    Alone, it also runs the admin listener (if configured) and ``--watch``; as a worker it
    answers the ``supervisor`` channel instead (metrics, reload) and the supervisor does those."""
    return uvloop.run(_serve(plan, reloader, reuse_port, on_ready, watch, supervisor))


async def _serve(
    plan: Plan,
    reloader: Reloader | None,
    reuse_port: bool,
    on_ready: Callable[[Gateway], None] | None,
    watch: bool,
    supervisor: socket.socket | None,
) -> int:
    loop = asyncio.get_running_loop()
    gateway = Gateway(plan)
    control = LocalControl(gateway, reloader)
    admin: AdminServer | None = None
    try:
        await gateway.start(reuse_port)
        if supervisor is None and plan.admin is not None:
            from fastgw.admin.api import start_admin  # aiohttp's server: loaded only when configured

            admin = await start_admin(control, plan.admin)
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror)
        return 1
    for name, url in gateway.urls():
        log.info("worker %d: listener %s on %s", os.getpid(), name, url)
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    background: set[asyncio.Task[object]] = set()

    def in_background(coro: Coroutine[Any, Any, object]) -> None:
        task = loop.create_task(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: in_background(control.reload("signal")))
        if watch and supervisor is None:
            on_change = functools.partial(control.reload, "watch")
            in_background(reloader.watch(on_change))
            in_background(watch_files(lambda: gateway.plan.named_files(), on_change))
    line = SupervisorLine(supervisor, gateway, reloader) if supervisor is not None else None
    # Not in the background tasks: the supervisor still asks for counters while this one drains.
    answering = loop.create_task(line.answer()) if line is not None else None
    if on_ready is not None:
        on_ready(gateway)
    await stop.wait()
    await gateway.stop_accepting()
    log.info("worker %d: draining", os.getpid())  # new connections are refused from here on
    for task in list(background):
        task.cancel()
    await gateway.drain(gateway.plan.drain_timeout)
    if line is not None and answering is not None:
        await line.finish(answering)  # the counters of the requests finished while draining
    if admin is not None:
        await admin.stop()
    return 0


def check_ports_free(plan: Plan) -> None:
    """Bind each listener once *without* SO_REUSEPORT before forking. Workers bind with it, so
    without this check a second gateway on the same port would silently take half the traffic."""
    for lp in plan.listeners.values():
        family = socket.AF_INET6 if ":" in lp.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((lp.host, lp.port))
            except OSError as exc:
                raise OSError(exc.errno, f"listener {lp.name} on {lp.bind}: {exc.strerror}") from None


def _die_with_parent() -> None:
    """Linux: get SIGTERM (and so drain) when the supervisor dies, instead of living on orphaned."""
    import ctypes  # here: only forked workers call this (PERF: memory of one process)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_workers(plan: Plan, reloader: Reloader, workers: int, watch: bool = False) -> int:
    """Fork ``workers`` processes sharing the listeners' ports; supervise until told to stop.

    Returns 0 after a requested stop, 1 if the workers kept dying (e.g. they cannot listen).
    """
    try:
        check_ports_free(plan)
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror)
        return 1
    return asyncio.run(Supervisor(plan, reloader, workers, watch).run())


class Worker:
    """A forked worker as the supervisor sees it."""

    def __init__(self, index: int, pid: int, channel: WorkerChannel) -> None:
        self.index = index
        self.pid = pid
        self.channel = channel
        self.started = time.monotonic()
        self.retiring = False  # told to drain (a failed reload): not restarted when it exits
        self.counters: Families = {}  # as last collected, or as it sent them when it drained


class Supervisor:
    """The parent of ``--workers N``: it starts and restarts workers, runs the admin listener
    and ``--watch``, and decides reloads (SIGHUP, ``POST /reload``, a watched change): it
    validates the file itself first, so an invalid one touches no worker; then each worker
    reloads over its channel, and one that fails is drained and replaced. Its asyncio loop only
    waits for signals, the admin listener and the channels; workers fork from inside it (each
    child closes the supervisor's sockets and starts a fresh loop: asyncio ties the running
    loop to the process id).

    Scrapes: every worker is asked for its families; a worker that serves adds all of them, its
    per-worker states labelled with its slot; one that drains (replaced), or does not answer,
    adds its counters as last collected. A worker that exits is kept until its channel has
    ended (a worker that drained sends its final counters), then its counters are folded into
    ``retired``, which every later scrape adds: counters never go back."""

    def __init__(self, plan: Plan, reloader: Reloader, workers: int, watch: bool) -> None:
        self.current = plan  # the plan new workers start with; replaced by a successful reload
        self.reloader: Reloader | None = reloader
        self.count = workers
        self.watch = watch
        self.workers: dict[int, Worker] = {}  # by pid
        self.exited: dict[int, Worker] = {}  # reaped, their counters not yet in ``retired``
        self.retired: Families = {}  # the counters of the workers gone, added to every scrape
        self.reloads = ReloadRecord(applied_revision=plan.revision)
        self.crashes: list[float] = []
        self.stopping = False
        self.gave_up = False
        self.admin: AdminServer | None = None
        self._reload_lock = asyncio.Lock()
        self._all_exited = asyncio.Event()
        self._background: set[asyncio.Task[object]] = set()

    @property
    def path(self) -> str:
        return self.reloader.path if self.reloader is not None else ""

    # -- Control, for the admin API ------------------------------------------------------------
    def plan(self) -> Plan:
        return self.current

    def ready(self) -> bool:
        return not self.stopping and bool(self.workers)

    async def families(self) -> Families:
        """Every worker's counters, summed: the whole gateway, not one worker."""
        asked = list(self.workers.values())
        answers = await asyncio.gather(
            *(w.channel.ask({"op": "collect"}, CHANNEL_TIMEOUT) for w in asked), return_exceptions=True
        )
        serving: dict[int, Families] = {}
        for worker, answer in zip(asked, answers, strict=True):
            if isinstance(answer, dict):
                worker.counters = counters_of(answer)
                if not worker.retiring:
                    serving[worker.pid] = label_worker(answer, worker.index)
        # Taken after the answers came in, with no await between: a worker that exited meanwhile
        # is counted once, here or in ``retired``.
        known = [*self.workers.values(), *self.exited.values()]
        parts = [serving.get(w.pid, w.counters) for w in known]
        return merge([self.retired, *parts, collect_reloads(self.reloads, len(serving))])

    async def _ask_serving(self, message: dict[str, Any]) -> list[tuple[Worker, Any]]:
        """Ask every worker that serves (not one draining); each with its answer or exception."""
        workers = [w for w in self.workers.values() if not w.retiring]
        answers = await asyncio.gather(
            *(w.channel.ask(message, CHANNEL_TIMEOUT) for w in workers), return_exceptions=True
        )
        return list(zip(workers, answers, strict=True))

    async def reload(self, trigger: Trigger) -> ReloadResult:
        async with self._reload_lock:
            assert self.reloader is not None  # workers always start from a source
            try:
                await self.reloader.refresh()
                plan = self.reloader(self.current)
            except ConfigError as exc:
                self.reloads.failure(exc, trigger, self.reloader.revision)
                log.error("reload failed, keeping the running configuration: %s", exc)
                return {"ok": False, "error": str(exc)}
            self.current = plan
            # Each worker reads the revision validated here, not whatever is newest by then.
            answers = await self._ask_serving({"op": "reload", "revision": plan.revision})
            replaced = 0
            for worker, answer in answers:
                if not (isinstance(answer, dict) and answer.get("ok")):
                    log.error("worker %d failed to reload (%s); replacing it", worker.pid, answer)
                    self.replace(worker)
                    replaced += 1
            self.reloads.success(trigger, plan.revision)
            log.info("configuration reloaded from %s: %d routes", plan.source, len(plan.routes))
            result: ReloadResult = {
                "ok": True,
                "routes": len(plan.routes),
                "workers": len(answers),
                "replaced": replaced,
            }
            if plan.revision is not None:
                result["revision"] = plan.revision
            return result

    async def targets(self) -> list[TargetView]:
        """Every serving worker's view of the targets, side by side (a worker that does not
        answer is left out)."""
        answers = await self._ask_serving({"op": "targets"})
        return merge_states([(w.index, answer) for w, answer in answers if isinstance(answer, list)])

    async def recent_errors(self) -> list[dict[str, Any]]:
        """Every serving worker's recent errors, merged by time."""
        answers = await self._ask_serving({"op": "recent_errors"})
        return merge_entries([(w.index, answer) for w, answer in answers if isinstance(answer, list)])

    async def purge_cache(self, key: str | None, prefix: str | None) -> PurgeResult:
        """Every worker purges its own memory zones (and the Redis caches it uses): summed."""
        answers = await self._ask_serving({"op": "purge_cache", "key": key, "prefix": prefix})
        purged, errors = 0, []
        for worker, answer in answers:
            if isinstance(answer, dict):
                purged += int(answer.get("purged", 0))
                errors += [e for e in answer.get("errors", ()) if e not in errors]
            else:
                errors.append(f"worker {worker.pid} did not answer ({answer!r})")
        return {"purged": purged, "errors": errors, "workers": len(answers)}

    # -- the processes -------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._in_background(self.reload("signal")))
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        if self.current.admin is not None:
            try:
                from fastgw.admin.api import start_admin

                self.admin = await start_admin(self, self.current.admin)
            except OSError as exc:
                log.error("cannot listen: %s", exc.strerror)
                return 1
        for index in range(self.count):
            self.spawn(index)
        log.info("supervisor %d: %d workers", os.getpid(), self.count)
        if self.watch and self.reloader is not None:
            on_change = functools.partial(self.reload, "watch")
            self._in_background(self.reloader.watch(on_change))
            self._in_background(watch_files(lambda: self.current.named_files(), on_change))
        await self._all_exited.wait()
        for task in list(self._background):
            task.cancel()
        if self.admin is not None:
            await self.admin.stop()
        return 1 if self.gave_up else 0

    def _in_background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def spawn(self, index: int) -> None:
        parent_end, child_end = socket.socketpair()
        inherited = [w.channel.sock for w in (*self.workers.values(), *self.exited.values())]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # the supervisor loop's; the worker's loop sets its own
                for sig in (*STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent()
                parent_end.close()
                for sock in inherited:
                    sock.close()
                if self.admin is not None:
                    for listening in self.admin.sockets():
                        os.close(listening.fileno())  # asyncio wraps it: close the fd itself
                code = serve(self.current, self.reloader, reuse_port=True, supervisor=child_end)
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        child_end.close()
        channel = WorkerChannel(parent_end)
        channel.start()
        self.workers[pid] = Worker(index, pid, channel)

    def replace(self, worker: Worker) -> None:
        """Drain ``worker`` and start another in its place, on the current plan."""
        worker.retiring = True
        _kill(worker.pid, signal.SIGTERM)
        self.spawn(worker.index)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for pid in self.workers:
            _kill(pid, signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.current.drain_timeout + 5.0, self._kill_all)
        if not self.workers:
            self._all_exited.set()

    def _kill_all(self) -> None:
        for pid in self.workers:
            _kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        for pid, status in _reap():
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.exited[pid] = worker
            self._in_background(self._retire(worker))
            if self.stopping or worker.retiring:
                continue
            log.error("worker %d exited with %d; starting a new one", pid, os.waitstatus_to_exitcode(status))
            now = time.monotonic()
            self.crashes[:] = [t for t in self.crashes if now - t < 10.0] + [now]
            if len(self.crashes) > 3 * self.count:
                log.error("workers keep dying; giving up")
                self.gave_up = True
                self.stop()
                continue
            delay = 0.5 if now - worker.started < 1.0 else 0.0  # crash loop backoff
            asyncio.get_running_loop().call_later(delay, self._respawn, worker.index)
        if self.stopping and not self.workers:
            self._all_exited.set()

    async def _retire(self, worker: Worker) -> None:
        """Fold the counters of a worker that exited into ``retired``: as it sent them after
        draining, or (killed) as last collected."""
        final = await worker.channel.ended(CHANNEL_TIMEOUT)
        if final is not None:
            worker.counters = counters_of(final)
        self.retired = merge([self.retired, worker.counters])
        del self.exited[worker.pid]
        worker.channel.close()

    def _respawn(self, index: int) -> None:
        if not self.stopping:
            self.spawn(index)


def _reap() -> list[tuple[int, int]]:
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        done.append((pid, status))
    return done


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
