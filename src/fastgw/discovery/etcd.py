"""etcd v3: the instances of a service are the keys under a prefix, watched (never polled).

Each key under ``prefix`` is one instance (its key is the registry's name for it); its value is
JSON ``{"host": "10.0.1.7", "port": 8080, "weight": 2}`` (weight optional), or the text
``10.0.1.7:8080``. A service registers by putting its key (usually with a lease, so that the key
goes when the service dies) and deregisters by deleting it.

``run``: one range of the prefix gives the set and the store's revision; a watch from the next
revision on streams every put and delete, each message applied at once (one message: one new
set, so several keys written in one transaction change the set once). A value that cannot be read
is left out and logged (once per key and revision), never taken for an address. When the watch
fails or ends (etcd restarted, the revision compacted), ``run`` raises and the feed ranges again
after its backoff: nothing between is missed, the range is the truth.
"""

from __future__ import annotations

import logging

import orjson

from fastgw.config.schema import DiscoveryConfig, EtcdRegistry
from fastgw.discovery.feed import Instance, Resolver, Sink
from fastgw.etcd import EtcdClient, KeyValue

log = logging.getLogger("fastgw")


def parse_instance(kv: KeyValue) -> Instance | None:
    """The instance a key holds, or None (logged) when its value is not one."""
    key = kv.key.decode("utf-8", "replace")
    problem = _problem(kv.value)
    if isinstance(problem, Instance):
        return Instance(problem.host, problem.port, problem.weight, key)
    log.warning("etcd key %s (revision %d) is not an instance: %s; left out", key, kv.mod_revision, problem)
    return None


def _problem(value: bytes) -> Instance | str:
    text = value.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return "not valid JSON"
        host, port, weight = data.get("host"), data.get("port"), data.get("weight", 1)
    else:
        host, _, port_text = text.rpartition(":")
        host = host.strip("[]")
        port, weight = (int(port_text) if port_text.isdigit() else None), 1
    if not isinstance(host, str) or not host:
        return 'expected {"host": ..., "port": ...} or "host:port"'
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return f"expected a port from 1 to 65535, found {port!r}"
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        return f"expected a weight of at least 1, found {weight!r}"
    return Instance(host, port, weight)


class EtcdResolver(Resolver):
    def __init__(self, config: DiscoveryConfig) -> None:
        assert isinstance(config.registry, EtcdRegistry)
        self.prefix = config.service.encode()
        self.client = EtcdClient(config.registry)

    async def run(self, sink: Sink) -> None:
        revision, kvs = await self.client.range(self.prefix, prefix=True)
        instances = {kv.key: instance for kv in kvs if (instance := parse_instance(kv)) is not None}
        sink.publish(list(instances.values()))
        async for batch in self.client.watch(self.prefix, prefix=True, start_revision=revision + 1):
            if not batch.events:
                sink.confirm()  # a progress note: the stream is alive, nothing changed
                continue
            for event in batch.events:
                instances.pop(event.kv.key, None)
                if not event.deleted and (instance := parse_instance(event.kv)) is not None:
                    instances[event.kv.key] = instance
            sink.publish(list(instances.values()))
