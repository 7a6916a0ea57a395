"""fastgw against what people would use instead, side by side on this machine: ``python -m bench``.

For each scenario, every contender (one worker/process each, keep-alive to the upstream) is
started in turn in front of the same fast upstream (nginx, one worker, fixed responses) and
driven by wrk (one thread): a warm-up, then several rounds. Reported per contender: requests/s,
latency p50/p99 (wrk --latency), the proxy's CPU microseconds per request from /proc (user and
system, the process and its children), and ratios to nginx measured in the same run. Results go
to ``bench/results/`` as JSON and a bar chart PNG.

The primary figure is CPU per request against nginx: the kernel's socket work is the same for
everyone, so every microsecond of user-space work on the hot path shows there first.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.machinery
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

from bench import http2, tail, tls, websocket
from bench.features import admin_port, feature_parts, header_script, nginx_notes
from bench.report import Result, print_table, save_results
from bench.scenarios import SCENARIOS, Scenario
from bench.status_poll import polling

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / "peers"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEBIAN_NEEDS = {
    "wrk": "wrk",
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "openssl": "openssl",
    "h2load": "nghttp2-client",
}
COMPILED = ("_router", "http._parser", "_proxy")  # fastgw's extension modules: no gateway without them
LOG_TAIL_LINES = 40  # of a contender's log, printed when it does not start


class BenchError(Exception):
    """The bench cannot go on; the message says why and what to do. Printed without a traceback."""


# -- setup ---------------------------------------------------------------------------------------
def install_needs() -> None:
    """wrk, nginx and haproxy from Debian; the chart library from PyPI; nothing by hand."""
    missing = [
        pkg
        for tool, pkg in DEBIAN_NEEDS.items()
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something listens on ``port``; BenchError when ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"exited with status {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise BenchError(f"nothing listening on {port} after {timeout:g} s")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace").rstrip("\n")
    kept = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (empty)"


def render(template: str, workdir: Path, **values: object) -> Path:
    text = (PEERS / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    out = workdir / template
    out.write_text(text)
    return out


@contextlib.contextmanager
def process(
    argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = workdir / f"{Path(argv[0]).name}-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        try:
            wait_port(port, proc=proc)
        except BenchError as exc:
            # The work directory is deleted at the end: its log goes with the error, now.
            log.flush()
            output = log_tail(log_path)
            raise BenchError(f"{' '.join(argv)}\n  {exc}; the last lines of its output:\n{output}") from None
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# -- contenders ----------------------------------------------------------------------------------
def upstream_ports(upstreams: tuple[int, ...], scenario: Scenario) -> tuple[int, ...]:
    """The upstream ports a scenario proxies to (see ``run`` for the five): the upstream nginx's,
    its TLS one for ``https-upstream``, its h2c one for the HTTP/2-upstream and gRPC scenarios,
    or the WebSocket echo's for a WebSocket scenario."""
    if scenario.driver == "ws":
        return upstreams[3:4]
    if scenario.upstream_protocol == "h2c":
        return upstreams[4:5]
    return upstreams[2:3] if scenario.tls == "upstream" else upstreams[: scenario.targets]


def fastgw_config(workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario) -> Path:
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in upstream_ports(upstreams, scenario))
    routes = scenario.routes
    upstream_tls = tls.fastgw_upstream_tls(workdir) if scenario.tls == "upstream" else ""
    if scenario.upstream_protocol == "h2c":
        upstream_tls += http2.fastgw_upstream_option()
    lines = [
        "listeners:",
        f"  - bind: 127.0.0.1:{port}",
        "    limits: {max_connections: 30000}",
        *([tls.fastgw_listener_tls(workdir, scenario.key_type)] if scenario.tls == "client" else []),
        *([http2.fastgw_listener(False)] if scenario.driver == "h2load" and scenario.tls != "client" else []),
        "upstreams:",
        # The default pool (1,024 connections per target, all kept idle): c1000 shows its churn.
        f"  up: {{targets: [{targets}], balance: {scenario.balance},{upstream_tls}}}",
        "routes:",
    ]
    if routes > 1:
        lines += [f"  - {{path: '/svc{i}/items/{{id}}', upstream: up}}" for i in range(routes)]
    parts = feature_parts(workdir, scenario.features)
    upgrade = ", websocket: true" if scenario.driver == "ws" else ""
    lines.append(
        f"  - {{id: all, path: '/{{*rest}}', upstream: up, plugins: [{', '.join(parts.plugins)}]{upgrade}}}"
    )
    lines += parts.top
    path = workdir / f"fastgw-{scenario.name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


