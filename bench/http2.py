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
"""

from __future__ import annotations

import re
import subprocess


def h2load(
    port: int, path: str, seconds: float, connections: int, streams: int, tls: bool
) -> dict[str, float]:
    """Drive ``connections`` x ``streams`` for ``seconds``; completed requests, per second, errors."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
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


def nginx_upstream_listen(port: int) -> str:
    """The upstream nginx's h2c listener (HTTP/2 by prior knowledge on that port only)."""
    return f"listen 127.0.0.1:{port} http2 reuseport backlog=8192;  # the HTTP/2-upstream target"


def nginx_grpc_pass() -> str:
    """nginx's location body for an HTTP/2 upstream: grpc_pass over the keep-alive pool."""
    return "grpc_pass grpc://up;"


def fastgw_upstream_option() -> str:
    return " protocol: h2c,"
