"""Config documents for tests: a minimal valid one, one value set at a key path, and the exact
error a document gets."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

import fastgw.config
from fastgw.config import Config, parse_config
from fastgw.errors import ConfigError

SOURCE = "gw.yaml"
BIND_EXPECTED = "expected host:port or [ipv6]:port with a port from 0 to 65535"
EXAMPLE = Path(fastgw.config.__file__).with_name("example.yaml")

MINIMAL: dict[str, Any] = {
    "listeners": [{"name": "public", "bind": "127.0.0.1:0"}],
    "upstreams": {"catalog": {"targets": ["127.0.0.1:9001"]}},
    "routes": [{"path": "/catalog/items/{id:int}", "upstream": "catalog"}],
}
_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


def with_value(path: str, value: object, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` (default: the minimal document) with ``value`` set at ``path`` (``a.b[1].c``)."""
    doc = minimal() if doc is None else doc
    steps: list[str | int] = [int(index) if index else key for key, index in _STEP.findall(path)]
    node: Any = doc
    for step in steps[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    last = steps[-1]
    if isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    return doc


def parse(doc: object, env: dict[str, str] | None = None) -> Config:
    return parse_config(doc, SOURCE, env={} if env is None else env)


def error_of(doc: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(doc, env)
    assert info.value.file == SOURCE
    return str(info.value)
