"""A route's ``redirect_https``: a request that reached the gateway over cleartext (by the
listener's own scheme, or a trusted proxy's X-Forwarded-Proto) is answered with a redirect to the
same URL over HTTPS (308 by default, which keeps the method and body; 301 for browsers' old
habits), so one cleartext listener can send every client to the TLS one."""

from __future__ import annotations

from typing import ClassVar

from fastgw.config.schema import HttpsRedirectConfig
from fastgw.hooks import HookResult, Plugin, RequestContext, Response
from fastgw.plugins._refusal import Refusal


class HttpsRedirect(Plugin):
    name: ClassVar[str] = "redirect_https"

    def __init__(self, config: HttpsRedirectConfig) -> None:
        self.status = config.status
        self.port = b"" if config.port == 443 else b":%d" % config.port
        self.no_host = Refusal(400, "a redirect to HTTPS needs the request's Host header")

    def on_request(self, ctx: RequestContext) -> HookResult:
        if ctx.forwarded_proto == b"https":
            return None
        host = ctx.forwarded_host or ctx.host_header
        if not host:  # HTTP/1.0 without Host: no URL to send the client to
            return self.no_host.response(ctx)
        if host.startswith(b"["):
            host = host[: host.index(b"]") + 1]
        else:
            host = host.rpartition(b":")[0] or host if b":" in host else host
        location = b"https://" + host + self.port + ctx.path + ctx.query
        return Response(self.status, b"", [(b"Location", location)], content_type=b"")
