"""The translated routes choose as Ocelot chooses.

For every Ocelot file in tests/data/ocelot, requests are made up from its templates (each
placeholder empty, one segment or several, with and without a trailing slash, with and without the
query parameter a template asks for, each method, host and header set the file names). For each,
``tests.support.ocelot_router`` (Ocelot's matcher and route finder, written out from its source)
says which route Ocelot takes, and the router of the compiled fastgw plan must take a route
translated from that one, or none when Ocelot has none (fastgw's 405 counts as none). Requests
Ocelot sends to a route the translation left out (the report says why) are not compared, nor are
those the report names as chosen differently (an approximated ``Priority``); case variants are not
made (fastgw matches paths case-sensitively, and the report says so). A file with no static route
(dynamic routing: the first path segment names the service) has no templates to make requests
from; test_ocelot_translate checks its routes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fastgw._router import RouteMatch
from fastgw.config import parse_config
from fastgw.importers.ocelot import Status, Translation, translate_files
from fastgw.importers.ocelot.reading import parse_jsonc, read_text_file
from fastgw.plan import Plan, compile_plan
from tests.support.exchange import FakeExchange
from tests.support.ocelot_router import OcelotRoute, choose, routes_of

DATA = Path(__file__).resolve().parents[1] / "data" / "ocelot"
FILES = sorted(path for path in DATA.glob("*.json") if "UpstreamPathTemplate" in path.read_text())
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def compiled(path: Path) -> tuple[Plan, Translation]:
    translation = translate_files([str(path)])
    document = yaml.safe_load(translation.yaml())
    return compile_plan(parse_config(document, str(path), env={})), translation


def reported_difference(translation: Translation, got: str | None, expected: str | None) -> bool:
    """Does the report say that fastgw takes ``got`` where Ocelot takes ``expected``?"""
    if got is None or expected is None:
        return False
    file, where = got.split(": ")
    return any(
        entry.status is Status.APPROXIMATED
        and (entry.file, entry.key_path) == (file, f"{where}.Priority")
        and expected in entry.detail
        for entry in translation.report.entries
    )


def _fill(path: str, values: Iterator[str]) -> str:
    return _PLACEHOLDER.sub(lambda _: next(values, "v1"), path)


def paths_of(template: str) -> set[tuple[str, str]]:
    """(path, query) requests made up from one template."""
    path, question, query = template.partition("?")
    found: set[tuple[str, str]] = set()
    parts = path.split("/")
    for values in itertools.product(["v1", "", "a/b"], repeat=min(len(_PLACEHOLDER.findall(path)), 3)):
        made = _fill(path, iter(values))
        for form in {made, made.rstrip("/") or "/", made + "/", "/".join(parts[:-1]) or "/"}:
            if "//" in form.replace("://", ""):
                continue
            found.add((form, ""))
            if question:
                found.add((form, "?" + _PLACEHOLDER.sub("q1", query)))
                found.add((form, "?other=1"))
    return found


def requests_of(
    routes: list[OcelotRoute], document: dict[str, object]
) -> list[tuple[str, str, str, str, dict[str, str]]]:
    templates = re.findall(r'"UpstreamPathTemplate"\s*:\s*"([^"]*)"', str(document).replace("'", '"'))
    hosts = {"localhost", "other.test", *(r.host for r in routes if r.host)}
    header_sets = [{}, *({name: value for name, value in r.headers} for r in routes if r.headers)]
    methods = ["GET", "POST", "DELETE", "PUT"]
    made = []
    for template in templates:
        for (path, query), method, host, index in itertools.product(
            sorted(paths_of(template)), methods, sorted(hosts), range(len(header_sets))
        ):
            made.append((method, host, path, query, header_sets[index]))
    return made


def fastgw_choice(
    plan: Plan,
    origins: dict[str, str],
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
) -> str | None:
    exchange = FakeExchange(list(headers.items()), query.encode(), path.encode(), method.encode())
    found = plan.listeners["public"].router.match(method.encode(), host.encode(), path.encode(), exchange)
    if not isinstance(found, RouteMatch):
        return None
    return origins[found.route.id]  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_translated_routes_choose_as_ocelot_does(path: Path) -> None:
    document = parse_jsonc(read_text_file(str(path)))
    assert isinstance(document, dict)
    ocelot_routes = routes_of(document, str(path))
    plan, translation = compiled(path)
    origins = translation.origins
    translated = set(origins.values())
    compared = differences = 0
    for method, host, request_path, query, headers in requests_of(ocelot_routes, document):
        expected = choose(ocelot_routes, method, host, request_path, query, headers)
        if expected is not None and expected not in translated:
            continue  # a route the translation left out (the report says why)
        got = fastgw_choice(plan, origins, method, host, request_path, query, headers)
        if got != expected and reported_difference(translation, got, expected):
            differences += 1
            continue
        assert got == expected, (
            f"{method} {host} {request_path}{query} {headers}: Ocelot {expected}, fastgw {got}"
        )
        compared += 1
    assert compared > 50
    assert differences < compared / 10


def test_the_reference_agrees_with_the_documented_examples() -> None:
    """The reference itself, on the examples of Ocelot's docs (Routing: Priority, Empty Placeholders)."""
    document = parse_jsonc(read_text_file(str(DATA / "routing.json")))
    assert isinstance(document, dict)
    routes = routes_of(document, "r")
    assert choose(routes, "GET", "localhost", "/goods/delete") == "r: Routes[4]"
    assert choose(routes, "GET", "localhost", "/goods/other") == "r: Routes[3]"
    assert choose(routes, "GET", "localhost", "/orders/delete") == "r: Routes[5]"
    assert choose(routes, "GET", "localhost", "/catalog/items/details") == "r: Routes[7]"
    assert choose(routes, "GET", "localhost", "/invoices") == "r: Routes[1]"
    assert choose(routes, "GET", "localhost", "/invoices/") == "r: Routes[1]"
    assert choose(routes, "GET", "localhost", "/") == "r: Routes[2]"
    assert choose(routes, "GET", "localhost", "/anything/else") == "r: Routes[9]"
    assert choose(routes, "POST", "localhost", "/anything/else") is None
    assert choose(routes, "GET", "mydomain.com", "/hosted") == "r: Routes[15]"
    assert choose(routes, "GET", "localhost", "/hosted") == "r: Routes[16]"
    assert choose(routes, "GET", "localhost", "/users", "?userId=7") == "r: Routes[13]"
    assert choose(routes, "GET", "localhost", "/users", "?a=1&userId=7") == "r: Routes[9]"
