"""The built-in plugins, one module each, imported only when a configuration names them.

``BUILTIN`` maps each plugin's name to its module; ``plan.compile_plugins`` imports the module of
a built-in name it meets (the module registers its class with ``hooks.register_plugin``), so a
gateway loads the libraries only of the plugins it uses (pyjwt and cryptography, redis-py,
aiohttp for control-plane calls...). Third-party plugins register through the
``fastgw.plugins`` entry-point group instead (see ``hooks``).
"""

from __future__ import annotations

import importlib

BUILTIN: dict[str, str] = {
    "jwt": "auth_jwt",
    "api_key": "auth_key",
    "basic_auth": "auth_basic",
    "client_certificate": "auth_cert",
    "authorize": "authorize",
    "claims": "claims",
    "forward_auth": "forward_auth",
    "introspection": "introspection",
    "ip_filter": "ipfilter",
    "rate_limit": "ratelimit",
    "headers": "headers",
    "query": "query",
    "rewrite_location": "location",
    "json_fields": "json_fields",
    "cors": "cors",
    "compress": "compress",
    "cache": "cache",
}


def load_builtin_plugin(name: str) -> bool:
    """Import the module of the built-in plugin ``name`` (registering it); False if there is none."""
    module = BUILTIN.get(name)
    if module is None:
        return False
    importlib.import_module(f"{__name__}.{module}")
    return True
