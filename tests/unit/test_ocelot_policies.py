"""Ocelot's per-route policies as fastgw plugins: authentication and authorization, claims
transforms, header transforms and the request id, caching, IP lists; and aggregates. Each plugin
the translation writes is compiled by fastgw (``fastgw check`` would refuse it otherwise)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fastgw.config import parse_config
from fastgw.importers.ocelot import Status, Translation
from fastgw.plan import compile_plan
from tests.support.ocelot_files import entries, ocelot_route, plugin, route_by_id, translate


def compiled(translation: Translation) -> None:
    compile_plan(parse_config(translation.document, "t.yaml", env={}))


# -- authentication and authorization ---------------------------------------------------------------


def test_a_provider_key_becomes_a_jwt_setting_completed_through_the_environment(tmp_path: Path) -> None:
    options = {"AuthenticationProviderKeys": ["Bearer", "MyKey"], "AllowedScopes": ["api.read", "api.admin"]}
    translation = translate(tmp_path, {"Routes": [ocelot_route(AuthenticationOptions=options)]})
    route = translation.document["routes"][0]
    assert plugin(route, "jwt") == {
        "name": "jwt",
        "jwks_url": "${FASTGW_JWT_BEARER_JWKS_URL:-https://bearer.jwks.invalid/.well-known/jwks.json}",
    }
    assert plugin(route, "authorize") == {
        "name": "authorize",
        "any_scopes": ["api.read", "api.admin"],  # Ocelot: at least one of them
        "scope_claims": ["scope"],  # Ocelot reads the scope claim only
    }
    details = [e.detail for e in entries(translation, key="Routes[0].AuthenticationOptions")]
    assert any("FASTGW_JWT_BEARER_JWKS_URL" in d and "never lets a request through" in d for d in details)
    assert any("MyKey" in d for d in details)
    compiled(translation)


def test_the_single_provider_key_of_older_files_comes_first(tmp_path: Path) -> None:
    options = {"AuthenticationProviderKey": "Legacy", "AuthenticationProviderKeys": ["Other"]}
    route = translate(tmp_path, {"Routes": [ocelot_route(AuthenticationOptions=options)]}).document["routes"][
        0
    ]
    assert "FASTGW_JWT_LEGACY_JWKS_URL" in plugin(route, "jwt")["jwks_url"]  # type: ignore[index]


def test_global_authentication_and_allow_anonymous(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route("/global", AuthenticationOptions={}),
            ocelot_route(
                "/own",
                AuthenticationOptions={"AuthenticationProviderKeys": ["MyKey"], "AllowedScopes": ["Bob"]},
            ),
            ocelot_route("/open", AuthenticationOptions={"AllowAnonymous": True}),
        ],
        "GlobalConfiguration": {
            "AuthenticationOptions": {
                "RouteKeys": [],
                "AuthenticationProviderKeys": ["MyGlobalKey"],
                "AllowedScopes": ["Admin"],
            }
        },
    }
    translation = translate(tmp_path, document)
    global_route, own, anonymous = translation.document["routes"]
    assert "MYGLOBALKEY" in plugin(global_route, "jwt")["jwks_url"]  # type: ignore[index]
    assert plugin(global_route, "authorize")["any_scopes"] == ["Admin"]  # type: ignore[index]
    assert "MYKEY" in plugin(own, "jwt")["jwks_url"]  # type: ignore[index]
    assert plugin(own, "authorize")["any_scopes"] == ["Bob"]  # type: ignore[index]
    assert "plugins" not in anonymous


def test_claims_requirements_are_authorize_claims(tmp_path: Path) -> None:
    route = ocelot_route(
        AuthenticationOptions={"AuthenticationProviderKeys": ["Bearer"]},
        RouteClaimsRequirement={"UserType": "registered", "Role": "admin"},
    )
    translation = translate(tmp_path, {"Routes": [route]})
    assert plugin(translation.document["routes"][0], "authorize") == {
        "name": "authorize",
        "claims": {"UserType": "registered", "Role": "admin"},
    }
    compiled(translation)


@pytest.mark.parametrize(
    ("keys", "why"),
    [
        ({"RouteClaimsRequirement": {"userId": "{userId}"}}, "compared with a path placeholder"),
        (
            {
                "AddClaimsToRequest": {"UserType": "Claims[sub] > value[0] > |"},
                "RouteClaimsRequirement": {"UserType": "x"},
            },
            "made by AddClaimsToRequest",
        ),
    ],
)
def test_a_requirement_fastgw_cannot_check_leaves_the_route_out_not_open(
    tmp_path: Path, keys: dict[str, object], why: str
) -> None:
    route = ocelot_route(
        "/users/{userId}", AuthenticationOptions={"AuthenticationProviderKeys": ["Bearer"]}, **keys
    )
    translation = translate(tmp_path, {"Routes": [route, ocelot_route("/other")]})
    assert [r["path"] for r in translation.document["routes"]] == ["/other"]
    assert any(why in e.detail and "left out" in e.detail for e in entries(translation, Status.UNSUPPORTED))


def test_claims_transforms_become_the_claims_plugin_and_forged_copies_are_removed(tmp_path: Path) -> None:
    route = ocelot_route(
        AuthenticationOptions={"AuthenticationProviderKeys": ["Bearer"]},
        AddHeadersToRequest={"CustomerId": "Claims[sub] > value[1] > |", "UserName": "Claims[name] > value"},
        AddQueriesToRequest={
            "LocationId": "Claims[LocationId] > value",
            "Part": "Claims[sub] > value[0] > |",
        },
    )
    translation = translate(tmp_path, {"Routes": [route]})
    fastgw_route = translation.document["routes"][0]
    assert plugin(fastgw_route, "claims") == {
        "name": "claims",
        "headers": {"UserName": "name"},
        "query": {"LocationId": "LocationId"},
    }
    assert plugin(fastgw_route, "headers") == {"name": "headers", "request": {"remove": ["CustomerId"]}}
    assert plugin(fastgw_route, "query") == {"name": "query", "remove": ["Part"]}
    names = [p["name"] for p in fastgw_route["plugins"]]
    assert names.index("jwt") < names.index("claims")
    compiled(translation)


# -- header transforms and the request id -----------------------------------------------------------


def test_header_transforms_with_placeholders_and_the_global_ones(tmp_path: Path) -> None:
    route = ocelot_route(
        UpstreamHeaderTransform={
            "Uncle": "Bob",
            "X-Client": "{RemoteIpAddress}",
            "X-Host": "{UpstreamHost}",
            "X-Base": "{BaseUrl}",
            "X-Forwarded-For": "{RemoteIpAddress}",
            "Test": "http://www.bbc.co.uk/, http://ocelot.net/",
            "X-Gateway": "route",
        },
        DownstreamHeaderTransform={"Uncle": "Bob", "AnyKey": "{TraceId}", "X-Brace": "{literal"},
    )
    glob = {
        "BaseUrl": "http://gw.example:8000",
        "UpstreamHeaderTransform": {"X-Gateway": "global", "X-Via": "ocelot"},
        "DownstreamHeaderTransform": {"X-Powered-By": "Ocelot"},
    }
    translation = translate(tmp_path, {"Routes": [route], "GlobalConfiguration": glob})
    headers = plugin(translation.document["routes"][0], "headers")
    assert headers == {
        "name": "headers",
        "request": {
            "set": {
                "Uncle": "Bob",
                "X-Client": "{client_ip}",
                "X-Host": "{host}",
                "X-Base": "http://gw.example:8000",
                "X-Gateway": "route",
                "X-Via": "ocelot",
            }
        },
        "response": {"set": {"Uncle": "Bob", "X-Brace": "{{literal", "X-Powered-By": "Ocelot"}},
    }
    unsupported = {e.key_path for e in entries(translation, Status.UNSUPPORTED)}
    assert unsupported == {
        "Routes[0].UpstreamHeaderTransform.Test",
        "Routes[0].DownstreamHeaderTransform.AnyKey",
    }
    compiled(translation)


@pytest.mark.parametrize(
    ("value", "base_url", "expected"),
    [
        (
            "{DownstreamBaseUrl}, {BaseUrl}",
            "http://gw:5000",
            {"name": "rewrite_location", "public_url": "http://gw:5000"},
        ),
        ("{DownstreamBaseUrl}, {BaseUrl}", None, {"name": "rewrite_location"}),
        (
            "http://localhost:6773, {BaseUrl}",
            "http://gw:5000",
            {
                "name": "rewrite_location",
                "internal_urls": ["http://localhost:6773"],
                "public_url": "http://gw:5000",
            },
        ),
    ],
)
def test_a_location_find_and_replace_is_rewrite_location(
    tmp_path: Path, value: str, base_url: str | None, expected: dict[str, object]
) -> None:
    glob = {"BaseUrl": base_url} if base_url else {}
    route = ocelot_route(DownstreamHeaderTransform={"Location": value})
    translation = translate(tmp_path, {"Routes": [route], "GlobalConfiguration": glob})
    assert plugin(translation.document["routes"][0], "rewrite_location") == expected
    compiled(translation)


def test_the_request_id_key(tmp_path: Path) -> None:
    assert "plugins" not in one_route(tmp_path, RequestIdKey="X-Request-Id")
    route = one_route(tmp_path, RequestIdKey="Oc-RequestId")
    assert plugin(route, "headers") == {
        "name": "headers",
        "request": {"set": {"Oc-RequestId": "{request_id}"}},
    }


def one_route(tmp_path: Path, **keys: object) -> dict[str, object]:
    translation = translate(tmp_path, {"Routes": [ocelot_route(**keys)]})  # type: ignore[arg-type]
    route: dict[str, object] = translation.document["routes"][0]
    return route


# -- caching ----------------------------------------------------------------------------------------


def test_cache_options_and_the_older_file_cache_options(tmp_path: Path) -> None:
    options = {
        "TtlSeconds": 15,
        "Region": "europe-central",
        "Header": "OC-Cache-Control",
        "EnableContentHashing": True,
    }
    translation = translate(tmp_path, {"Routes": [ocelot_route(CacheOptions=options)]})
    assert plugin(translation.document["routes"][0], "cache") == {
        "name": "cache",
        "ttl": "15s",
        "max_ttl": "15s",
        "zone": "europe-central",
        "key": {"headers": ["OC-Cache-Control"]},
    }
    assert entries(translation, Status.UNSUPPORTED, "Routes[0].CacheOptions.EnableContentHashing")
    compiled(translation)
    # 24.1: FileCacheOptions, when present, wins over CacheOptions
    route = one_route(tmp_path, FileCacheOptions={"TtlSeconds": 0}, CacheOptions={"TtlSeconds": 30})
    assert "plugins" not in route
    assert plugin(one_route(tmp_path, FileCacheOptions={"TtlSeconds": 30}), "cache")["ttl"] == "30s"  # type: ignore[index]


def test_caching_an_authenticated_route_says_how_fastgw_differs(tmp_path: Path) -> None:
    route = ocelot_route(
        CacheOptions={"TtlSeconds": 5}, AuthenticationOptions={"AuthenticationProviderKeys": ["B"]}
    )
    translation = translate(tmp_path, {"Routes": [route]})
    (entry,) = entries(translation, Status.APPROXIMATED, "Routes[0].CacheOptions")
    assert "unsafe_cache_authorized" in entry.detail


# -- IP lists ---------------------------------------------------------------------------------------


def test_security_options_exclude_allowed_from_blocked(tmp_path: Path) -> None:
    options = {
        "IPBlockedList": ["192.168.0.0/23"],
        "IPAllowedList": ["192.168.0.15", "192.168.1.15"],
        "ExcludeAllowedFromBlocked": True,
    }
    translation = translate(tmp_path, {"Routes": [ocelot_route(SecurityOptions=options)]})
    ip_filter = plugin(translation.document["routes"][0], "ip_filter")
    assert ip_filter is not None
    assert ip_filter["allow"] == ["192.168.0.15/32", "192.168.1.15/32"]
    denied = [ipaddress.ip_network(n) for n in ip_filter["deny"]]
    blocked = ipaddress.ip_network("192.168.0.0/23")
    assert sum(n.num_addresses for n in denied) == blocked.num_addresses - 2
    for address in ("192.168.0.15", "192.168.1.15"):
        assert not any(ipaddress.ip_address(address) in n for n in denied)
    for address in ("192.168.0.0", "192.168.0.14", "192.168.0.16", "192.168.1.255"):
        assert any(ipaddress.ip_address(address) in n for n in denied)
    compiled(translation)


def test_ip_patterns_of_ocelots_table_and_the_global_list(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route(
                "/a", SecurityOptions={"IPBlockedList": ["192.168.1.1-192.168.1.3", "10.0.0.1-3", "nonsense"]}
            ),
            ocelot_route("/b", SecurityOptions={"IPAllowedList": ["192.168.1.0/255.255.255.0", "fe80::/10"]}),
            ocelot_route("/c"),
        ],
        "GlobalConfiguration": {"SecurityOptions": {"IPBlockedList": ["10.0.0.0/8"]}},
    }
    translation = translate(tmp_path, document)
    a, b, c = (plugin(r, "ip_filter") for r in translation.document["routes"])
    assert a == {
        "name": "ip_filter",
        "deny": ["10.0.0.1/32", "10.0.0.2/31", "192.168.1.1/32", "192.168.1.2/31"],
    }
    assert b == {"name": "ip_filter", "allow": ["192.168.1.0/24", "fe80::/10"]}
    assert c == {"name": "ip_filter", "deny": ["10.0.0.0/8"]}
    assert entries(translation, Status.IGNORED, "Routes[0].SecurityOptions.IPBlockedList")
    compiled(translation)


# -- aggregates -------------------------------------------------------------------------------------


def test_aggregates_call_their_parts_and_keep_200_when_one_fails(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route("/laura", "/", Key="Laura"),
            ocelot_route(
                "/tom", "/", Key="Tom", DownstreamHostAndPorts=[{"Host": "localhost", "Port": 51002}]
            ),
        ],
        "Aggregates": [{"UpstreamPathTemplate": "/", "RouteKeys": ["Tom", "Laura"]}],
    }
    translation = translate(tmp_path, document)
    aggregate = translation.document["routes"][-1]
    assert aggregate["path"] == "/" and aggregate["methods"] == ["GET"]
    assert aggregate["aggregate"]["merge"] == "by_key"
    assert [(b["key"], b["path"], b["required"]) for b in aggregate["aggregate"]["backends"]] == [
        ("Tom", "/", False),
        ("Laura", "/", False),
    ]
    (entry,) = entries(translation, Status.APPROXIMATED, "Aggregates[0].RouteKeys")
    assert "X-Aggregate-Partial" in entry.detail and "required: true" in entry.detail
    compiled(translation)


def test_a_chained_part_takes_one_value_and_a_fan_out_is_left_out(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route("/comments", "/comments", Key="Comments"),
            ocelot_route("/users/{userId}", "/users/{userId}", Key="User"),
            ocelot_route("/posts/{postId}", "/posts/{postId}", Key="Post"),
        ],
        "Aggregates": [
            {
                "UpstreamPathTemplate": "/details/{id}",
                "RouteKeys": ["Comments", "User", "Post"],
                "RouteKeysConfig": [
                    {"RouteKey": "User", "JsonPath": "$.author.id", "Parameter": "userId"},
                    {"RouteKey": "Post", "JsonPath": "$[*].postId", "Parameter": "postId"},
                ],
            }
        ],
    }
    translation = translate(tmp_path, document)
    aggregate = route_by_id(translation, "aggregate-comments-user-post")
    assert [(b["key"], b["path"]) for b in aggregate["aggregate"]["backends"]] == [
        ("Comments", "/comments"),
        ("User", "/users/{Comments.author.id}"),
    ]
    assert (
        "fans out" in entries(translation, Status.UNSUPPORTED, "Aggregates[0].RouteKeysConfig[1]")[0].detail
    )
    compiled(translation)


def test_an_aggregate_is_guarded_by_its_parts_authentication(tmp_path: Path) -> None:
    auth = {"AuthenticationProviderKeys": ["Bearer"], "AllowedScopes": ["read"]}
    document = {
        "Routes": [ocelot_route("/a", Key="A", AuthenticationOptions=auth), ocelot_route("/b", Key="B")],
        "Aggregates": [{"UpstreamPathTemplate": "/ab", "RouteKeys": ["A", "B", "Missing"]}],
    }
    translation = translate(tmp_path, document)
    aggregate = route_by_id(translation, "aggregate-a-b-missing")
    assert [p["name"] for p in aggregate["plugins"]] == ["jwt", "authorize"]
    assert any("Missing" in e.detail for e in entries(translation, Status.UNSUPPORTED, "Aggregates[0]"))
