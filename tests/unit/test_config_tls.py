"""TLS settings in the config: what is read, and the errors for what is wrong, each naming the
file and key path (and the certificate or key file at fault). Files are checked when the plan
is compiled, as ``fastgw check`` and a reload do."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.config.schema import MODERN_CIPHERS
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from tests.support.certs import Issued, Pki
from tests.support.config_docs import SOURCE, error_of, minimal, parse, with_value

TLS = "listeners[0].tls"


@pytest.fixture(scope="module")
def gw_cert(pki: Pki) -> Issued:
    return pki.issue("gw.test", "*.gw.test")


def tls_doc(cert: Issued, **tls: Any) -> dict[str, Any]:
    return with_value(TLS, {"certificates": [{"cert": cert.cert, "key": cert.key}], **tls})


def compile_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        compile_plan(parse(doc))
    assert info.value.file == SOURCE
    return str(info.value)


def test_defaults(gw_cert: Issued) -> None:
    tls = parse(tls_doc(gw_cert)).listeners[0].tls
    assert tls is not None
    assert (tls.min_version, tls.ciphers, tls.alpn) == ("1.2", MODERN_CIPHERS, None)
    assert (tls.tickets.enabled, tls.tickets.rotate, tls.tickets.secret) == (True, 3600.0, None)
    assert tls.client_certificates is None
    assert tls.certificates[0].key_path == f"{TLS}.certificates[0]"


def test_the_default_cipher_list_is_forward_secret_aead_only() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers(MODERN_CIPHERS)
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(name.startswith("ECDHE-") for name in tls12)
    assert all("GCM" in name or "CHACHA20" in name for name in tls12)


def test_names_come_from_the_certificate(gw_cert: Issued) -> None:
    plan = compile_plan(parse(tls_doc(gw_cert)))
    server_tls = plan.listeners["public"].tls
    assert server_tls is not None
    assert set(server_tls.exact) == {"gw.test"} and set(server_tls.wildcard) == {"gw.test"}
    assert set(server_tls.files) == {gw_cert.cert, gw_cert.key}


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({}, f"{TLS}: missing required key 'certificates'"),
        ({"certificates": []}, f"{TLS}.certificates: expected a non-empty list"),
        ({"certificates": [{"cert": "a.pem"}]}, f"{TLS}.certificates[0]: missing required key 'key'"),
        ({"certificates": [{"cert": "a.pem", "key": "a.key", "name": "x"}]}, "unknown key 'name'"),
        ({"min_version": "1.1"}, f"{TLS}.min_version: expected the lowest TLS version: '1.2' or '1.3'"),
        ({"min_version": 1.0}, f"{TLS}.min_version: expected the lowest TLS version"),
        ({"alpn": ["h3"]},
         f"{TLS}.alpn[0]: expected the name of an ALPN protocol (h2, http/1.1), found 'h3'"),
        ({"session_tickets": {"secret": "short"}},
         f"{TLS}.session_tickets.secret: expected a secret of at least 16"),
        ({"session_tickets": {"rotate": 0}},
         f"{TLS}.session_tickets.rotate: expected a duration greater than 0"),
        ({"client_certificates": {"mode": "sometimes", "ca": "ca.pem"}}, f"{TLS}.client_certificates.mode"),
        ({"client_certificates": {"mode": "required"}},
         f"{TLS}.client_certificates: missing required key 'ca'"),
        ({"client_certificates": {"ca": "ca.pem", "headers": {"issuer": "X-Issuer"}}},
         f"{TLS}.client_certificates.headers.issuer: expected one of subject, sans, fingerprint"),
        ({"client_certificates": {"ca": "ca.pem", "headers": {"subject": "X Subject"}}},
         f"{TLS}.client_certificates.headers.subject: expected a header name"),
        ({"client_certificates": {"ca": "ca.pem", "headers": {"subject": "X-Forwarded-For"}}},
         "a header the gateway owns"),
    ],
)  # fmt: skip
def test_listener_tls_errors(gw_cert: Issued, tls: dict[str, Any], message: str) -> None:
    doc = tls_doc(gw_cert)
    if tls:
        doc["listeners"][0]["tls"].update(tls)
    else:
        doc["listeners"][0]["tls"] = {}
    assert message in error_of(doc)


def test_sni_names_are_checked(gw_cert: Issued) -> None:
    doc = with_value(
        TLS, {"certificates": [{"cert": gw_cert.cert, "key": gw_cert.key, "names": ["*.*.test"]}]}
    )
    assert f"{TLS}.certificates[0].names[0]: expected a host name" in error_of(doc)


def test_missing_certificate_and_key_files_are_named(gw_cert: Issued, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    doc = with_value(TLS, {"certificates": [{"cert": missing, "key": gw_cert.key}]})
    assert compile_error(doc) == f"{SOURCE}: {TLS}.certificates[0].cert: {missing}: No such file or directory"
    doc = with_value(TLS, {"certificates": [{"cert": gw_cert.cert, "key": missing}]})
    assert compile_error(doc) == f"{SOURCE}: {TLS}.certificates[0].key: {missing}: No such file or directory"


def test_a_key_that_is_not_the_certificates_is_named(pki: Pki, gw_cert: Issued) -> None:
    other = pki.issue("other.test")
    doc = with_value(TLS, {"certificates": [{"cert": gw_cert.cert, "key": other.key}]})
    assert compile_error(doc) == (
        f"{SOURCE}: {TLS}.certificates[0].key: {other.key} is not the key of {gw_cert.cert}"
    )


def test_a_file_that_is_not_pem_is_named(gw_cert: Issued, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    doc = with_value(TLS, {"certificates": [{"cert": str(garbage), "key": gw_cert.key}]})
    error = compile_error(doc)
    assert error.startswith(f"{SOURCE}: {TLS}.certificates[0]") and str(garbage) in error


def test_two_certificate_groups_may_not_claim_one_name(pki: Pki, gw_cert: Issued) -> None:
    other = pki.issue("gw.test", "api.test")
    doc = with_value(TLS, {"certificates": [
        {"cert": gw_cert.cert, "key": gw_cert.key},
        {"cert": other.cert, "key": other.key},
    ]})  # fmt: skip
    assert "the name 'gw.test' is served by two certificate groups" in compile_error(doc)


def test_client_ca_and_ocsp_files_are_checked(gw_cert: Issued, tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pem")
    doc = tls_doc(gw_cert, client_certificates={"ca": missing})
    assert compile_error(doc) == f"{SOURCE}: {TLS}.client_certificates.ca: {missing}: no such file"
    doc = with_value(TLS, {"certificates": [{"cert": gw_cert.cert, "key": gw_cert.key, "ocsp": missing}]})
    assert compile_error(doc) == f"{SOURCE}: {TLS}.certificates[0].ocsp: {missing}: No such file or directory"
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello\n")
    doc = tls_doc(gw_cert, client_certificates={"ca": str(not_pem)})
    assert compile_error(doc).startswith(
        f"{SOURCE}: {TLS}.client_certificates.ca: {not_pem}: not a PEM bundle"
    )


UP = "upstreams.catalog.tls"


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("yes", f"{UP}: expected a mapping"),
        ({"cert": "c.pem"}, f"{UP}.key: a client certificate needs both cert and key"),
        ({"key": "c.key"}, f"{UP}.cert: a client certificate needs both cert and key"),
        ({"min_version": "1.0"}, f"{UP}.min_version: expected the lowest TLS version"),
        ({"insecure_skip_verify": "yes"}, f"{UP}.insecure_skip_verify: expected true or false"),
        ({"server_name": "a b"}, f"{UP}.server_name: expected a host name"),
        ({"verify": False}, "unknown key 'verify'"),
    ],
)
def test_upstream_tls_errors(tls: object, message: str) -> None:
    assert message in error_of(with_value(UP, tls))


def test_upstream_tls_files_are_checked(pki: Pki, gw_cert: Issued, tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pem")
    assert compile_error(with_value(UP, {"ca": missing})) == f"{SOURCE}: {UP}.ca: {missing}: no such file"
    other = pki.issue("x.test")
    error = compile_error(with_value(UP, {"cert": gw_cert.cert, "key": other.key}))
    assert error == f"{SOURCE}: {UP}.key: {other.key} is not the key of {gw_cert.cert}"


def test_upstream_tls_true_verifies_against_the_system_store() -> None:
    tls = parse(with_value(UP, True)).upstreams["catalog"].tls
    assert tls is not None and tls.ca is None and not tls.insecure_skip_verify


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"status": 303}, "routes[0].redirect_https.status: expected 301, 302, 307 or 308"),
        ({"port": 0}, "routes[0].redirect_https.port"),
        ({"to": "x"}, "unknown key 'to'"),
    ],
)
def test_redirect_https_errors(value: object, message: str) -> None:
    assert message in error_of(with_value("routes[0].redirect_https", value))


def test_client_certificate_plugin_options() -> None:
    def plugin_error(options: dict[str, Any]) -> str:
        route = minimal()["routes"][0] | {"plugins": [{"name": "client_certificate", **options}]}
        with pytest.raises(ConfigError) as info:
            compile_plan(parse_config(with_value("routes[0]", route), SOURCE))
        return str(info.value)

    assert "sans[0]: expected a typed name" in plugin_error({"sans": ["alice@shop.test"]})
    assert "fingerprints[0]: expected a SHA-256 fingerprint" in plugin_error({"fingerprints": ["abc"]})
    assert "unknown key 'issuer'" in plugin_error({"issuer": "x"})
