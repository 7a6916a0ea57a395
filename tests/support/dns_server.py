"""A small authoritative DNS server for tests, built on dnslib: UDP on a free loopback port,
answering A, AAAA and SRV questions from records the test sets and changes while it runs.

``server = DnsServer().start()``; ``server.set_a("catalog.test", ["127.0.0.2"], ttl=1)``,
``server.set_srv("_http._tcp.catalog.test", [(priority, weight, port, "n1.catalog.test")])``;
``server.queries[("catalog.test", "A")]`` counts the questions asked; ``server.stop()``. A name
without records of the type asked gets an empty answer (NOERROR), an unknown name NXDOMAIN.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from .ports import free_port

__all__ = ["DnsServer"]


def _name(name: str) -> str:
    return name.rstrip(".").lower()


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[int, list[Any]]] = {}  # (name, type) -> (ttl, rdata)
        self.queries: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = _name(str(request.q.qname))
        kind = QTYPE[request.q.qtype]
        with self.lock:
            self.queries[(name, kind)] += 1
            found = self.records.get((name, kind))
            known = any(n == name for n, _ in self.records)
        if found is None:
            if not known:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        ttl, rdata = found
        for data in rdata:
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=data, ttl=ttl))
        return reply


class DnsServer:
    def __init__(self) -> None:
        self.port = free_port()  # a TCP port free now; UDP on the same number is free in practice
        self.zone = _Zone()
        self.server = DNSServer(self.zone, address="127.0.0.1", port=self.port)

    @property
    def queries(self) -> Counter[tuple[str, str]]:
        return self.zone.queries

    def start(self) -> DnsServer:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()

    def _set(self, name: str, kind: str, ttl: int, rdata: list[Any]) -> None:
        with self.zone.lock:
            if rdata:
                self.zone.records[(_name(name), kind)] = (ttl, rdata)
            else:
                self.zone.records.pop((_name(name), kind), None)

    def set_a(self, name: str, addresses: Sequence[str], ttl: int = 1) -> None:
        self._set(name, "A", ttl, [A(address) for address in addresses])

    def set_aaaa(self, name: str, addresses: Sequence[str], ttl: int = 1) -> None:
        self._set(name, "AAAA", ttl, [AAAA(address) for address in addresses])

    def set_srv(self, name: str, records: Sequence[tuple[int, int, int, str]], ttl: int = 1) -> None:
        """(priority, weight, port, target) records."""
        self._set(name, "SRV", ttl, [SRV(p, w, port, target) for p, w, port, target in records])
