"""Gateways started from translated Ocelot configurations (tests/data/ocelot) route requests to real
upstream processes the way Ocelot's docs say those configurations route them: paths and their
placeholders, methods, priorities, hosts, header and query templates, balancing, header
transforms and aggregates. The upstream's /echo answers say which upstream got what."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.support.gateway import RunningGateway
from tests.support.ocelot_files import echoed, ocelot_gateway, request, upstream_ports

Make = Callable[..., RunningGateway]
__all__ = ["upstream_ports"]  # the fixture, used by name


def test_the_basic_sample_routes_its_placeholders(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "basic.json", upstream_ports, tmp_path)
    assert echoed(request(gw, "GET", "/ocelot/posts/7"))[:2] == (upstream_ports[51001], "/echo/todos/7")
    # {everything} is the rest of the path, slashes included, and may be empty
    assert echoed(request(gw, "GET", "/ocelot/docs/features/routing.html"))[:2] == (
        upstream_ports[51002],
        "/echo/en/latest/features/routing.html",
    )
    assert echoed(request(gw, "GET", "/ocelot/docs/"))[1] == "/echo/en/latest/"
    assert echoed(request(gw, "GET", "/ocelot/docs"))[1] == "/echo/en/latest"
    assert echoed(request(gw, "GET", "/_/bff?page=2"))[1] == "/echo/_/bff?page=2"  # the query goes along
    # another method: no route (fastgw answers 405 with Allow; Ocelot 404)
    refused = request(gw, "POST", "/ocelot/posts/7")
    assert (refused.status, refused.header("Allow")) == (405, "GET, HEAD")
    assert request(gw, "GET", "/nothing/here").status == 404


def test_routing_priorities_and_placeholders_as_the_docs_say(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "routing.json", upstream_ports, tmp_path)
    a, b = upstream_ports[51001], upstream_ports[51002]

    def get(
        target: str, headers: list[tuple[str, str]] | None = None, host: str = "test.local"
    ) -> tuple[int, str]:
        port, path, _ = echoed(request(gw, "GET", target, headers or [], host))
        return port, path

    # Priority: "/goods/delete" (1) wins over "/goods/{catchAll}" (0)
    assert get("/goods/delete") == (b, "/echo/goods/deleted")
    assert get("/goods/shoes") == (a, "/echo/goods/shoes")
    # without priorities the first route of the file wins: /orders/delete is never reached
    assert get("/orders/delete") == (a, "/echo/orders/delete")
    # Empty placeholders: /invoices/ and /invoices both reach the route
    assert get("/invoices/123") == (a, "/echo/api/invoices/123")
    assert get("/invoices/") == (a, "/echo/api/invoices/")
    assert get("/invoices") == (a, "/echo/api/invoices")
    # Catch All, and "/" before it
    assert get("/") == (a, "/echo/root")
    assert get("/some/thing") == (b, "/echo/api/some/thing")
    # Query placeholders: path to query, query to query (renamed), the catch-all query
    assert get("/api/units/s1/u2/updates") == (a, "/echo/api/subscriptions/s1/updates?unitId=u2")
    assert get("/users?userId=5") == (a, "/echo/persons?personId=5")
    assert get("/contracts?$filter=x") == (a, "/echo/apipath/contracts?$filter=x")
    # Upstream Host: the route with the host wins for that host
    assert get("/hosted", host="mydomain.com") == (b, "/echo/hosted/mydomain")
    assert get("/hosted", host="mydomain.com:8080") == (b, "/echo/hosted/mydomain")  # port not compared
    assert get("/hosted", host="other.test") == (a, "/echo/hosted/any")
    # Upstream Headers: both headers must be there
    assert get("/versioned", [("country", "uk"), ("version", "v1")]) == (b, "/echo/versioned/uk-v1")
    assert get("/versioned", [("country", "uk")]) == (a, "/echo/versioned/other")
    # RouteIsCaseSensitive: another case is another path, which the catch-all takes
    assert get("/Strict/9/Details") == (a, "/echo/strict/9")
    assert get("/strict/9/details") == (b, "/echo/api/strict/9/details")


def test_merged_files_route_like_one(
    make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path
) -> None:
    gw = ocelot_gateway(make_gateway, "merged", upstream_ports, tmp_path)
    assert echoed(request(gw, "GET", "/ocelot/posts/1"))[:2] == (upstream_ports[51001], "/echo/todos/1")
    port, path, _ = echoed(request(gw, "GET", "/weather/current/Paris"))
    assert (port, path) == (upstream_ports[51003], "/echo/v1/current.json?q=Paris&key=not-a-real-key")
    assert request(gw, "GET", "/only-in-development").status == 404  # the environment's file is skipped


def test_balancers(make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path) -> None:
    gw = ocelot_gateway(make_gateway, "loadbalancing.json", upstream_ports, tmp_path)
    everyone = set(upstream_ports.values())
    # RoundRobin over three hosts
    assert Counter(echoed(request(gw, "GET", "/rr/x"))[0] for _ in range(6)) == {port: 2 for port in everyone}
    # several hosts without a balancer: the first one only
    assert {echoed(request(gw, "GET", "/first/x"))[0] for _ in range(4)} == {upstream_ports[51002]}
    # CookieStickySessions: a session cookie keeps its host; different sessions use both
    homes = {}
    for session in range(16):
        cookie = [("Cookie", f".AspNetCore.Session=s{session}")]
        seen = {echoed(request(gw, "GET", "/sticky/1", cookie))[0] for _ in range(3)}
        assert len(seen) == 1, seen
        homes[session] = seen.pop()
    assert set(homes.values()) == {upstream_ports[51001], upstream_ports[51002]}
    # LeastConnection over two hosts
    assert echoed(request(gw, "PUT", "/posts/1"))[0] in {upstream_ports[51001], upstream_ports[51002]}


def test_header_transforms(make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path) -> None:
    gw = ocelot_gateway(make_gateway, "headers.json", upstream_ports, tmp_path)
    response = request(gw, "GET", "/headers/x", [("Uncle", "Alice"), ("Test", "http://www.bbc.co.uk/")])
    _, path, sent = echoed(response)
    assert path == "/echo/x"
    assert sent["uncle"] == "Bob"  # replaced, not added
    assert sent["x-client-ip"] == "127.0.0.1"
    assert (sent["x-gateway"], sent["x-via"]) == ("route", "ocelot")  # the route's wins, the global one added
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert (response.header("Uncle"), response.header("X-Powered-By")) == ("Bob", "Ocelot")
    # 302 handling: {DownstreamBaseUrl} -> {BaseUrl}
    b = upstream_ports[51002]
    moved = request(
        gw, "GET", "/moved/respond/302", [("X-Respond-Location", f"http://localhost:{b}/next?x=1")]
    )
    assert (moved.status, moved.header("Location")) == (302, "http://localhost:5000/next?x=1")
    fixed = request(
        gw, "GET", "/moved-fixed/respond/302", [("X-Respond-Location", "http://localhost:6773/a")]
    )
    assert fixed.header("Location") == "http://localhost:5000/a"


def test_aggregates(make_gateway: Make, upstream_ports: dict[int, int], tmp_path: Path) -> None:
    gw = ocelot_gateway(make_gateway, "aggregates.json", upstream_ports, tmp_path)
    answer = request(gw, "GET", "/")
    assert answer.status == 200 and answer.header("Content-Type") == "application/json"
    body = answer.json()
    assert list(body) == ["Tom", "Laura"]
    assert (body["Tom"]["path"], body["Laura"]["path"]) == ("/echo/tom", "/echo/laura")
    # a part that fails: left out and named, the answer still 200
    partial = request(gw, "GET", "/withfailure")
    assert (partial.status, partial.header("X-Aggregate-Partial")) == (200, "Broken")
    assert list(partial.json()) == ["Tom"]
    # a chained part takes its parameter from the first part's answer ($.method)
    chained = request(gw, "GET", "/commentsdetails", host="localhost").json()
    assert chained["Comments"]["path"] == "/echo/comments"
    assert chained["PostDetails"]["path"] == "/echo/posts/GET"
    # aggregates answer GET only
    assert request(gw, "POST", "/").status == 405
