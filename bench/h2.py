"""The HTTP/2-upstream parts of ``python -m bench``: the upstream nginx's cleartext HTTP/2 port
(prior knowledge, the same fixed responses as its HTTP/1.1 ports), and how each proxy reaches it.

fastgw uses ``protocol: h2c`` (streams multiplexed over few kept-alive connections). nginx
proxies to an HTTP/2 upstream only with ``grpc_pass``, which speaks HTTP/2 for any request (an
HTTP/1.1 client's included) and keeps connections alive in the upstream block's pool, but
carries one request per connection at a time: the fairest nginx there is, not the same design.
HAProxy and the Python peers are left out of these scenarios. Against fastgw's own HTTP/1.1
upstream, compare the same run's small-get and latency-c1 rows.
"""

from __future__ import annotations


def nginx_upstream_listen(port: int) -> str:
    """The upstream nginx's h2c listener (HTTP/2 by prior knowledge on that port only)."""
    return f"listen 127.0.0.1:{port} http2 reuseport backlog=8192;  # h2c-upstream's target"


def nginx_proxied() -> str:
    """nginx's location body for an HTTP/2 upstream: grpc_pass over the keep-alive pool."""
    return "grpc_pass grpc://up;"


def fastgw_upstream_option() -> str:
    return " protocol: h2c,"
