"""What a gateway process loads. Modules only some gateways need are imported where they are
used (each costs every process memory: ctypes a third of a megabyte, hashlib's table of OpenSSL
digests two thirds): a gateway without TLS never loads ctypes, hashlib or our OpenSSL calls, one
whose configuration has no mistake never loads difflib, one that has not retried never loads
random. A real ``fastgw run`` process reports
its ``sys.modules`` once its listener accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.certs import Pki
from tests.support.ports import free_port

CHILD = r"""
import json, os, socket, sys, threading, time

def report() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)

threading.Thread(target=report, daemon=True).start()
from fastgw.cli import main
main(["--log-level", "WARNING", "run", "-c", sys.argv[1]])
"""

ONLY_WHERE_USED = {"ctypes", "hashlib", "_hashlib", "hmac", "difflib", "random", "fastgw.tls.openssl"}


def modules_of_a_gateway(tmp_path: Path, listener: dict[str, Any]) -> set[str]:
    port = free_port()
    document = {
        "listeners": [{"name": "main", "bind": f"127.0.0.1:{port}", **listener}],
        "upstreams": {"up": {"targets": ["127.0.0.1:9"], "balance": "round_robin"}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(document))  # JSON is YAML
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(config), str(port)], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    return set(json.loads(child.stdout))


def test_a_gateway_without_tls_loads_none_of_the_modules_only_tls_needs(tmp_path: Path) -> None:
    modules = modules_of_a_gateway(tmp_path, {})
    assert "fastgw._proxy" in modules and "fastgw.server.gateway" in modules  # it did serve
    assert modules & ONLY_WHERE_USED == set()


def test_a_tls_listener_loads_the_openssl_calls_it_needs(tmp_path: Path, pki: Pki) -> None:
    leaf = pki.issue("gw.test")
    modules = modules_of_a_gateway(
        tmp_path, {"tls": {"certificates": [{"cert": leaf.cert, "key": leaf.key}]}}
    )
    assert {"fastgw.tls.openssl", "ctypes", "hashlib"} <= modules
    assert "difflib" not in modules
