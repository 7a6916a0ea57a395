"""The built-in plugins, one module each; importing this package registers them all.

Each public module here defines its plugin class(es) decorated with ``hooks.register_plugin``.
Modules are found by listing the package, so adding a plugin is adding its module. Third-party
plugins register through the ``fastgw.plugins`` entry-point group instead (see ``hooks``).
"""

from __future__ import annotations

import importlib
import pkgutil


def load_builtin_plugins() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


load_builtin_plugins()
