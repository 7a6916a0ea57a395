"""Fixtures for end-to-end tests: ``fastgw`` itself as a subprocess, a real upstream process.

Every process a test starts goes through the ``procs`` reaper, so it is stopped (its whole
process group: the supervisor and any workers it forked) even when the test fails.

- ``run_gateway(config, workers=1)`` writes the config (a dict, or YAML text) into the test's
  ``tmp_path``, runs ``python -m fastgw.cli run -c FILE --workers N`` and returns once every
  worker logged ``worker PID: listener NAME on http://HOST:PORT``. The port is read from that
  line, so a single-process gateway may bind port 0.
- ``upstream_proc`` / ``start_upstream(idle_close=...)``: ``tests/support/upstream_server.py``
  as a child process.
- ``run_cli(*args)``: one short-lived ``fastgw`` command, its exit code and output.

The process helpers at the bottom read ``/proc`` (Linux): children of a pid, which sockets a
process holds, which accepted connections are open on a port, and a process's resident memory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.etcd_server import EtcdServer
from tests.support.ports import free_port
from tests.support.procs import Proc, ProcessReaper, reaper
from tests.support.upstream_server import start_upstream_process

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"

_LISTENING = re.compile(r"worker (\d+): listener (\S+) on https?://(\S+):(\d+)")


def cli_env(extra_paths: Sequence[str | Path] = (), **env: str) -> dict[str, str]:
    """Environment for a ``fastgw`` child: the repository's ``src`` first on PYTHONPATH (harmless
    when fastgw is installed), then ``extra_paths``, then whatever PYTHONPATH already held."""
    parts = [str(SRC), *map(str, extra_paths)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(parts), **env}


def fastgw_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastgw.cli", *args]


def gateway_doc(
    upstream_port: int,
    routes: list[dict[str, Any]] | None = None,
    *,
    port: int | None = None,
    upstream: Mapping[str, Any] | None = None,
    **listener: Any,
) -> dict[str, Any]:
    """One listener ``main`` on 127.0.0.1 (a fresh free port unless given), one upstream ``up``
    (extra upstream keys in ``upstream``), and by default one catch-all route to it."""
    return {
        "listeners": [
            {"name": "main", "bind": f"127.0.0.1:{free_port() if port is None else port}", **listener}
        ],
        "upstreams": {"up": {"targets": [f"127.0.0.1:{upstream_port}"], **(upstream or {})}},
        "routes": routes if routes is not None else [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def write_config(directory: Path, config: Mapping[str, Any] | str, name: str = "gateway.yaml") -> Path:
    path = directory / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False))
    return path


# -- the gateway -----------------------------------------------------------------------------------


@dataclass
class GatewayProc:
    """A running ``fastgw run``: the process (the supervisor when workers > 1) and its port."""

    proc: Proc
    port: int
    config_path: Path
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The processes serving: the workers, or the gateway itself when it runs alone."""
        return child_pids(self.pid) if self.workers > 1 else [self.pid]

    def listening_lines(self) -> list[tuple[int, int]]:
        """(worker pid, port) of every ``listener ... on`` line logged so far."""
        return [(int(m[1]), int(m[4])) for m in _LISTENING.finditer(self.proc.stderr())]

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)


def _wait_listening(proc: Proc, count: int, timeout: float) -> int:
    """Wait until ``count`` distinct worker pids logged their listener; their port."""
    deadline = time.monotonic() + timeout
    while True:
        found = {(int(m[1]), int(m[4])) for m in _LISTENING.finditer(proc.stderr())}
        if len({pid for pid, _ in found}) >= count:
            ports = {port for _, port in found}
            assert len(ports) == 1, f"workers listen on different ports: {sorted(ports)}"
            return ports.pop()
        if not proc.alive:
            raise RuntimeError(f"{proc.describe()} exited before listening\n{proc.tail()}")
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{proc.describe()}: {count} worker(s) not listening in {timeout}s\n{proc.tail()}"
            )
        time.sleep(0.02)


