"""TLS: termination on listeners (``server``), HTTPS to upstreams (``client``), and the OpenSSL
calls Python's ``ssl`` module does not offer (``openssl``: session-ticket keys, OCSP stapling)."""
