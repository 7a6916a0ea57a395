"""A real ``redis-server`` for tests: on a free loopback port, no persistence, always reaped.

``RedisServer.start()`` runs it (again, on the same port, after ``kill()``, so a test can take
Redis away and bring it back); ``kill()`` SIGKILLs it, as a crash would. Use it through a fixture
that calls ``stop()`` at the end, or hand it a ``ProcessReaper``.
"""

from __future__ import annotations

import shutil
import signal

from .ports import free_port
from .procs import Proc, ProcessReaper, start_process

__all__ = ["RedisServer", "redis_server_path"]


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:  # scripts/test installs it; a missing binary is a broken setup, not a skip
        raise RuntimeError("redis-server is not installed (it is in scripts/test's DEBIAN_PACKAGES)")
    return path


class RedisServer:
    def __init__(self, processes: ProcessReaper | None = None) -> None:
        self.port = free_port()
        self.processes = processes
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.proc is not None and self.proc.alive:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        argv = [
            redis_server_path(),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
        ]
        if self.processes is not None:
            self.proc = self.processes.start(argv, ready_port=self.port)
        else:
            self.proc = start_process(argv, ready_port=self.port)
        return self

    def kill(self) -> None:
        """Gone at once, like a crash: connections reset, the port refuses."""
        if self.proc is not None:
            self.proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
