"""Balancers (upstream/balance.py) and the usable targets of a group (upstream/group.py).

Balancers are driven with real ``Target`` objects and a small fake exchange carrying only what
they read; timing-dependent ones (p2c, EWMA) get a seeded random source and a fake clock.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._proxy import PoolCore, Target
from fastgw.config.schema import BalanceConfig, HashKey, TargetConfig, UpstreamConfig
from fastgw.errors import HttpFault, UpstreamFault
from fastgw.upstream.balance import (
    HashRing,
    LeastConn,
    PeakEwma,
    PowerOfTwo,
    RoundRobin,
    Sticky,
    cookie_value,
    key_reader,
    sticky_id,
)
from fastgw.upstream.group import UpstreamGroup
from fastgw.upstream.pool import TargetPool

# -- fakes ---------------------------------------------------------------------------------------


def target(port: int, weight: int = 1, in_flight: int = 0) -> Target:
    t = Target("10.0.0.1", port, weight, PoolCore(1, 1.0), f"10.0.0.1:{port}".encode())
    t.in_flight = in_flight
    return t


@dataclass
class FakeClient:
    peer_ip: bytes = b"192.0.2.7"


@dataclass
class FakeExchange:
    """What balancers read of an exchange (the real one is a cdef class made by the hot path)."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    params: dict[str, bytes] = field(default_factory=dict)
    client: FakeClient = field(default_factory=FakeClient)
    add_response_headers: list[tuple[bytes, bytes]] | None = None
    target: Target | None = None
    upstream_error: HttpFault | None = None
    upstream_sent_at: float = 0.0
    upstream_head_at: float = 0.0
    response_status: int = 0

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name), None)

    def param(self, name: str) -> bytes | None:
        return self.params.get(name)


def with_header(name: str, value: str) -> FakeExchange:
    return FakeExchange(headers=[(name.encode(), value.encode())])


def ports(picks: Iterable[Target]) -> list[int]:
    return [t.port for t in picks]


# -- round robin ---------------------------------------------------------------------------------


def test_round_robin_is_smooth() -> None:
    """nginx's example: weights 5, 1, 1 interleave instead of sending five in a row to a."""
    a, b, c = target(1, 5), target(2), target(3)
    rr = RoundRobin()
    assert ports(rr.pick((a, b, c), None) for _ in range(14)) == [1, 1, 2, 1, 3, 1, 1] * 2


def test_round_robin_shares_follow_weights_exactly() -> None:
    targets = (target(1, 3), target(2, 2), target(3, 1))
    rr = RoundRobin()
    assert Counter(ports(rr.pick(targets, None) for _ in range(600))) == {1: 300, 2: 200, 3: 100}


def test_round_robin_keeps_spreading_when_a_target_leaves_and_comes_back() -> None:
    """State is kept per target, so the set may change between picks: a target carries over an
    offset of at most one round, and shares stay exact to within a pick."""
    a, b, c = target(1), target(2), target(3)
    rr = RoundRobin()
    for _ in range(7):
        rr.pick((a, b, c), None)
    counts = Counter(ports(rr.pick((a, c), None) for _ in range(100)))
    assert abs(counts[1] - 50) <= 1 and counts[1] + counts[3] == 100
    counts = Counter(ports(rr.pick((a, b, c), None) for _ in range(300)))
    assert all(abs(counts[p] - 100) <= 1 for p in (1, 2, 3))


# -- least connections ---------------------------------------------------------------------------


def test_least_conn_picks_fewest_in_flight() -> None:
    a, b, c = target(1, in_flight=3), target(2, in_flight=1), target(3, in_flight=2)
    assert LeastConn().pick((a, b, c), None) is b


def test_least_conn_counts_in_flight_per_unit_of_weight() -> None:
    heavy, light = target(1, weight=4, in_flight=3), target(2, weight=1, in_flight=1)
    assert LeastConn().pick((heavy, light), None) is heavy  # 3/4 < 1/1


def test_least_conn_breaks_ties_by_weighted_round_robin() -> None:
    a, b, c = target(1, weight=2), target(2), target(3, in_flight=1)
    lc = LeastConn()
    # a and b are tied (idle); c is busy and never chosen; a gets twice b's share.
    assert Counter(ports(lc.pick((a, b, c), None) for _ in range(30))) == {1: 20, 2: 10}


