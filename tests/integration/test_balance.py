"""Balancers through the real gateway, with three real upstream processes.

Which target answered: the gateway sends each target its own ``Host: 127.0.0.1:PORT``, and the
upstream's ``/echo`` reports the headers it received.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastgw.upstream.group import UpstreamGroup
from tests.conftest import start_upstream
from tests.support.gateway import RunningGateway
from tests.support.ports import free_port
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

Make = Callable[..., RunningGateway]


@pytest.fixture(scope="module")
def three() -> Iterator[list[int]]:
    """Ports of three upstream processes, shared by this module's tests."""
    started = [start_upstream() for _ in range(3)]
    yield [port for _, port in started]
    for proc, _ in started:
        proc.stop()


def balanced(ports: list[int], balance: object) -> dict[str, Any]:
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0"}],
        "upstreams": {"up": {"targets": [f"127.0.0.1:{p}" for p in ports], "balance": balance}},
        "routes": [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def get(gw: RunningGateway, path: str = "/echo", headers: list[tuple[str, str]] | None = None) -> RawResponse:
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", path, headers or [], host="test.local"))
        return read_response(sock)


def served_by(response: RawResponse) -> int:
    """The port of the target that answered (from the Host it received)."""
    assert response.status == 200, response
    host = next(value for name, value in response.json()["headers"] if name.lower() == "host")
    return int(host.rsplit(":", 1)[1])


def test_round_robin_spreads_evenly(make_gateway: Make, three: list[int]) -> None:
    gw = make_gateway(balanced(three, "round_robin"))
    assert Counter(served_by(get(gw)) for _ in range(30)) == {port: 10 for port in three}


def test_hash_on_a_header_pins_each_key(make_gateway: Make, three: list[int]) -> None:
    gw = make_gateway(balanced(three, {"hash": "header:X-User"}))
    homes = {}
    # 64 keys: the ring's shares depend on the targets' (random) ports, and with a dozen keys a
    # target with a small share got none about one run in ten.
    for user in (f"user{i}" for i in range(64)):
        answered = {served_by(get(gw, headers=[("X-User", user)])) for _ in range(3)}
        assert len(answered) == 1, (user, answered)
        homes[user] = answered.pop()
    assert set(homes.values()) == set(three)  # and the keys are spread over every target
    # Without the header: round robin.
    assert Counter(served_by(get(gw)) for _ in range(6)) == {port: 2 for port in three}


def test_sticky_sets_the_cookie_then_pins(make_gateway: Make, three: list[int]) -> None:
    gw = make_gateway(balanced(three, {"sticky": {"cookie": "route_id"}}))
    first = get(gw)
    home = served_by(first)
    cookie = first.header("set-cookie")
    assert cookie is not None and cookie.startswith("route_id=") and cookie.endswith("; Path=/; HttpOnly")
    pair = cookie.split(";", 1)[0]
    assert str(home) not in pair and "127.0.0.1" not in pair  # opaque
    for _ in range(9):
        again = get(gw, headers=[("Cookie", f"theme=dark; {pair}")])
        assert served_by(again) == home
        assert again.header("set-cookie") is None
    # A client without the cookie is balanced (and gets its own cookie).
    others = [get(gw) for _ in range(3)]
    assert {served_by(r) for r in others} == set(three)
    assert all(r.header("set-cookie") for r in others)


def test_least_conn_avoids_targets_held_busy(make_gateway: Make, three: list[int]) -> None:
    gw = make_gateway(balanced(three, "least_conn"))
    group = gw.plan.upstreams["up"]
    in_flight: Callable[[], dict[int, int]] = lambda: gw.call(  # noqa: E731
        lambda: {t.port: t.in_flight for t in group.targets}
    )
    slow = [connect(gw.port) for _ in range(2)]
    try:
        for sock in slow:
            sock.sendall(build_request("GET", "/slow/800", [], host="test.local"))
        deadline = time.monotonic() + 5
        while sum(in_flight().values()) < 2:
            assert time.monotonic() < deadline, in_flight()
            time.sleep(0.005)
        busy = {port for port, count in in_flight().items() if count}
        assert len(busy) == 2  # the second slow request already avoided the first one's target
        free = set(three) - busy
        assert {served_by(get(gw)) for _ in range(10)} == free
        assert {served_by(read_response(sock)) for sock in slow} == busy
    finally:
        for sock in slow:
            sock.close()


def test_marked_down_target_leaves_rotation(make_gateway: Make, three: list[int]) -> None:
    gw = make_gateway(balanced(three, "round_robin"))
    group = gw.plan.upstreams["up"]
    down = group.targets[1]
    gw.call(group.mark, down, False)
    assert Counter(served_by(get(gw)) for _ in range(10)) == {three[0]: 5, three[2]: 5}
    gw.call(group.mark, down, True)
    assert set(Counter(served_by(get(gw)) for _ in range(6))) == set(three)


def test_no_usable_target_answers_503(make_gateway: Make, three: list[int]) -> None:
    gw = make_gateway(balanced(three, "round_robin"))
    group = gw.plan.upstreams["up"]
    gw.call(lambda: [group.mark(t, False) for t in group.targets])
    try:
        with connect(gw.port) as sock:
            sock.sendall(build_request("GET", "/echo", [], host="test.local"))
            response = read_response(sock, timeout=0.5)
    finally:
        gw.stop(drain=0.1)  # a stuck exchange would hold the default drain for its whole timeout
    assert response.status == 503
    assert response.json()["error"] == "no healthy target in upstream 'up'"


@pytest.mark.parametrize("balance", ["p2c", "ewma"])
def test_p2c_and_ewma_pick_in_c_until_a_gate_must_be_told(
    make_gateway: Make, three: list[int], balance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """p2c and ewma pick in C: the group's Python ``pick`` runs for no request, until a target is
    gated (a half-open breaker's trials): then every request goes through it and the gate hears
    of each pick of its target; without the gate, C again."""
    python_picks: list[int] = []
    python_pick = UpstreamGroup.pick

    def counted_pick(self: UpstreamGroup, *args: Any, **kwargs: Any) -> Any:
        python_picks.append(1)
        return python_pick(self, *args, **kwargs)

    monkeypatch.setattr(UpstreamGroup, "pick", counted_pick)
    gw = make_gateway(balanced(three, balance))
    group = gw.plan.upstreams["up"]
    assert {served_by(get(gw)) for _ in range(30)} == set(three)
    assert python_picks == []
    gated = group.targets[0]
    told: list[int] = []
    gw.call(group.gate, gated, lambda target, _exchange: told.append(target.port))
    served = [served_by(get(gw)) for _ in range(12)]
    assert len(python_picks) == 12
    assert told == [port for port in served if port == gated.port]
    gw.call(group.gate, gated, None)
    assert {served_by(get(gw)) for _ in range(10)} <= set(three)
    assert len(python_picks) == 12


@pytest.mark.parametrize("balance", ["p2c", "ewma"])
def test_p2c_and_ewma_skip_a_target_out_of_rotation(
    make_gateway: Make, three: list[int], balance: str
) -> None:
    gw = make_gateway(balanced(three, balance))
    group = gw.plan.upstreams["up"]
    down = group.targets[1]
    gw.call(group.mark, down, False)
    assert {served_by(get(gw)) for _ in range(30)} == {three[0], three[2]}
    gw.call(group.mark, down, True)
    served = {served_by(get(gw)) for _ in range(30)}
    # back in rotation: p2c spreads over all three; ewma probes the unmeasured one, then prefers
    # whichever has answered fastest
    assert served == set(three) if balance == "p2c" else down.port in served


def test_ewma_learns_each_targets_latency_from_its_exchanges(make_gateway: Make, three: list[int]) -> None:
    """The estimate is fed from the exchange's own timestamps (request head sent, response head
    read): a target that took 300 ms costs the most and gets no request while that lasts."""
    gw = make_gateway(balanced(three, "ewma"))
    group = gw.plan.upstreams["up"]
    slow = served_by(get(gw, "/slow/300"))
    estimates: dict[int, float | None] = gw.call(
        lambda: {t.port: group.balancer.estimate(t, time.monotonic()) for t in group.targets}  # type: ignore[attr-defined]
    )
    assert estimates.pop(slow) >= 0.3
    assert set(estimates.values()) == {None}  # the others have not answered yet
    assert slow not in {served_by(get(gw)) for _ in range(20)}


def test_ewma_counts_a_refusing_target_as_slow(make_gateway: Make, three: list[int]) -> None:
    """A failed exchange is a sample of at least the failure penalty (1 s): a target refusing
    connections answers fastest, and must not draw the traffic for it."""
    refused = free_port()  # nothing listens there
    gw = make_gateway(balanced([refused, three[0]], "ewma"))
    group = gw.plan.upstreams["up"]
    statuses = [get(gw).status for _ in range(20)]
    assert statuses.count(502) == 1  # its one probe; then the live target wins every pair
    dead = next(t for t in group.targets if t.port == refused)
    # 1 s, decayed with a 10 s time constant since
    assert gw.call(lambda: group.balancer.estimate(dead, time.monotonic())) > 0.9  # type: ignore[attr-defined]
