"""SHA-256 and BLAKE2b without importing ``hashlib``.

``hashlib``'s import builds its table of OpenSSL digests, about 650 KB of each process's memory
(PERF: memory) for two functions a gateway uses without TLS: SHA-256 for the configuration's
digest and BLAKE2b for the hash balancers. CPython builds both in, as the modules ``hashlib``
itself takes BLAKE2 from and ``random`` takes SHA-512 from; an interpreter without them gets
``hashlib``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import blake2b, sha256
else:
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12 and later
        except ImportError:
            from hashlib import sha256
    try:
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b

__all__ = ["blake2b", "sha256"]