def test_least_conn_follows_load_as_it_changes() -> None:
    targets = (target(1), target(2), target(3))
    lc = LeastConn()
    for _ in range(9):  # requests that stay in flight fill the targets evenly
        lc.pick(targets, None).in_flight += 1
    assert [t.in_flight for t in targets] == [3, 3, 3]
    targets[1].in_flight = 0  # its requests finished
    assert lc.pick(targets, None) is targets[1]


# -- power of two choices ------------------------------------------------------------------------


def test_p2c_idle_spreads_by_weight() -> None:
    targets = (target(1, weight=3), target(2), target(3))
    p2c = PowerOfTwo(random.Random(1))
    counts = Counter(ports(p2c.pick(targets, None) for _ in range(5000)))
    assert counts[1] / 5000 == pytest.approx(0.6, abs=0.03)
    assert counts[2] / 5000 == pytest.approx(0.2, abs=0.03)


def test_p2c_never_picks_the_most_loaded_of_three() -> None:
    """Every pair that contains the busiest target also contains a less busy winner."""
    targets = (target(1, in_flight=1), target(2, in_flight=9), target(3, in_flight=2))
    p2c = PowerOfTwo(random.Random(2))
    counts = Counter(ports(p2c.pick(targets, None) for _ in range(3000)))
    assert counts[2] == 0
    assert counts[1] > counts[3] > 0  # 1 wins both of its pairs; 3 only the pair with 2


def test_p2c_with_two_targets_is_least_loaded() -> None:
    a, b = target(1, weight=2, in_flight=3), target(2, in_flight=1)  # 1.5 vs 1 per unit of weight
    p2c = PowerOfTwo(random.Random(3))
    assert {p2c.pick((a, b), None).port for _ in range(200)} == {2}


def test_p2c_with_one_target() -> None:
    only = target(1)
    assert PowerOfTwo().pick((only,), None) is only


# -- consistent hashing --------------------------------------------------------------------------


def ring(targets: tuple[Target, ...], source: str = "header", name: str = "x-user") -> HashRing:
    return HashRing(key_reader(HashKey(source, name)), targets)


def test_hash_pins_each_key_to_one_target() -> None:
    targets = tuple(target(p) for p in (1, 2, 3))
    hr = ring(targets)
    for user in ("alice", "bob", "carol", "dave"):
        picks = {hr.pick(targets, with_header("X-User", user)).port for _ in range(20)}
        assert len(picks) == 1, user


def test_hash_spreads_keys_by_weight() -> None:
    targets = (target(1, weight=3), target(2), target(3))
    hr = ring(targets)
    counts = Counter(ports(hr.pick(targets, with_header("X-User", f"user{i}")) for i in range(6000)))
    assert counts[1] / 6000 == pytest.approx(0.6, abs=0.06)
    assert counts[2] / 6000 == pytest.approx(0.2, abs=0.05)
    assert counts[3] / 6000 == pytest.approx(0.2, abs=0.05)


@pytest.mark.parametrize("exchange", [FakeExchange(), with_header("X-User", ""), None])
def test_hash_without_a_key_goes_round_robin(exchange: FakeExchange | None) -> None:
    targets = tuple(target(p) for p in (1, 2, 3))
    hr = ring(targets)
    assert ports(hr.pick(targets, exchange) for _ in range(6)) == [1, 2, 3, 1, 2, 3]  # type: ignore[arg-type]


_PICKS_SCRIPT = """
import sys
from tests.unit.test_balance import ring, target, with_header
targets = tuple(target(p) for p in (1, 2, 3, 4))
hr = ring(targets)
print(",".join(str(hr.pick(targets, with_header("X-User", f"u{i}")).port) for i in range(200)))
"""


def test_hash_agrees_between_processes() -> None:
    """Every worker must send a key to the same target: points and keys are hashed with blake2b,
    not with hash(), which Python salts per process (PYTHONHASHSEED)."""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _PICKS_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert len(set(outputs.pop().strip().split(","))) == 4


