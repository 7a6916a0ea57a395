"""The demo services' entries in etcd, in the form fastgw's etcd discovery reads (docs/discovery.md).

Each service puts one key, ``<REGISTRY_PREFIX><service>/<host>:<port>``, whose value is its
address as JSON (``{"host": "127.0.0.1", "port": 40123}``). The keys of one process share a lease
that the process keeps alive, renewing it every third of its TTL:

- the process stops (SIGTERM, Ctrl-C): ``close`` revokes the lease, and etcd deletes the keys at
  once;
- the process dies (SIGKILL, a crash, a frozen machine): nobody renews the lease, and etcd deletes
  the keys when its TTL runs out.

Either way a gateway watching the prefix sees the deletes and takes the address out of rotation.
A lease etcd no longer knows (it ran out while etcd was unreachable, or etcd lost it) is replaced:
a new lease, every key put again, so the services come back into rotation by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import orjson

from fastgw.config.schema import EtcdRegistry
from fastgw.control_http import close_control_session
from fastgw.demo import instance_key
from fastgw.etcd import EtcdClient, EtcdError

__all__ = ["DEFAULT_LEASE_TTL", "Registration"]

log = logging.getLogger("fastgw.demo")

DEFAULT_LEASE_TTL = 10  # seconds a stopped-dead service stays in etcd (a stopped one leaves at once)


class Registration:
    """The keys of the services of this process in the etcd at ``endpoint``, under one lease."""

    def __init__(self, endpoint: str, ttl: int = DEFAULT_LEASE_TTL) -> None:
        self.endpoint = endpoint
        self.ttl = ttl
        self.client = EtcdClient(EtcdRegistry(endpoints=(endpoint,)))
        self.entries: dict[str, bytes] = {}  # key -> value, put again under a new lease when needed
        self.lease = 0
        self._renewing: asyncio.Task[None] | None = None

    async def register(self, host: str, ports: Mapping[str, int]) -> list[str]:
        """Put one key per service (``{"catalog": 40123, ...}`` listening on ``host``) and keep
        them alive; their keys. Raises EtcdError when etcd cannot be reached or refuses."""
        for name, port in ports.items():
            self.entries[instance_key(name, host, port)] = orjson.dumps({"host": host, "port": port})
        await self._put_all()
        if self._renewing is None:
            self._renewing = asyncio.create_task(self._renew())
        return list(self.entries)

    async def close(self) -> None:
        """Stop renewing and revoke the lease: the keys are gone when this returns (unless etcd is
        unreachable; then they go when the lease runs out)."""
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None
        try:
            if self.lease:
                await self.client.revoke(self.lease)
        except EtcdError as error:
            log.warning("demo services: revoking the lease failed (%s); it runs out in %ds", error, self.ttl)
        finally:
            await close_control_session()

    async def _put_all(self) -> None:
        self.lease = await self.client.grant(self.ttl)
        for key, value in self.entries.items():
            await self.client.put(key.encode(), value, lease=self.lease)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if await self.client.keep_alive(self.lease) == 0:
                    log.warning("demo services: etcd no longer knows their lease; registering again")
                    await self._put_all()
            except EtcdError as error:  # etcd away: try again at the next renewal, the keys may survive
                log.warning("demo services: renewing their etcd lease failed: %s", error)
