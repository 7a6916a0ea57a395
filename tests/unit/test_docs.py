"""Every configuration shipped or shown passes ``fastgw check``: a reader who copies one gets a
gateway, not an error.

- Shipped: every ``*.yaml`` under ``src/fastgw`` (the commented example, the demo's gateway) is
  checked as the file it is.
- Shown: every fenced ``yaml`` block of README.md and docs/*.md. A block that is a whole
  configuration (it has ``listeners``, ``upstreams`` and ``routes``) is checked exactly as written.
  A fragment (a route list, a plugin list, an admin or tracing section) is put into a minimal
  document that supplies only what it leaves out: a listener ``main`` on 127.0.0.1:0 when it has
  no ``listeners``, a catch-all route ``all`` to upstream ``up`` when it has no ``routes``, and an
  upstream ``{targets: ["127.0.0.1:9"]}`` for each upstream name its routes use and do not define.

Either way the document is written to a file and checked by ``fastgw check -c FILE``, in process,
from a directory holding the TLS files the document names (certificates, keys, CA bundles made
for the check at the relative paths the examples use).
``${VAR:-default}`` is checked with VAR unset, so the default is what is checked; a ``${VAR}``
without a default is set to ``9`` when its name ends in ``PORT`` (a port, as in the demo's
``${CATALOG_PORT}``) and to ``example-value`` otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw import cli
from tests.support.certs import write_files_named_in

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHIPPED = sorted((ROOT / "src" / "fastgw").rglob("*.yaml"))
_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)
_DEFAULTS = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")  # ${VAR:-default} -> default
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-)?")
WHOLE = {"listeners", "upstreams", "routes"}


def examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for number, match in enumerate(_BLOCK.finditer(path.read_text()), 1):
            found.append((f"{path.relative_to(ROOT)}#{number}", match.group(1)))
    return found


def completed(fragment: dict[str, Any]) -> dict[str, Any]:
    """The fragment inside a document with a listener, a route and the upstreams it names."""
    doc: dict[str, Any] = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
        **fragment,
    }
    upstreams = doc.setdefault("upstreams", {})
    named = [route["upstream"] for route in doc["routes"] if "upstream" in route]
    named += [b["upstream"] for r in doc["routes"] for b in r.get("aggregate", {}).get("backends", [])]
    for name in named:
        upstreams.setdefault(name, {"targets": ["127.0.0.1:9"]})
    return doc


def check(
    path: Path, text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path
) -> None:
    """``fastgw check -c path`` exits 0, with the environment the module docstring describes."""
    write_files_named_in(yaml.safe_load(_DEFAULTS.sub(r"\1", text)), cwd)
    monkeypatch.chdir(cwd)
    for name, has_default in _ENV.findall(text):
        if has_default:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, "9" if name.endswith("PORT") else "example-value")
    code = cli.main(["check", "-c", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith(f"{path}: OK"), out.out


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_config_passes_check(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    check(path, path.read_text(), monkeypatch, capsys, tmp_path)


@pytest.mark.parametrize(("where", "text"), examples(), ids=[where for where, _ in examples()])
def test_documented_example_passes_check(
    where: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load(text)
    assert isinstance(document, dict), f"{where}: not a mapping"
    path = tmp_path / "gateway.yaml"
    if document.keys() >= WHOLE:
        path.write_text(text)
    else:
        path.write_text(yaml.safe_dump(completed(document), sort_keys=False))
    check(path, text, monkeypatch, capsys, tmp_path)


def test_the_docs_and_the_package_have_examples() -> None:
    assert len(examples()) >= 8
    assert {p.name for p in SHIPPED} >= {"example.yaml", "gateway.yaml"}


def test_the_shipped_example_says_how_to_check_it() -> None:
    example = (ROOT / "src" / "fastgw" / "config" / "example.yaml").read_text()
    assert "fastgw check -c " in example
    assert not re.search(r"fastgw check (?!-c)", example)


def test_the_readme_starts_with_two_commands_and_says_what_scripts_test_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["scripts/demo", "scripts/test"]
    packages = re.search(r"DEBIAN_PACKAGES=\(([^)]*)\)", (ROOT / "scripts" / "test").read_text())
    assert packages is not None
    quick_start = " ".join(readme.split("## Running it")[0].split())
    assert "apt" in quick_start and "sudo" in quick_start
    for package in packages.group(1).split():
        assert package in quick_start, f"README's quick start does not say scripts/test installs {package}"
