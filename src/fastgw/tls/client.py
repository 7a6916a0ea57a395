"""TLS to upstreams: one client ``SSLContext`` per distinct ``tls:`` setting, verified unless the
setting says ``insecure_skip_verify`` (logged when the plan starts). The server name a target's
certificate must carry, and the SNI sent, is the setting's ``server_name`` or the target's host."""

from __future__ import annotations

import logging
import ssl

from fastgw.config.schema import UpstreamTlsConfig
from fastgw.errors import ConfigError

log = logging.getLogger("fastgw")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_context(config: UpstreamTlsConfig, alpn: str = "http/1.1") -> ssl.SSLContext:
    """The context an upstream's connections are made with, offering ``alpn`` ("h2" for an
    upstream with protocol h2); ConfigError naming a bad file."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = _VERSIONS[config.min_version]
    context.set_alpn_protocols([alpn])
    if config.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca is not None:
        try:
            context.load_verify_locations(cafile=config.ca)
        except FileNotFoundError:
            raise ConfigError(f"{config.key_path}.ca", f"{config.ca}: no such file") from None
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{config.key_path}.ca", f"{config.ca}: not a PEM bundle of CA certificates ({exc.reason})"
            ) from None
    if config.cert is not None and config.key is not None:
        try:
            context.load_cert_chain(config.cert, config.key)
        except FileNotFoundError as exc:
            raise ConfigError(config.key_path, f"{exc.filename or config.cert}: no such file") from None
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in (exc.reason or "").upper():
                raise ConfigError(
                    f"{config.key_path}.key", f"{config.key} is not the key of {config.cert}"
                ) from None
            raise ConfigError(
                config.key_path,
                f"{config.cert} / {config.key}: not a PEM certificate chain and key ({exc.reason})",
            ) from None
    return context


def describe_failure(exc: ssl.SSLError) -> tuple[str, str]:
    """A TLS handshake failure: what the client may read (no names or addresses), and the log
    line's words ("certificate verify failed: certificate has expired", "Hostname mismatch...")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate verification failed", f"certificate verify failed: {exc.verify_message}"
    reason = (exc.reason or str(exc)).lower().replace("_", " ")
    if reason == "wrong version number":
        reason += " (is the target speaking TLS?)"
    return "TLS handshake failed", f"TLS handshake failed: {reason}"
