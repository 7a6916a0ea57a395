"""Compile a validated Config into the immutable Plan the data path runs on.

Everything that can be decided before traffic is decided here: routers built (conflicts are
config errors naming both routes), rewrite templates parsed into literal/param parts, Host values
pre-rendered, trusted-proxy networks parsed, plugins compiled and their hooks gathered into one
``HookChain`` per route. A reload compiles a new Plan beside the running one; pools of upstream
targets whose address and pool settings did not change are adopted, so their warm connections
survive the swap; so are the health monitors of upstreams whose health-relevant settings did not
change (``HealthKey``), so verdicts and running checkers survive too. A compiled plan only starts
steering its groups when it is swapped in (``activate_plan``, on the worker's loop).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl

from fastgw._proxy import UNDERSCORE_POLICIES, Limiter, RouteCore
from fastgw._router import RouteConflict, Router
from fastgw.aggregate import NoUpstream, compile_aggregator
from fastgw.config.schema import ConcurrencyConfig, Config, ListenerConfig, PluginConfig, RouteConfig
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, build_chain, find_plugin, known_plugins
from fastgw.plugins import BUILTIN, load_builtin_plugin
from fastgw.upstream.breaker import BreakerKey, UpstreamBreaker
from fastgw.upstream.client import HttpClient
from fastgw.upstream.group import UpstreamGroup
from fastgw.upstream.health import HealthKey, UpstreamHealth
from fastgw.upstream.pool import PoolKey, TargetPool
from fastgw.upstream.retry import RetryPolicy

_TEMPLATE_PARAM = re.compile(r"\{\*?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RewriteTemplate:
    """``/api/items/{id}`` as literal bytes and param positions, rendered with one join."""

    __slots__ = ("parts",)

    def __init__(self, template: str, param_names: tuple[str, ...], key_path: str) -> None:
        parts: list[bytes | int] = []
        pos = 0
        for m in _TEMPLATE_PARAM.finditer(template):
            if m.start() > pos:
                parts.append(template[pos : m.start()].encode())
            name = m.group(1)
            if name not in param_names:
                raise ConfigError(key_path, f"rewrite uses '{{{name}}}', which the path does not define")
            parts.append(param_names.index(name))
            pos = m.end()
        if pos < len(template):
            parts.append(template[pos:].encode())
        self.parts = parts

    def render(self, params: tuple[bytes, ...]) -> bytes:
        return b"".join([p if type(p) is bytes else params[p] for p in self.parts])  # type: ignore[index]


class RoutePlan(RouteCore):
    """A compiled route: what the exchange needs, nothing it must compute per request. The fields
    read per request (upstream, timeouts, hook chain, path rewriting) live in ``RouteCore``."""

    __slots__ = (
        "config",
        "header_predicates",
        "id",
        "methods",
        "param_names",
        "plugins",
        "query_predicates",
    )

    def __init__(
        self, config: RouteConfig, upstream: UpstreamGroup | NoUpstream, plugins: list[Plugin]
    ) -> None:
        super().__init__(
            upstream,
            config.timeouts or upstream.timeouts,
            build_chain(plugins),
            config.preserve_host,
            config.strip_prefix.encode() if config.strip_prefix else None,
        )
        self.id = config.id
        self.methods = config.methods  # None: any (plugins read it: hooks.RouteInfo)
        self.config = config
        self.param_names: tuple[str, ...] = ()
        self.plugins = plugins
        self.header_predicates = tuple((n.encode(), v.encode()) for n, v in config.headers)
        self.query_predicates = tuple((n, v) for n, v in config.query)
        self.retry = RetryPolicy(config.retry, self) if config.retry else None

    def accepts(self, exchange: Any) -> bool:
        """Header and query predicates; only routes that have some are asked."""
        for name, value in self.header_predicates:
            if exchange.header(name) != value:
                return False
        if self.query_predicates:
            query = dict(parse_qsl(exchange.query[1:].decode("latin-1"), keep_blank_values=True))
            for key, expected in self.query_predicates:
                found = query.get(key)
                if found is None or (expected and found != expected):
                    return False
        return True


class ListenerPlan:
    __slots__ = (
        "_trust_cache",
        "buffer_bytes",
        "config",
        "limits",
        "name",
        "request_id_header",
        "request_id_lower",
        "router",
        "routes",
        "timeouts",
        "trusted",
        "underscores",
    )

    def __init__(self, config: ListenerConfig) -> None:
        self.name = config.name
        self.config = config
        self.router = Router()
        self.routes: list[RoutePlan] = []
        self.limits = config.limits
        self.timeouts = config.timeouts
        self.buffer_bytes = config.buffer_bytes
        self.underscores = UNDERSCORE_POLICIES[config.headers_with_underscores]
        self.request_id_header = config.request_id_header.encode("ascii")
        self.request_id_lower = self.request_id_header.lower()
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in config.trusted_proxies
        )
        self._trust_cache: dict[str, bool] = {}

    def is_trusted(self, address: str) -> bool:
        """Is this peer a configured proxy whose X-Forwarded-* headers we believe?"""
        if not self.trusted:
            return False
        cached = self._trust_cache.get(address)
        if cached is None:
            try:
                ip = ipaddress.ip_address(address)
                cached = any(ip in net for net in self.trusted)
            except ValueError:
                cached = False
            if len(self._trust_cache) < 4096:
                self._trust_cache[address] = cached
        return cached


class Plan:
    __slots__ = (
        "breakers", "client", "config", "health", "limiters", "listeners", "pools", "routes", "upstreams",
    )  # fmt: skip

    def __init__(self, config: Config) -> None:
        self.config = config
        self.listeners: dict[str, ListenerPlan] = {}
        self.upstreams: dict[str, UpstreamGroup] = {}
        self.routes: list[RoutePlan] = []
        self.pools: dict[PoolKey, TargetPool] = {}
        self.health: dict[HealthKey, UpstreamHealth] = {}
        self.breakers: dict[BreakerKey, UpstreamBreaker] = {}
        # Concurrency limits by what they limit and how: adopted on reload while unchanged, so
        # requests in flight on the old plan still count against the limit.
        self.limiters: dict[tuple[str, ConcurrencyConfig], Limiter] = {}
        # The keep-alive pools of aggregate routes' own calls; handed from plan to plan on reload.
        self.client = HttpClient()


def compile_plugins(configs: tuple[PluginConfig, ...]) -> list[Plugin]:
    plugins = []
    for pc in configs:
        load_builtin_plugin(pc.name)
        cls = find_plugin(pc.name)
        if cls is None:
            known = ", ".join(sorted({*known_plugins(), *BUILTIN})) or "none installed"
            raise ConfigError(f"{pc.key_path}.name", f"unknown plugin '{pc.name}' (known: {known})")
        plugins.append(cls.compile(pc.options, pc.key_path))
    return plugins


def compile_plan(config: Config, previous: Plan | None = None) -> Plan:
    """Build a Plan; raises ConfigError (with the config's file) for anything that cannot run."""
    try:
        return _compile(config, previous)
    except ConfigError as exc:
        raise exc if exc.file else exc.with_file(config.source) from None


def _compile(config: Config, previous: Plan | None) -> Plan:
    plan = Plan(config)
    old_pools = previous.pools if previous is not None else {}
    old_health = previous.health if previous is not None else {}
    old_breakers = previous.breakers if previous is not None else {}
    old_groups = previous.upstreams if previous is not None else {}
    old_limiters = previous.limiters if previous is not None else {}
    old_stats = {route.id: route.stats for route in previous.routes} if previous is not None else {}
    if previous is not None:
        plan.client = previous.client

    def pool_for(key: PoolKey) -> TargetPool:
        pool = plan.pools.get(key)
        if pool is None:
            # Adopt the warm connections of a target whose address and pool settings are unchanged.
            pool = plan.pools[key] = old_pools.get(key) or TargetPool(key)
        return pool

    def limiter_for(name: str, config: ConcurrencyConfig) -> Limiter:
        key = (name, config)
        limiter = plan.limiters[key] = old_limiters.get(key) or _limiter(name, config)
        return limiter

    upstream_limits: dict[str, Limiter] = {}
    for name, upstream in config.upstreams.items():
        # Adopt the targets (in-flight counts) and balancer (latency estimates) of an unchanged group.
        plan.upstreams[name] = UpstreamGroup(upstream, pool_for, old_groups.get(name))
        health_key = HealthKey.of(upstream)
        if health_key is not None:
            # Adopt the verdicts and running checker of an upstream whose health did not change.
            plan.health[health_key] = old_health.get(health_key) or UpstreamHealth(health_key)
        breaker_key = BreakerKey.of(upstream)
        if breaker_key is not None:
            plan.breakers[breaker_key] = old_breakers.get(breaker_key) or UpstreamBreaker(breaker_key)
        if upstream.concurrency is not None:
            upstream_limits[name] = limiter_for(f"upstream {name!r}", upstream.concurrency)
    for lc in config.listeners:
        plan.listeners[lc.name] = ListenerPlan(lc)
    global_plugins = compile_plugins(config.plugins)
    for rc in config.routes:
        plugins = global_plugins + compile_plugins(rc.plugins)
        if rc.aggregate is not None:
            # The aggregator answers every request after the route's plugins: last in the chain.
            plugins.append(compile_aggregator(rc.aggregate, plan.upstreams, plan.client))
            route = RoutePlan(rc, NoUpstream(), plugins)
        else:
            route = RoutePlan(rc, plan.upstreams[rc.upstream], plugins)
        plan.routes.append(route)
        if rc.id in old_stats:
            route.stats = old_stats[rc.id]  # a route's counters run on across reloads, by id
        # A request holds its route's slot, then its upstream's (shared by every route to it).
        route.limiters = tuple(
            limiter
            for limiter in (
                limiter_for(f"route {rc.id!r}", rc.concurrency) if rc.concurrency else None,
                upstream_limits.get(rc.upstream),
            )
            if limiter is not None
        )
        names = rc.listeners or tuple(plan.listeners)
        for listener_name in names:
            listener = plan.listeners[listener_name]
            try:
                route.param_names = _add_route(listener.router, route)
            except RouteConflict as exc:
                other = _conflicting_route(listener.routes, route)
                raise ConfigError(f"{rc.key_path}.path", f"conflicts with {other}: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"{rc.key_path}.path", str(exc)) from None
            listener.routes.append(route)
        if rc.rewrite:
            route.rewrite = RewriteTemplate(rc.rewrite, route.param_names, f"{rc.key_path}.rewrite")
        for plugin in route.plugins:
            plugin.check_route(route.param_names, f"route '{rc.id}' ({rc.key_path})")
    for listener in plan.listeners.values():
        # The router flattens its tables on the first match after changes: do it now, at
        # compile time, not in the first request.
        listener.router.match(b"GET", b"", b"/")
    return plan


def _limiter(name: str, config: ConcurrencyConfig) -> Limiter:
    return Limiter(name, config.max_in_flight, config.queue, config.queue_timeout)


def _add_route(router: Router, route: RoutePlan) -> tuple[str, ...]:
    rc = route.config
    predicate = route.accepts if (rc.headers or rc.query) else None
    predicate_key = (rc.headers, rc.query) if predicate else None
    methods = rc.methods
    if methods is not None:
        # Methods a plugin answers itself (CORS preflights) must reach its on_request hook.
        extra = [m for p in route.plugins for m in p.answers_methods if m not in methods]
        methods = (*methods, *dict.fromkeys(extra))
    return router.add(route, rc.path, methods, rc.hosts, rc.priority, predicate, predicate_key)


def _conflicting_route(earlier: list[RoutePlan], route: RoutePlan) -> str:
    """Name the earlier route a new one conflicts with (only on the error path: a pairwise retry)."""
    for other in earlier:
        pair = Router()
        _add_route(pair, other)
        try:
            _add_route(pair, route)
        except RouteConflict:
            return f"route '{other.id}' ({other.config.key_path})"
    return "another route"


def activate_plan(plan: Plan) -> None:
    """The plan starts serving (gateway start, or a reload's swap): its health monitors steer its
    groups and their checkers run. On the worker's loop, so checks run once per worker process."""
    for monitor in plan.health.values():
        monitor.serve(plan.upstreams[monitor.name])
    for breaker in plan.breakers.values():
        breaker.serve(plan.upstreams[breaker.name])


def retire_plan(old: Plan, new: Plan) -> None:
    """Close idle connections of pools the new plan did not adopt (busy ones finish first), and
    stop the health monitors and circuit breakers it did not adopt."""
    kept = set(map(id, new.pools.values()))
    for pool in old.pools.values():
        if id(pool) not in kept:
            pool.close()
    for key, monitor in old.health.items():
        if new.health.get(key) is not monitor:
            monitor.stop()
    for breaker_key, breaker in old.breakers.items():
        if new.breakers.get(breaker_key) is not breaker:
            breaker.stop()
    if new.client is not old.client:
        old.client.close()