@pytest.mark.parametrize(
    ("source", "name", "exchange", "key"),
    [
        ("ip", "", FakeExchange(client=FakeClient(b"198.51.100.4")), b"198.51.100.4"),
        ("header", "x-user", with_header("X-USER", "u1"), b"u1"),
        ("header", "x-user", with_header("X-Other", "u1"), None),
        ("cookie", "sid", with_header("Cookie", "a=1; sid=s-9; b=2"), b"s-9"),
        ("cookie", "sid", with_header("Cookie", 'sid="quoted"'), b"quoted"),
        ("cookie", "sid", with_header("Cookie", "sidx=1; xsid=2"), None),
        ("cookie", "sid", with_header("Cookie", "sid="), None),
        ("param", "id", FakeExchange(params={"id": b"42"}), b"42"),
        ("param", "id", FakeExchange(params={"other": b"42"}), None),
    ],
)
def test_hash_key_sources(source: str, name: str, exchange: FakeExchange, key: bytes | None) -> None:
    assert key_reader(HashKey(source, name))(exchange) == key  # type: ignore[arg-type]


def test_cookie_in_a_second_cookie_header() -> None:
    exchange = FakeExchange(headers=[(b"Cookie", b"a=1"), (b"cookie", b"sid=two")])
    assert cookie_value(exchange, b"sid") == b"two"  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, database=None)
@given(
    weights=st.lists(st.integers(1, 4), min_size=2, max_size=8),
    leaving=st.integers(0, 7),
    salt=st.text(max_size=4),
)
def test_hash_a_leaving_target_moves_only_its_own_keys(weights: list[int], leaving: int, salt: str) -> None:
    """Consistent hashing: when one of N targets leaves, the keys of the others stay put and only
    its own keys move, about its share of all keys."""
    targets = tuple(target(9000 + i, weight) for i, weight in enumerate(weights))
    gone = targets[leaving % len(targets)]
    rest = tuple(t for t in targets if t is not gone)
    hr = ring(targets)
    keys = [with_header("X-User", f"{salt}-{i}") for i in range(1500)]
    before = [hr.pick(targets, k) for k in keys]
    after = [hr.pick(rest, k) for k in keys]
    for old, new in zip(before, after, strict=True):
        assert new is old if old is not gone else new in rest
    moved = sum(old is gone for old in before) / len(keys)
    share = gone.weight / sum(weights)
    assert share * 0.6 - 0.03 < moved < share * 1.4 + 0.03


def test_hash_excluded_target_keys_go_elsewhere_and_come_back() -> None:
    group = make_group(("hash", HashKey("header", "x-user")), targets=3)
    alice = with_header("X-User", "alice")
    home = group.pick(alice)  # type: ignore[arg-type]
    retry = group.pick(alice, exclude=home)  # type: ignore[arg-type]
    assert retry is not home
    assert group.pick(alice, exclude=retry) is home  # type: ignore[arg-type]


# -- sticky sessions -----------------------------------------------------------------------------


def set_cookies(exchange: FakeExchange) -> list[bytes]:
    return [v for n, v in exchange.add_response_headers or () if n == b"Set-Cookie"]


def test_sticky_sets_a_cookie_then_pins() -> None:
    targets = tuple(target(p) for p in (1, 2, 3))
    sticky = Sticky("fgw_sticky")
    first = FakeExchange()
    chosen = sticky.pick(targets, first)  # type: ignore[arg-type]
    [cookie] = set_cookies(first)
    value = cookie.split(b";")[0].split(b"=", 1)[1]
    assert cookie == b"fgw_sticky=" + value + b"; Path=/; HttpOnly"
    for _ in range(10):  # the browser sends it back: always the same target, no new cookie
        again = with_header("Cookie", f"other=1; fgw_sticky={value.decode()}")
        assert sticky.pick(targets, again) is chosen  # type: ignore[arg-type]
        assert again.add_response_headers is None


def test_sticky_id_does_not_show_the_address() -> None:
    t = target(8080)
    assert b"10.0.0.1" not in sticky_id(t) and b"8080" not in sticky_id(t)
    assert sticky_id(t) == sticky_id(target(8080)) != sticky_id(target(8081))
    assert len(sticky_id(t)) == 16


def test_sticky_without_a_cookie_goes_round_robin() -> None:
    targets = tuple(target(p) for p in (1, 2, 3))
    sticky = Sticky("s")
    assert ports(sticky.pick(targets, FakeExchange()) for _ in range(6)) == [1, 2, 3, 1, 2, 3]  # type: ignore[arg-type]


