"""The process's HTTP client for control-plane calls (auth services, token introspection), never
for proxied traffic, which has its own protocols and pools.

One ``aiohttp.ClientSession`` per event loop, created at the first call on the running loop: the
gateway may fork workers after the plan is compiled, and a session's connector and sockets must
belong to the process and loop that use them, so nothing is created in a plugin's ``compile``.
(One process normally runs one loop; tests run several gateways, each on its own loop.)
``Gateway.drain`` closes the current loop's session with ``close_control_session``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp  # imported at the first call: gateways without such plugins never load it

__all__ = ["MAX_CONNECTIONS", "close_control_session", "control_session"]

MAX_CONNECTIONS = 100  # open at once to all control-plane services; more calls wait (in their timeout)
MAX_CONNECTIONS_PER_HOST = 50
DEFAULT_TIMEOUT = (10, 5)  # total and connect seconds; callers pass their own per call

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def control_session() -> aiohttp.ClientSession:
    """The running loop's session (made on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        import aiohttp

        for gone in [other for other in _sessions if other.is_closed()]:
            del _sessions[gone]  # a loop that ended without a drain: its session went with it
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS_PER_HOST),
            timeout=aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT[0], connect=DEFAULT_TIMEOUT[1]),
            # Shared by every request of every client: a cookie one user's auth answer set must
            # never be sent along with the next user's check.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # no proxy settings from the environment for internal services
        )
        _sessions[loop] = session
    return session


async def close_control_session() -> None:
    """Close the running loop's session, if one was made (at drain)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.close()
