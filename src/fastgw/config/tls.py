"""TLS settings: a listener's ``tls`` (certificates by SNI name, versions, ciphers, ALPN, session
tickets, client certificates), an upstream's ``tls`` (verification, SNI, client certificate), and
a route's ``redirect_https``. Files are checked where they are used (``fastgw.tls``, at compile):
a missing, unreadable or mismatched certificate or key is an error naming the file there."""

from __future__ import annotations

from collections.abc import Mapping

from fastgw.config.schema import (
    CertificateConfig,
    ClientCertificatesConfig,
    HttpsRedirectConfig,
    ListenerTlsConfig,
    SessionTicketsConfig,
    UpstreamTlsConfig,
)
from fastgw.config.syntax import GATEWAY_HEADERS, TOKEN
from fastgw.config.validate import (
    Reader,
    Section,
    expected,
    join,
    read_bool,
    read_duration,
    read_int,
    read_list,
    read_mapping,
    read_one_of,
    read_str,
)
from fastgw.errors import ConfigError

__all__ = ["read_https_redirect", "read_listener_tls", "read_upstream_tls"]

_VERSIONS = ("1.2", "1.3")
_ALPN = ("h2", "http/1.1")
_CERT_FIELDS = ("subject", "sans", "fingerprint")


def _read_version(value: object, path: str) -> str:
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if text not in _VERSIONS:
        raise expected(path, "the lowest TLS version: '1.2' or '1.3' (older ones are never offered)", value)
    return str(text)


def _read_sni_name(value: object, path: str) -> str:
    name = read_str(value, path).lower()
    bare = name[2:] if name.startswith("*.") else name
    labels = bare.split(".")
    if (
        not bare
        or "*" in bare
        or any(not label or len(label) > 63 for label in labels)
        or not all(c.isalnum() or c in "-_" for c in bare.replace(".", ""))
    ):
        raise expected(path, "a host name, or '*.' and a domain ('*.example.com')", value)
    return name


def _read_certificate(value: object, path: str) -> CertificateConfig:
    section = Section(value, path, ("cert", "key", "names", "ocsp"), required=("cert", "key"))
    return CertificateConfig(
        cert=section.require("cert", read_str),
        key=section.require("key", read_str),
        names=section.get("names", read_list(_read_sni_name, non_empty=True)) or (),
        ocsp=section.get("ocsp", read_str),
        key_path=path,
    )


def _read_cert_headers(value: object, path: str) -> tuple[tuple[str, str], ...]:
    headers = []
    for field_name, header in read_mapping(value, path, non_empty=True).items():
        at = join(path, field_name)
        if field_name not in _CERT_FIELDS:
            raise ConfigError(at, f"expected one of {', '.join(_CERT_FIELDS)}, found {field_name!r}")
        if not isinstance(header, str) or not TOKEN.fullmatch(header) or "_" in header:
            raise expected(at, "a header name (an HTTP token like 'X-Client-Subject')", header)
        if header.lower() in GATEWAY_HEADERS:
            raise ConfigError(at, f"{header!r} is a header the gateway owns; choose another name")
        headers.append((field_name, header))
    return tuple(headers)


def _read_client_certificates(value: object, path: str) -> ClientCertificatesConfig:
    section = Section(value, path, ("mode", "ca", "headers"), required=("ca",))
    return ClientCertificatesConfig(
        mode=section.get("mode", read_one_of("a mode", ("optional", "required"))) or "required",
        ca=section.require("ca", read_str),
        headers=section.get("headers", _read_cert_headers) or (),
        key_path=path,
    )


def _read_tickets(value: object, path: str) -> SessionTicketsConfig:
    if isinstance(value, bool):
        return SessionTicketsConfig(enabled=value)
    section = Section(value, path, ("enabled", "rotate", "secret"))
    secret = section.get("secret", read_str)
    if secret is not None and len(secret) < 16:
        raise expected(section.at("secret"), "a secret of at least 16 characters", "a shorter one")
    return SessionTicketsConfig(
        enabled=section.get("enabled", read_bool) is not False,
        rotate=section.get("rotate", read_duration()) or 3600.0,
        secret=secret,
    )


_LISTENER_TLS: Mapping[str, Reader[object]] = {
    "certificates": read_list(_read_certificate, non_empty=True),
    "min_version": _read_version,
    "ciphers": read_str,
    "alpn": read_list(read_one_of("an ALPN protocol", _ALPN), non_empty=True),
    "session_tickets": _read_tickets,
    "client_certificates": _read_client_certificates,
}


def read_listener_tls(value: object, path: str) -> ListenerTlsConfig:
    section = Section(value, path, tuple(_LISTENER_TLS), required=("certificates",))
    fields = section.read(_LISTENER_TLS)
    if "session_tickets" in fields:
        fields["tickets"] = fields.pop("session_tickets")
    return ListenerTlsConfig(**fields, key_path=path)


def read_upstream_tls(value: object, path: str) -> UpstreamTlsConfig:
    if value is True:
        return UpstreamTlsConfig(key_path=path)  # verified against the system store
    section = Section(
        value, path, ("ca", "server_name", "cert", "key", "insecure_skip_verify", "min_version")
    )
    tls = UpstreamTlsConfig(
        ca=section.get("ca", read_str),
        server_name=section.get("server_name", _read_sni_name),
        cert=section.get("cert", read_str),
        key=section.get("key", read_str),
        insecure_skip_verify=section.get("insecure_skip_verify", read_bool) or False,
        min_version=section.get("min_version", _read_version) or "1.2",
        key_path=path,
    )
    if (tls.cert is None) != (tls.key is None):
        missing = "key" if tls.key is None else "cert"
        raise ConfigError(join(path, missing), "a client certificate needs both cert and key")
    return tls


_REDIRECT_STATUSES = (301, 302, 307, 308)


def read_https_redirect(value: object, path: str) -> HttpsRedirectConfig | None:
    if isinstance(value, bool):
        return HttpsRedirectConfig() if value else None
    section = Section(value, path, ("status", "port"))
    status = section.get("status", read_int())
    if status is not None and status not in _REDIRECT_STATUSES:
        raise expected(section.at("status"), "301, 302, 307 or 308", status)
    return HttpsRedirectConfig(status=status or 308, port=section.get("port", read_int(1, 65535)) or 443)
