"""What a scenario's features switch on, in fastgw and in nginx alike: ``python -m bench``'s
feature scenarios (access log, rate limit, JWT, cache, admin, and ``production``, all at once).

Where nginx (the open-source one, Debian's nginx-light 1.22) has the feature, it gets the same
work: the access log as one JSON line per request with the same fields, ``escape=json``, to a
file, buffered as fastgw buffers (64 KiB or 1 s); ``limit_req`` keyed as fastgw keys its limit,
at a rate neither reaches; ``proxy_cache`` for the cache; ``stub_status`` for the metrics; a
request id (``$request_id``) and a W3C ``traceparent`` made from it, sent upstream, for what
fastgw's listeners do by default (in ``production`` only: the other scenarios keep nginx plain, so
their figures stay comparable with the history in README.md). Where it has not, the feature is
named in ``NGINX_LACKS`` and the bench says so beside the figures: nginx OSS verifies no JWT
(NGINX Plus's ``auth_jwt`` does), so in ``jwt+ratelimit`` and ``production`` nginx does less.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

JWT_SECRET = "bench-secret-of-at-least-32-bytes!"  # HS256 wants a key as long as its hash
LOG_BUFFER = "buffer=64k flush=1s"  # fastgw's defaults: buffer_bytes 64KiB, flush_interval 1s
ANY_RATE = "rate=10000000r/s"  # never reached by wrk here: the limit's bookkeeping is what is timed


@dataclass(frozen=True)
class Parts:
    """One feature's share of a scenario: fastgw's route plugins, top-level config lines and the
    request headers it needs (sent to every contender); nginx's ``http`` and ``location /`` lines."""

    plugins: list[str] = field(default_factory=list)
    top: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    nginx_http: list[str] = field(default_factory=list)
    nginx_location: list[str] = field(default_factory=list)


def jwt_token() -> str:
    import jwt  # a fastgw dependency

    claims = {"sub": "bench", "aud": "bench", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def admin_port(workdir: Path) -> int:
    """The admin listener's port in this bench run (chosen once, kept in the work directory)."""
    saved = workdir / "admin.port"
    if not saved.exists():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            saved.write_text(str(s.getsockname()[1]))
    return int(saved.read_text())


# The access log line: fastgw's every field (config.schema.ACCESS_LOG_FIELDS), nginx's nearest
# variable for each (listener and route are names nginx has not: written as the literals fastgw
# writes; error: nginx keeps errors in its error log).
NGINX_LOG_FORMAT = (
    "log_format fastgw_json escape=json '{"
    '"time":"$time_iso8601","request_id":"$request_id","client":"$remote_addr",'
    '"method":"$request_method","host":"$host","path":"$uri","query":"$args","listener":"main",'
    '"route":"all","upstream":"$upstream_addr","status":$status,"bytes_in":$request_length,'
    '"bytes_out":$bytes_sent,"duration_ms":$request_time,"upstream_ms":"$upstream_response_time",'
    '"trace_id":"$request_id","span_id":"$bench_span_id","consumer":"$remote_user","error":"",'
    '"protocol":"$server_protocol","tls_version":"$ssl_protocol","tls_cipher":"$ssl_cipher"'
    "}';"
)
# A span id for nginx's trace context: the first 16 hex digits of its request id (a regex per
# request, where fastgw draws random bits).
NGINX_SPAN_ID = 'map $request_id $bench_span_id { "~^(?<span>.{16})" $span; }'


def _access_log(workdir: Path) -> Parts:
    return Parts(
        top=[f"access_log: {{sink: '{workdir / 'access.log'}'}}"],
        nginx_http=[NGINX_LOG_FORMAT, NGINX_SPAN_ID],
        nginx_location=[f"access_log {workdir / 'nginx-access.log'} fastgw_json {LOG_BUFFER};"],
    )


def _rate_limit(key: str, nginx_key: str) -> Callable[[Path], Parts]:
    """A limit per ``key`` no client reaches (per process; nginx's zone is shared by its workers)."""
    return lambda _: Parts(
        plugins=[f"{{name: rate_limit, limit: 1000000000, window: 60s, key: {key}}}"],
        nginx_http=[f"limit_req_zone {nginx_key} zone=bench:10m {ANY_RATE};"],
        nginx_location=["limit_req zone=bench burst=1000000 nodelay;"],
    )


FEATURES: dict[str, Callable[[Path], Parts]] = {
    # a verified token, cached after its first request (the cost the issue asks about)
    "jwt": lambda _: Parts(
        plugins=[f"{{name: jwt, secret: '{JWT_SECRET}', audience: bench}}"],
        headers={"Authorization": f"Bearer {jwt_token()}"},
    ),
    "rate_limit": _rate_limit("ip", "$binary_remote_addr"),
    # keyed by who the token says the client is; nginx cannot verify it, so it keys by the token
    "rate_limit_consumer": _rate_limit("consumer", "$http_authorization"),
    "access_log": _access_log,
    # every request after the first a hit: the upstream is not asked
    "cache": lambda workdir: Parts(
        plugins=["{name: cache, ttl: 60s}"],
        nginx_http=[f"proxy_cache_path {workdir / 'nginx-cache'} keys_zone=bench:10m;"],
        nginx_location=["proxy_cache bench;", "proxy_cache_valid 200 60s;"],
    ),
    # an admin listener: the status page's sampler runs, and errors are kept for it; nginx's
    # counters (stub_status) are always kept and cost nothing more when served
    "admin": lambda workdir: Parts(top=[f"admin: {{bind: '127.0.0.1:{admin_port(workdir)}'}}"]),
    # what fastgw's listeners do by default: a request id and trace context, sent upstream
    "ids": lambda _: Parts(
        nginx_http=[NGINX_SPAN_ID],
        nginx_location=[
            "proxy_set_header X-Request-Id $request_id;",
            "add_header X-Request-Id $request_id always;",
            'proxy_set_header traceparent "00-$request_id-$bench_span_id-01";',
        ],
    ),
}
NGINX_LACKS = {
    "jwt": "nginx OSS has no JWT verification (NGINX Plus's auth_jwt): it forwards the token unread"
}
# Everything a real edge runs at once (the ``production`` scenario), in plugin order: the token
# verified, then the limit keyed by its consumer.
PRODUCTION = ("jwt", "rate_limit_consumer", "access_log", "admin", "ids")


def feature_parts(workdir: Path, features: tuple[str, ...]) -> Parts:
    """The features' parts together, in order (nginx's ``http`` lines once each)."""
    out = Parts()
    for feature in features:
        part = FEATURES[feature](workdir)
        out.plugins.extend(part.plugins)
        out.top.extend(part.top)
        out.headers.update(part.headers)
        out.nginx_http.extend(line for line in part.nginx_http if line not in out.nginx_http)
        out.nginx_location.extend(part.nginx_location)
    return out


def header_script(workdir: Path, name: str, headers: dict[str, str]) -> Path:
    """A wrk script setting the headers the scenario's features need (sent to every contender)."""
    lines = [f'wrk.headers["{header}"] = "{value}"' for header, value in headers.items()]
    path = workdir / f"headers-{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def nginx_notes(features: tuple[str, ...]) -> list[str]:
    """What nginx does not do of these features (printed beside the figures)."""
    return [NGINX_LACKS[f] for f in features if f in NGINX_LACKS]
