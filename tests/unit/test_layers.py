"""The layers, arrows one way (docs/architecture.md): every import statement of every module in
src/fastgw, type-checking-only and function-local ones included, read from the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fastgw"
_CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+(\S+)\s+c?import|c?import\s+(\S+))", re.MULTILINE)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names)."""
    text = path.read_text()
    if path.suffix in (".pyx", ".pxd", ".pxi"):
        return {a or b for a, b in _CYTHON_IMPORT.findall(text)}
    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the package
                base = module_name(path).split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                names.add(".".join([*base, node.module]))
            else:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(package: str) -> list[Path]:
    root = SRC.joinpath(*package.split(".")[1:])
    files = [root.with_suffix(s) for s in (".py", ".pyx", ".pxd") if root.with_suffix(s).exists()]
    if root.is_dir():
        files += [p for p in root.rglob("*") if p.suffix in (".py", ".pyx", ".pxd")]
    assert files, package
    return files


def offenders(package: str, forbidden: str, allowed: str | None = None) -> list[str]:
    found = []
    for path in sources(package):
        for name in imported(path):
            if (name == forbidden or name.startswith(forbidden + ".")) and not (
                allowed and (name == allowed or name.startswith(allowed + "."))
            ):
                found.append(f"{path.relative_to(SRC)} imports {name}")
    return sorted(found)


@pytest.mark.parametrize(
    "package", ["fastgw.plugins", "fastgw.upstream", "fastgw.observe", "fastgw.discovery", "fastgw.etcd"]
)
def test_plugins_upstream_observe_and_discovery_never_import_the_server(package: str) -> None:
    assert offenders(package, "fastgw.server") == []


def test_discovery_and_the_groups_it_feeds_do_not_know_each_other() -> None:
    # The feed steers a group through a protocol; plan.py wires them (docs/architecture.md).
    assert offenders("fastgw.discovery", "fastgw.upstream") == []
    assert offenders("fastgw.upstream", "fastgw.discovery") == []


def test_the_router_imports_nothing_of_fastgw() -> None:
    assert offenders("fastgw._router", "fastgw") == []


def test_the_server_sees_only_the_compiled_plan_never_the_config() -> None:
    assert offenders("fastgw.server", "fastgw.config") == []


def test_the_http_leaf_imports_nothing_of_fastgw_beyond_itself() -> None:
    assert offenders("fastgw.http", "fastgw", allowed="fastgw.http") == []


def test_the_checks_see_what_they_check() -> None:
    # The reader finds plain, aliased, relative, function-local and Cython imports.
    assert "fastgw._router" in imported(SRC / "_proxy.pxd")
    assert "fastgw.config" in imported(SRC / "reload.py")
    assert offenders("fastgw.reload", "fastgw.config") != []


def test_the_hot_path_never_imports_what_observes_it() -> None:
    # observe/_access_log.pyx cimports fastgw._proxy to read the exchange's C fields; the hot path
    # only calls the log it is handed (ListenerServer.access_log), so the arrow stays one way.
    assert "fastgw._proxy" in imported(SRC / "observe" / "_access_log.pyx")
    assert offenders("fastgw._proxy", "fastgw.observe") == []
    assert offenders("fastgw.proxy", "fastgw.observe") == []


def test_no_source_file_is_over_900_lines() -> None:
    """One responsibility per module: a file past 900 lines is doing two things (the generated C,
    the vendored libraries and the type stubs aside)."""
    root = SRC.parents[1]
    sources = [
        path
        for folder in (SRC, root / "bench")
        for path in folder.rglob("*")
        if path.suffix in (".py", ".pyx", ".pxd", ".pxi")
    ]
    assert len(sources) > 50
    too_long = {str(p.relative_to(root)): n for p in sources if (n := len(p.read_text().splitlines())) > 900}
    assert too_long == {}
