"""Request coalescing: concurrent misses for one key make one upstream call.

The first miss for a base key becomes the *leader* of a ``Flight`` and goes upstream; misses for
the same key that arrive while it is in the air *follow*: they wait for the flight to land, at
most ``timeout`` seconds, then go upstream themselves. The flight lands with the stored entry
(followers answer from it, as hits) or with nothing, when the leader's response turned out not
storable, too large, or cut mid-body, or the leader's request ended without a response: the
followers are then released at once to make their own calls.

A flight holds no future until a follower asks for one, so a miss nobody follows costs a dict
insert and delete. Per process (followers are requests of the same event loop).
"""

from __future__ import annotations

import asyncio

from fastgw.plugins.cache.store import Entry


class Landing:
    """What a flight brought: the entry, the Vary names it was stored under (``()`` when it does
    not vary) and the leader's variant key, to check a follower asks for the same variant."""

    __slots__ = ("entry", "variant", "vary")

    def __init__(self, entry: Entry, vary: tuple[bytes, ...], variant: bytes) -> None:
        self.entry = entry
        self.vary = vary
        self.variant = variant


class Flight:
    __slots__ = ("_landed", "key", "landing")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.landing: Landing | None = None
        self._landed: asyncio.Future[Landing | None] | None = None

    async def wait(self, timeout: float) -> Landing | None:
        """The landing, or None when the flight brought nothing or not within ``timeout``."""
        if self._landed is None:
            self._landed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                # shield: a follower that gives up must not cancel what the others wait for
                return await asyncio.shield(self._landed)
        except TimeoutError:
            return None

    def land(self, landing: Landing | None) -> None:
        self.landing = landing
        if self._landed is not None and not self._landed.done():
            self._landed.set_result(landing)


class Coalescer:
    """The flights in the air, by base key."""

    __slots__ = ("flights", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.flights: dict[bytes, Flight] = {}

    def in_air(self, key: bytes) -> Flight | None:
        return self.flights.get(key)

    def take_off(self, key: bytes) -> Flight:
        flight = self.flights[key] = Flight(key)
        return flight

    def land(self, flight: Flight, landing: Landing | None) -> None:
        """End ``flight`` (once; later calls do nothing) and wake its followers."""
        if self.flights.get(flight.key) is flight:
            del self.flights[flight.key]
            flight.land(landing)
