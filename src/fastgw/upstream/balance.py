"""Load balancers: which target of an upstream gets the next request.

One interface: ``Balancer.pick(targets, exchange) -> Target``. ``targets`` is the group's tuple
of usable targets, in config order and never empty; the group has already left out the target a
retry must avoid (``UpstreamGroup.pick``), so no algorithm deals with health or exclusion.
``exchange`` is the request (None when a test or tool asks outside a request).

PERF: round robin, p2c and ewma keep their per-request work in C, in a ``BalancerCore`` (``proxy/plan.pyx``)
the balancer holds as ``core``: the group picks through it without a Python call, and a core that
learns (ewma's) is told of each ended exchange by the group, in C too. Their ``pick`` here calls
the same core, so tests and the hot path run one implementation (round robin's, also when
another balancer uses it to break ties).

The algorithms (``balance:`` of an upstream in the config):

- ``round_robin`` (default): smooth weighted round robin, nginx's: each pick every target gains
  its weight, the highest wins and pays back the total. Weights 5:1:1 go a a b a c a a, never a
  burst of five to the heavy one. The other balancers use it to break ties and as the fallback.
- ``least_conn``: fewest requests in flight per unit of weight; ties (every target idle, most of
  the time at low load) go round robin among the tied, as in nginx's least_conn.
- ``p2c``: power of two choices: two distinct targets drawn at random by weight, the one with
  fewer in flight per unit of weight wins. Near least_conn's balance without looking at every
  target, and no herd onto the one target that looks least loaded.
- ``hash``: consistent hashing on a request key (client IP, header, cookie, path parameter);
  requests without the key go round robin. See ``HashRing`` for the choice of a ring.
- ``sticky``: a cookie the gateway sets names the target; see ``Sticky``.
- ``ewma``: peak-EWMA latency (Finagle, Linkerd): p2c on cost = expected latency x (in flight
  + 1) / weight; see ``PeakEwma``.

Per-target state lives on the ``Target`` (round robin's credit, the count in flight, ewma's
estimate) or in dicts keyed by the ``Target`` object (hashed by identity), so it survives a
target leaving rotation and coming back without any re-indexing. When the group's
targets change (discovery), ``targets_changed(targets)`` is called with the new list: state of
targets that left is dropped, a ring is rebuilt; targets that stay keep theirs. Anything hashed for
routing uses blake2b, never ``hash()``: Python salts ``hash()`` of bytes per process, and every
worker (and every gateway instance behind the same L4 balancer) must send a key to one target.
"""

from __future__ import annotations

import bisect
import os
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar

from fastgw._digests import blake2b
from fastgw._proxy import BalancerCore, Exchange, PeakEwmaCore, PowerOfTwoCore, RoundRobinCore, Target
from fastgw.config.schema import BalanceConfig, HashKey

if TYPE_CHECKING:
    import random  # tests pass a seeded source; the gateway seeds from os.urandom

Targets = Sequence[Target]
_V = TypeVar("_V")


class Balancer(ABC):
    """Chooses a target per request."""

    __slots__ = ()

    only_chooses: ClassVar[bool] = True
    """``pick`` has no effect besides its answer, so with one usable target the hot path may send
    to it without calling ``pick`` (``GroupCore.single``)."""

    @abstractmethod
    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        """One of ``targets`` (a non-empty tuple of usable targets) for this request."""

    @property
    def core(self) -> BalancerCore | None:
        """The C core the group picks through (and tells of ended exchanges when it learns)."""
        return None

    def targets_changed(self, targets: Targets) -> None:  # noqa: B027 - optional, not abstract
        """The group's targets are now ``targets`` (discovery): forget the ones that left."""


def _forget_others(state: dict[Target, _V], targets: Targets) -> None:
    """Drop the entries of targets not in ``targets`` (a dict keyed by target)."""
    kept = set(targets)
    for target in [t for t in state if t not in kept]:
        del state[target]


class RoundRobin(Balancer):
    """Smooth weighted round robin (see the module docstring). Picks in C (``RoundRobinCore``),
    each target's credit kept on its ``Target``: a target discovery removes takes its credit with
    it, and a new one starts at 0 and earns its turn like the others."""

    __slots__ = ("_core",)

    def __init__(self) -> None:
        self._core = RoundRobinCore(0)

    @property
    def core(self) -> BalancerCore:
        return self._core

    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        return self._core.pick(tuple(targets))


class LeastConn(Balancer):
    """Fewest in flight per unit of weight; weighted round robin among the tied."""

    __slots__ = ("_ties",)

    def __init__(self) -> None:
        self._ties = RoundRobin()

    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        tied = [targets[0]]
        for target in targets[1:]:
            # in_flight/weight compared as cross products: exact integers, no division.
            least = tied[0]
            difference = target.in_flight * least.weight - least.in_flight * target.weight
            if difference < 0:
                tied = [target]
            elif difference == 0:
                tied.append(target)
        return tied[0] if len(tied) == 1 else self._ties.pick(tied, exchange)

    def targets_changed(self, targets: Targets) -> None:
        self._ties.targets_changed(targets)


