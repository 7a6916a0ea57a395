"""A test plugin that shows upstream what authentication plugins left on ``ctx``.

Placed after an auth plugin on a route, it adds ``X-Seen-Consumer`` (``ctx.consumer`` or ``-``)
and ``X-Seen-Claims`` (``ctx.claims`` as JSON, or ``null``) to the upstream request, so a test
reads them back from the recording upstream's ``/echo``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import orjson

from fastgw import hooks
from fastgw.hooks import Plugin, register_plugin

PROBE = {"name": "test_identity_probe"}


class IdentityProbe(Plugin):
    name: ClassVar[str] = "test_identity_probe"

    def on_upstream_request(self, ctx: Any) -> None:
        ctx.upstream_headers.append((b"X-Seen-Consumer", (ctx.consumer or "-").encode()))
        ctx.upstream_headers.append((b"X-Seen-Claims", orjson.dumps(ctx.claims)))


@contextmanager
def identity_probe() -> Iterator[None]:
    """The probe is a known plugin inside the block (wrap it in an autouse fixture)."""
    register_plugin(IdentityProbe)
    try:
        yield
    finally:
        hooks._REGISTRY.pop(IdentityProbe.name, None)
