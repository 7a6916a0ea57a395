"""Compile a validated Config into the Plan the data path runs on, and carry live state across.

Everything that can be decided before traffic is decided here: routers built (conflicts are
config errors naming both routes), rewrite templates parsed into literal/param parts, Host values
pre-rendered, trusted-proxy networks parsed, plugins compiled and their hooks gathered into one
``HookChain`` per route, each route's retry rules and concurrency limits. A Plan is not changed
once ``compile_plan`` returns it; it is replaced whole on reload.

What runs on from plan to plan lives in one ``LiveState`` the Plan points at, and is adopted by a
new plan where its settings did not change: the pools of targets whose address and pool settings
are the same (warm connections survive the swap), the targets and balancer of an unchanged
upstream (in-flight counts, latency estimates), health monitors (verdicts, running checkers),
circuit breakers, concurrency limiters (requests in flight on the old plan hold their slots) and
route counters (by route id), and discovery feeds (a registry's watch goes on across a reload that
did not change the upstream's ``discovery``). A compiled plan only starts steering its groups when
it is swapped in (``activate_plan``, on the worker's loop); ``retire_plan`` stops what the new one
did not adopt.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from typing import Any
from urllib.parse import parse_qsl

from fastgw._proxy import Limiter, ListenerCore, RequestStats, RouteCore, TunnelPolicy, TunnelStats
from fastgw._router import RouteConflict, Router, template_params
from fastgw.aggregate import NoUpstream, backend_route, compile_aggregator
from fastgw.config.schema import ConcurrencyConfig, Config, ListenerConfig, PluginConfig, RouteConfig
from fastgw.discovery import DiscoveryKey, ServiceFeed, make_resolver
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, build_chain, find_plugin, known_plugins
from fastgw.plugins import BUILTIN, load_builtin_plugin
from fastgw.plugins._https_redirect import HttpsRedirect
from fastgw.tls.server import ServerTls, TlsFront
from fastgw.upstream.breaker import BreakerKey, UpstreamBreaker
from fastgw.upstream.group import UpstreamGroup
from fastgw.upstream.health import HealthKey, UpstreamHealth
from fastgw.upstream.pool import PoolKey, TargetPool
from fastgw.upstream.retry import RetryPolicy, RetryRules

_TEMPLATE_PARAM = re.compile(r"\{\*?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")

log = logging.getLogger("fastgw")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LimiterKey = tuple[str, ConcurrencyConfig]


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
    read per request (upstream, timeouts, hook chain, path rewriting, retry rules, limits,
    counters) live in ``RouteCore``."""

    __slots__ = ("config", "header_predicates", "id", "methods", "param_names", "plugins", "query_predicates")

    def __init__(
        self,
        config: RouteConfig,
        upstream: UpstreamGroup | NoUpstream,
        plugins: list[Plugin],
        limiters: tuple[Limiter, ...],
        stats: RequestStats,
        tunnel_stats: TunnelStats | None = None,
    ) -> None:
        key_path = config.key_path
        try:
            param_names = template_params(config.path)
        except ValueError as exc:
            raise ConfigError(f"{key_path}.path", str(exc)) from None
        policy = RetryPolicy(config.retry) if config.retry else None
        super().__init__(
            upstream,
            config.timeouts or upstream.timeouts,
            build_chain(plugins),
            config.preserve_host,
            config.strip_prefix.encode() if config.strip_prefix else None,
            RewriteTemplate(config.rewrite, param_names, f"{key_path}.rewrite") if config.rewrite else None,
            RetryRules(policy),
            limiters,
            stats,
        )
        if policy is not None:
            policy.route = self  # its budget grows with this route's requests
        if config.upgrade:
            tunnel = config.tunnel
            self.tunnel = TunnelPolicy(
                config.upgrade, tunnel.idle_timeout, tunnel.max_lifetime, tunnel_stats or TunnelStats()
            )
        self.id = config.id
        self.config = config
        self.methods = config.methods
        self.param_names = param_names
        self.plugins = plugins
        self.header_predicates = tuple((n.encode(), v.encode()) for n, v in config.headers)
        self.query_predicates = tuple((n, v) for n, v in config.query)
        for plugin in plugins:
            plugin.check_route(param_names, f"route '{config.id}' ({key_path})")

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