@pytest.mark.parametrize("cookie", ["s=forged", "s=", "S=whatever"])
def test_sticky_unknown_cookie_gets_a_new_one(cookie: str) -> None:
    targets = (target(1), target(2))
    exchange = with_header("Cookie", cookie)
    picked = Sticky("s").pick(targets, exchange)  # type: ignore[arg-type]
    assert set_cookies(exchange) == [b"s=" + sticky_id(picked) + b"; Path=/; HttpOnly"]


def test_sticky_target_gone_moves_the_session() -> None:
    a, b, c = target(1), target(2), target(3)
    exchange = with_header("Cookie", "s=" + sticky_id(b).decode())
    picked = Sticky("s").pick((a, c), exchange)  # type: ignore[arg-type]
    assert picked in (a, c)
    assert set_cookies(exchange) == [b"s=" + sticky_id(picked) + b"; Path=/; HttpOnly"]


def test_sticky_retry_replaces_its_cookie_and_keeps_other_headers() -> None:
    a, b = target(1), target(2)
    sticky = Sticky("s")
    exchange = FakeExchange(add_response_headers=[(b"X-Other", b"kept")])
    first = sticky.pick((a, b), exchange)  # type: ignore[arg-type]
    second = sticky.pick(tuple(t for t in (a, b) if t is not first), exchange)  # type: ignore[arg-type]
    assert exchange.add_response_headers == [
        (b"X-Other", b"kept"),
        (b"Set-Cookie", b"s=" + sticky_id(second) + b"; Path=/; HttpOnly"),
    ]


# -- peak EWMA -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answered(ewma: PeakEwma, t: Target, seconds: float, clock: Clock) -> None:
    """One exchange to ``t`` whose response head came ``seconds`` after the request went out."""
    ewma.observe(
        FakeExchange(target=t, upstream_sent_at=clock.now - seconds, upstream_head_at=clock.now)  # type: ignore[arg-type]
    )


def test_ewma_prefers_the_fast_target() -> None:
    clock = Clock()
    fast, slow = target(1), target(2)
    ewma = PeakEwma(rng=random.Random(4), now=clock)
    for _ in range(5):
        answered(ewma, fast, 0.005, clock)
        answered(ewma, slow, 0.050, clock)
        clock.now += 0.1
    assert {ewma.pick((fast, slow), None).port for _ in range(100)} == {1}
    fast.in_flight = 12  # ... until the fast one is so busy that waiting costs more
    assert ewma.pick((fast, slow), None) is slow


def test_ewma_is_peak_sensitive_and_decays() -> None:
    clock = Clock()
    t = target(1)
    ewma = PeakEwma(decay=10.0, now=clock)
    for _ in range(10):
        answered(ewma, t, 0.010, clock)
        clock.now += 0.1
    answered(ewma, t, 0.500, clock)  # one slow answer replaces the estimate at once
    assert ewma.estimate(t, clock.now) == pytest.approx(0.5)
    clock.now += 10.0  # one time constant later, with no traffic: down to 1/e
    assert ewma.estimate(t, clock.now) == pytest.approx(0.5 / 2.718281828, rel=1e-6)
    answered(ewma, t, 0.010, clock)  # a fast sample after that long pulls most of the way
    assert ewma.estimate(t, clock.now) == pytest.approx(0.5 / 2.718281828 + 0.010 * (1 - 1 / 2.718281828))


def test_ewma_counts_a_failure_as_slow() -> None:
    clock = Clock()
    failing, healthy = target(1), target(2)
    ewma = PeakEwma(rng=random.Random(5), now=clock)
    answered(ewma, healthy, 0.020, clock)
    ewma.observe(FakeExchange(target=failing, upstream_error=UpstreamFault("refused", 502)))  # type: ignore[arg-type]
    assert ewma.estimate(failing, clock.now) == PeakEwma.FAILURE_PENALTY
    assert {ewma.pick((failing, healthy), None).port for _ in range(50)} == {2}


def test_ewma_gives_an_unmeasured_target_one_probe() -> None:
    clock = Clock()
    known, new = target(1), target(2)
    ewma = PeakEwma(rng=random.Random(6), now=clock)
    answered(ewma, known, 0.010, clock)
    assert ewma.pick((known, new), None) is new  # idle and unmeasured: free
    new.in_flight = 1
    assert ewma.pick((known, new), None) is known  # its probe is out: wait for the answer


