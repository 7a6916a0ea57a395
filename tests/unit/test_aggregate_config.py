"""Aggregate routes in the config: what loads, and every mistake named by its key path."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.config import parse_config
from fastgw.config.schema import AggregateBackend, AggregateConfig
from fastgw.errors import ConfigError


def document(route: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [{"bind": "127.0.0.1:0"}],
        "upstreams": {"catalog": {"targets": ["127.0.0.1:9001"]}, "basket": {"targets": ["127.0.0.1:9002"]}},
        "routes": [{"id": "dash", "path": "/dash/{user}", **route}],
    }


def aggregate(*backends: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"aggregate": {"backends": list(backends), **options}}


def error(route: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(document(route), "gw.yaml")
    return str(caught.value)


CATALOG = {"key": "catalog", "upstream": "catalog", "path": "/items?featured=1"}


def test_an_aggregate_route_loads() -> None:
    route = aggregate(
        CATALOG,
        {
            "key": "basket",
            "upstream": "basket",
            "path": "/baskets/{user}",
            "required": "false",
            "headers": "Authorization",
            "timeout": "250ms",
            "max_body": "64KiB",
        },
        {
            "upstream": "catalog",
            "path": "/discounts/{basket.coupon}",
            "fields": ["code", "percent"],
            "mapping": {"percent": "discount_percent"},
            "target": "data.discount",
            "method": "post",
        },
    )
    config = parse_config(document({**route, "methods": ["GET"]}), "gw.yaml").routes[0]
    assert config.upstream == ""
    assert config.methods == ("GET",)
    assert config.aggregate == AggregateConfig(
        backends=(
            AggregateBackend(key="catalog", upstream="catalog", path="/items?featured=1", key_path=(
                "routes[0].aggregate.backends[0]"
            )),
            AggregateBackend(
                key="basket", upstream="basket", path="/baskets/{user}",
                key_path="routes[0].aggregate.backends[1]", headers=("authorization",), timeout=0.25,
                required=False, max_body=65536,
            ),
            AggregateBackend(
                key="resp2", upstream="catalog", path="/discounts/{basket.coupon}",
                key_path="routes[0].aggregate.backends[2]", method="POST", target="data.discount",
                fields=("code", "percent"), mapping=(("percent", "discount_percent"),),
            ),
        ),
        key_path="routes[0].aggregate",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            {"upstream": "catalog", **aggregate(CATALOG)},
            "gw.yaml: routes[0]: expected exactly one of upstream or aggregate, found both",
        ),
        ({}, "gw.yaml: routes[0]: expected exactly one of upstream or aggregate, found neither"),
        (
            {"rewrite": "/x", **aggregate(CATALOG)},
            "gw.yaml: routes[0].rewrite: applies to routes with an upstream; an aggregate route sets path"
            " and timeout per backend",
        ),
        (
            {"aggregate": {"backends": []}},
            "gw.yaml: routes[0].aggregate.backends: expected a non-empty list, found an empty list",
        ),
        (
            aggregate(CATALOG, merge="shallow"),
            "gw.yaml: routes[0].aggregate.merge: expected the name of a merge (by_key, deep),"
            " found 'shallow'",
        ),
        (
            aggregate(CATALOG, merge="deep", aggregator="m:f"),
            "gw.yaml: routes[0].aggregate: expected either merge or aggregator (a custom merge), found both",
        ),
        (
            aggregate(CATALOG, aggregator="combine"),
            "gw.yaml: routes[0].aggregate.aggregator: expected a Python callable as"
            " 'package.module:function', found 'combine'",
        ),
        (
            aggregate({"upstream": "catalgo", "path": "/"}),
            "gw.yaml: routes[0].aggregate.backends[0].upstream: expected the name of an upstream"
            " (catalog, basket), found 'catalgo'; did you mean 'catalog'?",
        ),
        (
            aggregate({"upstream": "catalog"}),
            "gw.yaml: routes[0].aggregate.backends[0]: missing required key 'path'",
        ),
        (
            aggregate({"upstream": "catalog", "path": "/u/{usr}"}),
            "gw.yaml: routes[0].aggregate.backends[0].path: unknown parameter {usr}; expected one of the"
            " route's parameters: user; did you mean 'user'?",
        ),
        (
            aggregate({"upstream": "catalog", "path": "/o/{basket.id}"}, {**CATALOG, "key": "basket"}),
            "gw.yaml: routes[0].aggregate.backends[0].path: {basket.id} names backend 'basket', which is"
            " not defined before this one (it is the first backend)",
        ),
        (
            aggregate(CATALOG, {"upstream": "catalog", "path": "/o/{catalgo.id}"}),
            "gw.yaml: routes[0].aggregate.backends[1].path: {catalgo.id} names backend 'catalgo', which"
            " is not defined before this one (earlier backends: catalog); did you mean 'catalog'?",
        ),
        (
            aggregate(CATALOG, CATALOG),
            "gw.yaml: routes[0].aggregate.backends[1].key: duplicate backend key 'catalog'",
        ),
        (
            aggregate({**CATALOG, "path": "items"}),
            "gw.yaml: routes[0].aggregate.backends[0].path: expected a path starting with '/' (a query is"
            " allowed) without spaces or '#', found 'items'",
        ),
        (
            aggregate({**CATALOG, "group": "g"}),
            "gw.yaml: routes[0].aggregate.backends[0].group: applies to merge: deep (by_key already puts"
            " each result under its key)",
        ),
        (
            aggregate({**CATALOG, "method": "HEAD"}),
            "gw.yaml: routes[0].aggregate.backends[0].method: expected a method whose response has a JSON"
            " body to merge, like GET, found 'HEAD'",
        ),
        (
            aggregate({**CATALOG, "headers": ["authorization", "Host"]}),
            "gw.yaml: routes[0].aggregate.backends[0].headers[1]: 'Host' is not passed on: the gateway"
            " writes it or it is hop-by-hop",
        ),
        (
            aggregate({**CATALOG, "timeout": "soon"}),
            "gw.yaml: routes[0].aggregate.backends[0].timeout: expected a duration like 30, '250ms',"
            " '1.5s', '2m' or '1h', found 'soon'",
        ),
        (
            aggregate({**CATALOG, "fields": []}),
            "gw.yaml: routes[0].aggregate.backends[0].fields: expected a non-empty list, found an empty list",
        ),
        (
            aggregate({**CATALOG, "mapping": {"a": "b.c"}}),
            "gw.yaml: routes[0].aggregate.backends[0].mapping.a: expected a JSON field name like"
            " 'percent', found 'b.c'",
        ),
        (
            aggregate({**CATALOG, "target": "data..items"}),
            "gw.yaml: routes[0].aggregate.backends[0].target: expected a field or a dotted path of fields"
            " like 'data.items', found 'data..items'",
        ),
        (
            aggregate({**CATALOG, "retries": 2}),
            "gw.yaml: routes[0].aggregate.backends[0]: unknown key 'retries'; expected one of: key,"
            " upstream, path, method, headers, timeout, required, max_body, target, fields, mapping, group",
        ),
    ],
)
def test_mistakes_name_the_key_path(route: dict[str, Any], message: str) -> None:
    assert error(route) == message