class ListenerPlan(ListenerCore):
    """A compiled listener: where it binds, who its trusted proxies are, its routes. What a
    connection reads per request (router, limits, timeouts) lives in ``ListenerCore``."""

    __slots__ = ("_trust_cache", "drain_timeout", "host", "name", "port", "routes", "tls_front", "trusted")

    def __init__(self, config: ListenerConfig, tls_front: TlsFront | None) -> None:
        tls = config.tls
        super().__init__(
            Router(),
            config.limits,
            config.timeouts,
            config.buffer_bytes,
            config.headers_with_underscores,
            config.request_id_header,
            config.trace_context,
            ServerTls(tls, config.http2.enabled) if tls is not None else None,
            tls.client_certificates.headers if tls is not None and tls.client_certificates else (),
            config.http2,
        )
        self.tls_front = tls_front  # live state: the listening socket's context, across reloads
        self.name = config.name
        self.host = config.host
        self.port = config.port
        self.drain_timeout = config.timeouts.drain
        self.routes: list[RoutePlan] = []
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in config.trusted_proxies
        )
        self._trust_cache: dict[str, bool] = {}

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

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


class LiveState:
    """What one worker process's running plans share, carried over by a reload when unchanged."""

    __slots__ = (
        "breakers", "feeds", "groups", "health", "limiters", "pools", "route_stats", "tls_fronts",
        "tunnel_stats",
    )  # fmt: skip

    def __init__(self) -> None:
        self.pools: dict[PoolKey, TargetPool] = {}
        self.groups: dict[str, UpstreamGroup] = {}  # by name: a new group adopts targets, balancer
        self.health: dict[HealthKey, UpstreamHealth] = {}
        self.breakers: dict[BreakerKey, UpstreamBreaker] = {}
        self.limiters: dict[LimiterKey, Limiter] = {}
        self.route_stats: dict[str, RequestStats] = {}
        self.tunnel_stats: dict[str, TunnelStats] = {}  # by route id, as route_stats
        # A TLS listener's socket context, by listener name: made once, before workers fork.
        self.tls_fronts: dict[str, TlsFront] = {}
        self.feeds: dict[DiscoveryKey, ServiceFeed] = {}

    def pool_for(self, key: PoolKey, upstream: str) -> TargetPool:
        """The pool of a target discovery added at run time: the one this plan has, or a new one."""
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = TargetPool(key)
        pool.upstreams.add(upstream)
        return pool

    def release_pool(self, pool: TargetPool) -> None:
        """A target left its group: unless another target of this plan uses the pool, drop it and
        close its connections, idle ones now and busy ones as their requests end."""
        if any(t.pool is pool for group in self.groups.values() for t in group.targets):
            return
        if self.pools.get(pool.key) is pool:
            del self.pools[pool.key]
        pool.max_idle = 0  # a connection coming back is closed, not parked
        pool.close()


