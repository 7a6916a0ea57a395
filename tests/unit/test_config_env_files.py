"""Config loading: ${ENV} substitution, and documents read from files (YAML, JSON, the shipped
example)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.config import Config, load_config, parse_config
from fastgw.config.schema import (
    RetryConfig,
    UpstreamTimeouts,
)
from fastgw.errors import ConfigError
from tests.support.config_docs import BIND_EXPECTED, EXAMPLE, SOURCE, error_of, parse, with_value

# -- ${ENV} substitution -------------------------------------------------------------------------

_REFERENCE = "expected ${NAME} or ${NAME:-default} (write $$ for a literal $)"
_ENV = {"PORT": "8081", "HOST": "10.0.0.1", "N": "50", "YES": "true", "EMPTY": "", "WAIT": "250ms"}


@pytest.mark.parametrize(
    ("path", "value", "read", "expected"),
    [
        (
            "listeners[0].bind",
            "${HOST}:${PORT}",
            lambda c: (c.listeners[0].host, c.listeners[0].port),
            ("10.0.0.1", 8081),
        ),
        ("listeners[0].bind", "127.0.0.1:${NOPE:-9000}", lambda c: c.listeners[0].port, 9000),
        ("listeners[0].bind", "127.0.0.1:${EMPTY:-9001}", lambda c: c.listeners[0].port, 9001),
        (
            "listeners[0].limits.max_headers",
            "${N}",
            lambda c: c.listeners[0].limits.max_headers,
            50,
        ),
        ("listeners[0].timeouts.head", "${WAIT}", lambda c: c.listeners[0].timeouts.head, 0.25),
        ("routes[0].preserve_host", "${YES}", lambda c: c.routes[0].preserve_host, True),
        ("routes[0].headers", {"X-A": "a$$b"}, lambda c: c.routes[0].headers, (("x-a", "a$b"),)),
        (
            "routes[0].headers",
            {"X-A": "$${HOST}"},
            lambda c: c.routes[0].headers,
            (("x-a", "${HOST}"),),
        ),
        ("routes[0].headers", {"X-A": "${EMPTY}"}, lambda c: c.routes[0].headers, (("x-a", ""),)),
        (
            "routes[0].headers",
            {"X-A": "cost: 5$"},
            lambda c: c.routes[0].headers,
            (("x-a", "cost: 5$"),),
        ),
        (
            "routes[0].headers",
            {"X-A": "${NOPE:-a:-b}"},
            lambda c: c.routes[0].headers,
            (("x-a", "a:-b"),),
        ),
        (
            "routes[0].plugins",
            [{"name": "auth", "keys": ["${HOST}", {"k": "${PORT}"}]}],
            lambda c: c.routes[0].plugins[0].options,
            {"keys": ["10.0.0.1", {"k": "8081"}]},
        ),
    ],
)
def test_env_substitution(path: str, value: object, read: Any, expected: object) -> None:
    assert read(parse(with_value(path, value), env=_ENV)) == expected


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "listeners[0].bind",
            "127.0.0.1:${PORT}",
            "listeners[0].bind: environment variable PORT is not set",
        ),
        (
            "routes[0].plugins",
            [{"name": "auth", "keys": [{"k": "${SECRET}"}]}],
            "routes[0].plugins[0].keys[0].k: environment variable SECRET is not set",
        ),
        (
            "routes[0].id",
            "${1BAD}",
            f"routes[0].id: {_REFERENCE}, found '${{1BAD}}'",
        ),
        (
            "routes[0].id",
            "a${OPEN",
            f"routes[0].id: {_REFERENCE}, found 'a${{OPEN'",
        ),
        (
            "listeners[0].limits.max_headers",
            "${EMPTY}",
            "listeners[0].limits.max_headers: expected an integer from 1 to 10000, found ''",
        ),
    ],
)
def test_env_substitution_errors(path: str, value: object, message: str) -> None:
    assert error_of(with_value(path, value), env={"EMPTY": ""}) == f"{SOURCE}: {message}"


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTGW_TEST_PORT", "8082")
    doc = with_value("listeners[0].bind", "127.0.0.1:${FASTGW_TEST_PORT}")
    assert parse_config(doc, SOURCE).listeners[0].port == 8082


def test_substitution_does_not_change_the_input() -> None:
    doc = with_value("routes[0].id", "${ID}")
    assert parse(doc, env={"ID": "x"}).routes[0].id == "x"
    assert doc["routes"][0]["id"] == "${ID}"


# -- files ---------------------------------------------------------------------------------------

_YAML = """\
listeners:
  - bind: "127.0.0.1:0"
upstreams:
  catalog: {targets: ["127.0.0.1:9001"]}
routes:
  - {path: /catalog, upstream: catalog}
