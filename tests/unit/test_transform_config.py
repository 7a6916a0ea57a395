"""The transform plugins' configuration errors (each names its key path and what was expected),
and the pure pieces: templates, Accept-Encoding choice, JSON field trees, origin patterns."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from fastgw.plugins._template import parse_template
from fastgw.plugins.compress import choose_coding
from fastgw.plugins.cors import Cors
from fastgw.plugins.headers import Headers
from fastgw.plugins.json_fields import allow_fields, build_tree, deny_fields
from tests.support.exchange import FakeExchange


def error_of(plugin: dict[str, Any], path: str = "/items/{id}", global_plugin: bool = False) -> str:
    doc: dict[str, Any] = {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": ["127.0.0.1:1"]}},
        "routes": [
            {"id": "items", "path": path, "upstream": "up", "plugins": [] if global_plugin else [plugin]}
        ],
    }
    if global_plugin:
        doc["plugins"] = [plugin]
    with pytest.raises(ConfigError) as err:
        compile_plan(parse_config(doc, "gw.yaml"))
    return str(err.value)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            {"name": "headers", "request": {"set": {"X-A": "{nope}"}}},
            "routes[0].plugins[0].request.set.X-A: unknown variable '{nope}'; expected one of: client_ip, "
            "request_id, consumer, host, method, path, upstream_host, param.NAME, claim.PATH, header.NAME",
        ),
        (
            {"name": "headers", "request": {"add": {"X-A": "{param.slug}"}}},
            "routes[0].plugins[0].request.add.X-A: uses '{param.slug}', which route 'items' (routes[0]) "
            "does not define",
        ),
        (
            {"name": "headers", "response": {"set": {"X-A": "a}b"}}},
            "routes[0].plugins[0].response.set.X-A: unbalanced '}' in 'a}b'; write '}}' for a literal one",
        ),
        (
            {"name": "headers", "request": {"remove": ["Host"]}},
            "routes[0].plugins[0].request.remove[0]: Host frames the message or is written by the gateway "
            "itself",
        ),
        (
            {"name": "headers", "request": {"set": {"X-Forwarded-For": "x"}}},
            "routes[0].plugins[0].request.set.X-Forwarded-For: X-Forwarded-For frames the message or is "
            "written by the gateway itself",
        ),
        ({"name": "headers"}, "routes[0].plugins[0]: give request or response (or both)"),
        # rename: never a header that frames the message or that the gateway writes, either way
        *(
            (
                {"name": "headers", side: {"rename": {old: new}}},
                f"routes[0].plugins[0].{side}.rename.{old}: {reserved} frames the message or is written "
                "by the gateway itself",
            )
            for side, old, new, reserved in (
                ("request", "Host", "X-Host", "Host"),
                ("request", "X-Length", "Content-Length", "Content-Length"),
                ("request", "Transfer-Encoding", "X-TE", "Transfer-Encoding"),
                ("request", "X-Conn", "Connection", "Connection"),
                ("request", "X-Request-Id", "X-Id", "X-Request-Id"),
                ("request", "X-Forwarded-For", "X-Client", "X-Forwarded-For"),
                ("response", "Content-Length", "X-Length", "Content-Length"),
                ("response", "X-Encoding", "Transfer-Encoding", "Transfer-Encoding"),
                ("response", "Keep-Alive", "X-Keep-Alive", "Keep-Alive"),
            )
        ),
        (
            {"name": "headers", "request": {"rename": {"X-A": "bad name"}}},
            "routes[0].plugins[0].request.rename.X-A: expected a header name (letters, digits and "
            "!#$%&'*+-.^_`|~), found 'bad name'",
        ),
        (
            {"name": "headers", "request": {"rename": {"X-A": "X-B"}, "remove": ["x-b"]}},
            "routes[0].plugins[0].request.rename.X-A: X-B is also removed or set on this side",
        ),
        (
            {"name": "headers", "response": {"rename": {"X-A": "X-B"}, "set": {"X-A": "1"}}},
            "routes[0].plugins[0].response.rename.X-A: X-A is also removed or set on this side",
        ),
        (
            {"name": "headers", "request": {"rename": {"X-A": "X-C", "X-B": "x-c"}}},
            "routes[0].plugins[0].request.rename.X-B: x-c is already the new name of X-A",
        ),
        (
            {"name": "headers", "request": {"rename": {"X-A": "X-B", "X-B": "X-C"}}},
            "routes[0].plugins[0].request.rename.X-B: X-B is both renamed and renamed to",
        ),
        (
            {"name": "headers", "request": {"rename": {"X-A": 7}}},
            "routes[0].plugins[0].request.rename.X-A: expected a non-empty string, found 7",
        ),
        # {header.NAME}: a header name, and not one the request side takes away before rendering
        (
            {"name": "headers", "request": {"set": {"X-A": "{header.X B}"}}},
            "routes[0].plugins[0].request.set.X-A: {header.NAME}: expected a header name (letters, "
            "digits and !#$%&'*+-.^_`|~), found 'X B'",
        ),
        *(
            (
                {"name": "headers", "request": request, "response": {"add": {"X-Echo": "{header.x-old}"}}},
                "routes[0].plugins[0].response.add.X-Echo: reads {header.x-old}, which request renames, "
                "removes or sets: it is gone before the template renders",
            )
            for request in (
                {"rename": {"X-Old": "X-New"}},
                {"rename": {"X-Older": "X-Old"}},
                {"remove": ["X-Old"]},
                {"set": {"X-Old": "1"}},
            )
        ),
        (
            {"name": "query", "set": {"tenant": "{header.}"}},
            "routes[0].plugins[0].set.tenant: {header.NAME}: expected a non-empty string, found ''",
        ),
        (
            {"name": "headers", "request": {}},
            "routes[0].plugins[0].request: give at least one of rename, set, add or remove",
        ),
        (
            {"name": "query", "add": {"a": "{upstream_host}"}},
            "routes[0].plugins[0].add.a: '{upstream_host}' is known only once the request goes upstream: "
            "use it in a header",
        ),
        (
            {"name": "query", "rename": {"a": ""}},
            "routes[0].plugins[0].rename.a: expected a non-empty string, found ''",
        ),
        (
            {"name": "rewrite_location", "public_url": "ftp://x"},
            "routes[0].plugins[0].public_url: expected an http or https URL like 'https://api.example.com', "
            "without query, found 'ftp://x'",
        ),
        (
            {"name": "rewrite_location", "headers": ["Link"]},
            "routes[0].plugins[0].headers[0]: expected the name of a header (Location, Content-Location, "
            "Refresh), found 'Link'",
        ),
        (
            {"name": "json_fields", "allow": ["a"], "deny": ["b"]},
            "routes[0].plugins[0].deny: give only one of allow or deny (found allow too)",
        ),
        ({"name": "json_fields"}, "routes[0].plugins[0]: missing the fields: give one of allow or deny"),
        (
            {"name": "json_fields", "deny": ["a..b"]},
            "routes[0].plugins[0].deny[0]: expected a field name or a dotted path like 'owner.email', "
            "found 'a..b'",
        ),
        (
            {"name": "cors", "origins": "*", "credentials": True},
            "routes[0].plugins[0].credentials: cannot be true with origins '*': browsers refuse "
            "credentials for '*'",
        ),
        ({"name": "cors"}, "routes[0].plugins[0]: missing required key 'origins'"),
        (
            {"name": "cors", "origins": ["https://ex*.com"]},
            "routes[0].plugins[0].origins[0]: expected '*', an origin like 'https://app.example.com' or "
            "'https://*.example.com', found 'https://ex*.com'",
        ),
        (
            {"name": "compress", "encodings": ["zstd"]},
            "routes[0].plugins[0].encodings[0]: expected the name of an encoding (br, gzip), found 'zstd'",
        ),
        (
            {"name": "compress", "gzip_level": 10},
            "routes[0].plugins[0].gzip_level: expected an integer from 1 to 9, found 10",
        ),
        (
            {"name": "compress", "types": ["image/*"]},
            "routes[0].plugins[0].types[0]: image/* is already compressed; compressing it again only costs",
        ),
    ],
)
def test_config_errors_name_the_key_path(plugin: dict[str, Any], message: str) -> None:
    assert error_of(plugin) == f"gw.yaml: {message}"


def test_a_global_plugin_is_checked_against_every_route() -> None:
    plugin = {"name": "query", "set": {"id": "{param.id}"}}
    assert error_of(plugin, path="/other", global_plugin=True) == (
        "gw.yaml: plugins[0].set.id: uses '{param.id}', which route 'items' (routes[0]) does not define"
    )


def test_templates_render_literals_variables_and_braces() -> None:
    ctx = FakeExchange(path=b"/p", method=b"PUT")
    ctx.claims = {"org": {"id": 5, "roles": ["a", "b"]}}
    template = parse_template("{{x}} {method} {path} {claim.org.id} {claim.org.roles}", "t", upstream=False)
    assert template.render(ctx) == b"{x} PUT /p 5 a,b"
    assert parse_template("{claim.none}", "t", upstream=False).render(ctx) is None
    assert parse_template(7, "t", upstream=False).render(ctx) == b"7"


def test_header_variable_reads_the_first_line_empty_when_absent_none_when_unsafe() -> None:
    template = parse_template("org-{header.X-Org}", "t", upstream=False)
    assert template.headers == {b"x-org"}
    assert template.render(FakeExchange([("x-org", "acme"), ("X-Org", "other")])) == b"org-acme"
    assert template.render(FakeExchange([("X-Org", "")])) == b"org-"
    assert template.render(FakeExchange()) == b"org-"  # absent: empty
    assert template.render(FakeExchange([("X-Org", "caf\xc3\xa9\tx")])) == b"org-caf\xc3\xa9\tx"
    for unsafe in ("a\r\nX-Evil: 1", "a\x00", "a\x7f", "a\x1b"):  # would break a header line
        assert template.render(FakeExchange([("X-Org", unsafe)])) is None, unsafe


def test_rename_moves_every_line_keeping_values_and_order() -> None:
    plugin = Headers.compile(
        {
            "request": {"rename": {"X-Api-Version": "X-Version"}, "add": {"X-Seen": "{header.Accept}"}},
            "response": {"rename": {"X-Upstream-Time": "X-Backend-Time"}},
        },
        "plugins[0]",
    )
    ctx = FakeExchange(
        [("X-Api-Version", "1"), ("Accept", "*/*"), ("x-version", "forged"), ("x-api-version", "2")]
    )
    for _ in range(2):  # a retried attempt runs the hook again; the renamed lines stay once
        ctx.upstream_headers = []
        plugin.on_upstream_request(ctx)
        assert [name for name, _ in ctx.headers] == [b"Accept"]
        assert ctx.added == [(b"X-Version", b"1"), (b"X-Version", b"2")]
        assert ctx.upstream_headers == [(b"X-Seen", b"*/*")]
    untouched = FakeExchange([("X-Version", "3")])
    untouched.upstream_headers = []
    plugin.on_upstream_request(untouched)  # nothing to rename: the header already there stays
    assert untouched.headers == [(b"X-Version", b"3")] and untouched.added == []
    ctx.response_headers = [
        (b"X-Backend-Time", b"old"), (b"x-upstream-time", b"5"), (b"Server", b"s"), (b"X-Upstream-Time", b"6")
    ]  # fmt: skip
    plugin.on_response(ctx)
    assert ctx.response_headers == [(b"X-Backend-Time", b"5"), (b"Server", b"s"), (b"X-Backend-Time", b"6")]


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (b"gzip;q=0.5, br;q=0.5", b"br"),  # a tie goes to the preferred coding
        (b"gzip;q=0.9, br;q=0.1", b"gzip"),
        (b"br;q=1.5, gzip", b"gzip"),  # a q out of range drops the element
        (b"BR", b"br"),
        (b"deflate", None),
        (b"", None),
    ],
)
def test_choose_coding(header: bytes, coding: bytes | None) -> None:
    assert choose_coding(header, (b"br", b"gzip")) == coding


def test_field_trees() -> None:
    tree = build_tree((("a", "b"), ("a",), ("c", "d", "e")))
    assert tree == {"a": None, "c": {"d": {"e": None}}}
    doc = {"a": {"b": 1}, "c": [{"d": {"e": 1, "f": 2}}, 3], "g": 4}
    assert allow_fields(doc, tree) == {"a": {"b": 1}, "c": [{"d": {"e": 1}}, 3]}
    assert deny_fields(doc, tree) == {"c": [{"d": {"f": 2}}, 3], "g": 4}


def test_origin_patterns_match_whole_labels_only() -> None:
    cors = Cors.compile({"origins": ["https://*.example.com", "http://localhost:3000"]}, "p")
    assert isinstance(cors, Cors)
    allowed = [
        b"https://a.example.com",
        b"https://a.b.example.com",
        b"http://localhost:3000",
        b"HTTPS://A.EXAMPLE.COM",
    ]
    denied = [b"https://example.com", b"https://a.example.com.evil.test", b"https://evil.test/.example.com"]
    assert all(cors.allowed_origin(o) == o for o in allowed)
    assert not any(cors.allowed_origin(o) for o in [*denied, b"http://localhost:3001"])
