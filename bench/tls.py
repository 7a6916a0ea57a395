"""The TLS parts of ``python -m bench``: one certificate per key type for every contender (made
with the ``openssl`` command, so nginx and fastgw serve the very same one), the nginx and fastgw
settings that switch TLS on with the same versions and ciphers, and the handshake driver.

Keep-alive scenarios are driven by wrk over ``https://`` (wrk makes one handshake per connection
and then reuses it, as browsers and API clients do). Handshake scenarios are driven by several
``openssl s_time`` clients at once, each making new connections with one HTTP/1.0 request each:
``-new`` makes every handshake a full one, ``-reuse`` resumes the first connection's session on
every later one. The figure is the proxy's CPU per handshake (connections completed by all the
clients together).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

# The TLS 1.2 suites both sides offer: what fastgw offers by default (fastgw.config.schema).
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
KEY_OPTIONS = {
    "ecdsa": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "rsa": ["-newkey", "rsa:2048"],
}
HANDSHAKE_CLIENTS = 4  # s_time processes at once: enough to keep one proxy worker busy


def certificate(workdir: Path, key_type: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA), and its key."""
    cert, key = workdir / f"bench-{key_type}.pem", workdir / f"bench-{key_type}.key"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", *KEY_OPTIONS[key_type], "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        key.chmod(0o644)  # nginx's workers run as nobody
    return cert, key


def nginx_server_tls(workdir: Path, key_type: str) -> str:
    """nginx's server-side TLS directives: the same certificate, versions and ciphers as fastgw's."""
    cert, key = certificate(workdir, key_type)
    return (
        f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; "
        f"ssl_ciphers {CIPHERS}; ssl_prefer_server_ciphers off; ssl_session_tickets on;"
    )


def nginx_upstream_tls(workdir: Path) -> str:
    """nginx's TLS to the upstream: verified, SNI, sessions reused (keep-alive does the rest)."""
    cert, _ = certificate(workdir, "ecdsa")
    return (
        f"proxy_ssl_trusted_certificate {cert}; proxy_ssl_verify on; proxy_ssl_name localhost; "
        "proxy_ssl_server_name on; proxy_ssl_session_reuse on; proxy_ssl_protocols TLSv1.2 TLSv1.3;"
    )


def fastgw_listener_tls(workdir: Path, key_type: str) -> str:
    cert, key = certificate(workdir, key_type)
    return f"    tls: {{certificates: [{{cert: '{cert}', key: '{key}'}}]}}"


def fastgw_upstream_tls(workdir: Path) -> str:
    cert, _ = certificate(workdir, "ecdsa")
    return f" tls: {{ca: '{cert}', server_name: localhost}},"


def handshakes(port: int, path: str, seconds: float, reuse: bool) -> dict[str, float]:
    """Drive ``HANDSHAKE_CLIENTS`` s_time clients for ``seconds``; connections, per second, errors."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-www", path,
            "-time", str(max(1, round(seconds))), "-reuse" if reuse else "-new"]  # fmt: skip
    clients = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(HANDSHAKE_CLIENTS)
    ]
    total = 0
    errors = 0
    for client in clients:
        out, _ = client.communicate(timeout=seconds + 60)
        found = re.findall(r"(\d+) connections in [\d.]+ real seconds", out)
        if client.returncode != 0 or not found:
            errors += 1
            continue
        total += int(found[-1])
    return {"requests": total, "rps": total / max(seconds, 1), "p50": float("nan"), "p99": float("nan"),
            "errors": errors}  # fmt: skip
