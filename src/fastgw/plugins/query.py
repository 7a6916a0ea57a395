"""``query``: remove, rename, set and add query parameters of the request sent upstream.

    plugins:
      - name: query
        remove: [debug]
        rename: {q: search}
        set: {tenant: "{claim.org.id}"}
        add: {source: gateway}

Applied once per request, in that order, when the request's hooks run (``on_request``; list the
plugin after an authentication plugin whose claims it reads). Parameter names are matched
decoded (``%74enant`` and ``tenant`` are one name, ``+`` is a space); ``remove`` drops every
copy, ``rename`` keeps each value's bytes as they came, ``set`` drops the client's copies and
appends the gateway's, ``add`` appends one more. New names and rendered values are
percent-encoded (everything but letters, digits and ``-._~``), so any value is safe; the
parameters nobody named stay byte for byte. Values are templates as in ``headers`` (no
``{upstream_host}``: the target is not chosen yet); a value whose variable has no value for this
request is not added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from fastgw.config.validate import Section, read_list, read_mapping, read_str
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, register_plugin
from fastgw.plugins._auth import rename_query_params, without_query_params
from fastgw.plugins._template import Template, parse_template

_OPTIONS = ("remove", "rename", "set", "add")

QueryRule = tuple[bytes, Template]  # (encoded name, value template)


def _encode(text: str | bytes) -> bytes:
    return quote(text, safe="").encode("ascii")


def _read_rules(value: object, path: str) -> tuple[tuple[str, QueryRule], ...]:
    return tuple(
        (name, (_encode(name), parse_template(template, f"{path}.{name}", upstream=False)))
        for name, template in read_mapping(value, path, non_empty=True).items()
    )


def _read_renames(value: object, path: str) -> dict[bytes, bytes]:
    return {
        old.encode(): _encode(read_str(new, f"{path}.{old}"))
        for old, new in read_mapping(value, path, non_empty=True).items()
    }


@register_plugin
class Query(Plugin):
    """Options: ``remove`` (names), ``rename`` (old -> new), ``set`` and ``add`` (name -> template)."""

    name: ClassVar[str] = "query"

    def __init__(
        self, drop: frozenset[bytes], renames: dict[bytes, bytes], append: tuple[QueryRule, ...]
    ) -> None:
        self.drop = drop
        self.renames = renames
        self.append = append

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, _OPTIONS)
        if not section.items:
            raise ConfigError(key_path, "give at least one of remove, rename, set or add")
        removed = section.get("remove", read_list(read_str, non_empty=True, single=True)) or ()
        sets = section.get("set", _read_rules) or ()
        adds = section.get("add", _read_rules) or ()
        drop = frozenset(name.encode() for name in (*removed, *(name for name, _ in sets)))
        renames = section.get("rename", _read_renames) or {}
        return cls(drop, renames, tuple(rule for _, rule in (*sets, *adds)))

    def check_route(self, param_names: tuple[str, ...], route: str) -> None:
        for _, template in self.append:
            template.check_params(param_names, route)

    def on_request(self, ctx: RequestContext) -> None:
        query = ctx.query
        if self.drop:
            query = without_query_params(query, self.drop)
        if self.renames:
            query = rename_query_params(query, self.renames)
        parts = [query] if len(query) > 1 else []  # b"?" alone: no parameters to keep
        for name, template in self.append:
            value = template.render(ctx)
            if value is not None:
                parts += (b"&" if parts else b"?", name, b"=", _encode(value))
        ctx.query = b"".join(parts)
