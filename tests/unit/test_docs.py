"""Every YAML example in README.md and docs/ is a configuration fastgw accepts: a reader who
copies one gets a gateway, not an error. A fragment (a route list, a plugin list, an admin
section) is checked inside a minimal document that supplies what it leaves out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw.config import parse_config
from fastgw.plan import compile_plan

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


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


@pytest.mark.parametrize(("where", "text"), examples(), ids=[where for where, _ in examples()])
def test_documented_example_is_accepted(where: str, text: str) -> None:
    fragment = yaml.safe_load(text)
    assert isinstance(fragment, dict), f"{where}: not a mapping"
    env = {name: "example-value" for name in _ENV.findall(text)}
    compile_plan(parse_config(completed(fragment), where, env=env))


def test_the_docs_have_examples() -> None:
    assert len(examples()) >= 8
