"""Each Ocelot mapping on its own: paths and their variants, methods, hosts, route order, hosts and
balancers, QoS, timeouts, rate limiting in both schemas, aggregates, the listener, and the report's
statuses. Policies (auth, claims, headers, cache, IP lists) are in test_ocelot_policies; schemes,
upstream TLS, service discovery and dynamic routing in test_ocelot_discovery."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.importers.ocelot import Status
from tests.support.ocelot_files import entries, ocelot_route, plugin, route_by_id, translate


def one(tmp_path: Path, **keys: object) -> dict[str, object]:
    """The first fastgw route of a one-route file."""
    translation = translate(tmp_path, {"Routes": [ocelot_route(**keys)]})  # type: ignore[arg-type]
    route: dict[str, object] = translation.document["routes"][0]
    return route


# -- paths ------------------------------------------------------------------------------------------


def test_the_last_placeholder_takes_the_rest_of_the_path_and_may_be_empty(tmp_path: Path) -> None:
    route = ocelot_route("/invoices/{url}", "/api/invoices/{url}")
    translation = translate(tmp_path, {"Routes": [route]})
    routes = translation.document["routes"]
    assert [(r["path"], r["rewrite"]) for r in routes] == [
        ("/invoices/{*url}", "/api/invoices/{url}"),
        ("/invoices", "/api/invoices"),  # Ocelot trims the slash an empty placeholder leaves
    ]


def test_a_catch_all_alone_matches_every_path_with_priority_zero(tmp_path: Path) -> None:
    translation = translate(
        tmp_path, {"Routes": [ocelot_route("/{everything}", "/{everything}", Priority=5)]}
    )
    assert [r["path"] for r in translation.document["routes"]] == ["/{*everything}"]
    assert "rewrite" not in translation.document["routes"][0]  # sent as it came
    detail = entries(translation, Status.MAPPED, "Routes[0].UpstreamPathTemplate")[0].detail
    assert "priority 0" in detail


def test_a_trailing_slash_template_matches_both_forms(tmp_path: Path) -> None:
    translation = translate(tmp_path, {"Routes": [ocelot_route("/api/{v}/items/", "/items/{v}/")]})
    assert [(r["path"], r["rewrite"]) for r in translation.document["routes"]] == [
        ("/api/{v}/items/", "/items/{v}/"),
        ("/api/{v}/items", "/items/{v}/"),
    ]


def test_placeholder_names_fastgw_cannot_use_are_renamed_consistently(tmp_path: Path) -> None:
    route = one(tmp_path, UpstreamPathTemplate="/x/{user-id}/y", DownstreamPathTemplate="/u/{user-id}")
    assert (route["path"], route["rewrite"]) == ("/x/{user_id}/y", "/u/{user_id}")


def test_a_query_placeholder_is_a_predicate_and_a_rename(tmp_path: Path) -> None:
    translation = translate(
        tmp_path, {"Routes": [ocelot_route("/users?userId={userId}", "/persons?personId={userId}")]}
    )
    route = translation.document["routes"][0]
    assert route["query"] == {"userId": ""}
    assert plugin(route, "query") == {"name": "query", "rename": {"userId": "personId"}}


def test_a_path_placeholder_sent_as_a_query_parameter(tmp_path: Path) -> None:
    route = one(
        tmp_path,
        UpstreamPathTemplate="/units/{sub}/{unit}/updates",
        DownstreamPathTemplate="/subscriptions/{sub}/updates?unitId={unit}&v=2",
    )
    assert route["rewrite"] == "/subscriptions/{sub}/updates"
    assert plugin(route, "query") == {"name": "query", "set": {"unitId": "{param.unit}", "v": "2"}}


@pytest.mark.parametrize(
    ("upstream", "downstream", "why"),
    [
        ("/api/v{version}/items", "/items", "mixes placeholders with other text"),
        ("/files/{name}.json", "/f/{name}", "mixes placeholders with other text"),
        ("/s/{id}?unit={u}", "/units/{u}", "comes from the query string"),
        ("/a/{id}", "/b/{other}", "is not a placeholder of the UpstreamPathTemplate"),
        ("api/{x}", "/{x}", "must start with '/'"),
    ],
)
def test_a_template_fastgw_cannot_express_leaves_the_route_out(
    tmp_path: Path, upstream: str, downstream: str, why: str
) -> None:
    document = {"Routes": [ocelot_route(upstream, downstream), ocelot_route("/kept")]}
    translation = translate(tmp_path, document)
    assert [r["path"] for r in translation.document["routes"]] == ["/kept"]
    (entry,) = entries(translation, Status.UNSUPPORTED, "Routes[0]")
    assert why in entry.detail and entry.detail.endswith("left out")


# -- methods, hosts, order --------------------------------------------------------------------------


def test_methods_upper_cased_and_a_bare_string_is_one_method(tmp_path: Path) -> None:
    assert one(tmp_path, UpstreamHttpMethod=["Get", "post"])["methods"] == ["GET", "POST"]
    assert one(tmp_path, UpstreamHttpMethod="Get")["methods"] == ["GET"]
    assert "methods" not in one(tmp_path, UpstreamHttpMethod=[])


def test_an_upstream_host_is_matched_without_its_port(tmp_path: Path) -> None:
    translation = translate(tmp_path, {"Routes": [ocelot_route(UpstreamHost="MyDomain.com:5000")]})
    assert translation.document["routes"][0]["host"] == "mydomain.com"
    assert "without its port" in entries(translation, Status.APPROXIMATED, "Routes[0].UpstreamHost")[0].detail


def test_routes_of_one_shape_keep_ocelots_order_as_priorities(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route("/v", "/any"),  # first in the file, but a lower Priority
            ocelot_route("/v", "/uk", UpstreamHeaderTemplates={"country": "uk"}, Priority=2),
        ]
    }
    translation = translate(tmp_path, document)
    priorities = {r["rewrite"]: r["priority"] for r in translation.document["routes"]}
    assert priorities["/uk"] > priorities["/any"]


def test_a_route_ocelot_never_reaches_is_left_out(tmp_path: Path) -> None:
    document = {
        "Routes": [ocelot_route("/goods/{catchAll}", "/all"), ocelot_route("/goods/delete", "/delete")]
    }
    translation = translate(tmp_path, document)
    assert [r["rewrite"] for r in translation.document["routes"]] == ["/all", "/all"]
    assert "never reached in Ocelot" in entries(translation, Status.UNSUPPORTED, "Routes[1]")[0].detail
    document["Routes"][1]["Priority"] = 2  # the fix the report suggests
    assert len(translate(tmp_path, document).document["routes"]) == 3


def test_a_request_the_routers_would_send_apart_is_reported(tmp_path: Path) -> None:
    document = {"Routes": [ocelot_route("/c/{a}/details", "/first"), ocelot_route("/c/items/{b}", "/second")]}
    translation = translate(tmp_path, document)
    (entry,) = entries(translation, Status.APPROXIMATED, "Routes[1].Priority")
    assert "/c/items/details" in entry.detail and "Routes[0]" in entry.detail


# -- hosts and balancers ----------------------------------------------------------------------------

TWO_HOSTS = [{"Host": "localhost", "Port": 51001}, {"Host": "10.0.0.2", "Port": 8080}]


@pytest.mark.parametrize(
    ("options", "targets", "balance"),
    [
        (None, ["localhost:51001"], None),  # no balancer: the first host only
        ({"Type": "NoLoadBalancer"}, ["localhost:51001"], None),
        ({"Type": "RoundRobin"}, ["localhost:51001", "10.0.0.2:8080"], "round_robin"),
        ({"Type": "LeastConnection"}, ["localhost:51001", "10.0.0.2:8080"], "least_conn"),
        ({"Type": "CookieStickySessions", "Key": "sid", "Expiry": 60000}, [...], {"hash": "cookie:sid"}),
        ({"Type": "CookieStickySessions"}, [...], {"hash": "cookie:.AspNetCore.Session"}),
        ({"Type": "MyLoadBalancer"}, [...], "round_robin"),
    ],
)
def test_load_balancer_types(tmp_path: Path, options: object, targets: object, balance: object) -> None:
    keys = {"DownstreamHostAndPorts": TWO_HOSTS}
    if options is not None:
        keys["LoadBalancerOptions"] = options
    translation = translate(tmp_path, {"Routes": [ocelot_route(**keys)]})
    (upstream,) = translation.document["upstreams"].values()
    assert upstream["targets"] == (["localhost:51001", "10.0.0.2:8080"] if targets == [...] else targets)
    assert upstream.get("balance") == balance


def test_ocelot_1x_spellings_of_host_and_balancer(tmp_path: Path) -> None:
    route = ocelot_route(LoadBalancer="RoundRobin", DownstreamHost="localhost", DownstreamPort=51002)
    translation = translate(tmp_path, {"Routes": [route]})
    (upstream,) = translation.document["upstreams"].values()
    assert upstream == {"targets": ["localhost:51001", "localhost:51002"], "balance": "round_robin"}


def test_a_global_balancer_applies_to_its_group_only(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route("/in/{x}", Key="R1", DownstreamHostAndPorts=TWO_HOSTS),
            ocelot_route("/out/{x}", Key="R2", DownstreamHostAndPorts=TWO_HOSTS),
        ],
        "GlobalConfiguration": {"LoadBalancerOptions": {"RouteKeys": ["R1"], "Type": "LeastConnection"}},
    }
    translation = translate(tmp_path, document)
    by_route = {
        r["id"]: translation.document["upstreams"][r["upstream"]] for r in translation.document["routes"]
    }
    assert by_route["r1"]["balance"] == "least_conn"
    assert by_route["r2"]["targets"] == ["localhost:51001"]


def test_routes_with_the_same_hosts_and_options_share_an_upstream(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route("/a"),
            ocelot_route("/b"),
            ocelot_route("/c", QoSOptions={"MinimumThroughput": 2}),
        ]
    }
    translation = translate(tmp_path, document)
    names = [r["upstream"] for r in translation.document["routes"]]
    assert names[0] == names[1] != names[2]


# -- QoS and timeouts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qos", "breaker"),
    [
        ({"MinimumThroughput": 3, "BreakDuration": 1000}, {"failures": 3, "open_for": "1s"}),
        (
            {"ExceptionsAllowedBeforeBreaking": 2, "DurationOfBreak": 2500},
            {"failures": 2, "open_for": "2.5s"},
        ),
        ({"MinimumThroughput": 3, "BreakDuration": 500}, {"failures": 3, "open_for": "5s"}),  # 23.3: <= 500ms
        ({"MinimumThroughput": 3}, {"failures": 3, "open_for": "5s"}),
        (
            {"MinimumThroughput": 10, "FailureRatio": 0.5, "SamplingDuration": 10000, "BreakDuration": 5000},
            {"failures": 1000, "failure_ratio": 0.5, "window": "10s", "min_requests": 10, "open_for": "5s"},
        ),
        ({"Timeout": 5000}, None),
        ({"MinimumThroughput": 0, "BreakDuration": 1000}, None),
    ],
)
def test_qos_options_make_a_breaker(tmp_path: Path, qos: dict[str, object], breaker: object) -> None:
    translation = translate(tmp_path, {"Routes": [ocelot_route(QoSOptions=qos)]})
    (upstream,) = translation.document["upstreams"].values()
    assert upstream.get("breaker") == breaker


@pytest.mark.parametrize(
    ("route", "glob", "head"),
    [
        ({"QoSOptions": {"TimeoutValue": 2000}}, {}, "2s"),
        ({"QoSOptions": {"Timeout": 5000}, "Timeout": 3}, {"Timeout": 60}, "5s"),  # QoS (ms) wins
        ({"Timeout": 3}, {"Timeout": 60}, "3s"),  # the route's seconds win over the global ones
        ({}, {"Timeout": 60}, "60s"),
        ({}, {}, None),
    ],
)
def test_timeouts_in_ocelots_units_and_precedence(
    tmp_path: Path, route: dict[str, object], glob: dict[str, object], head: str | None
) -> None:
    translation = translate(tmp_path, {"Routes": [ocelot_route(**route)], "GlobalConfiguration": glob})
    timeouts = translation.document["routes"][0].get("timeouts")
    assert (timeouts or {}).get("head") == head
    if head is not None:
        assert any("504" in e.detail for e in entries(translation, Status.APPROXIMATED))


# -- rate limiting ----------------------------------------------------------------------------------


def test_rate_limiting_up_to_24_0_is_on_only_when_enabled(tmp_path: Path) -> None:
    options = {"EnableRateLimiting": False, "Period": "1s", "PeriodTimespan": 1, "Limit": 1}
    assert plugin(one(tmp_path, RateLimitOptions=options), "rate_limit") is None
    options = {"Period": "5m", "PeriodTimespan": 1, "Limit": 3}  # no EnableRateLimiting: off in 24.0
    assert plugin(one(tmp_path, RateLimitOptions=options), "rate_limit") is None


def test_rate_limiting_up_to_24_0(tmp_path: Path) -> None:
    options = {
        "ClientWhitelist": [],
        "EnableRateLimiting": True,
        "Period": "1.5s",
        "PeriodTimespan": 1,
        "Limit": 3,
    }
    glob = {"RateLimitOptions": {"QuotaExceededMessage": "Customize Tips!", "HttpStatusCode": 418}}
    translation = translate(
        tmp_path, {"Routes": [ocelot_route(RateLimitOptions=options)], "GlobalConfiguration": glob}
    )
    limit = plugin(translation.document["routes"][0], "rate_limit")
    assert limit == {
        "name": "rate_limit",
        "policy": "api-everything",
        "limit": 3,
        "window": "2s",  # whole seconds, rounded up (and reported)
        "key": "header:ClientId",  # 24.0's default client header
        "headers": ["x"],
        "reject": {"body": "Customize Tips!", "status": 418},
    }
    assert any("rounded up from 1.5s" in e.detail for e in entries(translation, Status.APPROXIMATED))
    assert "24.0 and earlier" in " ".join(translation.report.notes)


def test_rate_limiting_from_24_1_is_on_when_present_and_merges_the_global_rule(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route(
                "/r1/{x}", Key="R1", RateLimitOptions={"Limit": 3, "Period": "500ms", "StatusCode": 418}
            ),
            ocelot_route("/r2/{x}", Key="R2"),
            ocelot_route("/r3/{x}", Key="R3"),
        ],
        "GlobalConfiguration": {
            "RateLimitOptions": {
                "RouteKeys": ["R1", "R2"],
                "Limit": 2,
                "Period": "30s",
                "Wait": "1m",
                "QuotaMessage": "Maximum admitted {0} per {1}.",
                "EnableHeaders": False,
            }
        },
    }
    translation = translate(tmp_path, document)
    r1, r2, r3 = (plugin(route_by_id(translation, ident), "rate_limit") for ident in ("r1", "r2", "r3"))
    assert r1 == {
        "name": "rate_limit",
        "policy": "r1",
        "limit": 3,
        "window": "1s",
        "key": "header:Oc-Client",
        "headers": [],
        "reject": {"body": "Maximum admitted 3 per 500ms.", "status": 418},
    }
    assert r2 is not None and (r2["limit"], r2["window"], r2["reject"]) == (
        2, "30s", {"body": "Maximum admitted 2 per 30s."}
    )  # fmt: skip
    assert r3 is None  # not in the global rule's group


def test_a_whitelist_is_reported_with_the_way_to_exempt_clients(tmp_path: Path) -> None:
    options = {"ClientWhitelist": ["vip"], "Limit": 1, "Period": "1s", "Wait": "1s"}
    translation = translate(tmp_path, {"Routes": [ocelot_route(RateLimitOptions=options)]})
    (entry,) = entries(translation, Status.UNSUPPORTED, "Routes[0].RateLimitOptions.ClientWhitelist")
    assert "bypass.consumers" in entry.detail


def test_a_bad_period_is_an_error_naming_it(tmp_path: Path) -> None:
    options = {"EnableRateLimiting": True, "Period": "1 fortnight", "Limit": 1}
    with pytest.raises(
        ConfigError, match=r"Routes\[0\]\.RateLimitOptions\.Period: expected a period like '1s'"
    ):
        translate(tmp_path, {"Routes": [ocelot_route(RateLimitOptions=options)]})


# -- the document as a whole ------------------------------------------------------------------------


def test_the_listener_binds_the_port_of_base_url(tmp_path: Path) -> None:
    def bind(glob: dict[str, object]) -> str:
        return str(
            translate(tmp_path, {"Routes": [ocelot_route()], "GlobalConfiguration": glob}).document[
                "listeners"
            ][0]["bind"]
        )

    assert bind({"BaseUrl": "http://localhost:5555"}) == "127.0.0.1:5555"
    assert bind({"BaseUrl": "https://api.example.com:8443"}) == "0.0.0.0:8443"
    assert bind({"BaseUrl": "https://api.example.com"}) == "0.0.0.0:5000"  # Kestrel's default
    assert bind({}) == "127.0.0.1:5000"  # Ocelot's default BaseUrl, http://localhost:5000


def test_no_translatable_route_is_an_error_after_the_report(tmp_path: Path) -> None:
    route = ocelot_route("/x", DownstreamScheme="ws", UpstreamHttpMethod=["Post"])
    translation = translate(tmp_path, {"Routes": [route]})
    assert entries(translation, Status.UNSUPPORTED, "Routes[0].UpstreamHttpMethod")
    with pytest.raises(ConfigError, match=r"ocelot\.json: Routes: no route could be translated"):
        translation.require_routes()


def test_dollar_signs_stay_literal_through_fastgws_substitution(tmp_path: Path) -> None:
    route = ocelot_route(UpstreamHeaderTransform={"X-Price": "$5 ${HOME}"})
    translation = translate(tmp_path, {"Routes": [route]})
    loaded = parse_config(yaml.safe_load(translation.yaml()), "t.yaml", env={"HOME": "/root"})
    (headers,) = [p for p in loaded.routes[0].plugins if p.name == "headers"]
    assert headers.options["request"]["set"] == {"X-Price": "$5 ${{HOME}}"}


def test_unknown_keys_are_ignored_and_reported(tmp_path: Path) -> None:
    translation = translate(tmp_path, {"Routes": [ocelot_route(Colour="blue")], "Custom": {"a": 1}})
    ignored = {e.key_path for e in entries(translation, Status.IGNORED)}
    assert ignored == {"Routes[0].Colour", "Custom"}


def test_the_report_renders_every_status_and_a_heading_per_route(tmp_path: Path) -> None:
    document = {
        "Routes": [
            ocelot_route(Key="main", UpstreamHttpMethod=["Get"], Colour="blue", DownstreamHttpMethod="POST"),
            ocelot_route("/ws", DownstreamScheme="ws"),
        ]
    }
    translation = translate(tmp_path, document)
    text = translation.report.render()
    assert "Routes[0]  GET /api/{everything} -> routes main, main.2 (upstream localhost-51001)" in text
    for status in Status:
        if status is not Status.APPROXIMATED or translation.report.count(status):
            assert f"  {status.value} " in text
    short = translation.report.render(full=False)
    assert "  mapped " not in short and "  not supported " in short