class Plan:
    """A compiled configuration: listeners with their routers, routes, upstream groups, and the
    settings the server and observers start from. Never changed after ``compile_plan``."""

    __slots__ = (
        "access_log", "admin", "config", "listeners", "otlp", "revision", "routes", "source", "state",
        "upstreams",
    )  # fmt: skip

    def __init__(self, config: Config, state: LiveState) -> None:
        self.config = config  # for the admin API and explanations; the server reads the fields below
        self.source = config.source
        self.revision = config.revision  # of a versioned source (an etcd key's mod revision)
        self.state = state
        self.admin = config.admin
        self.access_log = config.access_log
        self.otlp = config.tracing.otlp if config.tracing is not None else None
        self.listeners: dict[str, ListenerPlan] = {}
        self.upstreams: dict[str, UpstreamGroup] = {}
        self.routes: list[RoutePlan] = []

    @property
    def pools(self) -> dict[PoolKey, TargetPool]:
        return self.state.pools

    @property
    def breakers(self) -> dict[BreakerKey, UpstreamBreaker]:
        return self.state.breakers

    @property
    def health(self) -> dict[HealthKey, UpstreamHealth]:
        return self.state.health

    @property
    def limiters(self) -> dict[LimiterKey, Limiter]:
        return self.state.limiters

    def named_files(self) -> tuple[str, ...]:
        """The files the config names and the plan read: TLS certificates, keys, CA bundles and
        OCSP responses (``--watch`` reloads when one changes, as when the config does)."""
        files: list[str] = []
        for lp in self.listeners.values():
            if lp.tls is not None:
                files += lp.tls.files
        for upstream in self.config.upstreams.values():
            tls = upstream.tls
            if tls is not None:
                files += [f for f in (tls.ca, tls.cert, tls.key) if f]
        return tuple(dict.fromkeys(files))

    @property
    def feeds(self) -> dict[DiscoveryKey, ServiceFeed]:
        return self.state.feeds

    @property
    def drain_timeout(self) -> float:
        """How long in-flight requests may take after a stop: the longest any listener allows."""
        return max((lp.drain_timeout for lp in self.listeners.values()), default=30.0)


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
    """Build a Plan, adopting what it can of ``previous``'s live state; raises ConfigError (with
    the config's file) for anything that cannot run."""
    try:
        return _compile(config, previous.state if previous is not None else LiveState())
    except ConfigError as exc:
        raise exc if exc.file else exc.with_file(config.source) from None


