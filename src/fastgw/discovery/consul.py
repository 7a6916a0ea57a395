"""Consul: the instances of a service whose every health check passes, followed by blocking
queries.

``GET /v1/health/service/<service>?passing=1&tag=<each tag>&dc=<datacenter>&index=<N>&wait=<W>``
(with the ACL token as ``X-Consul-Token``) answers the service's entries, each a node and a
service instance (and its checks); ``X-Consul-Index`` names the state answered. The next query
sends that index and Consul holds it until the result may have changed or ``wait`` ran out (a
return is no promise of a change: the set is compared, and an unchanged one only confirms).

The index rules of Consul's "blocking queries" documentation: an index that went backwards (a
server restored a snapshot, or another server answered) starts over from 0, and an index of 0 or
less is sent as 1, never 0, so that the next query blocks instead of returning at once, forever.
Queries return at once after an error; the feed's backoff spaces them.

An instance's address is ``Service.Address``, or ``Node.Address`` when the service has none; its
weight is ``Service.Weights.Passing`` (Consul's own weights), or the integer in
``Service.Meta[weight_meta]`` when the upstream names a meta key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from fastgw.config.schema import ConsulRegistry, DiscoveryConfig
from fastgw.control_http import control_session
from fastgw.discovery.feed import Instance, Resolver, Sink
from fastgw.etcd import ssl_context


class ConsulError(Exception):
    """Consul could not be reached, refused the query, or answered what is not a service list."""


def next_index(previous: int, answered: int) -> int:
    """The index to send next, by the documented rules (see the module docstring)."""
    if answered < previous:
        return 1  # went backwards: start over (as from 0, sent as 1)
    return max(answered, 1)


def entry_instance(entry: Any, weight_meta: str | None) -> Instance | None:
    """The instance of one ``/v1/health/service`` entry, or None when it has no usable address."""
    if not isinstance(entry, dict):
        return None
    service = entry.get("Service") or {}
    node = entry.get("Node") or {}
    address = service.get("Address") or node.get("Address")
    port = service.get("Port")
    if not isinstance(address, str) or not address or not isinstance(port, int) or not 0 < port < 65536:
        return None
    weight = (service.get("Weights") or {}).get("Passing", 1)
    if weight_meta is not None:
        text = (service.get("Meta") or {}).get(weight_meta)
        weight = int(text) if isinstance(text, str) and text.isdigit() else 1
    origin = f"node {node.get('Node', '?')}, service id {service.get('ID', '?')}"
    return Instance(address, port, weight if isinstance(weight, int) else 1, origin)


class ConsulResolver(Resolver):
    def __init__(self, config: DiscoveryConfig) -> None:
        registry = config.registry
        assert isinstance(registry, ConsulRegistry)
        self.registry = registry
        self.service = config.service
        self.weight_meta = config.weight_meta
        params: list[tuple[str, str]] = [("passing", "1")]
        params += [("tag", tag) for tag in config.tags]
        datacenter = config.datacenter or registry.datacenter
        if datacenter:
            params.append(("dc", datacenter))
        self.params = params
        self.url = f"{registry.address}/v1/health/service/{quote(config.service, safe='')}"
        self.headers = {"X-Consul-Token": registry.token} if registry.token else {}
        self._ssl = ssl_context(registry.tls)
        self.index = 0

    async def run(self, sink: Sink) -> None:
        self.index = 0  # a fresh start after an error: the first query answers at once
        while True:
            entries, answered = await self.query(self.index)
            self.index = next_index(self.index, answered)
            sink.publish(
                [i for entry in entries if (i := entry_instance(entry, self.weight_meta)) is not None]
            )

    async def query(self, index: int) -> tuple[list[Any], int]:
        """One (blocking, when ``index``) query: the entries and the X-Consul-Index."""
        import aiohttp

        params = list(self.params)
        if index > 0:
            params += [("index", str(index)), ("wait", f"{int(self.registry.wait)}s")]
        # Consul adds up to wait/16 of jitter to a blocking query: the timeout allows for it.
        timeout = self.registry.timeout + (self.registry.wait * 17 / 16 if index > 0 else 0.0)
        try:
            async with control_session().get(
                self.url, params=params, headers=self.headers, ssl=self._ssl if self._ssl else True,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:  # fmt: skip
                data = await response.read()
                if response.status != 200:
                    text = data[:200].decode("utf-8", "replace").strip()
                    raise ConsulError(f"{self.url}: status {response.status}: {text}")
                header = response.headers.get("X-Consul-Index", "")
        except (aiohttp.ClientError, OSError) as exc:
            raise ConsulError(f"{self.url}: {exc or type(exc).__name__}") from None
        except TimeoutError:
            raise ConsulError(f"{self.url}: no answer within {timeout:g}s") from None
        if not header.isdigit():
            raise ConsulError(f"{self.url}: no X-Consul-Index in the answer")
        try:
            entries = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ConsulError(f"{self.url}: not a JSON answer") from None
        if not isinstance(entries, list):
            raise ConsulError(f"{self.url}: expected a JSON list of entries")
        return entries, int(header)
