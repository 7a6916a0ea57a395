"""Process model: one event loop per process; ``--workers N`` forks N of them on one port.

Each worker binds its own listening sockets with SO_REUSEPORT, so the kernel spreads new
connections across workers without a shared accept lock. The parent does no I/O of its own: it
waits for signals, restarts a worker that died (with a backoff if they keep dying), forwards
SIGHUP (reload), and on SIGTERM/SIGINT tells every worker to drain: stop accepting, finish the
requests in flight within the drain timeout, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import uvloop

from fastgw.errors import ConfigError
from fastgw.plan import Plan
from fastgw.server.gateway import Gateway

log = logging.getLogger("fastgw")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def drain_timeout(plan: Plan) -> float:
    return max((lp.timeouts.drain for lp in plan.listeners.values()), default=30.0)


def serve(
    plan: Plan,
    config_path: str | None,
    reuse_port: bool = False,
    on_ready: Callable[[Gateway], None] | None = None,
) -> int:
    """Run one gateway process until SIGTERM/SIGINT, then drain; returns the exit code."""
    return uvloop.run(_serve(plan, config_path, reuse_port, on_ready))


async def _serve(
    plan: Plan, config_path: str | None, reuse_port: bool, on_ready: Callable[[Gateway], None] | None
) -> int:
    loop = asyncio.get_running_loop()
    gateway = Gateway(plan)
    try:
        await gateway.start(reuse_port)
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror)
        return 1
    for name, url in gateway.urls():
        log.info("worker %d: listener %s on %s", os.getpid(), name, url)
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, gateway, config_path)
    if on_ready is not None:
        on_ready(gateway)
    await stop.wait()
    log.info("worker %d: draining", os.getpid())
    await gateway.drain(drain_timeout(gateway.plan))
    return 0


def _reload(gateway: Gateway, path: str) -> None:
    try:
        gateway.reload(path)
    except ConfigError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)


def check_ports_free(plan: Plan) -> None:
    """Bind each listener once *without* SO_REUSEPORT before forking. Workers bind with it, so
    without this check a second gateway on the same port would silently take half the traffic."""
    for lp in plan.listeners.values():
        family = socket.AF_INET6 if ":" in lp.config.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((lp.config.host, lp.config.port))
            except OSError as exc:
                raise OSError(
                    exc.errno, f"listener {lp.name} on {lp.config.host}:{lp.config.port}: {exc.strerror}"
                ) from None


def _die_with_parent() -> None:
    """Linux: get SIGTERM (and so drain) when the supervisor dies, instead of living on orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_workers(plan: Plan, config_path: str, workers: int) -> int:
    """Fork ``workers`` processes sharing the listeners' ports; supervise until told to stop.

    Returns 0 after a requested stop, 1 if the workers kept dying (e.g. they cannot listen).
    """
    try:
        check_ports_free(plan)
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror)
        return 1
    handled = {*STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, start time)
    crashes: list[float] = []
    parent = os.getpid()
    current = [plan]  # the plan new workers start with; replaced by a successful SIGHUP reload

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            if os.getppid() != parent:  # the supervisor died before prctl took effect
                os._exit(0)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
            code = 1
            try:
                code = serve(current[0], config_path, reuse_port=True)
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = (index, time.monotonic())

    for i in range(workers):
        spawn(i)
    log.info("supervisor %d: %d workers", os.getpid(), workers)
    stopping = False
    gave_up = False
    stop_deadline = 0.0
    while children:
        info = signal.sigtimedwait(handled, 0.5)
        if info is not None and info.si_signo in STOP_SIGNALS and not stopping:
            stopping = True
            stop_deadline = time.monotonic() + drain_timeout(plan) + 5.0
            for pid in children:
                _kill(pid, signal.SIGTERM)
        elif info is not None and info.si_signo == signal.SIGHUP:
            current[0] = _reload_plan(current[0], config_path)
            for pid in children:
                _kill(pid, signal.SIGHUP)
        if stopping and time.monotonic() > stop_deadline:
            for pid in children:
                _kill(pid, signal.SIGKILL)
        for pid, status in _reap():
            index, started = children.pop(pid, (-1, 0.0))
            if stopping or index < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.error("worker %d exited with %d; starting a new one", pid, code)
            now = time.monotonic()
            crashes[:] = [t for t in crashes if now - t < 10.0] + [now]
            if len(crashes) > 3 * workers:
                log.error("workers keep dying; giving up")
                for other in children:
                    _kill(other, signal.SIGTERM)
                stopping = gave_up = True
                stop_deadline = now + drain_timeout(plan) + 5.0
                continue
            if now - started < 1.0:
                time.sleep(0.5)  # crash loop backoff
            spawn(index)
    return 1 if gave_up else 0


def _reload_plan(plan: Plan, path: str) -> Plan:
    """The supervisor's copy of the plan, for workers it starts later; the old one on error."""
    from fastgw.config import load_config
    from fastgw.plan import compile_plan

    try:
        return compile_plan(load_config(path))
    except ConfigError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)
        return plan


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