def _compile(config: Config, old: LiveState) -> Plan:
    state = LiveState()
    plan = Plan(config, state)

    def pool_for(key: PoolKey, upstream: str) -> TargetPool:
        pool = state.pools.get(key)
        if pool is None:
            pool = old.pools.get(key)
            if pool is None:
                pool = TargetPool(key)
            elif key.tls is not None:
                pool.load_tls()  # its files may have changed: new connections use them
            state.pools[key] = pool
        pool.upstreams.add(upstream)
        return pool

    def limiter_for(name: str, config: ConcurrencyConfig) -> Limiter:
        key = (name, config)
        limiter = state.limiters[key] = old.limiters.get(key) or Limiter(
            name, config.max_in_flight, config.queue, config.queue_timeout
        )
        return limiter

    upstream_limits: dict[str, Limiter] = {}
    for name, upstream in config.upstreams.items():
        plan.upstreams[name] = state.groups[name] = UpstreamGroup(
            upstream, pool_for, old.groups.get(name), state
        )
        discovery_key = DiscoveryKey.of(upstream)
        if discovery_key is not None:
            feed = old.feeds.get(discovery_key)
            if feed is None:
                feed = ServiceFeed(discovery_key, make_resolver(discovery_key.discovery))
            state.feeds[discovery_key] = feed
        health_key = HealthKey.of(upstream)
        if health_key is not None:
            state.health[health_key] = old.health.get(health_key) or UpstreamHealth(health_key)
        breaker_key = BreakerKey.of(upstream)
        if breaker_key is not None:
            state.breakers[breaker_key] = old.breakers.get(breaker_key) or UpstreamBreaker(breaker_key)
        if upstream.concurrency is not None:
            upstream_limits[name] = limiter_for(f"upstream {name!r}", upstream.concurrency)
    for lc in config.listeners:
        front = None
        if lc.tls is not None:
            front = state.tls_fronts[lc.name] = old.tls_fronts.get(lc.name) or TlsFront(None)
        plan.listeners[lc.name] = ListenerPlan(lc, front)
    global_plugins = compile_plugins(config.plugins)
    for rc in config.routes:
        plugins = global_plugins + compile_plugins(rc.plugins)
        if rc.redirect_https is not None:
            plugins.insert(0, HttpsRedirect(rc.redirect_https))  # before anything else: no work for it
        if rc.aggregate is not None:
            # The aggregator answers every request after the route's plugins: last in the chain.
            # Its backend calls go through the same groups and pools as proxied requests.
            backends = {
                b.key: backend_route(b, plan.upstreams[b.upstream], upstream_limits.get(b.upstream))
                for b in rc.aggregate.backends
            }
            plugins.append(compile_aggregator(rc.aggregate, backends))
            group: UpstreamGroup | NoUpstream = NoUpstream()
        else:
            group = plan.upstreams[rc.upstream]
        # A request holds its route's slot, then its upstream's (shared by every route to it).
        limiters = tuple(
            limiter
            for limiter in (
                limiter_for(f"route {rc.id!r}", rc.concurrency) if rc.concurrency else None,
                upstream_limits.get(rc.upstream),
            )
            if limiter is not None
        )
        # A route's counters run on across reloads, by id.
        stats = state.route_stats[rc.id] = old.route_stats.get(rc.id) or RequestStats()
        tunnels = None
        if rc.upgrade:  # open tunnels live on across a reload, counted where they started
            tunnels = state.tunnel_stats[rc.id] = old.tunnel_stats.get(rc.id) or TunnelStats()
        route = RoutePlan(rc, group, plugins, limiters, stats, tunnels)
        plan.routes.append(route)
        for listener_name in rc.listeners or tuple(plan.listeners):
            listener = plan.listeners[listener_name]
            try:
                _add_route(listener.router, route)
            except RouteConflict as exc:
                other = _conflicting_route(listener.routes, route)
                raise ConfigError(f"{rc.key_path}.path", f"conflicts with {other}: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"{rc.key_path}.path", str(exc)) from None
            listener.routes.append(route)
    for listener in plan.listeners.values():
        # The router flattens its tables on the first match after changes: do it now, at
        # compile time, not in the first request.
        listener.router.match(b"GET", b"", b"/")
    return plan


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
    """The plan starts serving (gateway start, or a reload's swap): discovery feeds set its
    groups' targets and follow their registries, health monitors steer its groups and their
    checkers run. On the worker's loop, so checks and watches run once per worker process."""
    for feed in plan.state.feeds.values():
        feed.serve(plan.upstreams[feed.name])
    for monitor in plan.state.health.values():
        monitor.serve(plan.upstreams[monitor.name])
    for breaker in plan.state.breakers.values():
        breaker.serve(plan.upstreams[breaker.name])
    for listener in plan.listeners.values():
        if listener.tls_front is not None and listener.tls is not None:
            listener.tls_front.use(listener.tls)  # handshakes from now on get this plan's certificates
    for group in plan.upstreams.values():
        if group.config.tls is not None and group.config.tls.insecure_skip_verify:
            log.warning("upstream %r: TLS certificates are not verified (insecure_skip_verify)", group.name)


def retire_plan(old: Plan, new: Plan) -> None:
    """Close idle connections of pools the new plan did not adopt (busy ones finish first), and
    stop the health monitors and circuit breakers it did not adopt."""
    kept = set(map(id, new.state.pools.values()))
    for pool in old.state.pools.values():
        if id(pool) not in kept:
            pool.close()
    for key, monitor in old.state.health.items():
        if new.state.health.get(key) is not monitor:
            monitor.stop()
    for breaker_key, breaker in old.state.breakers.items():
        if new.state.breakers.get(breaker_key) is not breaker:
            breaker.stop()
    for name, front in old.state.tls_fronts.items():
        if new.state.tls_fronts.get(name) is not front:
            front.stop()
    for listener in old.listeners.values():
        if listener.tls is not None:
            listener.tls.retire()
    for feed_key, feed in old.state.feeds.items():
        if new.state.feeds.get(feed_key) is not feed:
            feed.stop()


async def first_discovery(plan: Plan, timeout: float) -> None:
    """Wait (at most ``timeout``) until every discovery feed of an activated plan has tried its
    registry once, so that a starting gateway listens with the targets it can find."""
    waits = [feed.attempted.wait() for feed in plan.state.feeds.values() if not feed.attempted.is_set()]
    if waits:
        await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=timeout)


async def stop_feeds(plan: Plan) -> None:
    """Stop the plan's discovery feeds and wait until their tasks ended (drain)."""
    tasks = [task for feed in plan.state.feeds.values() if (task := feed.stop()) is not None]
    await asyncio.gather(*tasks, return_exceptions=True)
