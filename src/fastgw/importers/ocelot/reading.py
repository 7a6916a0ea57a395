"""Reading Ocelot files the way Ocelot reads them.

Ocelot's files go through ASP.NET's configuration binder (or Newtonsoft, for merging), so real
files carry what those accept and a strict JSON parser refuses:

- a UTF-8 byte order mark, ``//`` and ``/* */`` comments, trailing commas;
- keys in any case (``upstreamPathTemplate``), numbers and booleans as strings (``"Port": "80"``,
  ``"true"``), and ``null`` wherever a value is optional (files Ocelot wrote itself are full of
  them: every key of the schema, most of them null, empty or zero).

``parse_jsonc`` turns such text into plain data: comments and trailing commas become spaces (line
and column numbers in errors are the file's own). ``OcelotObject`` reads one JSON object with
Ocelot's leniency and remembers which keys were read, so that the report can name every key the
translation never looked at (Ocelot ignores unknown keys; so does the translation, and says so).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

import orjson

from fastgw.config.validate import describe
from fastgw.errors import ConfigError

__all__ = ["OcelotObject", "Registry", "is_host", "parse_jsonc", "read_text_file"]

# A JSON string, or a comment: strings are kept as they are, comments are blanked.
_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*(?:.*?\*/|.*)', re.DOTALL)
# A JSON string, or a comma followed (after white space) by the end of an object or array.
_TRAILING_COMMA = re.compile(r'"(?:[^"\\]|\\.)*"|,(?=\s*[}\]])', re.DOTALL)
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def is_host(text: str) -> bool:
    """A host name or an IP address (a downstream host, a registry's host)."""
    if _HOST_NAME.fullmatch(text):
        return True
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _blank(match: re.Match[str]) -> str:
    text = match[0]
    if text.startswith('"'):
        return text
    if (text.startswith("/*") and not text.endswith("*/")) or text == "/*/":
        raise _Unterminated(match.start())
    return "".join("\n" if c == "\n" else " " for c in text)


class _Unterminated(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def parse_jsonc(text: str) -> object:
    """JSON with comments and trailing commas; ``ConfigError`` with line and column otherwise."""
    try:
        plain = _TRAILING_COMMA.sub(_blank, _COMMENT.sub(_blank, text))
    except _Unterminated as error:
        line = text.count("\n", 0, error.offset) + 1
        column = error.offset - text.rfind("\n", 0, error.offset)
        raise ConfigError(
            "", f"invalid JSON at line {line}, column {column}: unterminated /* comment"
        ) from None
    try:
        return orjson.loads(plain)
    except orjson.JSONDecodeError as error:
        raise ConfigError(
            "", f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


def read_text_file(path: str) -> str:
    """The file's text (UTF-8, with or without a byte order mark), or ``ConfigError``."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise ConfigError("", f"cannot read the file: {error.strerror or error}", path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            "", f"expected UTF-8 text, found byte {raw[error.start]:#04x} at offset {error.start}", path
        ) from None


class Registry:
    """Every object read from the files, so that the keys nobody read can be reported."""

    __slots__ = ("objects",)

    def __init__(self) -> None:
        self.objects: list[OcelotObject] = []


class OcelotObject:
    """One JSON object of an Ocelot file, read leniently as Ocelot's binder reads it.

    Keys ignore case; a key spelled twice (in any case) is an error, as it is for ASP.NET's JSON
    configuration reader. ``null`` reads as absent. Each accessor marks its key as read.
    """

    __slots__ = ("_items", "_read", "file", "path")

    def __init__(self, value: Mapping[str, object], file: str, path: str, registry: Registry) -> None:
        self.file = file
        self.path = path
        self._items: dict[str, tuple[str, object]] = {}
        for key, entry in value.items():
            folded = key.casefold()
            if folded in self._items:
                first = self._items[folded][0]
                where = f"{path}.{key}" if path else key
                raise ConfigError(where, f"duplicate key (keys ignore case: {first!r} is the same)", file)
            self._items[folded] = (key, entry)
        self._read: set[str] = set()
        registry.objects.append(self)

    @classmethod
    def of(cls, value: object, file: str, path: str, registry: Registry) -> OcelotObject:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a JSON object, found {describe(value)}", file)
        return cls(value, file, path, registry)

    # -- keys ----------------------------------------------------------------------------------

    def at(self, name: str) -> str:
        """The key path of ``name``, spelled as in the file when the file has it."""
        found = self._items.get(name.casefold())
        key = found[0] if found else name
        return f"{self.path}.{key}" if self.path else key

    def has(self, name: str) -> bool:
        """The key is present with a value other than null (not marked as read)."""
        found = self._items.get(name.casefold())
        return found is not None and found[1] is not None

    def peek(self, name: str) -> object | None:
        """The value of ``name`` without marking it as read (for looking ahead)."""
        found = self._items.get(name.casefold())
        return None if found is None else found[1]

    def raw(self, name: str) -> object | None:
        folded = name.casefold()
        self._read.add(folded)
        found = self._items.get(folded)
        return None if found is None else found[1]

    def items(self) -> dict[str, object]:
        """Every key, as spelled in the file, with its value (none marked as read)."""
        return dict(self._items.values())

    def unread(self) -> list[str]:
        """The keys no accessor asked for, as spelled in the file."""
        return [key for folded, (key, _) in self._items.items() if folded not in self._read]

    def error(self, name: str, what: str, value: object) -> ConfigError:
        return ConfigError(self.at(name), f"expected {what}, found {describe(value)}", self.file)

    # -- typed values ----------------------------------------------------------------------------

    def text(self, name: str) -> str | None:
        """A string (a number reads as its text); None when absent or null."""
        value = self.raw(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.error(name, "a string", value)

    def integer(self, name: str) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
            return int(value)
        if isinstance(value, str) and not value.strip():
            return None  # the binder leaves an empty string unset
        raise self.error(name, "an integer", value)

    def number(self, name: str) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value) if value.strip() else None
            except ValueError:
                pass
        raise self.error(name, "a number", value)

    def flag(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.error(name, "true or false", value)

    def strings(self, name: str) -> list[str]:
        """A list of strings; one bare string is a list of one (Ocelot's oldest files wrote
        ``"UpstreamHttpMethod": "Get"``); absent, null or empty is an empty list."""
        value = self.raw(name)
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        if not isinstance(value, list):
            raise self.error(name, "a list of strings", value)
        items = []
        for index, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise ConfigError(
                    f"{self.at(name)}[{index}]", f"expected a string, found {describe(item)}", self.file
                )
            items.append(item)
        return items

    def table(self, name: str) -> dict[str, str]:
        """An object of string values (a dictionary in Ocelot's schema), in file order."""
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(name, "an object of string values", value)
        entries: dict[str, str] = {}
        for key, item in value.items():
            if item is None:
                continue
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise ConfigError(
                    f"{self.at(name)}.{key}", f"expected a string, found {describe(item)}", self.file
                )
            entries[key] = item
        return entries

    def child(self, name: str, registry: Registry) -> OcelotObject | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(name, "a JSON object", value)
        return OcelotObject(value, self.file, self.at(name), registry)

    def children(self, name: str, registry: Registry) -> list[OcelotObject]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(name, "a list of JSON objects", value)
        at = self.at(name)
        return [OcelotObject.of(item, self.file, f"{at}[{i}]", registry) for i, item in enumerate(value)]
