"""Discovery from Eureka, against a protocol-faithful double of its REST API
(``tests/support/registry_doubles.py``: Eureka cannot be installed here): UP instances of an app
from a full fetch, then delta fetches merged and checked against ``apps__hashcode``, a full
fetch when the hash disagrees or the server offers no delta; JSON and XML answers; basic auth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastgw.discovery.eureka import parse_applications, reconcile_hash
from tests.e2e.conftest import wait_for
from tests.support.gateway import RunningGateway
from tests.support.registry_doubles import EurekaDouble, EurekaInstance

Make = Callable[..., RunningGateway]


def document(eureka: EurekaDouble) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "registries": {
            "eureka": {"url": f"{eureka.url}/eureka", "username": "gw", "password": "pw", "interval": "100ms"}
        },
        "upstreams": {"up": {"discovery": {"provider": "eureka", "app": "catalog"}}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def ports(gw: RunningGateway) -> set[int]:
    return set(gw.call(lambda: [t.port for t in gw.gateway.plan.upstreams["up"].targets]))


@pytest.mark.parametrize("always_xml", [False, True], ids=["json", "xml"])
def test_up_instances_followed_by_delta_fetches(make_gateway: Make, upstream: int, always_xml: bool) -> None:
    eureka = EurekaDouble(login=("gw", "pw"), always_xml=always_xml)
    eureka.start()
    try:
        eureka.register(EurekaInstance("CATALOG", "cat-1", "127.0.0.1", upstream))
        eureka.register(EurekaInstance("CATALOG", "cat-2", "127.0.0.1", 9001, status="STARTING"))
        eureka.register(EurekaInstance("CATALOG", "cat-3", "127.0.0.1", 9002, port_enabled=False))
        eureka.register(EurekaInstance("BASKET", "bas-1", "127.0.0.1", 9003))
        gw = make_gateway(document(eureka))
        assert ports(gw) == {upstream}  # UP, port enabled, of this app
        wait_for(lambda: eureka.seen("/eureka/apps/delta"), 10, "a delta fetch")
        full = len(eureka.seen("/eureka/apps")) - len(eureka.seen("/eureka/apps/delta"))
        eureka.set_status("CATALOG", "cat-2", "UP")
        wait_for(lambda: ports(gw) == {upstream, 9001}, 10, "cat-2 to be UP")
        eureka.cancel("CATALOG", "cat-1")
        wait_for(lambda: ports(gw) == {9001}, 10, "cat-1 to leave")
        assert (
            len(eureka.seen("/eureka/apps")) - len(eureka.seen("/eureka/apps/delta")) == full
        )  # deltas only
        eureka.forget_changes()
        eureka.register(EurekaInstance("CATALOG", "cat-4", "127.0.0.1", 9004))
        eureka.forget_changes()  # the change is gone from the delta: the hash tells, a full fetch finds it
        wait_for(lambda: ports(gw) == {9001, 9004}, 10, "cat-4 from a full fetch")
        assert len(eureka.seen("/eureka/apps")) - len(eureka.seen("/eureka/apps/delta")) > full
        assert all(r.headers.get("Authorization", "").startswith("Basic ") for r in eureka.requests)
    finally:
        eureka.stop()


def test_a_server_without_deltas_gets_full_fetches(make_gateway: Make, upstream: int) -> None:
    eureka = EurekaDouble(login=("gw", "pw"))
    eureka.start()
    try:
        eureka.disable_delta()
        eureka.register(EurekaInstance("CATALOG", "cat-1", "127.0.0.1", upstream))
        gw = make_gateway(document(eureka))
        eureka.register(EurekaInstance("CATALOG", "cat-2", "127.0.0.1", 9001))
        wait_for(lambda: ports(gw) == {upstream, 9001}, 10, "cat-2 from a full fetch")
        feed = next(iter(gw.gateway.plan.feeds.values()))
        assert feed.errors == 0
    finally:
        eureka.stop()


def test_the_reconcile_hash_and_both_shapes() -> None:
    xml = (
        b"<applications><versions__delta>1</versions__delta><apps__hashcode>DOWN_1_UP_2_</apps__hashcode>"
        b"<application><name>CATALOG</name><instance><instanceId>a</instanceId><ipAddr>10.0.0.1</ipAddr>"
        b'<status>UP</status><port enabled="true">80</port><metadata><weight>4</weight></metadata></instance>'
        b"<instance><instanceId>b</instanceId><ipAddr>10.0.0.2</ipAddr><status>DOWN</status>"
        b'<port enabled="true">80</port></instance></application><application><name>BASKET</name>'
        b"<instance><instanceId>c</instanceId><ipAddr>10.0.0.3</ipAddr><status>UP</status>"
        b'<port enabled="true">81'
        b"</port></instance></application></applications>"
    )
    found = parse_applications(xml, "application/xml")
    assert reconcile_hash(found.records) == found.hashcode == "DOWN_1_UP_2_"
    assert [(r.app, r.id, r.weight) for r in found.records] == [
        ("CATALOG", "a", 4),
        ("CATALOG", "b", 1),
        ("BASKET", "c", 1),
    ]
    one = (  # a list of one, rendered as the object itself
        b'{"applications": {"apps__hashcode": "UP_1_", "application": {"name": "X", "instance": {'
        b'"instanceId": "i", "ipAddr": "10.0.0.9", "status": "UP",'
        b' "port": {"$": 8080, "@enabled": "true"}}}}}'
    )
    (record,) = parse_applications(one, "application/json").records
    assert (record.app, record.address, record.port, record.port_enabled) == ("X", "10.0.0.9", 8080, True)
