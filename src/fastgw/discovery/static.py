"""A registry that never changes: publishes one fixed set and ends. The reference resolver, for
tests of the feed and for tools."""

from __future__ import annotations

from collections.abc import Sequence

from fastgw.discovery.feed import Instance, Resolver, Sink


class StaticResolver(Resolver):
    def __init__(self, instances: Sequence[Instance]) -> None:
        self.instances = tuple(instances)

    async def run(self, sink: Sink) -> None:
        sink.publish(self.instances)
