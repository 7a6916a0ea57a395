"""``fastgw demo``: the gateway in front of the bundled e-commerce services.

The services run in a child process (``python -m fastgw.demo.services``), so the gateway process
is exactly what ``fastgw run`` would be. Their ports reach the bundled config through ``${ENV}``
substitution, which the demo thereby also shows, and so do the files of the self-signed
certificate made for the HTTPS listener (in a temporary directory, removed at the end). The web
gateway (HTTP and HTTPS) and the mobile gateway are listeners of the one config (docs/bff.md).

With ``--registry URL`` (an etcd), the services register themselves there before they say their
ports, and the gateway runs the same config with each upstream following its service's prefix by
etcd discovery (``fastgw.demo.registry_document``); the gateway listens once etcd answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

import yaml

from fastgw.config import load_config, parse_config
from fastgw.config.schema import Config
from fastgw.demo import REGISTRY_PREFIX, demo_urls, instance_key, live_url, mobile_urls, registry_document
from fastgw.plan import compile_plan
from fastgw.server.gateway import Gateway
from fastgw.server.workers import serve
from fastgw.tls.selfsigned import write_self_signed


def _start_services(registry: str | None) -> tuple[subprocess.Popen[str], dict[str, int]] | None:
    """The services' process and their ports; None (the process said why on stderr) when they
    did not start."""
    argv = [sys.executable, "-m", "fastgw.demo.services"]
    if registry is not None:
        argv += ["--registry", registry]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = {}
    for item in line.split():
        name, _, port = item.partition("=")
        if port.isdigit():
            ports[name] = int(port)
    if not ports:
        proc.kill()
        proc.wait()
        said = f" (said {line!r})" if line else ""  # else they said why on stderr
        print(f"fastgw demo: the demo services did not start{said}", file=sys.stderr)
        return None
    return proc, ports


def _load_gateway_config(registry: str | None) -> Config:
    """gateway.yaml; in registry mode with its upstreams following etcd (``registry_document``)."""
    config_file = resources.files("fastgw.demo").joinpath("gateway.yaml")
    with resources.as_file(config_file) as path:
        if registry is None:
            return load_config(str(path))
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        return parse_config(registry_document(document, registry), f"{path} (registry mode)")


def run_demo(
    bind: str | None,
    smoke: bool,
    tls_bind: str | None = None,
    mobile_bind: str | None = None,
    registry: str | None = None,
) -> int:
    started = _start_services(registry)
    if started is None:
        return 1
    services, ports = started
    certificates = tempfile.TemporaryDirectory(prefix="fastgw-demo-")
    try:
        for name, port in ports.items():
            os.environ[f"{name.upper()}_PORT"] = str(port)
        cert, key = write_self_signed(Path(certificates.name))
        os.environ["FASTGW_DEMO_CERT"], os.environ["FASTGW_DEMO_KEY"] = str(cert), str(key)
        binds = (
            ("FASTGW_DEMO_BIND", bind),
            ("FASTGW_DEMO_TLS_BIND", tls_bind),
            ("FASTGW_DEMO_MOBILE_BIND", mobile_bind),
        )
        for variable, address in binds:
            if address:
                os.environ[variable] = address
            elif smoke:
                os.environ.setdefault(variable, "127.0.0.1:0")
        plan = compile_plan(_load_gateway_config(registry))
        if registry is not None:
            print(
                f"fastgw demo: the services registered in etcd at {registry}: "
                + ", ".join(instance_key(name, "127.0.0.1", port) for name, port in ports.items())
                + f" (the gateway's upstreams follow {REGISTRY_PREFIX}<service>/)",
                flush=True,
            )

        outcome = {"failed": 0}

        def ready(gateway: Gateway) -> None:
            bases = dict(gateway.urls())
            base, secure, mobile = bases["public"], bases["public-tls"], bases["mobile"]
            if smoke:
                # The loop must keep serving while the smoke client waits: run it in a thread,
                # which stops the gateway with SIGTERM when it is done.
                urls = demo_urls(base) + demo_urls(secure) + mobile_urls(mobile)
                lives = [(live_url(base, "smoke"), base), (live_url(secure, "smoke"), secure)]
                trust = ssl.create_default_context(cafile=str(cert))
                asyncio.get_running_loop().run_in_executor(
                    None, _smoke_then_stop, urls, lives, trust, outcome
                )
                return
            print(
                f"\nfastgw demo: web gateway on {base} and {secure}, mobile gateway on {mobile}, in front of "
                + ", ".join(f"{n} :{p}" for n, p in ports.items())
            )
            print("Try:")
            for url in demo_urls(base):
                print(f"  {url}" if url.startswith("curl") else f"  curl -i '{url}'")
            print(f"Over HTTPS (a self-signed certificate: -k, or --cacert {cert}):")
            print(f"  curl -ik '{demo_urls(secure)[1]}'")
            print(f"  curl -ik --http2 '{demo_urls(secure)[1]}'   (HTTP/2, offered by ALPN)")
            print("The mobile gateway: the same services, smaller answers, a tighter rate limit:")
            for url in mobile_urls(mobile):
                print(f"  curl -i '{url}'")
            print("Live basket updates (WebSocket: the basket as JSON now and at each change):")
            print(f"  {live_url(base)}")
            print(f"  and over TLS: {live_url(secure)}")
            if registry is not None:
                print("More instances of each service, found through etcd (Ctrl-C takes them out again):")
                print(f"  python -m fastgw.demo.services --registry {registry}")
            print("Ctrl-C to stop.\n", flush=True)

        code = serve(plan, None, on_ready=ready)
        return code or (1 if outcome["failed"] else 0)
    finally:
        services.terminate()
        services.wait(10)
        certificates.cleanup()


def _smoke_then_stop(
    urls: list[str], lives: list[tuple[str, str]], trust: ssl.SSLContext, outcome: dict[str, int]
) -> None:
    """GET each plain demo URL through the gateway (the HTTPS ones verified against the demo's
    certificate), print the status; watch each live basket change through the gateway (101 when
    it did); then stop the gateway."""
    try:
        for url, base in lives:
            try:
                status = asyncio.run(_watch_basket(url, base, trust))
            except (TimeoutError, OSError, ValueError) as exc:
                print(f"ERR {url}: {exc!r}", flush=True)
                status = 0
            else:
                print(f"{status or 'ERR'} {url}", flush=True)
            outcome["failed"] += status != 101
        for url in urls:
            if url.startswith("curl"):
                continue
            try:
                with urllib.request.urlopen(url, timeout=10, context=trust) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            print(f"{status or 'ERR'} {url}", flush=True)
            outcome["failed"] += not (200 <= status < 300)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


async def _watch_basket(url: str, base: str, trust: ssl.SSLContext) -> int:
    """Open the live basket at ``url``, change that basket over HTTP at ``base``, and see the
    change arrive on the WebSocket: 101 (the switch, and the update through it), else 0."""
    import aiohttp  # the demo services' dependency; only the smoke run needs its client here

    buyer = url.rsplit("/", 2)[-2]
    change = {"items": [{"product_id": 2, "quantity": 3}]}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(url, ssl=trust) as ws:
        before = await ws.receive_json(timeout=10)
        async with session.post(f"{base}/api/basket/{buyer}", json=change, ssl=trust) as reply:
            if reply.status != 200:
                return 0
        after = await ws.receive_json(timeout=10)
        switched = before["items"] != after["items"] and after["items"][0]["quantity"] == 3
        async with session.delete(f"{base}/api/basket/{buyer}", ssl=trust):
            pass
    return 101 if switched else 0
