"""Keys of every JWT algorithm family, made with cryptography, and tokens signed with them.

Keys are generated once per test session (RSA generation is the slow part). ``sign`` makes a real
token with PyJWT; ``unsigned`` and ``forge_hs256`` make the hostile ones PyJWT would refuse to
produce: ``alg: none``, and an HS256 token whose HMAC secret is a public key (algorithm confusion).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "ALGORITHM_KEYS",
    "HMAC_SECRET",
    "claims",
    "forge_hs256",
    "jwk",
    "jwks",
    "private_key",
    "public_pem",
    "sign",
    "unsigned",
]

HMAC_SECRET = "test-secret-of-at-least-64-bytes-for-hs512-0123456789abcdef012345"

# algorithm -> which test key signs it
ALGORITHM_KEYS = {
    "HS256": "hmac",
    "HS384": "hmac",
    "HS512": "hmac",
    "RS256": "rsa",
    "RS384": "rsa",
    "RS512": "rsa",
    "PS256": "rsa",
    "PS384": "rsa",
    "PS512": "rsa",
    "ES256": "p256",
    "ES384": "p384",
    "ES512": "p521",
    "EdDSA": "ed25519",
}


@cache
def private_key(name: str) -> Any:
    """A private key by name: rsa, rsa2 (another RSA key), p256, p384, p521, ed25519; hmac is
    the shared secret's bytes."""
    if name == "hmac":
        return HMAC_SECRET.encode()
    if name.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curves = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}
    if name.startswith("p") and name[:4] in curves:
        return ec.generate_private_key(curves[name[:4]]())
    if name.startswith("ed25519"):
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyError(name)


def public_pem(name: str) -> str:
    key = private_key(name).public_key()
    return key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def jwk(name: str, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of a test key."""
    key = private_key(name)
    if name == "hmac":
        data: dict[str, Any] = jwt.algorithms.HMACAlgorithm.to_jwk(key, as_dict=True)
    elif name.startswith("rsa"):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif name.startswith("p"):
        data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        data["kid"] = kid
    if alg is not None:
        data["alg"] = alg
    return data


def jwks(*keys: tuple[str, str]) -> dict[str, Any]:
    """A JWK Set of (key name, kid) pairs."""
    return {"keys": [jwk(name, kid) for name, kid in keys]}


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims valid for a minute: sub alice, iss https://issuer.test, aud api; None drops one."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": "https://issuer.test",
        "aud": "api",
        "iat": now,
        "exp": now + 60,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], alg: str = "RS256", key: str | None = None, kid: str | None = None) -> str:
    """A real token: ``payload`` signed with ``alg`` by the test key for it (or ``key``)."""
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, private_key(key or ALGORITHM_KEYS[alg]), algorithm=alg, headers=headers)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _segments(header: dict[str, Any], payload: dict[str, Any]) -> bytes:
    return _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    """``alg: none`` with an empty signature (RFC 7519 section 6: an Unsecured JWT)."""
    return (_segments({"alg": alg, "typ": "JWT"}, payload) + b".").decode()


def forge_hs256(payload: dict[str, Any], secret: bytes, kid: str | None = None) -> str:
    """HS256 with an arbitrary secret, e.g. the server's RSA public key in PEM (RFC 8725 2.1)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = _segments(header, payload)
    signature = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()