@pytest.fixture
def procs() -> Iterator[ProcessReaper]:
    with reaper() as r:
        yield r


@pytest.fixture
def etcd(procs: ProcessReaper) -> Iterator[EtcdServer]:
    """A real etcd (tests/support/etcd_server.py), for the test."""
    server = EtcdServer(procs).start()
    yield server
    server.stop()


RunGateway = Callable[..., GatewayProc]


@pytest.fixture
def run_gateway(procs: ProcessReaper, tmp_path: Path) -> RunGateway:
    """Factory: ``run_gateway(config, workers=1, env=None, timeout=15)`` -> GatewayProc."""
    counter = iter(range(1_000_000))

    def run(
        config: Mapping[str, Any] | str,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> GatewayProc:
        path = write_config(tmp_path, config, f"gateway{next(counter)}.yaml")
        argv = fastgw_argv("run", "-c", str(path))
        if workers != 1:
            argv += ["--workers", str(workers)]
        proc = procs.start(argv, env={**cli_env(), **(env or {})}, timeout=timeout)
        port = _wait_listening(proc, workers, timeout)
        return GatewayProc(proc, port, path, workers)

    return run


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0, cwd: Path | None = None
) -> CliResult:
    """Run ``fastgw ARGS`` to completion. On timeout its whole process group is killed (``demo``
    starts a child of its own) and the test fails."""
    popen = subprocess.Popen(
        fastgw_argv(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **cli_env(), **(env or {})},
        cwd=cwd,
        start_new_session=True,
        text=True,
    )
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        out, err = popen.communicate()
        pytest.fail(f"fastgw {' '.join(args)} still running after {timeout}s\n{out}\n{err}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # whatever it left behind
            os.killpg(popen.pid, signal.SIGKILL)
    return CliResult(popen.returncode, out, err)


# -- the admin API ---------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def admin_call(port: int, path: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    """The admin API's status and answer (JSON decoded when it is JSON), with the token if given."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            body = response.read().decode()
            status = response.status
            kind = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        body, status, kind = error.read().decode(), error.code, error.headers.get("Content-Type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body


def scrape_metrics(port: int, token: str | None = None) -> Samples:
    """``/metrics`` as {(name, sorted labels): value}."""
    status, text = admin_call(port, "/metrics", token=token)
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- the upstream ----------------------------------------------------------------------------------


@dataclass
class Upstream:
    proc: Proc
    port: int

    def get_json(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stats(self) -> dict[str, int]:
        """{connections_opened, requests}; /stats requests themselves are not counted."""
        return dict(self.get_json("/stats"))


StartUpstream = Callable[..., Upstream]


@pytest.fixture
def start_upstream(procs: ProcessReaper) -> StartUpstream:
    """Factory: ``start_upstream(idle_close=None)`` -> Upstream (a fresh process each call)."""

    def start(idle_close: float | None = None) -> Upstream:
        proc, port = start_upstream_process(0, idle_close, procs)
        return Upstream(proc, port)

    return start


@pytest.fixture
def upstream_proc(start_upstream: StartUpstream) -> Upstream:
    return start_upstream()


# -- /proc helpers ---------------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def child_pids(parent: int) -> list[int]:
    """Live (not zombie) direct children of ``parent``."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == parent and state not in ("Z", "X"):
            children.append(int(entry))
    return sorted(children)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _socket_inodes_in_state(port: int, state: str) -> set[int]:
    """Inodes of TCP sockets whose local port is ``port``, in a /proc/net/tcp state (hex)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def accepted_inodes(port: int) -> set[int]:
    """Inodes of ESTABLISHED TCP sockets whose local port is ``port`` (server-side ends)."""
    return _socket_inodes_in_state(port, "01")


def listening_inodes(port: int) -> set[int]:
    """Inodes of LISTEN sockets bound to ``port`` (one per worker with SO_REUSEPORT)."""
    return _socket_inodes_in_state(port, "0A")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's resident memory every ``interval`` seconds in a thread; ``peak``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline
