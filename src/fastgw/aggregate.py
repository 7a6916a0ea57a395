"""Aggregate routes: one request answered by several upstream calls, their JSON bodies merged.

Theory of operation
-------------------
An aggregate route is a route whose hook chain ends with an ``Aggregator`` (a plugin, compiled
by ``plan.py`` from the route's ``aggregate:``). The route's own plugins run first, as on any
route (authentication, rate limits, ...); then the aggregator's ``on_request`` returns an
awaitable of the ``Response``, so the exchange answers it like any hook's answer and never
reaches the proxy's upstream path. Plain proxied routes carry no aggregator and pay nothing.

Per request, every backend call starts at once as its own task, except that a call whose path
names an earlier backend's field (``/discounts/{basket.coupon}``) first waits for that backend:
the calls form a chain only where the config says so, and the answer takes as long as the
slowest chain, not the sum. Each call:

1. renders its path: route parameters by name, earlier backends' fields (of the body as
   received, before selection) percent-encoded;
2. sends ``method path`` with the client's headers it lists, ``X-Request-Id``,
   ``X-Forwarded-For`` and the trace context through the gateway's own exchange
   (``_proxy.fetch``): the same balancer, pools, health checks, circuit breakers, per-target
   counters and latency estimates as proxied requests, with the upstream's concurrency limit;
3. within ``timeout`` (connect included) expects a 2xx JSON body of at most ``max_body`` bytes;
4. shapes it: ``target`` (a sub-object), ``fields`` (an allow list), ``mapping`` (renames).

Failures: a required backend's failure answers at once (502, or 503 with no usable target, or
504 on timeout) with a message naming the backend, and cancels the other calls. An optional
backend's failure (and the failure of anything chained on it) leaves its key out and lists it in
``X-Aggregate-Partial``. Merging: ``by_key`` puts each body under its key; ``deep`` merges the
objects recursively, later backends winning on conflicting values, ``group`` nesting one under a
key; a custom ``aggregator`` gets ``{key: body}`` of the backends that answered and returns the
body.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from fastgw._proxy import GroupCore, Limiter, RequestStats, RouteCore, fetch
from fastgw.config.schema import AggregateBackend, AggregateConfig, UpstreamTimeouts
from fastgw.errors import ConfigError, HttpFault, UpstreamFault
from fastgw.hooks import EMPTY_CHAIN, Plugin, RequestContext, Response
from fastgw.upstream.group import UpstreamGroup
from fastgw.upstream.retry import RetryRules

log = logging.getLogger("fastgw")

PARTIAL_HEADER = b"X-Aggregate-Partial"
_REFERENCE = re.compile(r"\{([^{}]*)\}")  # load.py checked every reference already

CustomMerge = Callable[[dict[str, Any]], Any]


class NoUpstream(GroupCore):
    """The ``upstream`` of an aggregate route's ``RouteCore``. The aggregator always answers, so
    the proxy never sends such a request upstream; should it ever try, the client gets a 500."""

    timeouts = UpstreamTimeouts()

    def pick(self, exchange: object = None, exclude: object = None) -> None:
        raise HttpFault("aggregate route reached the upstream path", 500)


class BackendFailure(Exception):
    """One backend call failed: why, and the status it answers with when the backend is required."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class PathTemplate:
    """A backend path as literal bytes, route parameters (by name) and earlier backends' fields."""

    __slots__ = ("parts",)

    def __init__(self, template: str) -> None:
        parts: list[bytes | str | tuple[str, tuple[str, ...]]] = []
        pos = 0
        for match in _REFERENCE.finditer(template):
            if match.start() > pos:
                parts.append(template[pos : match.start()].encode("ascii"))
            key, dot, field = match[1].partition(".")
            parts.append((key, tuple(field.split("."))) if dot else match[1])
            pos = match.end()
        if pos < len(template):
            parts.append(template[pos:].encode("ascii"))
        self.parts = parts

    @property
    def depends(self) -> tuple[str, ...]:
        """The backends whose answers this path needs, in order of first use."""
        return tuple(dict.fromkeys(part[0] for part in self.parts if isinstance(part, tuple)))

    def render(self, ctx: RequestContext, answers: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        for part in self.parts:
            if isinstance(part, bytes):
                out.append(part)
            elif isinstance(part, str):
                out.append(ctx.param(part) or b"")  # the matched path's own bytes, already valid
            else:
                key, path = part
                out.append(quote(_scalar(key, path, answers[key]), safe="").encode("ascii"))
        return b"".join(out)


def _scalar(key: str, path: tuple[str, ...], body: Any) -> str:
    """The text of a string or number field of a backend's body, for a later path."""
    value = _field(body, path)
    name = f"{key}.{'.'.join(path)}"
    if value is _MISSING:
        raise BackendFailure(f"needs {name}, which the answer of {key!r} does not have")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BackendFailure(f"needs {name} to be a string or a number")
    return str(value)


_MISSING = object()


def _field(body: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(body, dict) or name not in body:
            return _MISSING
        body = body[name]
    return body


def backend_route(config: AggregateBackend, group: UpstreamGroup, limiter: Limiter | None) -> RouteCore:
    """The route one backend's calls take: to its upstream group, within the backend's timeout
    (connect included), with the upstream's concurrency limit, no hooks, and the retry rules
    every route has (a request a stale pooled connection lost goes once more)."""
    timeouts = group.timeouts
    timeouts = UpstreamTimeouts(
        connect=min(timeouts.connect, config.timeout),
        read=timeouts.read,
        send=timeouts.send,
        head=timeouts.head,
        total=config.timeout,
    )
    limiters = (limiter,) if limiter is not None else ()
    return RouteCore(
        group, timeouts, EMPTY_CHAIN, False, None, None, RetryRules(None), limiters, RequestStats()
    )


class Backend:
    """One compiled backend call of an aggregate route."""

    __slots__ = (
        "config", "fields", "group_key", "headers", "key", "mapping", "method", "required", "route",
        "target", "template", "timeout",
    )  # fmt: skip

    def __init__(self, config: AggregateBackend, route: RouteCore) -> None:
        self.config = config
        self.key = config.key
        self.route = route
        self.template = PathTemplate(config.path)
        self.method = config.method.encode("ascii")
        self.headers = frozenset(name.encode("ascii") for name in config.headers)
        self.timeout = config.timeout
        self.required = config.required
        self.target = tuple(config.target.split(".")) if config.target else None
        self.fields = config.fields
        self.mapping = dict(config.mapping)
        self.group_key = config.group

    def shape(self, body: Any, deep: bool) -> Any:
        """target, then fields, then mapping (KrakenD's order); deep merge needs an object."""
        if self.target is not None:
            body = _field(body, self.target)
            if body is _MISSING:
                raise BackendFailure(f"answered without the target field {self.config.target!r}")
        needs_object = self.fields is not None or self.mapping or (deep and self.group_key is None)
        if needs_object and not isinstance(body, dict):
            raise BackendFailure(f"answered {_kind(body)} where an object was needed")
        if self.fields is not None:
            body = {name: body[name] for name in self.fields if name in body}
        if self.mapping:
            body = {self.mapping.get(name, name): value for name, value in body.items()}
        return body

    def header_lines(self, ctx: RequestContext) -> bytes:
        """The header lines the call sends (the gateway adds Host and the framing)."""
        headers = [(name, value) for name, value in ctx.headers if name.lower() in self.headers]
        headers += [
            (b"Accept", b"application/json"),
            (b"X-Forwarded-For", ctx.forwarded_for),
            (b"X-Request-Id", ctx.request_id),
        ]
        if ctx.traceparent is not None:
            headers.append((b"traceparent", ctx.traceparent))
        return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def _kind(body: Any) -> str:
    if isinstance(body, list):
        return "a JSON array"
    if isinstance(body, dict):
        return "a JSON object"
    return "a JSON scalar" if body is not None else "null"


class Outcome:
    """What one backend call ended with: its body as received and shaped, or why it failed."""

    __slots__ = ("body", "failure", "shaped")

    def __init__(self, body: Any = None, shaped: Any = None, failure: str | None = None) -> None:
        self.body = body
        self.shaped = shaped
        self.failure = failure


class RequiredBackendFailed(UpstreamFault):
    """A required backend failed: the route answers this (502, 503 or 504) naming it."""


class Aggregator(Plugin):
    """The last ``on_request`` hook of an aggregate route: it always answers."""

    name = "aggregate"

    def __init__(
        self, config: AggregateConfig, backends: tuple[Backend, ...], merge: CustomMerge | None
    ) -> None:
        self.config = config
        self.backends = backends
        self.custom_merge = merge
        self.deep = config.merge == "deep"

    def on_request(self, ctx: RequestContext) -> Awaitable[Response]:
        return self.answer(ctx)

    async def answer(self, ctx: RequestContext) -> Response:
        tasks: dict[str, asyncio.Task[Outcome]] = {}
        for backend in self.backends:
            tasks[backend.key] = asyncio.ensure_future(self._run(backend, ctx, tasks))
        try:
            # A required backend's failure raises out of its task: stop waiting for the rest.
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks.values():
                task.cancel()  # the calls still running (a no-op for those that ended)
        errors = [task.exception() for task in tasks.values() if task.done() and not task.cancelled()]
        for error in errors:
            if error is not None:
                raise error
        outcomes = {key: task.result() for key, task in tasks.items()}
        results = {key: o.shaped for key, o in outcomes.items() if o.failure is None}
        body = self._merge(results)
        failed = [key for key, o in outcomes.items() if o.failure is not None]
        headers = [(PARTIAL_HEADER, ",".join(failed).encode("ascii"))] if failed else []
        return Response(200, body, headers)

    async def _run(
        self, backend: Backend, ctx: RequestContext, tasks: Mapping[str, asyncio.Task[Outcome]]
    ) -> Outcome:
        """One call, after the calls it depends on; raises only for a required backend."""
        try:
            answers = {}
            for key in backend.template.depends:
                outcome = await tasks[key]
                if outcome.failure is not None:
                    raise BackendFailure(f"needs {key!r}, which failed")
                answers[key] = outcome.body
            body = await self._call(backend, ctx, backend.template.render(ctx, answers))
            return Outcome(body, backend.shape(body, self.deep))
        except BackendFailure as failure:
            if backend.required:
                raise RequiredBackendFailed(
                    f"backend {backend.key!r} failed: {failure.message}", failure.status
                ) from None
            return Outcome(failure=failure.message)

    async def _call(self, backend: Backend, ctx: RequestContext, path: bytes) -> Any:
        """Send through the backend's route (the same exchange as proxied requests), check the
        answer: the backend's JSON body."""
        try:
            response = await fetch(
                backend.route, ctx, backend.method, path, backend.header_lines(ctx), backend.config.max_body
            )
        except HttpFault as fault:  # 502/503/504 naming the upstream, as a proxied request's
            if fault.status == 504:  # the backend's timeout bounds connect and answer together
                raise BackendFailure(f"no answer within {backend.timeout:g}s", 504) from None
            raise BackendFailure(fault.message, fault.status) from None
        if not 200 <= response.status < 300:
            raise BackendFailure(f"answered status {response.status}")
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise BackendFailure("answered a body that is not JSON") from None

    def _merge(self, results: dict[str, Any]) -> bytes:
        if self.custom_merge is not None:
            try:
                merged = self.custom_merge(results)
                return orjson.dumps(merged)
            except Exception:
                log.exception("aggregator %s of %s failed", self.config.aggregator, self.config.key_path)
                raise HttpFault("the route's aggregator failed", 500) from None
        if not self.deep:
            return orjson.dumps(results)
        out: dict[str, Any] = {}
        for backend in self.backends:
            if backend.key in results:
                shaped = results[backend.key]
                out = deep_merge(out, {backend.group_key: shaped} if backend.group_key else shaped)
        return orjson.dumps(out)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A new object: ``extra``'s values over ``base``'s, objects under the same key merged."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        out[key] = deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def compile_aggregator(config: AggregateConfig, routes: Mapping[str, RouteCore]) -> Aggregator:
    """``routes``: each backend's route (``backend_route``) by backend key."""
    backends = tuple(Backend(b, routes[b.key]) for b in config.backends)
    merge = _resolve(config.aggregator, f"{config.key_path}.aggregator") if config.aggregator else None
    return Aggregator(config, backends, merge)


def _resolve(name: str, key_path: str) -> CustomMerge:
    """``package.module:function``, imported now: a typo fails the config, not a request."""
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own error while importing
        raise ConfigError(key_path, f"cannot import module {module_name!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        found = "nothing" if function is None else f"a {type(function).__name__}"
        raise ConfigError(key_path, f"expected a function {attribute!r} in {module_name!r}, found {found}")
    try:
        inspect.signature(function).bind({})
    except TypeError:
        raise ConfigError(key_path, f"{name} must take one argument, the results by backend key") from None
    except ValueError:
        pass  # a builtin without a signature: it is called as it is
    if inspect.iscoroutinefunction(function):
        raise ConfigError(key_path, f"{name} must be a plain function returning the body, not async")
    merge: CustomMerge = function
    return merge
