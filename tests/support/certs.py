"""Certificates for TLS tests, made by ``trustme``, and a client that picks its SNI name.

``Pki(directory)`` holds a server CA (what clients trust), a client CA (what an mTLS listener
trusts) and a second, unrelated CA; it writes each certificate it issues to PEM files and returns
their paths, ready for a gateway config. ``https_get`` makes one HTTPS request to a loopback port
with any SNI name (or none) and reports what the handshake chose.
"""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["Answer", "Pki", "https_get", "tls_connect"]

ECDSA = trustme.KeyType.ECDSA
RSA = trustme.KeyType.RSA


@dataclass(frozen=True)
class Issued:
    cert: str  # PEM: the leaf, then the chain
    key: str  # PEM: the private key


class Pki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="fastgw tests server CA")
        self.client_ca = trustme.CA(organization_name="fastgw tests client CA")
        self.other_ca = trustme.CA(organization_name="unrelated CA")
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.client_ca_file = self._write("client-ca.pem", self.client_ca.cert_pem.bytes())
        self.other_ca_file = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self._count = 0

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def issue(
        self,
        *identities: str,
        ca: trustme.CA | None = None,
        key_type: trustme.KeyType = ECDSA,
        common_name: str | None = None,
        expired: bool = False,
    ) -> Issued:
        """A leaf for ``identities`` (DNS names, IPs, emails, URIs), signed by ``ca`` (the server
        CA by default); ``expired`` makes one that ran out yesterday."""
        when = {}
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            when = {
                "not_before": now - datetime.timedelta(days=30),
                "not_after": now - datetime.timedelta(days=1),
            }
        leaf = (ca or self.ca).issue_cert(*identities, common_name=common_name, key_type=key_type, **when)
        self._count += 1
        stem = f"leaf{self._count}"
        cert = self._write(f"{stem}.pem", b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key = self._write(f"{stem}.key", leaf.private_key_pem.bytes())
        return Issued(cert, key)

    def client_context(
        self, client: Issued | None = None, *, trust: str | None = None, **options: object
    ) -> ssl.SSLContext:
        """A client context trusting the server CA (or ``trust``), presenting ``client``."""
        context = ssl.create_default_context(cafile=trust or self.ca_file)
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        for name, value in options.items():
            setattr(context, name, value)
        return context


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    version: str | None  # the TLS version the handshake chose
    cipher: str | None
    peer: bytes  # the server certificate (DER)
    alpn: str | None
    session_reused: bool


def tls_connect(
    port: int, context: ssl.SSLContext, sni: str | None, session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:port, naming ``sni`` (None: no SNI, no name check)."""
    if sni is None:
        context.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise


class _SniConnection(http.client.HTTPConnection):
    def __init__(self, sock: ssl.SSLSocket) -> None:
        super().__init__("127.0.0.1", timeout=10)
        self.sock = sock

    def connect(self) -> None:  # already connected
        pass


def https_get(
    port: int,
    context: ssl.SSLContext,
    sni: str | None = "gw.test",
    path: str = "/echo",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    session: ssl.SSLSession | None = None,
) -> tuple[Answer, ssl.SSLSession | None]:
    """One request over a new TLS connection; the answer and the session to resume with."""
    sock = tls_connect(port, context, sni, session)
    try:
        connection = _SniConnection(sock)
        connection.request(method, path, headers={"Host": sni or "127.0.0.1", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        cipher = sock.cipher()
        answer = Answer(
            response.status,
            response.headers,
            body,
            sock.version(),
            cipher[0] if cipher else None,
            sock.getpeercert(binary_form=True) or b"",
            sock.selected_alpn_protocol(),
            sock.session_reused,
        )
        return answer, sock.session
    finally:
        sock.close()


def write_files_named_in(document: object, directory: Path) -> None:
    """Make the TLS files a config document names (relative paths, under ``directory``): a
    certificate and its key for each ``cert``/``key`` pair, a CA for each ``ca``, bytes for an
    ``ocsp``. So a documented example can be checked as written."""
    pki: Pki | None = None

    def place(name: str, data: bytes) -> None:
        path = directory / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def visit(node: object) -> None:
        nonlocal pki
        if isinstance(node, list):
            for item in node:
                visit(item)
        if not isinstance(node, dict):
            return
        cert, key, ca, ocsp = (node.get(k) for k in ("cert", "key", "ca", "ocsp"))
        if isinstance(cert, str) or isinstance(ca, str):
            pki = pki or Pki(directory / ".pki")
        if isinstance(cert, str) and isinstance(key, str) and pki is not None:
            leaf = pki.issue(f"{Path(cert).stem}.example".lower().replace("_", "-"))
            place(cert, Path(leaf.cert).read_bytes())
            place(key, Path(leaf.key).read_bytes())
        if isinstance(ca, str) and pki is not None:
            place(ca, pki.ca.cert_pem.bytes())
        if isinstance(ocsp, str):
            place(ocsp, b"an OCSP response (stapled as given)")
        for value in node.values():
            visit(value)

    visit(document)
