"""``--watch``: reload when the config file, or a file it names (a TLS certificate, key or CA
bundle), changes. Polled: no inotify dependency, and it sees an editor's or certbot's
rename-over-the-file as well as an in-place write."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable

POLL_INTERVAL = 1.0

Signature = tuple[int, int, int] | None


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing for a moment while an editor replaces it: wait for it to come back
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def watch_files(
    files: Callable[[], Iterable[str]],
    on_change: Callable[[], Awaitable[object]],
    interval: float = POLL_INTERVAL,
) -> None:
    """Call ``on_change`` each time one of ``files()`` changes inode, size or modification time.
    ``files`` is asked again after each change: a reload may name other files."""
    seen = {path: _signature(path) for path in files()}
    while True:
        await asyncio.sleep(interval)
        now = {path: _signature(path) for path in files()}
        changed = any(sig is not None and sig != seen.get(path) for path, sig in now.items())
        if changed:
            seen = now
            await on_change()
            # Files the new plan names for the first time: their state now is their baseline.
            seen = {path: seen[path] if path in seen else _signature(path) for path in files()}
