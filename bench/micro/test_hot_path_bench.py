"""pytest-benchmark of the gateway's own per-request cost (see bench/hot_path.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.hot_path import make_round


def test_proxied_request_python_cost(benchmark: Any) -> None:
    async def on_a_loop() -> None:  # connections file their deadlines on the running loop's wheel
        benchmark(make_round())

    asyncio.run(on_a_loop())
