"""TLS termination on a listener.

``ServerTls`` is one plan's TLS for a listener, built at compile time: one ``SSLContext`` per
group of certificates that serve the same names (an ECDSA and an RSA certificate side by side:
OpenSSL presents the one the client's ciphers allow), SNI names mapped to them (exact names,
then ``*.domain`` wildcards matching one label), the first group the default for a client that
sends no name or one nobody serves, and the client-certificate settings.

``TlsFront`` is the context the listening socket holds for its whole life (live state: it
survives reloads, so the socket never reopens). Every handshake starts on it; its SNI callback
hands the handshake the current ``ServerTls``'s context for the name. What OpenSSL fixes when a
handshake starts (versions, ciphers, ALPN, client-certificate verification) is set on the front
as well, and again by each reload. Session tickets are encrypted with the front's key: one key a
period, derived from a secret (``session_tickets.secret``, or random per gateway, made before
workers fork) and the period's number, so every worker, and every gateway given the same secret,
resumes every other's tickets; the key changes each ``rotate`` without any coordination.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastgw._digests import sha256
from fastgw.config.schema import CertificateConfig, ClientCertificatesConfig, ListenerTlsConfig
from fastgw.errors import ConfigError

# fastgw.tls.openssl (ctypes) is imported by the functions that call it: a gateway without TLS
# never loads it (PERF: memory, a third of a megabyte per process).

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("fastgw")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """What a verified client certificate says, for plugins and upstream headers."""

    subject: str  # RFC 4514 ("CN=alice,O=Example")
    sans: tuple[str, ...]  # "DNS:a.example", "email:alice@example.com", "URI:...", "IP:..."
    fingerprint: str  # SHA-256 of the DER, lower-case hex


def client_certificate(ssl_object: ssl.SSLObject) -> ClientCertificate | None:
    """The peer's certificate on a connection, if it sent one and it was verified."""
    from cryptography import x509  # loaded only where certificates are read (not by plain gateways)

    der = ssl_object.getpeercert(binary_form=True)
    if not der or not ssl_object.getpeercert():
        return None
    certificate = x509.load_der_x509_certificate(der)
    try:
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(_san(name) for name in alt)
    except x509.ExtensionNotFound:
        sans = ()
    return ClientCertificate(certificate.subject.rfc4514_string(), sans, sha256(der).hexdigest())


def _san(name: x509.GeneralName) -> str:
    from cryptography import x509

    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return str(name.value)


class ServerTls:
    """One plan's TLS settings and contexts for a listener (see the module's docstring)."""

    __slots__ = ("alpn", "ciphers", "client_ca", "client_mode", "config", "default", "exact", "files",
                 "min_version", "wildcard")  # fmt: skip

    def __init__(self, config: ListenerTlsConfig, http2: bool = False) -> None:
        self.config = config
        self.min_version = _VERSIONS[config.min_version]
        self.ciphers = config.ciphers
        self.alpn = list(config.alpn or (("h2", "http/1.1") if http2 else ("http/1.1",)))
        clients = config.client_certificates
        self.client_mode = ssl.CERT_NONE
        self.client_ca: str | None = None
        if clients is not None:
            self.client_mode = ssl.CERT_REQUIRED if clients.mode == "required" else ssl.CERT_OPTIONAL
            self.client_ca = clients.ca
        files: list[str] = []
        groups: dict[tuple[str, ...], list[CertificateConfig]] = {}
        for certificate in config.certificates:
            names = certificate.names or _names_in(certificate)
            groups.setdefault(tuple(sorted(names)), []).append(certificate)
            files += [certificate.cert, certificate.key, *([certificate.ocsp] if certificate.ocsp else [])]
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        default: ssl.SSLContext | None = None
        for names, members in groups.items():
            context = self._context(members, clients)
            default = default or context
            for name in names:
                table = self.wildcard if name.startswith("*.") else self.exact
                key = name[2:] if name.startswith("*.") else name
                if key in table:
                    raise ConfigError(
                        members[0].key_path, f"the name {name!r} is served by two certificate groups"
                    )
                table[key] = context
        assert default is not None  # certificates is never empty
        self.default = default
        if clients is not None:
            files.append(clients.ca)
        self.files = tuple(files)

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a client's SNI name: exact, then a wildcard one label up, else the default."""
        if server_name:
            name = server_name.lower().rstrip(".")
            found = self.exact.get(name)
            if found is not None:
                return found
            _, dot, parent = name.partition(".")
            if dot:
                found = self.wildcard.get(parent)
                if found is not None:
                    return found
        return self.default

    def configure(self, context: ssl.SSLContext, *, trust: bool = True) -> None:
        """What OpenSSL fixes when a handshake starts, set on ``context`` (every group's, and the
        front). The CAs client certificates are checked against (``trust``) are the selected
        group's: the front, which keeps its store across reloads, needs only the mode."""
        context.minimum_version = self.min_version
        context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        context.set_ciphers(self.ciphers)
        context.set_alpn_protocols(self.alpn)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.verify_mode = self.client_mode
        if trust and self.client_ca is not None:
            context.load_verify_locations(cafile=self.client_ca)

    def _context(
        self, members: list[CertificateConfig], clients: ClientCertificatesConfig | None
    ) -> ssl.SSLContext:
        from fastgw.tls import openssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            self.configure(context)
        except ssl.SSLError as exc:
            if clients is not None and "ca" in str(exc).lower():
                raise ConfigError(
                    f"{clients.key_path}.ca",
                    f"{clients.ca}: not a PEM bundle of CA certificates ({exc.reason})",
                ) from None
            raise ConfigError(
                self.config.key_path, f"OpenSSL refused these settings: {exc.reason or exc}"
            ) from None
        except FileNotFoundError:
            assert clients is not None
            raise ConfigError(f"{clients.key_path}.ca", f"{clients.ca}: no such file") from None
        stapled: dict[bytes, bytes] = {}
        for certificate in members:
            _load_chain(context, certificate)
            if certificate.ocsp is not None:
                stapled[_leaf_digest(certificate)] = _read_file(
                    certificate.ocsp, f"{certificate.key_path}.ocsp"
                )
        if stapled:
            openssl.staple_ocsp(context, stapled)
        return context

    def retire(self) -> None:
        from fastgw.tls import openssl

        for context in {*self.exact.values(), *self.wildcard.values(), self.default}:
            openssl.forget(context)


