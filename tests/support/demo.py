"""The bundled demo in tests: its services as a process (``python -m fastgw.demo.services``, as
``fastgw demo`` runs them) and the environment ``gateway.yaml`` reads for its listeners."""

from __future__ import annotations

import sys
from pathlib import Path

from fastgw.tls.selfsigned import write_self_signed

from .procs import Proc, ProcessReaper, start_process

__all__ = ["listener_env", "start_demo_services"]


def start_demo_services(*args: str, processes: ProcessReaper | None = None) -> tuple[Proc, dict[str, int]]:
    """The services' process (``args`` added to its command line) once it said its ports, and
    those ports by service name."""
    argv = [sys.executable, "-m", "fastgw.demo.services", *args]
    start = processes.start if processes is not None else start_process
    proc = start(argv, ready_line="ordering=")
    line = proc.wait_for_output("ordering=")
    return proc, {name: int(port) for name, _, port in (item.partition("=") for item in line.split())}


def listener_env(certificates: Path) -> dict[str, str]:
    """``gateway.yaml``'s listener variables: free ports, and a self-signed certificate written to
    ``certificates`` for the HTTPS one."""
    cert, key = write_self_signed(certificates)
    return {
        "FASTGW_DEMO_BIND": "127.0.0.1:0",
        "FASTGW_DEMO_TLS_BIND": "127.0.0.1:0",
        "FASTGW_DEMO_MOBILE_BIND": "127.0.0.1:0",
        "FASTGW_DEMO_CERT": str(cert),
        "FASTGW_DEMO_KEY": str(key),
    }
