"""Child processes for tests: start, wait until ready, stop, read their output, always reap.

``start_process`` runs a command in its own session (so a stuck child and any workers it forked
can be killed as one process group) with stdout and stderr captured to anonymous temporary files,
and returns once the child is ready: its stdout contains ``ready_line`` and/or ``ready_port``
accepts connections. ``Proc.stop`` sends a signal (SIGTERM by default), waits, then SIGKILLs the
group.

Every process is reaped even when a test fails: ``reaper()`` is a context manager (wrap it in a
fixture) whose ``ProcessReaper.start`` records each process and stops the ones still running on
exit, printing the tail of their output (pytest shows it for failed tests only). A last-resort
``atexit`` hook kills whatever is still alive when the interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import IO

from .ports import port_accepts

__all__ = ["Proc", "ProcessReaper", "reaper", "start_process"]

_LIVE: weakref.WeakSet[Proc] = weakref.WeakSet()


class Proc:
    """A started child process and its captured output."""

    def __init__(
        self, argv: Sequence[str], popen: subprocess.Popen[bytes], out: IO[bytes], err: IO[bytes]
    ) -> None:
        self.argv = list(argv)
        self.popen = popen
        self._out = out
        self._err = err

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return _read_all(self._out)

    def stderr(self) -> str:
        return _read_all(self._err)

    def output(self) -> str:
        """Everything the process wrote so far: stdout, then stderr."""
        return self.stdout() + self.stderr()

    def wait_for_output(self, text: str, timeout: float = 10.0, *, stderr: bool = False) -> str:
        """Wait until stdout (or stderr) contains ``text``; return the line it is on."""
        deadline = time.monotonic() + timeout
        while True:
            written = self.stderr() if stderr else self.stdout()
            at = written.find(text)
            if at >= 0:
                start = written.rfind("\n", 0, at) + 1
                end = written.find("\n", at)
                return written[start : end if end >= 0 else len(written)]
            if not self.alive:
                raise RuntimeError(f"{self.describe()} exited before writing {text!r}\n{self.tail()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.describe()} did not write {text!r} in {timeout}s\n{self.tail()}")
            time.sleep(0.01)

    def send_signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """The exit status once the process has exited; TimeoutError if it is still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.describe()} still running after {timeout}s") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig``, wait up to ``timeout``, then SIGKILL the whole group; the exit status."""
        if self.alive:
            self.popen.send_signal(sig)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill_group()
        return self.popen.wait()

    def kill_group(self) -> None:
        """SIGKILL the process and whatever is left of its group (workers it forked)."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.returncode is None:
            self.popen.wait()

    def describe(self) -> str:
        state = "running" if self.alive else f"exit {self.popen.returncode}"
        return f"[pid {self.pid}, {state}] {' '.join(self.argv)}"

    def tail(self, lines: int = 40) -> str:
        """The last lines of stdout and stderr, labelled, for failure messages."""
        parts = []
        for name, text in (("stdout", self.stdout()), ("stderr", self.stderr())):
            if text:
                last = text.splitlines()[-lines:]
                parts.append(f"--- {name} ---\n" + "\n".join(last))
        return "\n".join(parts) or "(no output)"


def _read_all(file: IO[bytes]) -> str:
    fd = file.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    ready_line: str | None = None,
    ready_port: int | None = None,
    timeout: float = 15,
    cwd: str | None = None,
) -> Proc:
    """Start ``argv`` and return once it is ready (see the module docstring).

    ``env`` is added to (and overrides) the current environment; PYTHONUNBUFFERED is set so a
    Python child's prints reach the capture file at once. If the child exits or is not ready
    within ``timeout`` seconds it is killed and RuntimeError/TimeoutError carries its output.
    """
    # Anonymous files: gone when the Proc is; read with pread, so the child's offset is untouched.
    out = tempfile.TemporaryFile(prefix="fastgw-stdout-")  # noqa: SIM115 - owned by the Proc
    err = tempfile.TemporaryFile(prefix="fastgw-stderr-")  # noqa: SIM115
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    proc = Proc(argv, popen, out, err)
    _LIVE.add(proc)
    try:
        _wait_ready(proc, ready_line, ready_port, timeout)
    except BaseException:
        proc.kill_group()
        raise
    return proc


def _wait_ready(proc: Proc, ready_line: str | None, ready_port: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        line_ok = ready_line is None or ready_line in proc.stdout()
        if line_ok and (ready_port is None or port_accepts(ready_port)):
            return
        if not proc.alive:
            raise RuntimeError(f"{proc.describe()} exited before it was ready\n{proc.tail()}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{proc.describe()} not ready after {timeout}s\n{proc.tail()}")
        time.sleep(0.01)


class ProcessReaper:
    """Remembers the processes of one test and stops them all at the end."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        ready_line: str | None = None,
        ready_port: int | None = None,
        timeout: float = 15,
        cwd: str | None = None,
    ) -> Proc:
        """``start_process``, remembered for ``stop_all``."""
        return self.add(start_process(argv, env, ready_line, ready_port, timeout, cwd))

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def stop_all(self, report: bool = True) -> None:
        """Stop the running processes, newest first; print each one's output tail."""
        for proc in reversed(self.procs):
            if proc.alive:
                proc.stop()
            else:
                proc.kill_group()  # leftovers of a leader that already exited
        if report:
            for proc in self.procs:
                print(f"{proc.describe()}\n{proc.tail()}")
        self.procs.clear()


@contextmanager
def reaper(report: bool = True) -> Iterator[ProcessReaper]:
    """A ProcessReaper whose processes are all stopped when the block exits, however it exits.

    In a conftest::

        @pytest.fixture
        def procs() -> Iterator[ProcessReaper]:
            with reaper() as r:
                yield r
    """
    processes = ProcessReaper()
    try:
        yield processes
    finally:
        processes.stop_all(report)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.alive:
            proc.kill_group()