def _read_file(file: str, key_path: str) -> bytes:
    try:
        with open(file, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(key_path, f"{file}: {exc.strerror or exc}") from None


def _load_chain(context: ssl.SSLContext, certificate: CertificateConfig) -> None:
    for file, key in ((certificate.cert, "cert"), (certificate.key, "key")):
        _read_file(file, f"{certificate.key_path}.{key}")  # a clear error for a missing file
    try:
        context.load_cert_chain(certificate.cert, certificate.key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise ConfigError(
                f"{certificate.key_path}.key", f"{certificate.key} is not the key of {certificate.cert}"
            ) from None
        raise ConfigError(
            certificate.key_path,
            f"{certificate.cert} / {certificate.key}: not a PEM certificate chain and key ({reason})",
        ) from None


def _certificate(certificate: CertificateConfig) -> x509.Certificate:
    from cryptography import x509

    data = _read_file(certificate.cert, f"{certificate.key_path}.cert")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(
            f"{certificate.key_path}.cert", f"{certificate.cert}: not a PEM certificate"
        ) from None


def _leaf_digest(certificate: CertificateConfig) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return sha256(_certificate(certificate).public_bytes(serialization.Encoding.DER)).digest()


def _names_in(certificate: CertificateConfig) -> tuple[str, ...]:
    """The DNS names a certificate is for: its subjectAltName, else its common name."""
    from cryptography import x509

    leaf = _certificate(certificate)
    try:
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if not names:
        raise ConfigError(
            f"{certificate.key_path}.names", f"{certificate.cert} names no host: list its names here"
        )
    return tuple(name.lower() for name in names)


class TlsFront:
    """The listening socket's context for its life: hands each handshake the current plan's
    context by SNI name, and holds the session-ticket key of the period."""

    def __init__(self, secret: bytes | None) -> None:
        from fastgw.tls import openssl

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.sni_callback = self._select
        openssl.disable_session_cache(self.context)  # resumption is by ticket, in any worker
        self.current: ServerTls | None = None
        self.secret = secret if secret is not None else os.urandom(32)  # made before workers fork
        self.rotate = 3600.0
        self.tickets = True
        self.epoch = -1
        self._timer: asyncio.TimerHandle | None = None

    def use(self, tls: ServerTls) -> None:
        """Serve handshakes from now on with ``tls`` (a plan's); set what OpenSSL fixes at start."""
        self.current = tls
        tls.configure(self.context, trust=False)
        tickets = tls.config.tickets
        if tickets.secret is not None:
            self.secret = sha256(tickets.secret.encode()).digest()
        self.rotate = tickets.rotate
        self.tickets = tickets.enabled
        if tickets.enabled:
            self.context.options &= ~ssl.OP_NO_TICKET
            self.context.num_tickets = 2  # OpenSSL's default: two parallel connections resume
        else:
            self.context.options |= ssl.OP_NO_TICKET
            self.context.num_tickets = 0  # TLS 1.3 would otherwise send stateful tickets
        self.epoch = -1
        self.rekey()

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        current = self.current
        if current is not None:
            ssl_object.context = current.select(server_name)

    def rekey(self) -> None:
        """Set the ticket key of the current period (the same in every worker), and come back at
        the next period's start."""
        from fastgw.tls import openssl

        if not self.tickets:
            return
        epoch = int(time.time() // self.rotate)
        if epoch != self.epoch:
            self.epoch = epoch
            openssl.set_ticket_key(self.context, ticket_key(self.secret, epoch))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # compiling, not serving: the serving process calls rekey again
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later((epoch + 1) * self.rotate - time.time() + 0.01, self.rekey)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def ticket_key(secret: bytes, epoch: int) -> bytes:
    """The 80 bytes of session-ticket key material for a period: name, HMAC secret, AES key."""
    import hmac  # here: it imports hashlib (PERF: memory of a gateway without TLS, see _digests)

    from fastgw.tls import openssl

    stream = b"".join(
        hmac.new(secret, b"fastgw session ticket %d %d" % (epoch, block), sha256).digest()
        for block in range(3)
    )
    return stream[: openssl.TICKET_KEY_BYTES]
