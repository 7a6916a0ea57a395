"""Built-in plugins are imported only when a configuration names them: ``plugins.BUILTIN`` must
name every plugin module's plugin, and a gateway without plugins must not load their libraries."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import fastgw.plugins
from fastgw import hooks
from fastgw.plugins import BUILTIN, load_builtin_plugin

SRC = Path(fastgw.plugins.__file__).parents[2]


def test_every_plugin_module_is_listed_under_the_name_it_registers() -> None:
    modules = [m.name for m in pkgutil.iter_modules(fastgw.plugins.__path__) if not m.name.startswith("_")]
    assert sorted(modules) == sorted(set(BUILTIN.values()))
    for name, module in BUILTIN.items():
        importlib.import_module(f"fastgw.plugins.{module}")
        cls = hooks.find_plugin(name)
        assert cls is not None and cls.name == name and cls.__module__.startswith(f"fastgw.plugins.{module}")


def test_unknown_names_load_nothing() -> None:
    assert not load_builtin_plugin("no_such_plugin")


def test_a_gateway_without_plugins_does_not_load_their_libraries() -> None:
    code = (
        "import sys; import fastgw.cli, fastgw.plan, fastgw.server.workers;"
        "print(sorted(m for m in ('aiohttp', 'jwt', 'redis', 'brotli', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    assert out.stdout.strip() == "[]"
