"""The demo in registry mode: its services register themselves in a real etcd (Debian's
etcd-server), and the gateway runs ``gateway.yaml`` with each upstream following its service's
prefix by etcd discovery (``registry_document``, what ``fastgw demo --registry`` runs).

A second process of the services adds a second instance of each; killed, its keys go when its
lease runs out (a short lease here); stopped, it revokes its lease and its keys go at once; a
restarted one comes back. The rotation is read from the gateway's upstreams, and requests
through the gateway show who answers once only one instance is left."""

from __future__ import annotations

import base64
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastgw.demo import CONFIG_PATH, REGISTRY_PREFIX, instance_key, registry_document
from fastgw.demo.services import SERVICE_NAMES
from fastgw.etcd import prefix_end
from tests.e2e.conftest import wait_for
from tests.support.demo import listener_env, start_demo_services
from tests.support.etcd_server import EtcdServer
from tests.support.gateway import RunningGateway
from tests.support.procs import Proc, ProcessReaper, reaper
from tests.support.rawhttp import build_request, connect, read_response

MakeGateway = Callable[[dict[str, Any]], RunningGateway]
SHORT_LEASE = "2"  # seconds: a killed process leaves the rotation this long after its death
LONG_LEASE = "600"  # longer than any test: such a process's keys can only go by its revoke


@pytest.fixture
def registry(etcd: EtcdServer) -> Iterator[EtcdServer]:
    yield etcd
    etcd.call("/v3/kv/deleterange", {"key": _b64(REGISTRY_PREFIX.encode()), "range_end": _end()})


@pytest.fixture
def procs() -> Iterator[ProcessReaper]:
    with reaper() as processes:
        yield processes


@pytest.fixture
def demo(
    make_gateway: MakeGateway, registry: EtcdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RunningGateway:
    for name, value in listener_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    return make_gateway(registry_document(yaml.safe_load(Path(CONFIG_PATH).read_text()), registry.url))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _end() -> str:
    return _b64(prefix_end(REGISTRY_PREFIX.encode()))


def registered(etcd: EtcdServer) -> dict[str, int]:
    """The demo's keys in etcd and the lease each is attached to."""
    answer = etcd.call("/v3/kv/range", {"key": _b64(REGISTRY_PREFIX.encode()), "range_end": _end()})
    return {base64.b64decode(kv["key"]).decode(): int(kv.get("lease", 0)) for kv in answer.get("kvs", [])}


def keys_of(ports: dict[str, int]) -> set[str]:
    return {instance_key(name, "127.0.0.1", port) for name, port in ports.items()}


def services(procs: ProcessReaper, etcd: EtcdServer, lease: str) -> tuple[Proc, dict[str, int]]:
    return start_demo_services("--registry", etcd.url, "--lease-ttl", lease, processes=procs)


def rotation(gw: RunningGateway) -> dict[str, set[int]]:
    """Each upstream's target ports as the gateway has them now."""
    upstreams = gw.gateway.plan.upstreams
    return gw.call(lambda: {name: {t.port for t in upstreams[name].targets} for name in SERVICE_NAMES})


def of(*instances: dict[str, int]) -> dict[str, set[int]]:
    """The rotation made of these processes' services."""
    return {name: {ports[name] for ports in instances} for name in SERVICE_NAMES}


def status(gw: RunningGateway, target: str) -> int:
    with connect(gw.port_of("public")) as sock:
        sock.sendall(build_request("GET", target))
        return read_response(sock).status


def test_instances_join_the_rotation_through_etcd_and_leave_it_when_stopped(
    demo: RunningGateway, registry: EtcdServer, procs: ProcessReaper
) -> None:
    first, first_ports = services(procs, registry, LONG_LEASE)
    second, second_ports = services(procs, registry, SHORT_LEASE)
    wait_for(lambda: rotation(demo) == of(first_ports, second_ports), 10, "both instances in rotation")
    assert status(demo, "/api/catalog/items/3") == 200
    assert status(demo, "/api/dashboard/alice") == 200  # catalog, basket and discount together

    second.stop(signal.SIGKILL)  # it cannot deregister: its lease runs out
    wait_for(lambda: rotation(demo) == of(first_ports), 15, "the killed instance's lease to run out")
    assert [status(demo, "/api/catalog/items/3") for _ in range(6)] == [200] * 6

    _, restarted_ports = services(procs, registry, SHORT_LEASE)
    back = of(first_ports, restarted_ports)
    wait_for(lambda: rotation(demo) == back, 10, "the restarted instance back in rotation")

    assert first.stop() == 0  # SIGTERM: it revokes its lease on the way out, the keys go with it
    assert not keys_of(first_ports) & set(registered(registry))
    wait_for(lambda: rotation(demo) == of(restarted_ports), 10, "the stopped instance out of rotation")
    # Only the restarted instance is left: the gateway found it through etcd alone.
    assert [status(demo, "/api/catalog/items/3") for _ in range(4)] == [200] * 4
    assert status(demo, "/api/dashboard/alice") == 200


def test_services_register_again_when_etcd_no_longer_knows_their_lease(
    registry: EtcdServer, procs: ProcessReaper
) -> None:
    _, ports = services(procs, registry, SHORT_LEASE)
    keys = registered(registry)
    assert set(keys) == keys_of(ports)
    (lease,) = set(keys.values())
    registry.call("/v3/lease/revoke", {"ID": str(lease)})  # as if it had run out while etcd was away
    wait_for(lambda: set(registered(registry)) == set(keys), 10, "the services to put their keys again")
    assert lease not in registered(registry).values()  # under a new lease, kept alive as the old one
