"""The HTTP/2 parts of ``python -m bench``.

Clients: HTTP/2 to the proxy (h2c by prior knowledge, or h2 over TLS by ALPN), driven by
``h2load`` (Debian's nghttp2-client) with ``-c`` connections of ``-m`` concurrent streams each.
nginx serves HTTP/2 with ``listen ... http2`` (its 1.22 syntax), fastgw with
``http2: {h2c: true}`` or its TLS listener's ALPN.

Upstreams: the upstream nginx's cleartext HTTP/2 port (prior knowledge, the same fixed responses
as its HTTP/1.1 ports). fastgw reaches it with ``protocol: h2c`` (streams multiplexed over few
kept-alive connections). nginx proxies to an HTTP/2 upstream only with ``grpc_pass``, which
speaks HTTP/2 for any request (an HTTP/1.1 client's included) and keeps connections alive in the
upstream block's pool, but carries one request per connection at a time: the fairest nginx there
is, not the same design. HAProxy and the Python peers are left out of these scenarios.

gRPC: h2load makes unary calls (POST ``/bench.Echo/Unary``, ``content-type: application/grpc``,
``te: trailers``, one small length-prefixed message as the body) over h2c, to the proxy or
straight to the upstream nginx's h2c port (``direct``), which answers each call as a gRPC server
does, once its message has come whole: the same message back, then the trailer
``grpc-status: 0`` (``peers/nginx_upstream.conf``). A C-speed upstream: a Python gRPC server
would be the bottleneck, and would take the cores' time from the proxy being measured.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

GRPC_MESSAGE = b"\x0a\x05hello"  # protobuf: field 1, a 5-byte string (a small request, as most are)
GRPC_HEADERS = ("-H", "content-type: application/grpc", "-H", "te: trailers")  # h2load's arguments


def h2load(
    port: int,
    path: str,
    seconds: float,
    connections: int,
    streams: int,
    tls: bool,
    grpc_message: Path | None = None,
) -> dict[str, float]:
    """Drive ``connections`` x ``streams`` for ``seconds``, GETs or, given ``grpc_message``,
    gRPC unary calls carrying it; completed requests, per second, errors."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
    grpc = [] if grpc_message is None else ["-d", str(grpc_message), *GRPC_HEADERS]
    argv = [
        "h2load",
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        "1",
        "-D",
        str(max(1, round(seconds))),
        *grpc,
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    return parse_h2load(out)


def parse_h2load(out: str) -> dict[str, float]:
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if done is None or rate is None:
        raise RuntimeError(f"h2load said: {out[-400:]}")
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return {
        "requests": int(done.group(2)),
        "rps": float(rate.group(1)),
        "p50": _ms(mean.group(1)) if mean else float("nan"),  # h2load reports a mean, not a median
        "p99": float("nan"),
        "errors": int(done.group(3)) + int(done.group(4)),
    }


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")


def fastgw_listener(tls: bool) -> str:
    """The listener line that lets fastgw speak HTTP/2 (TLS listeners offer it by ALPN already)."""
    return "" if tls else "    http2: {h2c: true}"


def nginx_listen_flags(tls: bool) -> str:
    return " ssl http2" if tls else " http2"


def write_grpc_message(workdir: Path) -> Path:
    """``GRPC_MESSAGE`` as gRPC frames it (a flag byte, not compressed, then its length in four
    bytes), in the file h2load sends and the upstream nginx answers with."""
    path = workdir / "grpc.bin"
    path.write_bytes(b"\x00" + len(GRPC_MESSAGE).to_bytes(4, "big") + GRPC_MESSAGE)
    path.chmod(0o644)
    return path


def nginx_upstream_listen(port: int) -> str:
    """The upstream nginx's h2c listener (HTTP/2 by prior knowledge on that port only)."""
    return f"listen 127.0.0.1:{port} http2 reuseport backlog=8192;  # the HTTP/2-upstream target"


def nginx_grpc_pass() -> str:
    """nginx's location body for an HTTP/2 upstream: grpc_pass over the keep-alive pool."""
    return "grpc_pass grpc://up;"


def fastgw_upstream_option() -> str:
    return " protocol: h2c,"
