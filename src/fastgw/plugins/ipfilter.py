"""``ip_filter``: answer 403 to clients outside an allow list or inside a deny list.

The client is ``ctx.client_ip``: the TCP peer, or the nearest untrusted X-Forwarded-For hop when
the peer is one of the listener's ``trusted_proxies``. Networks are CIDRs, IPv4 or IPv6
(IPv4-mapped IPv6 counts as IPv4); verdicts are cached per address (see ``_addresses``).

Order: a client in ``deny`` is refused; otherwise, when ``allow`` is given, a client not in it is
refused. A client address that is not an IP address at all (only a trusted proxy can produce one,
by forwarding garbage) is refused, whatever the lists say.

    plugins:
      - name: ip_filter
        allow: [10.0.0.0/8, "2001:db8::/32"]
        deny: [10.6.6.0/24]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgw.config.validate import Section, read_int
from fastgw.errors import ConfigError
from fastgw.hooks import Plugin, RequestContext, Response, register_plugin
from fastgw.plugins._addresses import NetworkSet, read_networks
from fastgw.plugins._refusal import Refusal

_FORBIDDEN = Refusal(403, "client address not allowed")


@register_plugin
class IpFilter(Plugin):
    name: ClassVar[str] = "ip_filter"

    def __init__(self, allow: NetworkSet, deny: NetworkSet) -> None:
        self.allow = allow
        self.deny = deny

    @classmethod
    def compile(cls, options: Mapping[str, Any], key_path: str) -> Plugin:
        section = Section(options, key_path, ("allow", "deny", "cache_size"))
        cache_size = section.get("cache_size", read_int(1)) or 10_000
        allow = NetworkSet(section.get("allow", read_networks) or (), cache_size)
        deny = NetworkSet(section.get("deny", read_networks) or (), cache_size)
        if not allow and not deny:
            raise ConfigError(key_path, "expected a non-empty 'allow' or 'deny' list of CIDRs")
        return cls(allow, deny)

    def on_request(self, ctx: RequestContext) -> Response | None:
        address = ctx.client_ip
        if self.deny:
            denied = self.deny.contains(address)
            if denied or denied is None:
                return _FORBIDDEN.response(ctx)
        if self.allow and not self.allow.contains(address):
            return _FORBIDDEN.response(ctx)
        return None