Starter = Callable[
    [Path, int, tuple[int, ...], Scenario], contextlib.AbstractContextManager[subprocess.Popen[bytes] | None]
]


@contextlib.contextmanager
def start_direct(workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario) -> Iterator[None]:
    yield None  # wrk talks to the upstream itself: the ceiling


def start_nginx(
    workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    conf = nginx_config(workdir, port, upstreams, scenario)
    return process(["nginx", "-c", str(conf), "-p", str(workdir)], port, workdir)


def nginx_config(workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario) -> Path:
    proxied = nginx_proxied(workdir, scenario)
    count = scenario.routes if scenario.routes > 1 else 0
    locations = "\n".join(f"        location /svc{i}/ {{ {proxied} }}" for i in range(count))
    servers = " ".join(f"server 127.0.0.1:{p};" for p in upstream_ports(upstreams, scenario))
    parts = feature_parts(workdir, scenario.features)
    conf = render(
        "nginx_proxy.conf", workdir, dir=workdir, port=port, servers=servers, locations=locations,
        workers=scenario.workers, http_features="\n    ".join(parts.nginx_http),
        location_features="\n            ".join(parts.nginx_location),
        listen_ssl=(
            http2.nginx_listen_flags(scenario.tls == "client") if scenario.driver == "h2load"
            else " ssl" if scenario.tls == "client" else ""
        ),
        server_tls=tls.nginx_server_tls(workdir, scenario.key_type) if scenario.tls == "client" else "",
        proxied=proxied,
    )  # fmt: skip
    return conf


def nginx_proxied(workdir: Path, scenario: Scenario) -> str:
    """nginx's location body: ``grpc_pass`` to an HTTP/2 upstream, else ``proxy_pass`` over
    HTTP/1.1 keep-alive (HTTPS for ``https-upstream``, the Upgrade passed for WebSocket)."""
    if scenario.upstream_protocol == "h2c":
        return http2.nginx_grpc_pass()
    to_tls = scenario.tls == "upstream"
    scheme, upstream_tls = ("https", tls.nginx_upstream_tls(workdir)) if to_tls else ("http", "")
    connection = websocket.NGINX_UPGRADE if scenario.driver == "ws" else 'proxy_set_header Connection "";'
    return f"proxy_pass {scheme}://up; {upstream_tls} proxy_http_version 1.1; {connection}"


def start_haproxy(
    workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    conf = render("haproxy.cfg", workdir, port=port, upstream=upstreams[0])
    return process(["haproxy", "-db", "-f", str(conf)], port, workdir)


def built_in_place(src: Path) -> bool:
    """Does ``src/fastgw`` hold fastgw's extension modules built for this interpreter (an editable
    install, or ``python setup.py build_ext --inplace``)?"""
    package = src / "fastgw"
    return all(
        any(
            (package / f"{name.replace('.', '/')}{suffix}").exists()
            for suffix in importlib.machinery.EXTENSION_SUFFIXES
        )
        for name in COMPILED
    )


@functools.cache
def installed_fastgw(python: str) -> str | None:
    """Where ``python`` imports a working fastgw from (a ``pip install .``), or None."""
    probe = "import fastgw, " + ", ".join(f"fastgw.{name}" for name in COMPILED) + "; print(fastgw.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        found = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
        )
    except OSError:  # no such interpreter
        return None
    return str(Path(found.stdout.strip()).parent) if found.returncode == 0 else None


def fastgw_environment(src: Path, python: str = sys.executable) -> tuple[dict[str, str], str]:
    """The environment to run the fastgw of the checkout ``src`` belongs to, and what it runs.

    ``src`` itself when its extensions are built in place (PYTHONPATH=src); else, for this
    checkout, the fastgw that ``python`` has installed (``pip install .``: the extensions are in
    site-packages, and putting ``src`` first would shadow them with a package that cannot load);
    else BenchError saying what to run."""
    if built_in_place(src):
        path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path}, f"{src} (built in place)"
    own = src.resolve() == (REPO / "src").resolve()
    where = installed_fastgw(python) if own else None
    if where is not None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return env, f"{where} (installed: reinstall after changing the code)"
    raise BenchError(not_runnable(src, python, own))


