"""``authorize``: who may use a route, from what an authentication plugin established before it.

It runs after ``jwt``, ``api_key`` or ``basic_auth`` in the route's plugin list and reads
``ctx.claims`` and ``ctx.consumer``. A request with neither (no authentication plugin identified
it: say ``jwt`` with ``optional: true`` and no token) answers 401; one that is identified but
lacks what the route requires answers 403. Every rule given must hold:

- ``scopes``: all of these; ``any_scopes``: at least one of these. Scopes are read from the
  ``scope`` claim (a space-separated string, RFC 8693 section 4.2) and ``scp`` (a list or a
  string), or from the claims named in ``scope_claims``. A missing scope answers 403 with
  ``WWW-Authenticate: Bearer error="insufficient_scope"`` (RFC 6750 section 3.1).
- ``claims``: claim (name or dotted path) -> a value or a list of values: the claim must equal
  the value (any of them, for a list), or be a list containing it. Numbers and booleans compare
  as their JSON text, so ``level: 3`` matches the claim ``3`` and ``"3"``.
- ``consumers``: ``ctx.consumer`` must be one of these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, expected, read_list, read_mapping, read_str, read_text
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._auth import MISSING, ClaimPath, claim_values, deny, quoted

_OPTIONS = ("scopes", "any_scopes", "claims", "consumers", "scope_claims", "realm")


class ClaimRule:
    """One ``claims:`` entry: the claim's value(s) must meet ``allowed``."""

    __slots__ = ("allowed", "path")

    def __init__(self, path: ClaimPath, allowed: frozenset[str]) -> None:
        self.path = path
        self.allowed = allowed

    def holds(self, claims: Mapping[str, Any] | None) -> bool:
        value = self.path.find(claims)
        if value is MISSING or value is None:
            return False
        return any(v in self.allowed for v in claim_values(value))


def _read_scope(value: object, path: str) -> str:
    scope = read_str(value, path)
    if any(c.isspace() for c in scope):
        raise expected(path, "one scope without spaces", value)
    return scope


def _read_claim_rule(name: str, value: object, path: str) -> ClaimRule:
    if isinstance(value, list):
        if not value:
            raise expected(path, "a value or a non-empty list of values", value)
        allowed = [_read_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    else:
        allowed = [_read_value(value, path)]
    return ClaimRule(ClaimPath(name), frozenset(allowed))


def _read_value(value: object, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return read_text(value, path)


@register_plugin
class Authorize(Plugin):
    """Options: ``scopes``, ``any_scopes``, ``claims``, ``consumers``, ``scope_claims`` (default
    ``[scope, scp]``), ``realm`` (default ``fastgw``); at least one rule."""

    name: ClassVar[str] = "authorize"

    def __init__(
        self,
        scopes: tuple[str, ...],
        any_scopes: frozenset[str],
        claims: tuple[ClaimRule, ...],
        consumers: frozenset[str] | None,
        scope_claims: tuple[str, ...],
        realm: str,
    ) -> None:
        self.scopes = scopes
        self.any_scopes = any_scopes
        self.needs_scopes = bool(scopes or any_scopes)
        self.claims = claims
        self.consumers = consumers
        self.scope_claims = scope_claims
        self.realm = b"Bearer realm=" + quoted(realm)
        wanted = " ".join(scopes) if scopes else " ".join(sorted(any_scopes))
        self.scope_challenge = self.realm + b', error="insufficient_scope", scope=' + quoted(wanted)

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        rules = [key for key in ("scopes", "any_scopes", "claims", "consumers") if key in section.items]
        if not rules:
            raise ConfigError(key_path, "give at least one of scopes, any_scopes, claims or consumers")
        claim_rules: list[ClaimRule] = []
        if "claims" in section.items:
            claims_path = section.at("claims")
            for name, value in read_mapping(section.items["claims"], claims_path, non_empty=True).items():
                claim_rules.append(_read_claim_rule(name, value, f"{claims_path}.{name}"))
        consumers = section.get("consumers", read_list(read_str, non_empty=True))
        return cls(
            section.get("scopes", read_list(_read_scope, non_empty=True)) or (),
            frozenset(section.get("any_scopes", read_list(_read_scope, non_empty=True)) or ()),
            tuple(claim_rules),
            frozenset(consumers) if consumers is not None else None,
            section.get("scope_claims", read_list(read_str, non_empty=True)) or ("scope", "scp"),
            section.get("realm", read_str) or "fastgw",
        )

    def on_request(self, ctx: RequestContext) -> Response | None:
        claims = ctx.claims
        consumer = ctx.consumer
        if claims is None and consumer is None:
            return deny(ctx, 401, "authentication required", self.realm)
        if self.consumers is not None and consumer not in self.consumers:
            return deny(ctx, 403, "this consumer may not use this route")
        if self.needs_scopes:
            granted = self.granted_scopes(claims)
            missing = [s for s in self.scopes if s not in granted]
            if missing:
                return deny(
                    ctx, 403, f"insufficient scope: missing {' '.join(missing)}", self.scope_challenge
                )
            if self.any_scopes and self.any_scopes.isdisjoint(granted):
                wanted = " or ".join(sorted(self.any_scopes))
                return deny(ctx, 403, f"insufficient scope: needs {wanted}", self.scope_challenge)
        for rule in self.claims:
            if not rule.holds(claims):
                return deny(ctx, 403, f"the '{rule.path.name}' claim does not allow this route")
        return None

    def granted_scopes(self, claims: Mapping[str, Any] | None) -> set[str]:
        granted: set[str] = set()
        if claims is None:
            return granted
        for name in self.scope_claims:
            value = claims.get(name)
            if isinstance(value, str):
                granted.update(value.split())
            elif isinstance(value, list):
                granted.update(item for item in value if isinstance(item, str))
        return granted
