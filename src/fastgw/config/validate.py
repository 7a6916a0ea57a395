"""Typed readers for configuration documents: each checks one node and says where it went wrong.

A reader is a function ``(value, path) -> T``: it returns the typed value or raises
``ConfigError(path, "expected ..., found ...")``. Parameterised readers come from factories
(``read_int(1, 65535)``, ``read_list(read_str, non_empty=True)``, ``read_record(Limits, {...})``),
so a record is described by a table of key -> reader and its defaults stay in ``schema``.

Readers of numbers and booleans also accept the strings that ``${ENV}`` substitution produces:
plain digits for integers, sizes and durations, ``"true"``/``"false"`` for booleans. A YAML or
JSON boolean is never an integer.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from fastgw.errors import ConfigError

T = TypeVar("T")
Reader = Callable[[object, str], T]

_SHORT = 60  # longest rendering of a found value
_INT = re.compile(r"-?[0-9]{1,18}")
_DURATION = re.compile(r"([0-9]{1,18}(?:\.[0-9]{1,18})?)(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"([0-9]{1,18})(B|KB|MB|GB|KiB|MiB|GiB)?")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


def join(path: str, key: str) -> str:
    """The key path of ``key`` inside the mapping at ``path``."""
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """What was found, for messages: the value itself when short, else its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        text = repr(value)
        return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