"""
_JSON = (
    '{"listeners": [{"bind": "127.0.0.1:0"}],'
    ' "upstreams": {"catalog": {"targets": ["127.0.0.1:9001"]}},'
    ' "routes": [{"path": "/catalog", "upstream": "catalog"}]}'
)


@pytest.mark.parametrize(
    ("name", "text"),
    [("gw.yaml", _YAML), ("gw.yml", _YAML), ("GW.YAML", _YAML), ("gw.json", _JSON)],
)
def test_load_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    config = load_config(str(path), env={})
    assert config.source == str(path)
    assert config.routes[0].path == "/catalog"


def test_load_file_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + _YAML.encode())
    assert load_config(str(path), env={}).listeners[0].port == 0


def load_error(tmp_path: Path, name: str, content: str | bytes | None) -> tuple[str, str]:
    """The rendered error of loading ``content`` saved as ``name`` (None: no file), and the path."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert info.value.file == str(path)
    return str(info.value), str(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("gw.toml", "a = 1", "unknown file extension '.toml'; expected .yaml, .yml or .json"),
        ("gateway", "{}", "unknown file extension ''; expected .yaml, .yml or .json"),
        ("gw.yaml", None, "cannot read the file: No such file or directory"),
        (
            "gw.yaml",
            "",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.yaml",
            "# only a comment\n",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.yml",
            "~\n",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.json",
            " \n",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.json",
            "null",
            "the document is empty; expected a mapping with listeners, upstreams and routes",
        ),
        (
            "gw.yaml",
            "a: 1\n b: 2\n",
            "invalid YAML at line 2, column 3: mapping values are not allowed here",
        ),
        (
            "gw.yaml",
            "a: [1, 2\n",
            "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            "gw.yaml",
            "a: 1\n---\nb: 2\n",
            "invalid YAML at line 2, column 1: expected a single document in the stream,"
            " but found another document",
        ),
        (
            "gw.yaml",
            "routes: []\nroutes: []\n",
            "invalid YAML at line 2, column 1: duplicate key 'routes'",
        ),
        (
            "gw.yaml",
            "a: !!python/object/apply:os.system [true]\n",
            "invalid YAML at line 1, column 4: could not determine a constructor for the tag"
            " 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        ("gw.json", '{"a": 1,}', "invalid JSON at line 1, column 8: trailing comma is not allowed"),
        (
            "gw.json",
            '{"a" 1}',
            "invalid JSON at line 1, column 6: unexpected character, expected ':' after key",
        ),
        ("gw.json", "[1, 2", "invalid JSON at line 1, column 6: unexpected end of data"),
        ("gw.json", "[1]", "expected a mapping with listeners, upstreams and routes, found a list"),
        ("gw.yaml", b"a: \xff\n", "expected UTF-8 text, found byte 0xff at offset 3"),
    ],
)
def test_load_errors(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    rendered, path = load_error(tmp_path, name, content)
    assert rendered == f"{path}: {message}"


def test_load_a_directory(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").mkdir()
    rendered, path = load_error(tmp_path, "gw.yaml", None)
    assert rendered == f"{path}: cannot read the file: Is a directory"


def test_yaml_merge_keys_may_override(tmp_path: Path) -> None:
    text = _YAML + "  - <<: {path: /a, upstream: catalog}\n    path: /b\n"
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    assert [route.path for route in load_config(str(path), env={}).routes] == ["/catalog", "/b"]


def test_yaml_error_names_the_key_path(tmp_path: Path) -> None:
    rendered, path = load_error(tmp_path, "gw.yaml", _YAML.replace('"127.0.0.1:0"', "true"))
    assert rendered == f"{path}: listeners[0].bind: {BIND_EXPECTED}, found true"


def test_recursive_yaml_alias(tmp_path: Path) -> None:
    text = _YAML + "plugins: [{name: x, loop: &loop [*loop]}]\n"
    rendered, path = load_error(tmp_path, "gw.yaml", text)
    assert rendered == f"{path}: plugins[0].loop[0]: expected plain data, found a recursive alias"


def test_deeply_nested_yaml(tmp_path: Path) -> None:
    rendered, path = load_error(tmp_path, "gw.yaml", "a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert rendered == f"{path}: the document is nested too deeply"


def test_deeply_nested_document() -> None:
    nested: list[object] = []
    for _ in range(20_000):
        nested = [nested]
    assert (
        error_of(with_value("plugins", [{"name": "x", "deep": nested}]))
        == "gw.yaml: the document is nested too deeply"
    )


# -- the example file ----------------------------------------------------------------------------


def test_example_file_loads() -> None:
    config = load_config(str(EXAMPLE), env={})
    assert config.source == str(EXAMPLE)
    assert [listener.name for listener in config.listeners] == ["public", "internal"]
    assert config.listeners[0].port == 8080
    assert config.listeners[1].host == "::1"
    assert set(config.upstreams) == {"catalog", "orders"}
    assert [route.id for route in config.routes] == ["catalog-item", "route1", "route2"]
    assert config.routes[2].upgrade == ("websocket",) and config.routes[2].tunnel.idle_timeout == 300.0
    assert config.routes[0].timeouts == UpstreamTimeouts(
        connect=5.0, read=10.0, send=60.0, head=2.0, total=30.0
    )
    assert config.routes[1].methods is None
    assert config.routes[1].plugins[0].options == {"request": {"set": {"X-Price-Currency": "$ (USD)"}}}
    assert [plugin.name for plugin in config.routes[0].plugins] == ["rate_limit"]
    assert [plugin.name for plugin in config.plugins] == ["ip_filter"]
    assert config.access_log is not None and config.access_log.sink == "stdout"
    assert config.admin is not None and (config.admin.host, config.admin.port) == ("127.0.0.1", 9901)
    assert config.tracing is not None and config.tracing.otlp is not None


def test_retry_reads_conditions_statuses_and_methods() -> None:
    doc = with_value(
        "routes[0].retry", {"attempts": 3, "when": ["reset", 503, 502], "methods": "*", "backoff": "10ms"}
    )
    retry = parse(doc).routes[0].retry
    assert retry == RetryConfig(
        attempts=3, when=frozenset({"reset"}), statuses=frozenset({502, 503}), methods=None, backoff=0.01
    )
    assert (
        parse(with_value("routes[0].retry", {})).routes[0].retry == RetryConfig()
    )  # idempotent methods, connect+reset


def test_example_file_uses_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"([a-z0-9_]+):", text))
    for key in [
        *("name", "bind", "trusted_proxies", "buffer_bytes", "limits", "timeouts"),
        *("max_header_bytes", "max_headers", "max_uri_bytes", "max_body_bytes", "max_connections"),
        *("max_pipeline", "head", "body", "keepalive", "drain"),
        *("targets", "address", "weight", "pool", "max_idle", "idle_timeout", "acquire_timeout"),
        *("connect", "read", "send", "host_header", "balance", "hash", "sticky", "cookie"),
        *("health", "interval", "timeout", "healthy_after", "unhealthy_after", "statuses", "outlier"),
        *("consecutive_failures", "count_5xx", "base_ejection", "max_ejection", "max_ejected_percent"),
        *("id", "path", "upstream", "methods", "host", "listeners", "headers", "query", "priority"),
        *("rewrite", "strip_prefix", "preserve_host", "plugins", "upstreams", "routes"),
    ]:
        assert key in keys, key


def test_example_file_port_from_the_environment() -> None:
    assert load_config(str(EXAMPLE), env={"GATEWAY_PORT": "9999"}).listeners[0].port == 9999


# -- properties ----------------------------------------------------------------------------------

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_PATHS = [
    "listeners", "listeners[0]", "listeners[0].name", "listeners[0].bind", "listeners[0].limits",
    "listeners[0].limits.max_headers", "listeners[0].timeouts", "listeners[0].timeouts.drain",
    "listeners[0].trusted_proxies", "listeners[0].buffer_bytes", "upstreams", "upstreams.catalog",
    "upstreams.catalog.targets", "upstreams.catalog.targets[0]", "upstreams.catalog.pool",
    "upstreams.catalog.timeouts", "upstreams.catalog.host_header", "upstreams.catalog.health",
    "upstreams.catalog.outlier", "upstreams.catalog.health.statuses", "upstreams.catalog.balance",
    "upstreams.catalog.balance.hash", "upstreams.catalog.balance.sticky", "routes", "routes[0]",
    "routes[0].id", "routes[0].path", "routes[0].methods", "routes[0].host", "routes[0].listeners",
    "routes[0].headers", "routes[0].query", "routes[0].priority", "routes[0].rewrite",
    "routes[0].strip_prefix", "routes[0].preserve_host", "routes[0].timeouts", "routes[0].plugins",
    "plugins", "unknown",
]  # fmt: skip


@settings(max_examples=300, database=None, deadline=None)
@given(st.sampled_from(_PATHS), _VALUES)
def test_any_value_anywhere_is_a_config_or_a_config_error(path: str, value: object) -> None:
    try:
        config = parse(with_value(path, value))
    except ConfigError as error:
        assert error.file == SOURCE and error.message
    else:
        assert isinstance(config, Config)


@settings(max_examples=100, database=None, deadline=None)
@given(
    st.integers(1, 10**9),
    st.sampled_from([("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("", 1)]),
)
def test_duration_units(number: int, unit: tuple[str, float]) -> None:
    seconds = parse(with_value("listeners[0].timeouts.body", f"{number}{unit[0]}")).listeners[0].timeouts.body
    assert seconds == pytest.approx(number * unit[1])


@settings(max_examples=100, database=None, deadline=None)
@given(
    st.integers(1, 10**9),
    st.sampled_from([("B", 1), ("KB", 1000), ("KiB", 1024), ("MB", 10**6), ("MiB", 2**20), ("GiB", 2**30)]),
)
def test_size_units(number: int, unit: tuple[str, int]) -> None:
    assert (
        parse(with_value("listeners[0].buffer_bytes", f"{number}{unit[0]}")).listeners[0].buffer_bytes
        == number * unit[1]
    )