def test_ewma_ignores_exchanges_the_upstream_never_saw() -> None:
    clock = Clock()
    t = target(1)
    ewma = PeakEwma(now=clock)
    ewma.observe(FakeExchange(target=t))  # type: ignore[arg-type]
    ewma.observe(FakeExchange(target=None, upstream_head_at=1.0, upstream_sent_at=0.5))  # type: ignore[arg-type]
    assert ewma.estimate(t, clock.now) is None


# -- the group: usable targets, single, observers ------------------------------------------------


def make_group(
    algorithm: str | tuple[str, HashKey] = "round_robin", targets: int = 3, weights: tuple[int, ...] = ()
) -> UpstreamGroup:
    name, key = algorithm if isinstance(algorithm, tuple) else (algorithm, None)
    config = UpstreamConfig(
        name="up",
        targets=tuple(
            TargetConfig("127.0.0.1", 9001 + i, weights[i] if weights else 1) for i in range(targets)
        ),
        balance=BalanceConfig(algorithm=name, hash_key=key),
    )
    return UpstreamGroup(config, lambda key, _upstream: TargetPool(key))


def test_single_target_default_balance_skips_pick() -> None:
    group = make_group(targets=1)
    assert group.single is group.targets[0]
    assert not group.observes


@pytest.mark.parametrize("algorithm", ["least_conn", "p2c", "ewma", "sticky"])
def test_other_balancers_need_pick_with_several_targets(algorithm: str) -> None:
    assert make_group(algorithm).single is None


def test_sticky_runs_pick_even_for_one_target() -> None:
    """pick() sets the cookie, so it must run even when there is one target."""
    assert make_group("sticky", targets=1).single is None


def test_mark_takes_targets_out_and_back() -> None:
    group = make_group()
    a, b, c = group.targets
    group.mark(b, False)
    assert group.usable == (a, c)
    assert {group.pick().port for _ in range(10)} == {a.port, c.port}
    group.mark(b, False)  # again: no change
    group.mark(b, True)
    assert group.usable == (a, b, c)  # config order kept


def test_single_follows_the_usable_targets() -> None:
    group = make_group()
    a, b, c = group.targets
    group.mark(a, False)
    group.mark(c, False)
    assert group.single is b  # one left: the hot path skips pick()
    group.mark(b, False)
    assert group.single is None  # none left: pick() must run, and answers 503
    with pytest.raises(UpstreamFault) as info:
        group.pick()
    assert (info.value.status, info.value.message) == (503, "no healthy target in upstream 'up'")
    group.mark(c, True)
    assert group.single is c and group.pick() is c


def test_lone_target_marked_down_makes_pick_run() -> None:
    group = make_group(targets=1)
    only = group.targets[0]
    group.mark(only, False)
    assert group.single is None
    with pytest.raises(UpstreamFault):
        group.pick()
    group.mark(only, True)
    assert group.single is only


def test_mark_a_stranger_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not in upstream 'up'"):
        make_group().mark(target(1), False)


def test_exclude_avoids_a_target_unless_it_is_the_only_one() -> None:
    group = make_group()
    a, b, c = group.targets
    assert {group.pick(None, exclude=b).port for _ in range(10)} == {a.port, c.port}
    group.mark(a, False)
    group.mark(c, False)
    assert group.pick(None, exclude=b) is b  # retrying the same target beats failing


def test_observers_and_observes() -> None:
    group = make_group()
    seen: list[object] = []
    assert not group.observes
    group.add_observer(seen.append)
    group.add_observer(lambda exchange: seen.append(("second", exchange)))
    assert group.observes
    group.observe("x")  # type: ignore[arg-type]
    assert seen == ["x", ("second", "x")]


def test_ewma_group_observes_and_learns() -> None:
    group = make_group("ewma", targets=2)
    assert group.observes
    a = group.targets[0]
    group.observe(FakeExchange(target=a, upstream_sent_at=1.0, upstream_head_at=1.25))  # type: ignore[arg-type]
    assert isinstance(group.balancer, PeakEwma)
    assert group.balancer.estimate(a, 1.25) == pytest.approx(0.25)