def expected(path: str, what: str, value: object) -> ConfigError:
    return ConfigError(path, f"expected {what}, found {describe(value)}")


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or nothing."""
    import difflib  # here: only a document with a mistake needs it (PERF: memory of a gateway)

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise expected(path, "a non-empty string", value)
    return value


def read_text(value: object, path: str) -> str:
    """A string, possibly empty; a number is taken as its text (``2`` -> ``"2"``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise expected(path, "a string or a number", value)


def read_bool(value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if value == "true" or value == "false":
        return value == "true"
    raise expected(path, "true or false", value)


def read_int(lo: int | None = None, hi: int | None = None) -> Reader[int]:
    if lo is not None and hi is not None:
        what = f"an integer from {lo} to {hi}"
    elif lo is not None:
        what = f"an integer of at least {lo}"
    else:
        what = "an integer"

    def read(value: object, path: str) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INT.fullmatch(value):
            number = int(value)
        if number is None or (lo is not None and number < lo) or (hi is not None and number > hi):
            raise expected(path, what, value)
        return number

    return read


def _seconds(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        number, unit = match.groups()
        if unit == "ms":  # divide: 250 / 1000 is exact where 250 * 0.001 is not
            return float(number) / 1000
        return float(number) * _DURATION_UNITS[unit or "s"]
    return None


def read_duration(*, allow_zero: bool = False) -> Reader[float]:
    """Seconds: a number, or a string with unit ``ms``, ``s``, ``m`` or ``h`` (``"1.5s"``)."""
    bound = "a duration of at least 0" if allow_zero else "a duration greater than 0"

    def read(value: object, path: str) -> float:
        seconds = _seconds(value)
        if seconds is None:
            raise expected(path, "a duration like 30, '250ms', '1.5s', '2m' or '1h'", value)
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise expected(path, bound, value)
        return seconds

    return read


def read_size(value: object, path: str) -> int:
    """Bytes: an integer, or a string with unit B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (1024)."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        size = int(match[1]) * _SIZE_UNITS[match[2] or "B"]
    if size is None:
        raise expected(path, "a size like 65536, '16KiB', '1MiB', '1GiB', '16KB' or '1MB'", value)
    if size <= 0:
        raise expected(path, "a size greater than 0", value)
    return size


def read_matching(pattern: re.Pattern[str], what: str) -> Reader[str]:
    """A string ``pattern`` matches whole; ``what`` says what was expected."""

    def read(value: object, path: str) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise expected(path, what, value)
        return value

    return read


def read_one_of(kind: str, names: Collection[str]) -> Reader[str]:
    """A string naming one of ``names`` (``kind`` is e.g. ``"an upstream"``)."""
    listed = ", ".join(names)

    def read(value: object, path: str) -> str:
        if isinstance(value, str) and value in names:
            return value
        hint = suggest(value, names) if isinstance(value, str) else ""
        raise ConfigError(path, f"expected the name of {kind} ({listed}), found {describe(value)}{hint}")

    return read


def read_sequence(value: object, path: str, *, non_empty: bool = False) -> list[object]:
    if not isinstance(value, list) or (non_empty and not value):
        raise expected(path, "a non-empty list" if non_empty else "a list", value)
    return value


def read_list(item: Reader[T], *, non_empty: bool = False, single: bool = False) -> Reader[tuple[T, ...]]:
    """A list read item by item (``path[i]``); with ``single`` a lone string is a list of one."""
    what = "a non-empty list" if non_empty else "a list"
    if single:
        what = f"a string or {what}"

    def read(value: object, path: str) -> tuple[T, ...]:
        if single and isinstance(value, str):
            return (item(value, path),)
        if not isinstance(value, list) or (non_empty and not value):
            raise expected(path, what, value)
        return tuple(item(entry, f"{path}[{index}]") for index, entry in enumerate(value))

    return read


def read_fraction(example: str, *, allow_zero: bool = False) -> Reader[float]:
    """A number from 0 (excluded unless ``allow_zero``) to 1; ``example`` shows one in messages."""
    lowest = "from 0 to 1" if allow_zero else "greater than 0 and at most 1"
    what = f"a fraction {lowest}, like {example}"

    def read(value: object, path: str) -> float:
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is not None and (number > 0 or (allow_zero and number == 0)) and number <= 1:
            return float(number)
        raise expected(path, what, value)  # NaN too: it compares false

    return read


def read_mapping(value: object, path: str, *, non_empty: bool = False) -> dict[str, object]:
    """A mapping whose keys are all non-empty strings."""
    if not isinstance(value, Mapping) or (non_empty and not value):
        raise expected(path, "a non-empty mapping" if non_empty else "a mapping", value)
    items: dict[str, object] = {}
    for key, entry in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(path, f"expected non-empty string keys, found key {describe(key)}")
        items[key] = entry
    return items


def check_keys(
    items: Mapping[str, object], path: str, allowed: Collection[str], required: Collection[str] = ()
) -> None:
    """Unknown keys first (a typo then reads as a typo, not as a missing key), then missing ones."""
    for key in items:
        if key not in allowed:
            listed = ", ".join(allowed)
            raise ConfigError(path, f"unknown key {key!r}; expected one of: {listed}{suggest(key, allowed)}")
    for key in required:
        if key not in items:
            raise ConfigError(path, f"missing required key {key!r}")


class Section:
    """One mapping of the document, checked against its allowed keys, read one key at a time."""

    __slots__ = ("items", "path")

    def __init__(
        self, value: object, path: str, allowed: Collection[str], required: Collection[str] = ()
    ) -> None:
        self.path = path
        self.items = read_mapping(value, path)
        check_keys(self.items, path, allowed, required)

    def at(self, key: str) -> str:
        return join(self.path, key)

    def get(self, key: str, reader: Reader[T]) -> T | None:
        """The value of an optional key, or None when it is absent."""
        return reader(self.items[key], self.at(key)) if key in self.items else None

    def require(self, key: str, reader: Reader[T]) -> T:
        """The value of a key listed in ``required``."""
        return reader(self.items[key], self.at(key))

    def read(self, readers: Mapping[str, Reader[object]]) -> dict[str, Any]:
        """Keyword arguments for a record: each present key of ``readers``, read by its reader.

        ``Any`` because the values' types vary by key; the readers table is what types them.
        """
        return {
            key: reader(self.items[key], self.at(key)) for key, reader in readers.items() if key in self.items
        }


def read_fields(value: object, path: str, readers: Mapping[str, Reader[object]]) -> dict[str, Any]:
    """The keyword arguments of a record whose keys are exactly those of ``readers``."""
    return Section(value, path, readers).read(readers)


def read_record(build: Callable[..., T], readers: Mapping[str, Reader[object]]) -> Reader[T]:
    """A record built from the keys present; absent ones keep the record's defaults."""

    def read(value: object, path: str) -> T:
        return build(**read_fields(value, path, readers))

    return read


def claim(seen: dict[str, str], key: str, owner: str, path: str, what: str) -> None:
    """Record that ``owner`` uses ``key``; a second use is an error pointing at the first."""
    if key in seen:
        raise ConfigError(path, f"duplicate {what} {key!r} (first at {seen[key]})")
    seen[key] = owner


def named_sections(
    value: object,
    path: str,
    allowed: Collection[str],
    required: Collection[str],
    *,
    name_key: str,
    default: str,
    what: str,
) -> Iterator[tuple[str, Section]]:
    """The entries of a non-empty list, each a Section with a unique name: its ``name_key``, or
    ``default`` followed by its index (``route0``). ``what`` names the name in a duplicate's error."""
    names: dict[str, str] = {}
    for index, entry in enumerate(read_sequence(value, path, non_empty=True)):
        at = f"{path}[{index}]"
        section = Section(entry, at, allowed, required)
        name = section.get(name_key, read_str) or f"{default}{index}"
        claim(names, name, at, section.at(name_key), what)
        yield name, section


# -- addresses -------------------------------------------------------------------------------------

Address = tuple[str, int]  # (host without brackets, port), as the address readers return it

_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")


def _split_address(text: str) -> Address | None:
    """``host:port`` or ``[v6]:port`` -> (host without brackets, port), or None."""
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]:")
        try:
            valid_host = bool(bracket) and ipaddress.ip_address(host).version == 6
        except ValueError:
            valid_host = False
    else:
        host, colon, port = text.rpartition(":")
        valid_host = bool(colon) and _HOST_NAME.fullmatch(host) is not None
    return (host, int(port)) if valid_host and _PORT.fullmatch(port) else None


def read_address(min_port: int) -> Reader[Address]:
    """``host:port`` or ``[v6]:port`` with a port from ``min_port`` (0: any free port) to 65535."""
    what = f"host:port or [ipv6]:port with a port from {min_port} to 65535"

    def read(value: object, path: str) -> Address:
        address = _split_address(value) if isinstance(value, str) else None
        if address is None or not min_port <= address[1] <= 65535:
            raise expected(path, what, value)
        return address

    return read


def show_address(address: Address) -> str:
    """``host:port``, or ``[v6]:port``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def binds_overlap(a: Address, b: Address) -> bool:
    """Would sockets listening on ``a`` and on ``b`` take each other's port?

    The same port (port 0, any free port, never collides), and: the same address; or one side is
    the wildcard of the other's family (``0.0.0.0`` holds the port on every IPv4 address, ``::``
    on every IPv6 one: the gateway's sockets are IPv6-only, so ``0.0.0.0`` and ``::`` do not
    collide); or the same host name. ``localhost`` is 127.0.0.1 and ::1; other names are not
    resolved, so a name only collides with itself.
    """
    if a[1] != b[1] or a[1] == 0:
        return False
    return any(_ips_overlap(x, y) for x in _bind_ips(a[0]) for y in _bind_ips(b[0]))


_BindIp = ipaddress.IPv4Address | ipaddress.IPv6Address | str  # str: a host name, lower-cased


def _bind_ips(host: str) -> list[_BindIp]:
    if host.lower() == "localhost":
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return [host.lower()]


def _ips_overlap(a: _BindIp, b: _BindIp) -> bool:
    if a == b:
        return True
    if isinstance(a, str) or isinstance(b, str):
        return False
    return a.version == b.version and (a.is_unspecified or b.is_unspecified)
