"""A real ``etcd`` for tests: one member on free loopback ports, its data in a temporary folder,
always reaped.

``EtcdServer(processes).start()`` runs it and returns once ``/health`` says true; ``url`` is its
client URL; ``put``/``get``/``delete`` talk to it over the same JSON API the gateway uses, from
plain blocking code (urllib), so a test writes behind the gateway's back; ``etcdctl(*args)`` runs
Debian's ``etcdctl`` against it. ``kill()`` SIGKILLs it (a crash) and ``start()`` brings it back
on the same ports with the same data.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from .ports import free_port
from .procs import Proc, ProcessReaper, start_process

__all__ = ["EtcdServer", "etcd_path"]


def etcd_path(name: str = "etcd") -> str:
    path = shutil.which(name)
    if path is None:  # scripts/test installs it; a missing binary is a broken setup, not a skip
        raise RuntimeError(
            f"{name} is not installed (etcd-server/etcd-client are in scripts/test's DEBIAN_PACKAGES)"
        )
    return path


class EtcdServer:
    def __init__(self, processes: ProcessReaper | None = None) -> None:
        self.port = free_port()
        self.peer_port = free_port()
        self.processes = processes
        self.data_dir = tempfile.mkdtemp(prefix="fastgw-etcd-")
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EtcdServer:
        if self.proc is not None and self.proc.alive:
            raise RuntimeError(f"etcd already running on port {self.port}")
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            etcd_path(),
            *("--name", "test", "--data-dir", self.data_dir),
            *("--listen-client-urls", self.url, "--advertise-client-urls", self.url),
            *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
            *("--initial-cluster", f"test={peer}", "--logger", "zap", "--log-level", "error"),
        ]
        if self.processes is not None:
            self.proc = self.processes.start(argv, ready_port=self.port)
        else:
            self.proc = start_process(argv, ready_port=self.port)
        deadline = time.monotonic() + 15
        while not self._healthy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd on {self.url} not healthy after 15s\n{self.proc.tail()}")
            time.sleep(0.02)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- the JSON API, blocking --------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def put(self, key: str, value: str | bytes) -> int:
        """Write a key; the revision of the write."""
        data = value.encode() if isinstance(value, str) else value
        answer = self.call("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(data)})
        return int(answer["header"]["revision"])

    def get(self, key: str) -> str | None:
        answer = self.call("/v3/kv/range", {"key": _b64(key.encode())})
        kvs = answer.get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def revision_of(self, key: str) -> int | None:
        """The key's mod revision (None when absent)."""
        kvs = self.call("/v3/kv/range", {"key": _b64(key.encode())}).get("kvs", [])
        return int(kvs[0]["mod_revision"]) if kvs else None

    def delete(self, key: str) -> int:
        answer = self.call("/v3/kv/deleterange", {"key": _b64(key.encode())})
        return int(answer["header"]["revision"])

    def etcdctl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Debian's etcdctl (v3 API) against this server."""
        return subprocess.run(
            [etcd_path("etcdctl"), "--endpoints", self.url, *args],
            input=input, capture_output=True, text=True, timeout=30,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def urlerror_reason(exc: urllib.error.URLError) -> str:
    return str(exc.reason)
