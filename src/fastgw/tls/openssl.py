"""The OpenSSL calls Python's ``ssl`` module does not offer, made through ctypes on the very
libssl the interpreter already loaded: setting a context's session-ticket keys (so every worker,
and every gateway given the same secret, encrypts and decrypts the same tickets), turning off
its per-process session cache, and stapling an OCSP response to the handshakes that ask for one.

Reaching a context's ``SSL_CTX*``: CPython's ``PySSLContext`` holds it as its first field after
the object header; ``ssl_ctx`` reads it there and checks it is right (the options OpenSSL reports
for that pointer must be the context's), so a different interpreter fails loudly, not silently.
"""

from __future__ import annotations

import ctypes
import hashlib
import ssl
from collections.abc import Mapping

from fastgw.tls.libraries import LIBSSL_PATH, loaded_library

_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_SESS_CACHE_OFF = 0
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71
_SSL_TLSEXT_ERR_OK = 0
_SSL_TLSEXT_ERR_NOACK = 3
TICKET_KEY_BYTES = 80  # key name 16, HMAC secret 32, AES key 32

_StatusCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


_lib = ctypes.CDLL(LIBSSL_PATH)
_lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
_lib.SSL_CTX_ctrl.restype = ctypes.c_long
_lib.SSL_CTX_callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_lib.SSL_CTX_callback_ctrl.restype = ctypes.c_long
_lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
_lib.SSL_CTX_get_options.restype = ctypes.c_uint64
_lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
_lib.SSL_ctrl.restype = ctypes.c_long
_lib.SSL_get_certificate.argtypes = [ctypes.c_void_p]
_lib.SSL_get_certificate.restype = ctypes.c_void_p
_libcrypto = ctypes.CDLL(loaded_library("crypto"))
_libcrypto.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
_libcrypto.i2d_X509.restype = ctypes.c_int
_libcrypto.CRYPTO_malloc.argtypes = [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
_libcrypto.CRYPTO_malloc.restype = ctypes.c_void_p


def ssl_ctx(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX*`` under ``context``."""
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or _lib.SSL_CTX_get_options(pointer) != context.options:
        raise RuntimeError("cannot reach OpenSSL's context under ssl.SSLContext in this interpreter")
    return pointer


def set_ticket_key(context: ssl.SSLContext, key: bytes) -> None:
    """Encrypt new session tickets with ``key`` (80 bytes), and decrypt only those."""
    if len(key) != TICKET_KEY_BYTES:
        raise ValueError("a session-ticket key is 80 bytes")
    buffer = ctypes.create_string_buffer(key, TICKET_KEY_BYTES)
    if _lib.SSL_CTX_ctrl(ssl_ctx(context), _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEY_BYTES, buffer) != 1:
        raise RuntimeError("OpenSSL refused the session-ticket key")


def disable_session_cache(context: ssl.SSLContext) -> None:
    """No server-side session cache: sessions resume by ticket only. A cache lives in one
    process, so with several workers it would resume a client only on the worker it first
    reached, and it costs a locked insert on every full handshake."""
    _lib.SSL_CTX_ctrl(ssl_ctx(context), _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)


# The callbacks must outlive the contexts that call them: kept here, by context.
_stapling: dict[int, object] = {}


def staple_ocsp(context: ssl.SSLContext, responses: Mapping[bytes, bytes]) -> None:
    """Staple ``responses[sha256(certificate DER)]`` (a DER OCSP response) to every handshake on
    ``context`` whose client asks for the status of the certificate the handshake presents."""

    def status(ssl_pointer: int, _arg: int) -> int:
        certificate = _lib.SSL_get_certificate(ssl_pointer)
        if not certificate:
            return _SSL_TLSEXT_ERR_NOACK
        size = _libcrypto.i2d_X509(certificate, None)
        if size <= 0:
            return _SSL_TLSEXT_ERR_NOACK
        der = ctypes.create_string_buffer(size)
        cursor = ctypes.c_void_p(ctypes.addressof(der))
        _libcrypto.i2d_X509(certificate, ctypes.byref(cursor))
        response = responses.get(hashlib.sha256(der.raw).digest())
        if response is None:
            return _SSL_TLSEXT_ERR_NOACK
        copy = _libcrypto.CRYPTO_malloc(len(response), b"fastgw", 0)  # OpenSSL frees it
        if not copy:
            return _SSL_TLSEXT_ERR_NOACK
        ctypes.memmove(copy, response, len(response))
        _lib.SSL_ctrl(ssl_pointer, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len(response), copy)
        return _SSL_TLSEXT_ERR_OK

    callback = _StatusCallback(status)
    _stapling[id(context)] = (context, callback)
    _lib.SSL_CTX_callback_ctrl(
        ssl_ctx(context), _SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, ctypes.cast(callback, ctypes.c_void_p)
    )


def forget(context: ssl.SSLContext) -> None:
    """The context is retired: drop its stapling callback with it."""
    _stapling.pop(id(context), None)