def _seed(rng: random.Random | None) -> int:
    """A 64-bit seed for a core's random source: from ``rng`` (tests), else the system's."""
    return rng.getrandbits(64) if rng is not None else int.from_bytes(os.urandom(8), "little")


class PowerOfTwo(Balancer):
    """Two random choices by weight; fewer in flight per unit of weight wins (the first on a tie,
    so an idle group spreads by weight). Picks in C (``PowerOfTwoCore``)."""

    __slots__ = ("_core",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._core = PowerOfTwoCore(_seed(rng))

    @property
    def core(self) -> BalancerCore:
        return self._core

    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        return self._core.pick(tuple(targets))


# -- consistent hashing --------------------------------------------------------------------------

KeyReader = Callable[[Exchange], bytes | None]


def cookie_value(exchange: Exchange, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's Cookie header(s) (RFC 6265 5.4), unquoted;
    None when absent or empty."""
    for header, value in exchange.headers:
        if header.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            key, equals, found = pair.strip().partition(b"=")
            if equals and key == name:
                found = found.strip()
                if found[:1] == b'"' and found[-1:] == b'"':
                    found = found[1:-1]
                return found or None
    return None


def key_reader(key: HashKey) -> KeyReader:
    """The function reading ``key`` off a request; None (or an empty value) means no key."""
    if key.source == "ip":
        return lambda exchange: exchange.client.peer_ip or None
    if key.source == "header":
        header = key.name.lower().encode("ascii")
        return lambda exchange: exchange.header(header) or None
    if key.source == "cookie":
        cookie = key.name.encode("ascii")
        return lambda exchange: cookie_value(exchange, cookie)
    if key.source == "param":
        param = key.name
        return lambda exchange: exchange.param(param) or None
    raise ValueError(f"unknown hash key source {key.source!r}")


def _hash64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class HashRing(Balancer):
    """Consistent hashing with a ring of virtual nodes.

    Why a ring and not rendezvous (HRW) hashing: HRW hashes the key once per target, and in Python
    a hash costs about a microsecond, so a request would pay N of them; the ring costs one hash
    and a bisect whatever the number of targets. Both remap only the keys of a target that leaves.

    The ring is built once, from every configured target: each gets ``points_per_unit x weight``
    points, a function of its own address and weight only (so adding a target on reload moves
    only the keys it takes). A key goes to the owner of the first point clockwise from its hash
    whose target is in ``targets``. A target that leaves rotation (health) or is excluded (retry)
    is simply walked past, without a rebuild: keys of the other targets stay where they are, and
    its keys go to whichever targets own the next points, which are spread over all of them.
    """

    __slots__ = ("_fallback", "_key", "_owners", "_points")

    POINTS_PER_UNIT = 160  # per unit of weight: target shares within a few percent (ketama's 160)
    MAX_POINTS = 16384  # fewer points per unit of weight when weights are large

    def __init__(self, key: KeyReader, targets: Targets) -> None:
        self._key = key
        self._fallback = RoundRobin()
        self._build(targets)

    def targets_changed(self, targets: Targets) -> None:
        """Rebuild from the new targets: a target's points depend only on its address and weight,
        so the keys of targets that stay stay with them; only keys of the ones that left move, and
        a new target takes its share from all the others."""
        self._fallback.targets_changed(targets)
        self._build(targets)

    def _build(self, targets: Targets) -> None:
        total = sum(t.weight for t in targets) or 1
        per_unit = max(1, min(self.POINTS_PER_UNIT, self.MAX_POINTS // total))
        ring: list[tuple[int, int]] = []
        for index, target in enumerate(targets):
            ring += [(point, index) for point in _ring_points(target.label, per_unit * target.weight)]
        ring.sort()
        # PERF: typed arrays: 8 bytes a point, and bisect on them is C code.
        self._points = array("Q", [point for point, _ in ring])
        self._owners = [targets[index] for _, index in ring]

    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        key = self._key(exchange) if exchange is not None else None
        if key is None:
            return self._fallback.pick(targets, exchange)
        owners = self._owners
        start = bisect.bisect(self._points, _hash64(key))
        for step in range(len(owners)):
            owner = owners[(start + step) % len(owners)]
            if owner in targets:
                return owner
        return self._fallback.pick(targets, exchange)  # targets not on the ring: cannot happen


def _ring_points(label: str, count: int) -> list[int]:
    """``count`` pseudo-random 64-bit ring positions for a target: eight per blake2b digest."""
    points: list[int] = []
    block = 0
    while len(points) < count:
        digest = blake2b(f"{label}#{block}".encode(), digest_size=64).digest()
        points += [int.from_bytes(digest[i : i + 8], "big") for i in range(0, 64, 8)]
        block += 1
    return points[:count]


# -- sticky sessions -----------------------------------------------------------------------------


def sticky_id(target: Target) -> bytes:
    """The cookie value naming a target: a short hash of its address. Opaque to a reader, equal
    in every worker and instance; not a secret (an address space can be enumerated)."""
    return blake2b(target.label.encode(), digest_size=8, person=b"fastgw-sticky").hexdigest().encode()


class Sticky(Balancer):
    """Cookie sticky sessions: a request whose cookie names a usable target goes there; any other
    is balanced round robin and its response sets the cookie to the target chosen
    (``Set-Cookie: NAME=ID; Path=/; HttpOnly``). A client whose target left gets a new one and a
    new cookie; so does a retry that had to avoid it."""

    __slots__ = ("_fallback", "_ids", "_name")

    only_chooses: ClassVar[bool] = False  # a lone target still sets its cookie

    def __init__(self, cookie: str) -> None:
        self._name = cookie.encode("ascii")
        self._fallback = RoundRobin()
        self._ids: dict[Target, bytes] = {}

    def targets_changed(self, targets: Targets) -> None:
        self._fallback.targets_changed(targets)
        _forget_others(self._ids, targets)

    def _id(self, target: Target) -> bytes:
        found = self._ids.get(target)
        if found is None:
            found = self._ids[target] = sticky_id(target)
        return found

    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        if exchange is None:
            return self._fallback.pick(targets, exchange)
        wanted = cookie_value(exchange, self._name)
        if wanted is not None:
            for target in targets:
                if self._id(target) == wanted:
                    return target
        target = self._fallback.pick(targets, exchange)
        prefix = self._name + b"="
        cookie = b"".join([prefix, self._id(target), b"; Path=/; HttpOnly"])
        # A retry picks again: replace the cookie an earlier pick of this exchange added.
        added = [
            (name, value)
            for name, value in exchange.add_response_headers or ()
            if not (name == b"Set-Cookie" and value.startswith(prefix))
        ]
        exchange.add_response_headers = [*added, (b"Set-Cookie", cookie)]
        return target


# -- peak EWMA -----------------------------------------------------------------------------------


class PeakEwma(Balancer):
    """Latency-aware: p2c on cost = latency estimate x (in flight + 1) / weight.

    The estimate per target is an exponentially weighted moving average of the time to the
    response head, weighted by time: a sample after ``dt`` seconds gets weight ``1 - exp(-dt/decay)``.
    It is peak sensitive: a sample above the estimate replaces it at once, so a target that turns
    slow loses traffic on its next answer, while one that turns fast wins it back over ``decay``
    seconds. Between samples the estimate decays towards zero with the same time constant, so a
    target avoided for looking slow is tried again later (Finagle and Linkerd do the same).

    A target never measured costs nothing while idle and is avoided while its first request is out
    (Finagle's penalty): it gets one probe, not a flood. A failed exchange counts as a sample of
    at least ``failure_penalty`` seconds: a target that fails fast (connection refused) must not
    look like the fastest one and draw all the traffic; ejecting it is the outlier detector's job.

    Picks and learns in C (``PeakEwmaCore``); the estimate is kept on each ``Target``.
    """

    __slots__ = ("_core",)

    DECAY = 10.0  # seconds; Finagle's and Linkerd's default
    FAILURE_PENALTY = 1.0  # seconds

    def __init__(
        self,
        decay: float = DECAY,
        failure_penalty: float = FAILURE_PENALTY,
        rng: random.Random | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        # ``now``: a clock for tests; by default the monotonic clock of exchange.upstream_sent_at
        # and upstream_head_at.
        self._core = PeakEwmaCore(_seed(rng), decay, failure_penalty, now)

    @property
    def core(self) -> BalancerCore:
        return self._core

    def estimate(self, target: Target, now: float) -> float | None:
        """The latency estimate in seconds at ``now``, decayed since the last sample; None if never
        measured."""
        return self._core.estimate(target, now)

    def pick(self, targets: Targets, exchange: Exchange | None) -> Target:
        return self._core.pick(tuple(targets))

    def observe(self, exchange: Exchange) -> None:
        """Learn from an ended exchange (the group calls the core directly)."""
        self._core.observe(exchange)

    def record(self, target: Target, sample: float, now: float) -> None:
        """Fold one latency sample (seconds) into the target's estimate."""
        self._core.record_sample(target, sample, now)


# -- from the config -----------------------------------------------------------------------------


def make_balancer(config: BalanceConfig, targets: Targets) -> Balancer:
    """The balancer an upstream's ``balance:`` asks for, over its configured ``targets``."""
    algorithm = config.algorithm
    if algorithm == "round_robin":
        return RoundRobin()
    if algorithm == "least_conn":
        return LeastConn()
    if algorithm == "p2c":
        return PowerOfTwo()
    if algorithm == "ewma":
        return PeakEwma()
    if algorithm == "hash" and config.hash_key is not None:
        return HashRing(key_reader(config.hash_key), targets)
    if algorithm == "sticky":
        return Sticky(config.cookie)
    raise ValueError(f"unknown balance algorithm {algorithm!r}")
