"""How precisely the gateway's deadlines fire, at scale: ``python bench/timers.py [N ...]``.

For each N (default 100, 1,000 and 5,000), starts ``fastgw run`` with a 500 ms head timeout,
opens N connections over two seconds that each send half a request head, and records,
per connection, the time from its first byte to the gateway's 408. Prints how late the timeouts
fired beyond 500 ms (min, p50, p99, max) and how many fired early (there must be none). The
client side is one asyncio loop; its own latency is part of what is measured, so the figures
are an upper bound of the gateway's lateness.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_TIMEOUT = 0.5
SPREAD = 2.0
ROOT = Path(__file__).resolve().parent.parent


def config(port: int) -> str:
    return f"""
listeners:
  - name: main
    bind: "127.0.0.1:{port}"
    timeouts: {{head: {int(HEAD_TIMEOUT * 1000)}ms}}
    limits: {{max_connections: 20000}}
upstreams:
  up: {{targets: ["127.0.0.1:9"]}}
routes:
  - {{id: all, path: "/{{*rest}}", upstream: up}}
"""


async def one(port: int, results: list[float], delay: float) -> None:
    await asyncio.sleep(delay)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = time.monotonic()
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    line = await reader.readline()
    if line.startswith(b"HTTP/1.1 408"):
        results.append(time.monotonic() - sent - HEAD_TIMEOUT)
    writer.close()


async def measure(port: int, count: int) -> list[float]:
    results: list[float] = []
    # Each connection sends its half head as soon as it is open (an idle connection's first
    # deadline is the same head timeout, and closes it without an answer). They open spread
    # over SPREAD seconds, so that about count / SPREAD deadlines fall due each second: what is
    # measured is the timer, not the time to write thousands of 408s due in the same instant.
    tasks = [asyncio.create_task(one(port, results, SPREAD * i / count)) for i in range(count)]
    await asyncio.gather(*tasks, return_exceptions=True)
    return results


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    counts = [int(arg) for arg in sys.argv[1:]] or [100, 1000, 5000]
    print(f"head timeout {HEAD_TIMEOUT * 1000:.0f} ms, connections opened over {SPREAD:g} s; lateness, ms")
    print(f"{'connections':>11} {'fired':>6} {'early':>5} {'min':>6} {'p50':>6} {'p99':>6} {'max':>6}")
    for count in counts:
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gw.yaml"
            path.write_text(config(port))
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            proc = subprocess.Popen(
                [sys.executable, "-m", "fastgw.cli", "run", "-c", str(path)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1.5)
                late = asyncio.run(measure(port, count))
            finally:
                proc.terminate()
                proc.wait(10)
        late.sort()
        ms = [x * 1000 for x in late]
        early = sum(1 for x in late if x < 0)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
        median = statistics.median(ms)
        print(f"{count:>11} {len(ms):>6} {early:>5} {ms[0]:>6.1f} {median:>6.1f} {p99:>6.1f} {ms[-1]:>6.1f}")


if __name__ == "__main__":
    main()
