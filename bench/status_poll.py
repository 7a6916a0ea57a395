"""What an open status page costs the gateway: the page polling its admin listener.

The bench's ``admin`` feature gives fastgw an admin listener, so the status page's sampler runs
(one metrics collection a second). ``StatusPoller`` asks the admin
API what an open page asks: ``/series?since=`` each second, ``/targets``, ``/errors`` and
``/config`` every two. It runs in the bench's process, so its own work is not counted: what the
CPU per request shows is the gateway's side (sampling, answering, the recent-errors recorder).
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

POLL_SECONDS = 1.0  # /series; the other endpoints every other time, as the page does


class StatusPoller(threading.Thread):
    """Polls the admin API as an open status page does, until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(name="status page poller", daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.stopped = threading.Event()
        self.answers = 0
        self.failures = 0  # answers other than 200 (a build without the page's endpoints)

    def get(self, path: str) -> object:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                self.answers += 1
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            self.failures += 1
            return None

    def run(self) -> None:
        since = 0.0
        rounds = 0
        while not self.stopped.wait(POLL_SECONDS):
            series = self.get(f"/series?since={since}")
            if isinstance(series, dict) and series.get("points"):
                since = float(series["points"][-1]["t"])
            if rounds % 2 == 0:
                for path in ("/targets", "/errors", "/config"):
                    self.get(path)
            rounds += 1


@contextlib.contextmanager
def polling(port: int | None) -> Iterator[StatusPoller | None]:
    """Poll the admin listener on ``port`` while the block runs (None: do nothing)."""
    if port is None:
        yield None
        return
    poller = StatusPoller(port)
    poller.start()
    try:
        yield poller
    finally:
        poller.stopped.set()
        poller.join(10)
