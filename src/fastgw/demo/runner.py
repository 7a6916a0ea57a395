"""``fastgw demo``: the gateway in front of the bundled e-commerce services.

The services run in a child process (``python -m fastgw.demo.services``), so the gateway process
is exactly what ``fastgw run`` would be. Their ports reach the bundled config through ``${ENV}``
substitution, which the demo thereby also shows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import resources

from fastgw.config import load_config
from fastgw.plan import compile_plan
from fastgw.server.gateway import Gateway
from fastgw.server.workers import serve


def _start_services() -> tuple[subprocess.Popen[str], dict[str, int]]:
    proc = subprocess.Popen([sys.executable, "-m", "fastgw.demo.services"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = {}
    for item in line.split():
        name, _, port = item.partition("=")
        if port.isdigit():
            ports[name] = int(port)
    if not ports:
        proc.kill()
        raise RuntimeError(f"demo services did not start (said {line!r})")
    return proc, ports


def run_demo(bind: str | None, smoke: bool) -> int:
    from fastgw.demo import demo_urls

    services, ports = _start_services()
    try:
        for name, port in ports.items():
            os.environ[f"{name.upper()}_PORT"] = str(port)
        if bind:
            os.environ["FASTGW_DEMO_BIND"] = bind
        elif smoke:
            os.environ.setdefault("FASTGW_DEMO_BIND", "127.0.0.1:0")
        config_file = resources.files("fastgw.demo").joinpath("gateway.yaml")
        with resources.as_file(config_file) as path:
            config = load_config(str(path))
        plan = compile_plan(config)

        outcome = {"failed": 0}

        def ready(gateway: Gateway) -> None:
            base = gateway.urls()[0][1]
            urls = demo_urls(base)
            if smoke:
                # The loop must keep serving while the smoke client waits: run it in a thread,
                # which stops the gateway with SIGTERM when it is done.
                asyncio.get_running_loop().run_in_executor(None, _smoke_then_stop, urls, outcome)
                return
            print(
                f"\nfastgw demo: gateway on {base} in front of "
                + ", ".join(f"{n} :{p}" for n, p in ports.items())
            )
            print("Try:")
            for url in urls:
                print(f"  {url}" if url.startswith("curl") else f"  curl -i '{url}'")
            print("Ctrl-C to stop.\n", flush=True)

        code = serve(plan, None, on_ready=ready)
        return code or (1 if outcome["failed"] else 0)
    finally:
        services.terminate()
        services.wait(10)


def _smoke_then_stop(urls: list[str], outcome: dict[str, int]) -> None:
    """GET each plain demo URL through the gateway, print the status, then stop the gateway."""
    try:
        for url in urls:
            if url.startswith("curl"):
                continue
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            print(f"{status or 'ERR'} {url}", flush=True)
            outcome["failed"] += not (200 <= status < 300)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