def not_runnable(src: Path, python: str, own: bool) -> str:
    venv = REPO / ".venv" / "bin" / "python"
    use = str(venv.relative_to(REPO)) if venv.exists() else python
    if own and venv.exists() and installed_fastgw(str(venv)):
        return (
            f"{python} has no fastgw installed, {use} has (as scripts/demo installs it): run {use} -m bench"
        )
    lines = [
        f"no runnable fastgw: its compiled extensions ({', '.join(COMPILED)}) are not built in {src}"
        + (f", and {python} has no fastgw installed" if own else ""),
        f"  build them in place:  cd {src.parent} && {use} -m pip install -e .",
        f"                  (or:  cd {src.parent} && {use} setup.py build_ext --inplace)",
    ]
    if own:
        lines += [
            f"  or install the checkout into the interpreter that runs the bench: {use} -m pip install .",
            f"  then run:  {use} -m bench",
        ]
    return "\n".join(lines)


def start_fastgw(
    workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario, src: Path = REPO / "src"
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    conf = fastgw_config(workdir, port, upstreams, scenario)
    env, _ = fastgw_environment(src)
    workers = ["--workers", str(scenario.workers)] if scenario.workers > 1 else []
    return process(
        [sys.executable, "-m", "fastgw.cli", "--log-level", "WARNING", "run", "-c", str(conf), *workers],
        port,
        workdir,
        env,
    )


def python_peer(script: str) -> Starter:
    """A contender that is one of our Python scripts in ``peers/``: ``script PORT UPSTREAM_PORT``
    (and ``CERT KEY`` when the scenario has clients speak TLS to it)."""

    def start(
        workdir: Path, port: int, upstreams: tuple[int, ...], scenario: Scenario
    ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        argv = [sys.executable, str(PEERS / script), str(port), str(upstream_ports(upstreams, scenario)[0])]
        if scenario.tls == "client":
            argv += map(str, tls.certificate(workdir, scenario.key_type))
        return process(argv, port, workdir)

    return start


CONTENDERS: dict[str, Starter] = {
    "direct": start_direct,
    "nginx": start_nginx,
    "haproxy": start_haproxy,
    "fastgw": start_fastgw,
    "aiohttp": python_peer("aiohttp_proxy.py"),
    "bare": python_peer(
        "bare_forwarder.py"
    ),  # the floor: bytes relayed by uvloop, no gateway work (peers/bare_forwarder.py)
}
DEFAULT_CONTENDERS = tuple(CONTENDERS)  # before --baseline adds its own
GROUPS = ",tail,idle,idle-ws"  # after the scenarios: constant-rate latency, idle connections and tunnels
DEFAULT_ROUNDS = 3
DEFAULT_SECONDS = 5


def scenario_contenders(scenario: Scenario, baseline: bool) -> list[str]:
    """The scenario's contenders, with ``baseline`` (another fastgw build) right after fastgw
    (``config_refusal`` leaves it out of a scenario whose configuration that build refuses)."""
    names = list(scenario.contenders)
    if baseline and "fastgw" in names:
        names.insert(names.index("fastgw") + 1, "baseline")
    return names


def config_refusal(src: Path, conf: Path) -> str | None:
    """What the fastgw of checkout ``src`` says against ``conf`` (``fastgw check``), or None if it
    accepts it: a build from before a feature (HTTP/2 to upstreams, say) cannot run the
    scenarios that use it, and an A/B skips them for it rather than failing the whole run."""
    env, _ = fastgw_environment(src)
    checked = subprocess.run(
        [sys.executable, "-m", "fastgw.cli", "check", "-c", str(conf)],
        env=env,
        capture_output=True,
        text=True,
    )
    if checked.returncode == 0:
        return None
    said = (checked.stderr or checked.stdout).strip().splitlines()
    return said[-1] if said else f"exit status {checked.returncode}"


# -- measuring -----------------------------------------------------------------------------------
def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_ticks(pids: list[int]) -> tuple[int, int]:
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
    return user, system


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(port: int, scenario: Scenario, seconds: float, script: Path | None = None) -> dict[str, float]:
    argv = [
        "wrk",
        "-t1",
        f"-c{scenario.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if scenario.script:
        argv += ["-s", str(PEERS / scenario.script)]
    elif script is not None:
        argv += ["-s", str(script)]
    url = f"{'https' if scenario.tls == 'client' else 'http'}://127.0.0.1:{port}{scenario.path}"
    return parse_wrk(subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout)


def parse_wrk(out: str) -> dict[str, float]:
    """requests, rps, p50/p99 (ms) and errors (socket errors + non-2xx) from ``wrk --latency``."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        # Anchored: the Req/Sec line's last column ("71.50%") also ends in "50%" (or "99%").
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
    }


def measure(
    name: str,
    proc: subprocess.Popen[bytes] | None,
    port: int,
    scenario: Scenario,
    rounds: int,
    seconds: float,
    script: Path | None = None,
    upstream: int | None = None,
    grpc_message: Path | None = None,
) -> Result:
    """The median of ``rounds`` rounds by throughput, after a warm-up; with ``upstream`` (the
    upstream nginx's port), the connections it accepted from the round's second second to its end:
    the proxy's churn in steady state (a round's first second reopens what the last one's end
    cut: wrk stops with requests in flight, and a proxy may close their upstream connections)."""

    def drive(seconds: float) -> dict[str, float]:
        if scenario.driver == "wrk":
            return wrk(port, scenario, seconds, script)
        if scenario.driver == "rate":
            return tail.constant_rate(port, scenario.path, scenario.rate, seconds, scenario.connections)
        if scenario.driver == "h2load":
            return http2.h2load(
                port, scenario.path, seconds, scenario.connections, scenario.streams,
                tls=scenario.tls == "client", grpc_message=grpc_message,
            )  # fmt: skip
        if scenario.driver == "ws":
            return websocket.drive(port, scenario.connections, seconds)
        return tls.handshakes(port, scenario.path, seconds, reuse=scenario.driver == "reuse")

    drive(max(1.0, seconds / 2))  # warm-up: pools filled, caches hot
    samples = []
    for _ in range(rounds):
        pids = process_tree(proc.pid) if proc is not None else []
        marks: list[int] = []
        mark = threading.Timer(1.0, lambda into=marks: into.append(upstream_accepts(upstream)))
        mark.start()
        before = cpu_ticks(pids)
        run = drive(seconds)
        after = cpu_ticks(pids)
        mark.join()
        run["opened"] = upstream_accepts(upstream) - marks[0] - 1  # less the status read's own
        per = 1e6 / CLK_TCK / max(run["requests"], 1)
        samples.append((run, (after[0] - before[0]) * per, (after[1] - before[1]) * per, rss_mb(pids)))
    # The median round by throughput; at a constant rate (the same throughput), by p99.
    samples.sort(key=lambda s: s[0]["p99" if scenario.driver == "rate" else "rps"])
    run, user, system, rss = samples[len(samples) // 2]
    return Result(
        scenario.name,
        name,
        run["rps"],
        run["p50"],
        run["p99"],
        user + system,
        user,
        system,
        int(run["errors"]),
        [s[0]["rps"] for s in samples],
        rss,
        int(run["opened"]) if upstream is not None else -1,
        run.get("p999", 0.0),
    )


def upstream_accepts(port: int | None) -> int:
    """Connections the upstream nginx has accepted so far (its stub_status), 0 when not asked."""
    if port is None:
        return 0
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(b"GET /upstream_status HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
        answer = b""
        while data := sock.recv(4096):
            answer += data
    found = re.search(rb"accepts handled requests\s+(\d+)", answer)
    if found is None:
        raise BenchError(f"the upstream's stub_status said {answer[-200:]!r}")
    return int(found.group(1))


def tail_latency(
    workdir: Path, upstreams: tuple[int, ...], names: list[str], rounds: int, seconds: float
) -> list[Result]:
    """Each contender's peak (wrk, one round), then latency at a constant 50% and 90% of nginx's
    peak (bench/tail.py): nginx runs first, so every contender is offered the same rates."""
    results: list[Result] = []
    peak = 0.0
    plain = Scenario("tail-peak", "/items/1", connections=tail.CONNECTIONS)
    for name in names:
        port = free_port()
        with CONTENDERS[name](workdir, port, upstreams, plain) as proc:
            results.append(measure(name, proc, port, plain, 1, seconds, upstream=upstreams[0]))
            peak = peak or results[-1].rps
            for load in tail.LOADS:
                paced = replace(plain, name=f"tail-{load:.0%}", driver="rate", rate=load * peak)
                results.append(measure(name, proc, port, paced, rounds, seconds, upstream=upstreams[0]))
        for r in results[-1 - len(tail.LOADS) :]:
            print(
                f"  {r.scenario:14} {name:8} {r.rps:9.0f} req/s p99 {r.p99_ms:7.3f} ms {r.cpu_us:7.2f} us/req"
            )
    return results


def idle_connections(workdir: Path, upstreams: tuple[int, ...], count: int) -> list[Result]:
    """RSS of each proxy holding ``count`` idle keep-alive client connections (one request each)."""
    request = b"GET /items/1 HTTP/1.1\r\nHost: bench\r\n\r\n"

    def open_idle(port: int) -> list[socket.socket]:
        socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            socks.append(s)
        for s in socks:
            s.settimeout(10)
            if not s.recv(4096).startswith(b"HTTP/1.1 200"):
                raise RuntimeError("a held connection was not answered")
        return socks

    return held(
        workdir, upstreams, Scenario(f"idle-{count}", "/items/1", contenders=("nginx", "fastgw")), open_idle
    )


def idle_tunnels(workdir: Path, upstreams: tuple[int, ...], count: int) -> list[Result]:
    """RSS of each proxy holding ``count`` idle WebSocket tunnels (switched, then silent)."""
    scenario = Scenario(f"idle-ws-{count}", "/ws", contenders=("nginx", "fastgw"), driver="ws")
    return held(workdir, upstreams, scenario, lambda port: websocket.open_tunnels(port, count))


def held(
    workdir: Path,
    upstreams: tuple[int, ...],
    scenario: Scenario,
    open_them: Callable[[int], list[socket.socket]],
) -> list[Result]:
    """Each contender's RSS while it holds the connections ``open_them`` makes (printed with the
    cost of each over the contender's RSS before)."""
    results = []
    for name in scenario.contenders:
        port = free_port()
        with CONTENDERS[name](workdir, port, upstreams, scenario) as proc:
            assert proc is not None
            before = rss_mb(process_tree(proc.pid))
            socks = open_them(port)
            try:
                time.sleep(1)
                rss = rss_mb(process_tree(proc.pid))
            finally:
                for s in socks:
                    s.close()
            each = (rss - before) * 1024 / max(len(socks), 1)
            print(
                f"  {scenario.name:14} {name:8} {rss:7.1f} MB holding {len(socks)} ({each:.1f} KiB each)",
                flush=True,
            )
            results.append(Result(scenario.name, name, 0, 0, 0, 0, 0, 0, 0, [], rss))
    return results


# -- reporting -----------------------------------------------------------------------------------
FEATURE_BASELINE = "small-get"  # feature scenarios are the small GET with features on


def with_ratios(results: list[Result]) -> list[dict[str, object]]:
    rows = []
    features = {s.name: s.features for s in SCENARIOS if s.features}
    plain = next((x for x in results if x.scenario == FEATURE_BASELINE and x.contender == "fastgw"), None)
    for r in results:
        ref = next((x for x in results if x.scenario == r.scenario and x.contender == "nginx"), None)
        row: dict[str, object] = asdict(r)
        if ref is not None and ref.rps and r.rps:
            row["rps_vs_nginx"] = round(r.rps / ref.rps, 3)
            row["cpu_vs_nginx"] = round(r.cpu_us / ref.cpu_us, 3) if ref.cpu_us and r.cpu_us else None
        lacks = nginx_notes(features.get(r.scenario, ()))
        if r.contender == "nginx" and lacks:
            row["nginx_lacks"] = lacks
        if r.scenario in features and r.contender == "fastgw" and plain is not None and plain.cpu_us:
            # What the features cost: CPU per request over plain fastgw's small GET in this run.
            row["cpu_over_plain_us"] = round(r.cpu_us - plain.cpu_us, 2)
            row["user_over_plain_us"] = round(r.user_us - plain.user_us, 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--seconds", type=int, default=DEFAULT_SECONDS)
    parser.add_argument(
        "--scenarios", default=",".join(s.name for s in SCENARIOS) + GROUPS, help="comma-separated"
    )
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help="comma-separated")
    parser.add_argument("--idle", type=int, default=10_000, help="connections held in the idle scenario")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fastgw's --workers and nginx's worker_processes (scenarios -wN)",
    )
    parser.add_argument("--idle-ws", type=int, default=1_000, help="tunnels held in the idle-ws scenario")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get/pip install missing tools")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another fastgw checkout, built in place, run as contender 'baseline' beside fastgw (A/B)",
    )
    parser.add_argument(
        "--latest",
        action="store_true",
        help="also replace results/latest.json and latest.png (what the README shows); a full run"
        " (every scenario and contender, at least the default rounds and seconds) always does",
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 1


def is_full_run(args: argparse.Namespace) -> bool:
    """Every scenario and every contender, rounds and seconds at least the defaults: a run fit to
    replace the figures the README shows."""
    every_scenario = {s.name for s in SCENARIOS} | set(GROUPS.split(",")[1:])
    return (
        set(args.scenarios.split(",")) >= every_scenario
        and set(args.contenders.split(",")) >= set(DEFAULT_CONTENDERS)
        and args.rounds >= DEFAULT_ROUNDS
        and args.seconds >= DEFAULT_SECONDS
    )


def run(args: argparse.Namespace) -> int:
    wanted = set(args.scenarios.split(","))
    allowed = set(args.contenders.split(","))
    if args.baseline is not None:
        baseline = args.baseline.resolve() / "src"
        fastgw_environment(baseline)  # fail now, not after the tools are installed
        CONTENDERS["baseline"] = functools.partial(start_fastgw, src=baseline)
        allowed.add("baseline")
    if "fastgw" in allowed:
        _, what = fastgw_environment(REPO / "src")
        print(f"fastgw: {what}", flush=True)
    if not args.no_install:
        install_needs()
    raise_fd_limit()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fastgw-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx workers run as nobody: they must reach big.bin (else 403)
        (workdir / "big.bin").write_bytes(os.urandom(64 * 1024))
        (workdir / "big.bin").chmod(0o644)
        grpc_message = http2.write_grpc_message(workdir)  # sent by h2load, answered by the upstream
        # The upstream nginx's two ports, its TLS one (https-upstream), the WebSocket echo's, and
        # the upstream nginx's h2c one (the HTTP/2-upstream and gRPC scenarios).
        upstreams = tuple(free_port() for _ in range(5))
        upstream = upstreams[0]
        conf = render(
            "nginx_upstream.conf", workdir, dir=workdir, port=upstream, port2=upstreams[1],
            port_tls=upstreams[2], server_tls=tls.nginx_server_tls(workdir, "ecdsa"),
            listen_h2c=http2.nginx_upstream_listen(upstreams[4]),
        )  # fmt: skip
        echo = [sys.executable, str(PEERS / "ws_echo.py"), str(upstreams[3])]
        with (
            process(["nginx", "-c", str(conf), "-p", str(workdir)], upstream, workdir),
            process(echo, upstreams[3], workdir),
        ):
            for scenario in SCENARIOS:
                if scenario.name not in wanted:
                    continue
                if args.workers > 1:
                    scenario = replace(
                        scenario, name=f"{scenario.name}-w{args.workers}", workers=args.workers
                    )
                for name in scenario_contenders(scenario, args.baseline is not None):
                    if name not in allowed:
                        continue
                    if name == "baseline":
                        conf = fastgw_config(workdir, free_port(), upstreams, scenario)
                        refusal = config_refusal(args.baseline.resolve() / "src", conf)
                        if refusal is not None:
                            print(f"  {scenario.name:14} baseline skipped: its fastgw check says: {refusal}")
                            continue
                    port = upstream_ports(upstreams, scenario)[0] if name == "direct" else free_port()
                    headers = feature_parts(workdir, scenario.features).headers
                    script = header_script(workdir, scenario.name, headers) if headers else None
                    polled = scenario.poll_admin and name in ("fastgw", "baseline")
                    with (
                        CONTENDERS[name](workdir, port, upstreams, scenario) as proc,
                        polling(admin_port(workdir) if polled else None),
                    ):
                        result = measure(
                            name, proc, port, scenario, args.rounds, args.seconds, script,
                            upstream=upstream, grpc_message=grpc_message if scenario.grpc else None,
                        )  # fmt: skip
                    results.append(result)
                    print(
                        f"  {scenario.name:14} {name:8} {result.rps:9.0f} req/s {result.cpu_us:7.2f} us/req",
                        flush=True,
                    )
            if "tail" in wanted:
                names = [n for n in ("nginx", "fastgw", "baseline") if n in allowed]
                results += tail_latency(workdir, upstreams, names, args.rounds, args.seconds)
            if "idle" in wanted:
                results += idle_connections(workdir, upstreams, args.idle)
            if "idle-ws" in wanted:
                results += idle_tunnels(workdir, upstreams, args.idle_ws)
    rows = with_ratios(results)
    print()
    print_table(rows)
    print()
    for line in save_results(rows, RESULTS, latest=args.latest or is_full_run(args)):
        print(line)
    return 0
