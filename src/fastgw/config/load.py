"""Load a configuration file into typed ``Config`` records, or fail naming file and key path.

The steps, each raising only ``ConfigError``:

1. read the file: ``.yaml``/``.yml`` (safe YAML, a repeated key is an error) or ``.json`` (or an
   Ocelot file, translated by ``fastgw.importers``);
2. substitute ``${VAR}`` and ``${VAR:-default}`` in every string value (``$$`` is a literal
   ``$``); a value that is one whole reference stays a string for the typed reader to convert;
3. read the document (``document``): listeners, then upstreams, then routes (which name both),
   then the global plugins and the operations sections. The first problem found is raised,
   rendered as ``file: key.path: expected ..., found ...``: the readers name the key path, and
   the two entry points here add the file.

The Config read from a file records the SHA-256 of its bytes (``digest``): the revision the
status page shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any

import orjson
import yaml

from fastgw._digests import sha256
from fastgw.config.document import read_config
from fastgw.config.schema import Config
from fastgw.config.validate import expected, join
from fastgw.errors import ConfigError
from fastgw.importers import foreign_document

__all__ = ["load_config", "load_text", "parse_config"]

_EMPTY = "the document is empty; expected a mapping with listeners, upstreams and routes"


# -- files ---------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """The safe loader, except that a key repeated in one mapping is an error, not an override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = error.problem or ""
        if error.context and not error.context.startswith("while"):
            detail = f"{error.context}, {detail}"
        raise ConfigError("", f"invalid YAML{where}: {detail}") from None
    except yaml.YAMLError as error:
        raise ConfigError("", f"invalid YAML: {error}") from None


def _parse_json(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise ConfigError(
            "", f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


_PARSERS: dict[str, Callable[[str], object]] = {
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".json": _parse_json,
}


def load_config(path: str, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the file at ``path``; ``env`` defaults to ``os.environ``."""
    try:
        extension = os.path.splitext(path)[1]
        parse = _PARSERS.get(extension.lower())
        if parse is None:
            raise ConfigError("", f"unknown file extension {extension!r}; expected .yaml, .yml or .json")
        try:
            with open(path, "rb") as file:
                raw = file.read()
        except OSError as error:
            raise ConfigError("", f"cannot read the file: {error.strerror or error}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ConfigError(
                "",
                f"expected UTF-8 text, found byte {raw[error.start]:#04x} at offset {error.start}",
            ) from None
        if not text.strip():
            raise ConfigError("", _EMPTY)
        data: object = foreign_document(path, text)  # another gateway's file (Ocelot's), translated
        if data is None:
            data = parse(text)
    except ConfigError as error:
        raise error.with_file(path) from None
    except RecursionError:
        raise ConfigError("", "the document is nested too deeply", path) from None
    return replace(parse_config(data, path, env=env), digest=sha256(raw).hexdigest())


def load_text(
    text: str, source: str, revision: int | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate a YAML (or JSON) document held somewhere other than a file (an etcd
    key's value, at ``revision``); errors name ``source`` as the file."""
    try:
        if not text.strip():
            raise ConfigError("", _EMPTY)
        data = _parse_yaml(text)
    except ConfigError as error:
        raise error.with_file(source) from None
    return parse_config(data, source, env=env, revision=revision)


def parse_config(
    data: object, source: str, *, env: Mapping[str, str] | None = None, revision: int | None = None
) -> Config:
    """Validate an already-parsed document; errors name ``source`` as the file."""
    try:
        if data is None:
            raise ConfigError("", _EMPTY)
        document = _substitute_tree(data, "", os.environ if env is None else env, set())
        return read_config(document, source, revision)
    except ConfigError as error:
        raise error.with_file(source) from None
    except RecursionError:
        raise ConfigError("", "the document is nested too deeply", source) from None


# -- ${ENV} substitution -------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def _substitute(text: str, path: str, env: Mapping[str, str]) -> str:
    """``$$`` -> ``$``; ``${NAME:-default}`` takes the default when NAME is unset or empty."""
    if "$" not in text:
        return text

    def replace_reference(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        body = match["body"]
        reference = _REFERENCE_BODY.fullmatch(body) if body is not None else None
        if reference is None:
            raise expected(path, "${NAME} or ${NAME:-default} (write $$ for a literal $)", text)
        value = env.get(reference["name"])
        if not value and reference["default"] is not None:
            return str(reference["default"])
        if value is None:
            raise ConfigError(path, f"environment variable {reference['name']} is not set")
        return value

    return _REFERENCE.sub(replace_reference, text)


def _substitute_tree(node: object, path: str, env: Mapping[str, str], open_nodes: set[int]) -> object:
    """A copy of the tree with every string value substituted (keys are left as written)."""
    if isinstance(node, str):
        return _substitute(node, path, env)
    if not isinstance(node, (dict, list)):
        return node
    if id(node) in open_nodes:  # YAML aliases can make a node contain itself
        raise ConfigError(path, "expected plain data, found a recursive alias")
    open_nodes.add(id(node))
    if isinstance(node, dict):
        copy: object = {
            key: _substitute_tree(value, join(path, str(key)), env, open_nodes) for key, value in node.items()
        }
    else:
        copy = [
            _substitute_tree(value, f"{path}[{index}]", env, open_nodes) for index, value in enumerate(node)
        ]
    open_nodes.discard(id(node))
    return copy
