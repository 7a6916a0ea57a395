"""Type assertions mypy checks (``test_typing``): the gateway's exchange and the test double are
both what hooks are promised, ``hooks.RequestContext`` (and their routes and targets its views)."""

from __future__ import annotations

from fastgw._proxy import Exchange, Target
from fastgw.hooks import RequestContext, RouteInfo, TargetInfo
from fastgw.plan import RoutePlan
from tests.support.exchange import FakeExchange, FakeRoute, FakeTarget


def exchange_is_a_context(exchange: Exchange) -> RequestContext:
    return exchange


def fake_exchange_is_a_context(fake: FakeExchange) -> RequestContext:
    return fake


def routes_are_route_infos(route: RoutePlan, fake: FakeRoute) -> tuple[RouteInfo, RouteInfo]:
    return route, fake


def targets_are_target_infos(target: Target, fake: FakeTarget) -> tuple[TargetInfo, TargetInfo]:
    return target, fake
