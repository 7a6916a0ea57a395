"""Where the OpenSSL libraries this process already loaded (through ``_ssl``) live: the event
loop's TLS layer (``_proxy``'s TLS link) and ``openssl``'s ctypes calls open the very same ones.

Kept apart from ``openssl`` so that finding the path costs no ctypes: a gateway without TLS
listeners or upstreams never loads it (PERF: memory, a third of a megabyte per process).
"""

from __future__ import annotations

import ssl  # noqa: F401  (loads _ssl, and with it the libraries looked for below)


def loaded_library(name: str) -> str:
    """The path of the lib``name`` ``_ssl`` is linked against (already in this process: opening
    it again gives the same instance). ``ctypes.util`` (a megabyte of modules: tempfile, shutil,
    subprocess) is loaded only where the process map cannot say."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if f"/lib{name}.so" in path:
                    return path
    except OSError:
        pass
    import ctypes.util

    found = ctypes.util.find_library(name)
    if found is None:
        raise OSError(f"lib{name} not found")
    return found


LIBSSL_PATH = loaded_library("ssl")
