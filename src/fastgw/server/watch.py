"""``--watch``: reload when the config file changes (polled: no inotify dependency, and it sees
an editor's rename-over-the-file as well as an in-place write)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 1.0


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing for a moment while an editor replaces it: wait for it to come back
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def watch_file(
    path: str, on_change: Callable[[], Awaitable[object]], interval: float = POLL_INTERVAL
) -> None:
    """Call ``on_change`` each time the file's inode, size or modification time changes."""
    seen = _signature(path)
    while True:
        await asyncio.sleep(interval)
        now = _signature(path)
        if now is not None and now != seen:
            seen = now
            await on_change()
