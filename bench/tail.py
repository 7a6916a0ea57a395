"""Tail latency at a constant request rate, the ``tail`` group of ``python -m bench``.

wrk sends each connection's next request when the last one is answered, so a proxy that stalls
is sent fewer requests while it stalls and its slow moments barely show in wrk's percentiles
(coordinated omission; a wrk Lua script that paces requests does not correct it). The driver
here, ``peers/rate_driver.c``, compiled at bench time with the machine's C compiler, sends
request k at start + k / rate whatever happened before, and times each from when it was due
(as wrk2 does). The group runs each contender at 50% and 90% of nginx's peak measured in the same
run (the same offered load for every contender), with the proxy's CPU per request beside it.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

DRIVER_SOURCE = Path(__file__).resolve().parent / "peers" / "rate_driver.c"
LOADS = (0.5, 0.9)  # of nginx's peak requests/s
CONNECTIONS = 64  # as wrk's -c64 in the small GET


class DriverError(Exception):
    """The driver could not be built or did not run; the message says why."""


@functools.cache
def driver() -> Path:
    """The compiled driver (built once per bench run, in a temporary directory)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise DriverError("no C compiler (cc) to build peers/rate_driver.c: apt-get install gcc")
    out = Path(tempfile.mkdtemp(prefix="fastgw-rate-driver-")) / "rate_driver"
    argv = [compiler, "-O2", "-o", str(out), str(DRIVER_SOURCE)]
    built = subprocess.run(argv, capture_output=True, text=True)
    if built.returncode != 0:
        raise DriverError(f"{compiler} could not build {DRIVER_SOURCE.name}:\n{built.stderr}")
    return out


def parse_driver(out: str) -> dict[str, float]:
    """The driver's line as bench figures: requests answered, their rate, p50/p99/p99.9 in ms
    (over the answered and the late), errors (non-2xx, resets and the late)."""
    values = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+)", out)}
    missing = {"requests", "late", "errors", "rate", "p50", "p99", "p999"} - values.keys()
    if missing:
        raise DriverError(f"the rate driver's output lacks {sorted(missing)}: {out!r}")
    return {
        "requests": values["requests"],
        "rps": values["rate"],
        "p50": values["p50"] / 1000,
        "p99": values["p99"] / 1000,
        "p999": values["p999"] / 1000,
        "errors": values["errors"] + values["late"],
    }


def constant_rate(
    port: int, path: str, rate: float, seconds: float, connections: int = CONNECTIONS
) -> dict[str, float]:
    argv = [str(driver()), str(port), path, f"{rate:.0f}", f"{seconds:g}", str(connections)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if run.returncode != 0:
        raise DriverError(f"{' '.join(argv)} exited with {run.returncode}: {run.stderr.strip()}")
    return parse_driver(run.stdout)
